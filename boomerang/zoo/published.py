"""The paper's published students (``Harvard-DCML/boomerang-*``) and their teachers.

The published student repos hold ``config.json``, safetensors shards with
``model.safetensors.index.json`` and a ``student_config.json`` with only the reference's two
keys (``copied_teacher_layers``, ``pruned_teacher_layers``): no teacher is recorded. This table
fills that gap, so ``load_pair(student="Harvard-DCML/boomerang-qwen3-2.3B")`` (or a local copy
of that repo, in a folder of the same name) finds ``Qwen/Qwen3-4B-Base``, loaded from the hub or
from the local Hugging Face cache (offline with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PublishedStudent:
    """One published student: its teacher, the reference rule it was made with, how to patch it."""

    student: str  #: hub id of the student
    teacher: str  #: hub id of its teacher
    rule: tuple[int, int, int]  #: (first_layers_to_keep, every, last_layers_to_keep), the reference's
    patch_first_k_layers: bool  #: the order the authors recommend (True: first-to-last)
    max_r: int  #: the largest num_layers_to_patch the reference documents (the teacher)


#: From the reference README's model table and the model cards. The Llama student's rule is
#: inferred ("the first two layers and every 2nd subsequent layer", 1.9 B parameters = 15
#: layers, r up to 13); the others are the reference's defaults.
PUBLISHED_STUDENTS: tuple[PublishedStudent, ...] = (
    PublishedStudent("Harvard-DCML/boomerang-qwen3-2.3B", "Qwen/Qwen3-4B-Base", (1, 2, 2), False, 17),
    PublishedStudent("Harvard-DCML/boomerang-qwen3-4.9B", "Qwen/Qwen3-8B-Base", (1, 2, 2), False, 17),
    PublishedStudent("Harvard-DCML/boomerang-pythia-1.6B", "EleutherAI/pythia-2.8b", (1, 2, 2), False, 15),
    PublishedStudent("Harvard-DCML/boomerang-pythia-3.8B", "EleutherAI/pythia-6.9b", (1, 2, 2), False, 15),
    PublishedStudent("Harvard-DCML/boomerang-llama-3.2-1.9B", "meta-llama/Llama-3.2-3B", (2, 2, 1), True, 13),
)


def published_student(ref: str | os.PathLike) -> PublishedStudent | None:
    """The published student a hub id or folder stands for (by its last name, any case), or None."""
    name = Path(str(ref).rstrip("/\\")).name.lower()
    return next((p for p in PUBLISHED_STUDENTS if p.student.split("/")[1].lower() == name), None)


def published_teacher(student: str | os.PathLike) -> str | None:
    """The teacher hub id for a published student whose ``student_config.json`` names none."""
    found = published_student(student)
    if found is None:
        return None
    meta = Path(student) / "student_config.json"
    if meta.is_file():
        try:
            if "teacher" in json.loads(meta.read_text(encoding="utf-8")):
                return None  # recorded there: loading uses it
        except (OSError, ValueError):
            return None  # loading reports the bad file
    return found.teacher
