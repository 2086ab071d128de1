"""Find the parts of any Hugging Face causal LM by structure, never by model name.

Every decoder-only model in transformers has the same anatomy::

    <CausalLM>                      top: the class you load
      <base>                        e.g. .model (Llama, Qwen), .gpt_neox (Pythia), .transformer (GPT-2)
        token embedding             get_input_embeddings()
        [position embedding]        GPT-2's wpe: travels with the token embedding
        layers: ModuleList[N]       the N = num_hidden_layers decoder layers
        final norm                  the one norm module beside the layers
        [rotary embedding, ...]     parameter-free helpers
      head                          get_output_embeddings()

:func:`find_parts` locates each of them from the module tree (the embedding and head through
their standard accessors, the layer list as the ``ModuleList`` of length ``num_hidden_layers``
holding most parameters, the final norm as the norm module beside it) and returns their
attribute names, which is everything the patching engine needs. A model whose tree does not fit
this picture gets an :class:`UnsupportedArchitectureError` naming what could not be found.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..errors import BoomerangError, UnsupportedArchitectureError

#: Families covered by tests on tiny random models (any other decoder-only model with the
#: same anatomy works too; these are the ones we vouch for).
TESTED_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gpt_neox", "gpt2", "olmo2", "gemma3_text", "phi3")


@dataclass(frozen=True)
class ArchParts:
    """Attribute names of a causal LM's parts (all relative to the model or its base)."""

    base: str  # attribute of the top model holding the base model, e.g. "model"
    layers: str  # attribute of the base: the decoder-layer ModuleList, e.g. "layers"
    embeddings: tuple[str, ...]  # attributes of the base: token (+ position) embeddings
    norm: str  # attribute of the base: final norm
    head: str  # attribute of the top model: output head, e.g. "lm_head"
    helpers: tuple[str, ...]  # parameter-free attributes of the base, e.g. ("rotary_emb",)

    def base_module(self, model: nn.Module) -> nn.Module:
        """The base model (the module holding embeddings, layers and final norm)."""
        return getattr(model, self.base)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """The decoder layers of ``model``."""
        return getattr(self.base_module(model), self.layers)

    def embedding_modules(self, model: nn.Module) -> list[nn.Module]:
        """The input embeddings of ``model`` (token, and position where the model has one)."""
        base = self.base_module(model)
        return [getattr(base, name) for name in self.embeddings]

    def norm_module(self, model: nn.Module) -> nn.Module:
        """The final norm of ``model``."""
        return getattr(self.base_module(model), self.norm)

    def head_module(self, model: nn.Module) -> nn.Module:
        """The output head of ``model``."""
        return getattr(model, self.head)


def text_config(model_or_config):
    """The text config of a model or config (the config itself for decoder-only models)."""
    config = getattr(model_or_config, "config", model_or_config)
    get = getattr(config, "get_text_config", None)
    return get() if get is not None else config


def max_positions(model_or_config) -> int | None:
    """The longest sequence the model declares it handles (``max_position_embeddings`` or
    ``n_positions``), or None when its config names no limit."""
    config = text_config(model_or_config)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers the model's config declares."""
    n = getattr(text_config(model), "num_hidden_layers", None)
    if not isinstance(n, int):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}'s config has no 'num_hidden_layers'; is this a causal LM?"
        )
    return n


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=True), None) is not None


