"""A teacher, its boomerang student, and every model in between.

**Patching.** Student layer ``i`` was trained to stand for the teacher block ``blocks[i]``
(see :mod:`boomerang.core.mapping`). *Patching* it means running that teacher block in its place.
Patching a set ``P`` of student layers gives a model with ``sum(len(blocks[i]) for i in P) +
(n - |P|)`` layers; as ``P`` grows from nothing to everything, the model grows from the student
to the teacher, and boomerang distillation's finding is that, with no training at all, its
quality interpolates smoothly between theirs.

The ends must be exact, so the token embedding comes from the teacher iff student layer 0 is
patched (it feeds the teacher's first block), and the final norm and head come from the teacher
iff the last student layer is patched (they read the teacher's last block)::

    patched = {}       embed(S)  S0 S1 S2 ... S6  norm+head(S)    == the student
    patched = {0, 5}   embed(T)  T0 T1 S1 ... S4 T10 S6  norm+head(S)
    patched = all      embed(T)  T0 T1 ... T11  norm+head(T)      == the teacher

A student whose embeddings, final norm and head are still exactly the teacher's (frozen while
distilling, ``--freeze head`` with tied embeddings) takes both ends from the teacher as soon as
either end is patched: the same numbers, but a tied matrix stays tied and is counted once.

**Zero-copy.** :meth:`BoomerangPair.build` allocates no tensor. It assembles a new module tree
whose modules are shallow clones of the teacher's and student's (new module objects, the very
same ``Parameter`` and buffer objects), so a build costs bookkeeping only, and the clones can
carry their own state (``layer_idx`` for the KV cache, training flag, hooks) without touching
the shared teacher or student. The result is an ordinary ``PreTrainedModel``: ``generate``,
lm-eval's ``HFLM(pretrained=model)`` and ``save_pretrained`` work as for any loaded model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..errors import BoomerangError, IncompatiblePairError
from .arch import ArchParts, config_for_layers, find_parts, num_layers, text_config
from .mapping import LayerMapping
from .patched import Patched

#: The orders that follow from the mapping alone (no data): patch from the top or the bottom.
SEQUENTIAL_ORDERS = ("last-to-first", "first-to-last")
#: Config fields (besides the sizes) that change what a layer, the embedding or the head computes:
#: teacher and student must agree on each, or ``build(patched=[])`` would not be the student.
COMPUTING_FIELDS = (
    "head_dim", "hidden_act", "activation_function", "rope_theta", "rope_scaling", "rope_parameters",
    "partial_rotary_factor", "rotary_pct", "rotary_emb_base", "rms_norm_eps", "layer_norm_eps",
    "layer_norm_epsilon", "attention_bias", "mlp_bias", "use_parallel_residual", "sliding_window",
    "final_logit_softcapping", "attn_logit_softcapping", "query_pre_attn_scalar", "scale_attn_weights",
    "n_inner", "embedding_multiplier", "logits_scaling", "residual_multiplier", "attention_multiplier",
)

# Per-module dicts that must not be shared between a clone and its original.
_HOOK_DICTS = (
    "_backward_pre_hooks",
    "_backward_hooks",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
# Attributes a clone must not inherit: output-capturing hooks are installed once per model.
_DROP_ATTRS = ("_output_capturing_hooks_installed", "hf_device_map")


def _clone_shell(module: nn.Module, config: PretrainedConfig | None) -> nn.Module:
    """A new module object with ``module``'s attributes, parameters and buffers, and no children."""
    if "_hf_hook" in module.__dict__:
        raise BoomerangError(
            "Models dispatched with an Accelerate device_map cannot be patched; load them without "
            "device_map and move the built model instead."
        )
    new = module.__class__.__new__(module.__class__)
    d = module.__dict__.copy()
    d["_parameters"] = module._parameters.copy()
    d["_buffers"] = module._buffers.copy()
    d["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
    for key in _HOOK_DICTS:
        if key in d:
            d[key] = OrderedDict()
    for key in _DROP_ATTRS:
        d.pop(key, None)
    if config is not None and isinstance(d.get("config"), PretrainedConfig):
        d["config"] = config
    d["_modules"] = {}
    object.__setattr__(new, "__dict__", d)  # nn.Module.__setattr__ is slow and not needed here
    return new


def clone_module(
    module: nn.Module, config: PretrainedConfig | None = None, layer_idx: int | None = None
) -> nn.Module:
    """A new module tree sharing ``module``'s parameters and buffers (no tensor is copied).

    Every submodule is a new object with fresh hook dictionaries, so hooks, ``train()``/``eval()``
    and attributes such as ``layer_idx`` can be set on the clone without touching the original.
    ``config`` replaces every ``config`` attribute found in the tree; ``layer_idx`` replaces
    every integer ``layer_idx`` attribute.
    """
    new = _clone_shell(module, config)
    if layer_idx is not None and isinstance(new.__dict__.get("layer_idx"), int):
        new.__dict__["layer_idx"] = layer_idx
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else clone_module(child, config, layer_idx)
    return new


def _refresh_derived(base: nn.Module, config: PretrainedConfig) -> None:
    # Base models that precompute facts about their layer types at __init__ (Qwen2/3, ...).
    if "has_sliding_layers" in base.__dict__ and hasattr(config, "layer_types"):
        base.__dict__["has_sliding_layers"] = "sliding_attention" in config.layer_types


class BoomerangPair:
    """A teacher, a student distilled from it, and the mapping between their layers.

    ``pair.build(patched=[...])`` returns the model in which those student layers are replaced
    by their teacher blocks; ``pair.build(order="last-to-first", k=3)`` patches the first ``k``
    layers of a sequential order. Construction checks that the two models can be combined.
    """

    def __init__(
        self,
        teacher: PreTrainedModel,
        student: PreTrainedModel,
        mapping: LayerMapping,
        tokenizer=None,
        *,
        name: str | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.mapping = mapping
        self.tokenizer = tokenizer
        self.name = name
        self._check()
        self.parts: ArchParts = find_parts(teacher)
        self._ends_key: tuple | None = None
        self._ends_equal = False
        # Data-driven orders computed for this pair, by (order, calibration data): searches take
        # seconds, and build(order=..., k=...) asks for one size at a time.

    # ---- validation ---------------------------------------------------------------------

    def _check(self) -> None:
        t, s = self.teacher, self.student
        if type(t) is not type(s):
            raise IncompatiblePairError(
                f"The teacher is a {type(t).__name__} but the student a {type(s).__name__}; a "
                "student must have its teacher's architecture."
            )
        tc, sc = text_config(t), text_config(s)
        for key in ("hidden_size", "vocab_size", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "n_embd", "n_head"):
            a, b = getattr(tc, key, None), getattr(sc, key, None)
            if a != b:
                raise IncompatiblePairError(
                    f"The teacher's {key} is {a} but the student's {b}; they cannot be patched "
                    "together."
                )
        nt, ns = num_layers(t), num_layers(s)
        m = self.mapping
        if m.num_teacher_layers != nt or m.num_student_layers != ns:
            raise IncompatiblePairError(
                f"The mapping joins {m.num_teacher_layers} teacher layers to {m.num_student_layers} "
                f"student layers, but the teacher has {nt} and the student {ns}."
            )
        if find_parts(s) != find_parts(t):
            raise IncompatiblePairError("The teacher's and the student's module trees differ.")
        for key in COMPUTING_FIELDS:
            a, b = getattr(tc, key, None), getattr(sc, key, None)
            if a != b:
                raise IncompatiblePairError(
                    f"The teacher's {key} is {a!r} but the student's {b!r}: their layers compute "
                    "differently, so a patched model would be neither.")

    # ---- views --------------------------------------------------------------------------

    @property
    def num_student_layers(self) -> int:
        """Number of student layers (= number of patchable positions)."""
        return self.mapping.num_student_layers

    def sequential(self, order: str, k: int) -> Patched:
        """The student layers patched by the first ``k`` steps of a sequential order."""
        n = self.num_student_layers
        if order not in SEQUENTIAL_ORDERS:
            raise BoomerangError(f"Unknown sequential order '{order}'; choose one of {', '.join(SEQUENTIAL_ORDERS)}.")
        k = self._check_k(k)
        idx = range(n - k, n) if order == "last-to-first" else range(k)
        return Patched(idx)

    def _check_k(self, k: object) -> int:
        n = self.num_student_layers
        if isinstance(k, bool) or not hasattr(k, "__index__"):
            raise BoomerangError(f"k must be a whole number from 0 to {n}, not {k!r}.")
        k = int(k.__index__())  # type: ignore[attr-defined]
        if not 0 <= k <= n:
            raise BoomerangError(f"k must be a whole number from 0 to {n}, not {k}.")
        return k

    def layer_sources(self, patched: Iterable[int]) -> list[tuple[str, int]]:
        """``[("teacher"|"student", index), ...]``: where each layer of the built model comes from."""
        patched = self.mapping.check_patched(patched)
        out: list[tuple[str, int]] = []
        for i, block in enumerate(self.mapping.blocks):
            out += [("teacher", t) for t in block] if i in patched else [("student", i)]
        return out

    def num_parameters(self, patched: Iterable[int] = ()) -> int:
        """Parameters of the model built with ``patched`` (counted once when tied)."""
        return self.build(patched=patched).num_parameters()

    def _end_params(self, model: PreTrainedModel) -> list[nn.Parameter]:
        parts = self.parts
        modules = [*parts.embedding_modules(model), parts.norm_module(model), parts.head_module(model)]
        return [p for m in modules for p in m.parameters()]

    def ends_are_teachers(self) -> bool:
        """True iff the student's embeddings, final norm and head equal the teacher's bit for bit.

        Computed once and again only after an in-place change to one of those tensors (their
        version counters are the cache key), so a build stays cheap.
        """
        pairs = list(zip(self._end_params(self.student), self._end_params(self.teacher), strict=True))
        key = tuple((a._version, b._version, a.data_ptr(), b.data_ptr()) for a, b in pairs)
        if key != self._ends_key:
            self._ends_equal = all(
                a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                and a.device.type != "meta"
                and torch.equal(a, b) for a, b in pairs
            )
            self._ends_key = key
        return self._ends_equal

    # ---- building -----------------------------------------------------------------------

    def build(
        self,
        patched: Iterable[int] | None = None,
        *,
        order: str | None = None,
        k: int | None = None,
    ) -> PreTrainedModel:
        """The model with the ``patched`` student layers replaced by their teacher blocks.

        Zero-copy and side-effect free: see the module docstring. Give either ``patched`` (an
        iterable of student layer indices) or ``order`` and ``k`` (the ``k``-th size of a
        sequential order, :data:`SEQUENTIAL_ORDERS`). An order chosen from calibration text
        (``klpatch``, ``optimal`` ...) is a search, which lives above this engine:
        :func:`boomerang.orders.build` runs it (once per pair and text) and builds its sizes.
        """
        if order is not None or k is not None:
            if patched is not None:
                raise BoomerangError("Give either 'patched' or 'order' and 'k', not both.")
            if order is None or k is None:
                raise BoomerangError("Give both 'order' and 'k' (the number of student layers to patch).")
            if order not in SEQUENTIAL_ORDERS:
                raise BoomerangError(
                    f"BoomerangPair.build knows the sequential orders ({', '.join(SEQUENTIAL_ORDERS)}); for "
                    f"'{order}' use boomerang.orders.build(pair, {order!r}, k, calib_ids).")
            patched = self.sequential(order, k)
        patched = self.mapping.check_patched(() if patched is None else patched)
        n = self.num_student_layers
        parts = self.parts
        t, s = self.teacher, self.student
        sources = self.layer_sources(patched)
        models = {"teacher": t, "student": s}

        embed_src = t if 0 in patched else s
        head_src = t if (n - 1) in patched else s
        if embed_src is not head_src and self.ends_are_teachers():
            embed_src = head_src = t  # same numbers; see the module docstring
        config = config_for_layers(
            s.config, [(models[who].config, idx) for who, idx in sources]
        )
        tied = bool(getattr(text_config(embed_src), "tie_word_embeddings", False))
        if embed_src is not head_src:
            config.tie_word_embeddings = False
            if config is not text_config(config):
                text_config(config).tie_word_embeddings = False
            tied = False

        top = _clone_shell(head_src, config)  # top-level attributes (generation_config, ...)
        for key, child in head_src._modules.items():  # in order: the base is filled in below
            top._modules[key] = None if child is None or key == parts.base else clone_module(child, config)
        base = _clone_shell(parts.base_module(s), config)
        t_base = parts.base_module(t)
        for key, t_child in t_base._modules.items():
            if key == parts.layers:
                child = nn.ModuleList(
                    [
                        clone_module(parts.layer_list(models[who])[idx], config, layer_idx=p)
                        for p, (who, idx) in enumerate(sources)
                    ]
                )
            elif key in parts.embeddings:
                child = clone_module(parts.base_module(embed_src)._modules[key], config)
            elif key == parts.norm:
                child = clone_module(parts.norm_module(head_src), config)
            else:  # parameter-free helpers: the teacher's know every layer type
                child = None if t_child is None else clone_module(t_child, config)
            base._modules[key] = child
        _refresh_derived(base, config)
        top._modules[parts.base] = base
        top.__dict__["config"] = config
        top.__dict__["generation_config"] = copy.deepcopy(head_src.generation_config)
        if not tied and getattr(top, "all_tied_weights_keys", None):
            top.__dict__["all_tied_weights_keys"] = {}
        top.name_or_path = f"boomerang:{sorted(patched)}"
        top.boomerang_patched = patched.as_tuple()
        return top


def shares_storage(model: nn.Module, *sources: nn.Module) -> bool:
    """True iff every parameter of ``model`` is one of the ``sources``' parameters (zero-copy)."""
    ptrs = {p.data_ptr() for src in sources for p in src.parameters()}
    return all(p.data_ptr() in ptrs for p in model.parameters())
