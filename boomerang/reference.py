"""Drop-in for the reference code's ``build_intermediate_model`` (dcml-lab/boomerang-distillation).

The reference builds an intermediate model with ``build_intermediate_model(teacher, student,
num_layers_to_patch=r, patch_first_k_layers=...)``: it deep-copies the teacher, cuts it down to
the student, loads the student's weights and splices deep copies of teacher layers in. Here the
same call returns the same model (equal logits at every ``r``, in both directions) built by
:meth:`boomerang.BoomerangPair.build` without copying a tensor.

**What ``r`` means there.** The reference counts only the student layers that stand for more than
one teacher layer ("multi-layer blocks"; it finds them from the gaps in
``copied_teacher_layers``, so a last student layer is always taken for one-to-one). The
one-to-one layers are swapped for free along the way:

* last-to-first (``patch_first_k_layers=False``): ``r`` patches the one-to-one tail layers, the
  last ``r`` multi-layer blocks and any one-to-one layers between them, with the teacher's final
  norm and head. With one-to-one layers only at the ends (every student ``from_rule`` or
  ``from_reference_rule`` makes with ``keep_last >= 1``) that is ``k = r + (number of
  one-to-one tail layers)`` student layers patched last-to-first.
* first-to-last (``patch_first_k_layers=True``): ``r`` patches the student layers before the
  ``(r + 1)``-th multi-layer block, with the teacher's token embedding: ``k = r + keep_first``.
  **The one difference:** at ``r = 0`` with no leading one-to-one layer, the reference still swaps
  the token embedding for the teacher's (no layer changes); :func:`intermediate_model` does the
  same, while boomerang's ``k = 0`` is the student itself.
* from ``r =`` (number of multi-layer blocks) on, the reference returns the teacher, whatever
  one-to-one layers remain at the other end: ``k =`` all student layers.

One more difference, not in the numbers of the published models: the reference keeps the
teacher's per-layer ``layer_types`` by position, so a teacher with sliding-window layers (not
Qwen3-*-Base, whose layers are all full attention) gets wrong attention masks after splicing;
boomerang carries each layer's type along with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .core import BoomerangPair, LayerMapping, clone_module
from .core.arch import text_config
from .errors import BoomerangError
from .zoo import load_pair

#: The reference CLI's ``--dtype`` names.
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ReferencePlan:
    """What the reference's ``num_layers_to_patch`` does to a student, in boomerang's terms."""

    patched: frozenset[int]  #: student layers replaced by their teacher blocks
    teacher_embedding: bool  #: True where only the token embedding is swapped (first-k, r = 0)

    @property
    def k(self) -> int:
        """Number of student layers patched (boomerang's ``k`` for the same sequential order)."""
        return len(self.patched)


def multi_layer_blocks(mapping: LayerMapping) -> list[int]:
    """Student layers the reference counts in ``r``: those followed by a gap in ``kept``.

    The reference detects blocks from gaps between consecutive copied teacher layers, so the
    last student layer never counts (it assumes that layer is one-to-one).
    """
    kept = mapping.kept
    return [i for i in range(len(kept) - 1) if kept[i + 1] - kept[i] > 1]


def reference_plan(
    mapping: LayerMapping, num_layers_to_patch: int, patch_first_k_layers: bool = False
) -> ReferencePlan:
    """The student layers the reference patches for ``num_layers_to_patch`` (its ``r``).

    Raises :class:`BoomerangError` for a negative or non-integer ``r``; any ``r`` at or above
    the number of multi-layer blocks gives the teacher, as in the reference.
    """
    r = num_layers_to_patch
    if isinstance(r, bool) or not hasattr(r, "__index__") or int(r) < 0:
        raise BoomerangError(f"num_layers_to_patch must be a whole number >= 0, not {r!r}.")
    r = int(r)
    n = mapping.num_student_layers
    multi = multi_layer_blocks(mapping)
    everything = ReferencePlan(frozenset(range(n)), False)
    if r >= len(multi):
        return everything
    if patch_first_k_layers:
        cut = multi[r]  # student layers [0, cut) are patched; the embedding always is
        return ReferencePlan(frozenset(range(cut)), cut == 0)
    cut = multi[len(multi) - 1 - r] + 1  # student layers [cut, n) are patched
    return ReferencePlan(frozenset(range(cut, n)), False)


def size_table(mapping: LayerMapping, patch_first_k_layers: bool = False) -> list[dict[str, int]]:
    """One row per reference ``r`` (0 up to the teacher): ``{"r", "k", "layers"}``."""
    rows = []
    for r in range(len(multi_layer_blocks(mapping)) + 1):
        plan = reference_plan(mapping, r, patch_first_k_layers)
        rows.append({"r": r, "k": plan.k, "layers": mapping.patched_layers(plan.patched)})
    return rows


def intermediate_model(
    pair: BoomerangPair, num_layers_to_patch: int, patch_first_k_layers: bool = False
) -> PreTrainedModel:
    """The reference's intermediate model for ``r = num_layers_to_patch``, built zero-copy."""
    plan = reference_plan(pair.mapping, num_layers_to_patch, patch_first_k_layers)
    model = pair.build(patched=plan.patched)
    if plan.teacher_embedding and not pair.ends_are_teachers():
        parts = pair.parts
        base, t_base = parts.base_module(model), parts.base_module(pair.teacher)
        for name in parts.embeddings:
            base._modules[name] = clone_module(t_base._modules[name], model.config)
        # The head keeps the student's matrix, so the model must never be re-tied.
        model.config.tie_word_embeddings = False
        text_config(model.config).tie_word_embeddings = False
        if getattr(model, "all_tied_weights_keys", None):
            model.__dict__["all_tied_weights_keys"] = {}
        model.name_or_path = "boomerang:embedding"
    return model


def build_intermediate_model(
    teacher_name_or_path: str | os.PathLike,
    student_name_or_path: str | os.PathLike,
    num_layers_to_patch: int,
    patch_first_k_layers: bool = False,
    dtype: torch.dtype | str | None = None,
    *,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
):
    """``(model, tokenizer)`` exactly as the reference's function of the same name returns them.

    A one-line change for code written against the reference::

        from boomerang import build_intermediate_model   # was: from patching.patch import ...

    Same arguments and results (equal logits); the model shares its tensors with the loaded
    teacher and student instead of deep-copying them. Works with any architecture boomerang
    supports (the reference picks its Pythia code by the word "pythia" in the teacher's name).
    ``dtype`` (a torch dtype, or the reference CLI's "float32", "float16", "bfloat16") defaults
    to bf16 on GPU and fp32 on CPU; ``device`` to CUDA when present. The
    tokenizer is the teacher's (the student's if the teacher has none), with a pad token
    (eos) and left padding, as the reference sets them.
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise BoomerangError(f"Unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)} or a torch dtype.")
        dtype = _DTYPES[dtype]
    pair = load_pair(teacher=teacher_name_or_path, student=student_name_or_path, device=device,
                     dtype=dtype, trust_remote_code=trust_remote_code)
    model = intermediate_model(pair, num_layers_to_patch, patch_first_k_layers)
    tokenizer = pair.tokenizer
    if tokenizer is None:
        raise BoomerangError(
            f"Neither '{teacher_name_or_path}' nor '{student_name_or_path}' has a tokenizer; "
            "save one beside the teacher."
        )
    if getattr(tokenizer, "eos_token", None) and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


__all__ = [
    "ReferencePlan", "build_intermediate_model", "intermediate_model", "multi_layer_blocks",
    "reference_plan", "size_table",
]
