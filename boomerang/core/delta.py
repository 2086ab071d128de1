"""A student stored as what it adds to its teacher: the change of each trained tensor, quantised.

A boomerang student starts as copies of some teacher layers (:func:`~boomerang.core.init_student`)
and distillation moves the trained layers a little away from them. So the whole student is::

    student tensor = the teacher tensor it was copied from + delta      (trained layers)
                   = the teacher tensor it was copied from              (everything else)

and it ships as the deltas alone. A delta is small next to its weight (a few percent of its
norm), so it quantises well: each matrix is cut into groups of ``group`` consecutive values,
and each group is stored as ``bits``-bit integers times one float16 scale (symmetric absmax
quantisation). For SmolLM2-135M's 12 trained layers at 4 bits that is 21 MB, against 170 MB of
float32 layers; vectors (norm weights) are stored as float16 deltas. A *delta folder* holds::

    delta.safetensors   <name>.q (uint8: the integers, two per byte at 4 bits), <name>.scale
                        (float16, one per group), or <name>.delta (float16, a vector's delta)
    delta.json          the student's mapping, the quantisation, the teacher's weights checksum,
                        the tensor file's sha256 and how the student was trained

:func:`make_delta` writes one from a teacher and a trained student; :func:`apply_delta`
composes the student from a teacher, and refuses in one sentence a teacher that is not the one
the delta was made from (another model, conversion or dtype) and a tensor file that is damaged,
since either would give a silently wrong student. Composition is deterministic: the same
teacher and delta give the same bits, so :func:`make_delta` also returns the composed student,
the one every figure of a shipped student is measured on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from ..errors import BoomerangError
from ..io import atomic_dir
from .mapping import LayerMapping
from .student import init_student

DELTA_META = "delta.json"
DELTA_WEIGHTS = "delta.safetensors"
#: What make_delta stores by default: 4-bit integers, one float16 scale per 128 values.
BITS, GROUP = 4, 128


# ---- fingerprints ---------------------------------------------------------------------------


def weights_checksum(model: nn.Module) -> str:
    """sha256 (hex) of every tensor of ``model``'s state dict: name, dtype, shape and bytes.

    Two models have the same checksum only if they hold the same weights bit for bit; another
    conversion, dtype or a single changed value gives another.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- quantisation ---------------------------------------------------------------------------


