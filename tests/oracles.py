"""Independent oracles for the engine's tests: written here, sharing no code with boomerang.

:func:`assemble_by_hand` is the reference code's way of building an intermediate model: deep-copy
the student, splice deep copies of the teacher blocks into its layer list, take the embeddings
and the head from the teacher where patching reaches the ends, and fix the config and the
attention modules' ``layer_idx`` by hand. It finds the parts by the names transformers uses, not
with boomerang's structural search, and builds the per-layer config lists itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


def _base(model: PreTrainedModel) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def _layers_attr(base: nn.Module) -> str:
    return "h" if hasattr(base, "h") else "layers"


def _embedding_attrs(base: nn.Module) -> list[str]:
    return [a for a in ("embed_tokens", "wte", "wpe", "embed_in") if hasattr(base, a)]


def _norm_attr(base: nn.Module) -> str:
    return next(a for a in ("norm", "ln_f", "final_layer_norm") if hasattr(base, a))


def _head_attr(model: PreTrainedModel) -> str:
    return next(a for a in ("lm_head", "embed_out") if hasattr(model, a))


def assemble_by_hand(pair, patched: Iterable[int]) -> PreTrainedModel:
    """A deep-copied model in which the student layers ``patched`` run their teacher blocks."""
    patched = {int(p) for p in patched}
    blocks = pair.mapping.blocks
    n = len(blocks)
    teacher, student = pair.teacher, pair.student
    model = copy.deepcopy(student)
    base, t_base = _base(model), _base(teacher)
    key = _layers_attr(base)
    s_layers, t_layers = getattr(base, key), getattr(t_base, key)
    layers, sources = [], []
    for i, block in enumerate(blocks):
        if i in patched:
            layers += [copy.deepcopy(t_layers[t]) for t in block]
            sources += [(teacher.config, t) for t in block]
        else:
            layers.append(s_layers[i])
            sources.append((student.config, i))
    setattr(base, key, nn.ModuleList(layers))
    if 0 in patched:
        for attr in _embedding_attrs(base):
            setattr(base, attr, copy.deepcopy(getattr(t_base, attr)))
    if n - 1 in patched:
        setattr(base, _norm_attr(base), copy.deepcopy(getattr(t_base, _norm_attr(t_base))))
        setattr(model, _head_attr(model), copy.deepcopy(getattr(teacher, _head_attr(teacher))))

    config = copy.deepcopy(student.config)
    n_student = student.config.num_hidden_layers
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == n_student and not name.startswith("_"):
            setattr(config, name, [getattr(src, name)[idx] for src, idx in sources])
    config.num_hidden_layers = len(layers)
    if hasattr(config, "n_layer"):
        config.n_layer = len(layers)
    config.tie_word_embeddings = False
    model.config = config
    for m in model.modules():
        if isinstance(getattr(m, "config", None), PretrainedConfig):
            m.config = config
    for position, layer in enumerate(layers):
        for m in layer.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = position
    if hasattr(base, "has_sliding_layers") and getattr(config, "layer_types", None):
        base.has_sliding_layers = "sliding_attention" in config.layer_types
    return model
