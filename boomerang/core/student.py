"""Make a boomerang student from a teacher: copy a subset of its layers.

``init_student(teacher, mapping)`` returns a model of the teacher's own class with
``mapping.num_student_layers`` decoder layers, student layer ``i`` initialised from teacher
layer ``mapping.kept[i]`` and everything else (embeddings, final norm, head) from the teacher.
That initialisation is what makes boomerang distillation work: each student layer starts out
as the first layer of the block it will learn to stand for. ``random_init=True`` gives the
same architecture with fresh random weights (the paper's ablation).

``save_student`` writes a student in the reference layout: a Hugging Face checkpoint
(safetensors) plus ``student_config.json`` describing the mapping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..errors import BoomerangError, IncompatiblePairError
from ..io import atomic_dir
from .arch import config_for_layers, find_parts, num_layers
from .mapping import LayerMapping

STUDENT_CONFIG = "student_config.json"


def init_student(
    teacher: PreTrainedModel, mapping: LayerMapping, random_init: bool = False
) -> PreTrainedModel:
    """A student of the teacher's class whose layer ``i`` is a copy of teacher layer ``kept[i]``.

    The config is the teacher's with the layer count and every per-layer list (such as
    ``layer_types``) fixed. With ``random_init`` the weights are freshly initialised instead
    (seed with ``torch.manual_seed`` first for reproducibility).
    """
    n = num_layers(teacher)
    if mapping.num_teacher_layers != n:
        raise IncompatiblePairError(
            f"The mapping is for a {mapping.num_teacher_layers}-layer teacher but this teacher has "
            f"{n} layers."
        )
    parts = find_parts(teacher)
    config = config_for_layers(teacher.config, [(teacher.config, k) for k in mapping.kept])
    param = next(teacher.parameters())
    student = type(teacher)(config).to(device=param.device, dtype=param.dtype)
    student.generation_config = type(teacher.generation_config).from_dict(
        teacher.generation_config.to_dict()
    )
    if random_init:
        return student

    prefix = f"{parts.base}.{parts.layers}."
    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix):
            idx, rest = key[len(prefix):].split(".", 1)
            key_t = f"{prefix}{mapping.kept[int(idx)]}.{rest}"
        else:
            key_t = key
        state[key] = teacher_state[key_t]
    with torch.no_grad():
        student.load_state_dict(state, strict=True)
    return student


def save_student(
    student: PreTrainedModel,
    mapping: LayerMapping,
    out_dir: str | os.PathLike,
    tokenizer=None,
    *,
    teacher: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a student: safetensors + config + ``student_config.json`` (+ tokenizer).

    ``teacher`` (a path or hub id) is recorded so that ``load_pair(student=dir)`` can find the
    teacher by itself. The directory is written next to its destination and renamed into
    place, so an interrupted save never leaves a half-written student. An existing student there
    is replaced; a folder holding anything else is refused, never emptied.
    """
    if mapping.num_student_layers != num_layers(student):
        raise IncompatiblePairError(
            f"The mapping has {mapping.num_student_layers} student layers but the model has "
            f"{num_layers(student)}."
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BoomerangError(f"{str(out)!r} is a file; give a folder for the student.")
    if out.is_dir() and any(out.iterdir()) and not (out / STUDENT_CONFIG).is_file():
        raise BoomerangError(f"{str(out)!r} holds files but no student (no {STUDENT_CONFIG}); saving would "
                             "replace them: choose an empty or new folder.")
    with atomic_dir(out) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = mapping.to_student_config()
        if teacher is not None:
            meta["teacher"] = str(teacher)
        meta.update(extra or {})
        (tmp / STUDENT_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_student_config(student_dir: str | os.PathLike) -> dict:
    """The parsed ``student_config.json`` of a local student directory."""
    return json.loads((Path(student_dir) / STUDENT_CONFIG).read_text())
