"""Named pairs: ``"demo"`` (bundled) and ``"smollm2"`` (a real model, offline), by name.

:mod:`.registry` lists them with what each costs and brings. :func:`load_pair` is the public entry point: ``load_pair("demo")``, ``load_pair("demo",
student="no-align")``, ``load_pair("smollm2")``, or any teacher and student folders / hub ids
(``load_pair(teacher=..., student=...)``), which it hands to :func:`boomerang.core.load_pair`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core import BoomerangPair
from ..core import load_pair as load_pair_from
from ..errors import BoomerangError
from . import registry
from .demo import DEMO_STUDENTS, demo_dirs, demo_student_dirs, same_size_deltas
from .published import PUBLISHED_STUDENTS, published_student, published_teacher
from .smollm2 import (
    SMOLLM2_STUDENTS,
    built_smollm2_student,
    distilled_smollm2_info,
    distilled_smollm2_run,
    distilled_smollm2_student,
    shipped_delta,
    shipped_smollm2_report,
    shipped_smollm2_student,
    smollm2_available,
    smollm2_dirs,
    smollm2_paths,
)

#: Names :func:`load_pair` accepts.
NAMED_PAIRS = tuple(f.name for f in registry.FAMILIES)


def named_pair_dirs(name: str, student: str | None = None) -> tuple[Path, Path]:
    """(teacher_dir, student_dir) of a bundled pair: ``demo`` (with a demo student name) or ``smollm2``."""
    return registry.family(name).dirs(student)


def resolve_teacher(name: str) -> str:
    """The model directory or hub id behind a teacher reference: a bundled pair's name ("demo",
    "smollm2") stands for its teacher, so ``distill --teacher smollm2`` needs no path."""
    if name in NAMED_PAIRS and not Path(name).exists():
        return str(registry.family(name).teacher_dir())  # no student needed to name the teacher
    return name


def load_pair(
    name: str | None = None,
    *,
    teacher: str | os.PathLike | None = None,
    student: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> BoomerangPair:
    """Load a :class:`BoomerangPair`: a bundled ``name`` ("demo", "smollm2") or teacher + student.

    ``load_pair("demo", student="no-align")`` picks one of the demo's ablation students.
    ``student`` alone works when its ``student_config.json`` records its teacher, or when it is
    one of the paper's published students (:data:`PUBLISHED_STUDENTS`) or a folder named like one.
    """
    if name is not None:
        if teacher is not None:
            raise BoomerangError("Give either a named pair or a teacher, not both.")
        teacher, student = named_pair_dirs(name, None if student is None else str(student))
    elif teacher is None and student is not None:
        teacher = published_teacher(student)  # the Harvard-DCML students record no teacher
    return load_pair_from(teacher=teacher, student=student, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code, name=name)


from .registry import Family, NamedPair

__all__ = [
    "Family", "NamedPair", "registry",
    "DEMO_STUDENTS", "NAMED_PAIRS", "PUBLISHED_STUDENTS", "demo_dirs", "demo_student_dirs", "load_pair", "named_pair_dirs",
    "same_size_deltas",
    "published_student", "published_teacher", "resolve_teacher", "smollm2_available", "smollm2_dirs", "smollm2_paths",
    "SMOLLM2_STUDENTS", "built_smollm2_student", "distilled_smollm2_info", "distilled_smollm2_run",
    "distilled_smollm2_student", "shipped_delta", "shipped_smollm2_report", "shipped_smollm2_student",
]