def find_parts(model: nn.Module) -> ArchParts:
    """Locate embeddings, decoder layers, final norm and head of a causal LM by structure."""
    name = type(model).__name__
    if not isinstance(model, PreTrainedModel):
        raise UnsupportedArchitectureError(f"{name} is not a transformers PreTrainedModel.")
    n = num_layers(model)

    head = model.get_output_embeddings()
    head_attr = next((k for k, m in model.named_children() if m is head), None)
    if head is None or head_attr is None:
        raise UnsupportedArchitectureError(
            f"Could not find the output head of {name}: get_output_embeddings() must return a "
            "direct child of the model (is this a causal LM and not a base model?)."
        )

    # The decoder layers: the ModuleList of length n with the most parameters.
    candidates = [
        (path, m)
        for path, m in model.named_modules()
        if isinstance(m, nn.ModuleList) and len(m) == n and n > 0
    ]
    if not candidates:
        raise UnsupportedArchitectureError(
            f"Could not find the decoder layers of {name}: no ModuleList of num_hidden_layers={n} "
            "modules."
        )
    layers_path, _ = max(candidates, key=lambda pm: sum(p.numel() for p in pm[1].parameters()))
    parts = layers_path.split(".")
    if len(parts) != 2:
        raise UnsupportedArchitectureError(
            f"{name}'s decoder layers sit at '{layers_path}'; only models whose layers are one level "
            "below the top (e.g. 'model.layers') are supported."
        )
    base_attr, layers_attr = parts
    base = getattr(model, base_attr)

    embed = model.get_input_embeddings()
    children = dict(base.named_children())
    embed_attr = next((k for k, m in children.items() if m is embed), None)
    if embed_attr is None:
        raise UnsupportedArchitectureError(
            f"Could not find the token embedding of {name} beside its decoder layers in "
            f"'{base_attr}'."
        )
    embeddings = [embed_attr]
    norms: list[str] = []
    helpers: list[str] = []
    for k, m in children.items():
        if k in (embed_attr, layers_attr):
            continue
        if isinstance(m, nn.Embedding):
            embeddings.append(k)  # e.g. GPT-2's learned position embedding
        elif _has_params(m) and _is_norm(m):
            norms.append(k)
        elif _has_params(m):
            raise UnsupportedArchitectureError(
                f"{name}.{base_attr}.{k} ({type(m).__name__}) has parameters but is neither an "
                "embedding, a decoder layer nor the final norm; this architecture is not supported."
            )
        else:
            helpers.append(k)
    if len(norms) != 1:
        raise UnsupportedArchitectureError(
            f"Could not find exactly one final norm beside {name}'s decoder layers (found "
            f"{norms or 'none'})."
        )
    for k, m in model.named_children():
        if k not in (base_attr, head_attr) and _has_params(m):
            raise UnsupportedArchitectureError(
                f"{name}.{k} ({type(m).__name__}) has parameters outside the base model and head; "
                "this architecture is not supported."
            )
    return ArchParts(
        base=base_attr,
        layers=layers_attr,
        embeddings=tuple(embeddings),
        norm=norms[0],
        head=head_attr,
        helpers=tuple(helpers),
    )


def per_layer_keys(config: PretrainedConfig) -> list[str]:
    """Config attributes that hold one entry per decoder layer (e.g. ``layer_types``)."""
    n = config.num_hidden_layers
    return [
        k
        for k, v in vars(config).items()
        if isinstance(v, (list, tuple)) and len(v) == n and not k.startswith("_")
    ]


def config_for_layers(
    template: PretrainedConfig, sources: Sequence[tuple[PretrainedConfig, int]]
) -> PretrainedConfig:
    """A copy of ``template`` describing a model whose layer ``p`` is ``sources[p]``'s layer.

    ``sources[p] = (config, index)`` names the config of the model layer ``p`` comes from and its
    index there; per-layer lists such as ``layer_types`` are rebuilt from them so that, e.g., a
    sliding-window teacher layer keeps its window wherever it lands.
    """
    config = copy.deepcopy(template)
    for key in per_layer_keys(template):
        values = []
        for src, idx in sources:
            src_values = getattr(src, key, None)
            if not isinstance(src_values, (list, tuple)) or len(src_values) != src.num_hidden_layers:
                break
            values.append(src_values[idx])
        else:
            setattr(config, key, type(getattr(template, key))(values))
    config.num_hidden_layers = len(sources)
    return config


def check_token_ids(ids: object, model: nn.Module, what: str = "Token ids") -> None:
    """Refuse, in one sentence, token ids a model cannot read: not a ``[n, seq_len]`` tensor of
    whole numbers, empty, or outside the model's vocabulary (torch would fail deep inside the
    embedding with an IndexError, or read garbage on some devices)."""
    if not isinstance(ids, torch.Tensor):
        raise BoomerangError(f"{what} must be a torch tensor of token ids, not a {type(ids).__name__}.")
    if ids.dim() != 2 or ids.numel() == 0:
        raise BoomerangError(f"{what} must be a non-empty [n, seq_len] tensor, not one of shape {list(ids.shape)}.")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise BoomerangError(f"{what} must be whole numbers (torch.long), not {ids.dtype}.")
    vocab = model.get_input_embeddings().num_embeddings
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise BoomerangError(f"{what} must lie in 0..{vocab - 1} (this model's vocabulary), but range "
                             f"from {lo} to {hi}.")