def quantize(d: torch.Tensor, bits: int = BITS, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantisation of ``d`` in groups of ``group`` values: ``(q, scale)``.

    ``q`` is uint8 holding ``round(d / scale) + 2^(bits-1)`` (two values per byte at 4 bits),
    ``scale`` is float16 ``[numel / group]`` with ``max |d| / (2^(bits-1) - 1)`` per group.
    """
    if bits not in (4, 8):
        raise BoomerangError(f"A delta is stored at 4 or 8 bits, not {bits!r}.")
    flat = d.detach().float().reshape(-1)
    if flat.numel() % group:
        raise BoomerangError(f"A tensor of {flat.numel()} values does not split into groups of {group}.")
    g = flat.view(-1, group)  # [n_groups, group]
    top = 2 ** (bits - 1) - 1
    scale = (g.abs().amax(dim=1) / top).to(torch.float16)
    s = scale.float().clamp_min(torch.finfo(torch.float16).tiny)[:, None]
    q = (torch.round(g / s).clamp(-top, top) + top + 1).to(torch.uint8).reshape(-1)
    if bits == 4:
        q = q[0::2] | (q[1::2] << 4)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, bits: int, shape: torch.Size) -> torch.Tensor:
    """The float32 delta that :func:`quantize` stored, of ``shape``."""
    if bits == 4:
        q = torch.stack((q & 0x0F, q >> 4), dim=1).reshape(-1)
    ints = q.to(torch.int16) - 2 ** (bits - 1)
    g = ints.view(scale.numel(), -1).float() * scale.float()[:, None]
    return g.reshape(shape)


# ---- delta folders --------------------------------------------------------------------------


def _config_summary(model: PreTrainedModel) -> dict[str, Any]:
    """The config fields that say what a model is, for naming what differs."""
    c = model.config
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "vocab_size")
    return {k: getattr(c, k) for k in keys if hasattr(c, k)}


@torch.no_grad()
def make_delta(
    out_dir: str | os.PathLike,
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    mapping: LayerMapping,
    *,
    bits: int = BITS,
    group: int = GROUP,
    teacher_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """Write ``student`` as a delta folder over ``teacher`` (atomically); return the student the
    folder composes (what :func:`apply_delta` gives: the trained one up to the quantisation).

    Every student tensor that differs from the teacher tensor it was copied from is stored; a
    matrix as ``bits``-bit groups of ``group`` values (:func:`quantize`), a vector as float16.
    """
    base = init_student(teacher, mapping)
    tensors: dict[str, torch.Tensor] = {}
    trained = base.state_dict()
    for name, w in student.state_dict().items():
        b = trained[name]
        if torch.equal(w, b):
            continue
        d = w.float() - b.float()
        if d.dim() >= 2:
            tensors[f"{name}.q"], tensors[f"{name}.scale"] = quantize(d, bits, group)
        else:
            tensors[f"{name}.delta"] = d.to(torch.float16)
    meta = {
        "format": "boomerang student delta",
        "student_config": mapping.to_student_config(),
        "bits": bits, "group": group,
        "teacher": teacher_name,
        "teacher_checksum": weights_checksum(teacher),
        "teacher_config": _config_summary(teacher),
        **(extra or {}),
    }
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        save_file(tensors, str(tmp / DELTA_WEIGHTS))
        meta["delta_sha256"] = file_sha256(tmp / DELTA_WEIGHTS)
        (tmp / DELTA_META).write_text(json.dumps(meta, indent=2) + "\n")
    return _compose(base, tensors, bits)


def is_delta_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a delta folder (it holds a ``delta.json``), not a model of its own."""
    return (Path(path) / DELTA_META).is_file()


def read_delta_meta(delta_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``delta.json`` of a delta folder (one sentence if it is missing or invalid)."""
    path = Path(delta_dir) / DELTA_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoomerangError(f"{str(delta_dir)!r} is not a student delta: it has no {DELTA_META}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BoomerangError(f"The delta's {DELTA_META} in {str(delta_dir)!r} is not valid JSON ({e}).") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("teacher_checksum", "delta_sha256")):
        raise BoomerangError(f"The delta's {DELTA_META} in {str(delta_dir)!r} lacks its checksums.")
    if meta.get("bits") not in (4, 8) or not isinstance(meta.get("student_config"), dict):
        raise BoomerangError(f"The delta's {DELTA_META} in {str(delta_dir)!r} does not say how it was stored.")
    return meta


def load_delta_tensors(delta_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The stored tensors of a delta folder, after checking them against the sha256 that
    ``delta.json`` records (a truncated, damaged or replaced file is refused)."""
    d = Path(delta_dir)
    meta = read_delta_meta(d)
    path = d / DELTA_WEIGHTS
    if not path.is_file():
        raise BoomerangError(f"The delta in {str(d)!r} has no {DELTA_WEIGHTS}.")
    if file_sha256(path) != meta["delta_sha256"]:
        raise BoomerangError(f"The delta's {DELTA_WEIGHTS} in {str(d)!r} is damaged or was changed: "
                             "its sha256 is not the one delta.json records.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise BoomerangError(f"Could not read the delta's {DELTA_WEIGHTS} in {str(d)!r}: {e}.") from None


def check_teacher(teacher: PreTrainedModel, meta: dict[str, Any], where: str) -> None:
    """Refuse, in one sentence naming what differs, a teacher the delta was not made from."""
    have = _config_summary(teacher)
    for k, v in meta.get("teacher_config", {}).items():
        if have.get(k) != v:
            raise BoomerangError(f"The student delta {where} was made from a teacher with {k} = {v!r}, "
                                 f"but this teacher has {have.get(k)!r}: it is another model.")
    if weights_checksum(teacher) != meta["teacher_checksum"]:
        raise BoomerangError(f"The student delta {where} was made from other teacher weights (checksum "
                             f"{meta['teacher_checksum'][:12]}...; this teacher's differs): another "
                             "conversion, dtype or a changed file.")


@torch.no_grad()
def _compose(base: PreTrainedModel, tensors: dict[str, torch.Tensor], bits: int, where: str = "") -> PreTrainedModel:
    """Add the stored deltas to ``base`` (a fresh :func:`init_student`), in place."""
    state = base.state_dict()
    names = {k.rsplit(".", 1)[0] for k in tensors}
    for name in sorted(names):
        if name not in state:
            raise BoomerangError(f"The student delta {where} changes {name!r}, which this student has not.")
        w = state[name]
        if f"{name}.delta" in tensors:
            d = tensors[f"{name}.delta"].float()
        else:
            q, scale = tensors.get(f"{name}.q"), tensors.get(f"{name}.scale")
            if q is None or scale is None or scale.numel() == 0 or w.numel() % scale.numel() \
                    or q.numel() * (2 if bits == 4 else 1) != w.numel():
                raise BoomerangError(f"The student delta {where} stores {name!r} with the wrong number of values.")
            d = dequantize(q, scale, bits, w.shape)
        if d.shape != w.shape:
            raise BoomerangError(f"The student delta {where} stores {name!r} with shape {tuple(d.shape)}, "
                                 f"but the student's is {tuple(w.shape)}.")
        w.copy_((w.float() + d).to(w.dtype))
    return base


def apply_delta(teacher: PreTrainedModel, delta_dir: str | os.PathLike) -> tuple[PreTrainedModel, LayerMapping]:
    """Compose the student a delta folder describes from ``teacher``: copy its layers
    (:func:`init_student`), then add each stored delta. Returns ``(student, mapping)``."""
    where = repr(str(delta_dir))
    meta = read_delta_meta(delta_dir)
    check_teacher(teacher, meta, where)
    tensors = load_delta_tensors(delta_dir)
    try:
        mapping = LayerMapping.from_student_config(meta["student_config"])
    except BoomerangError as e:
        raise BoomerangError(f"The student delta {where} has an invalid mapping: {e}") from None
    return _compose(init_student(teacher, mapping), tensors, meta["bits"], where), mapping
