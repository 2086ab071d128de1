"""The bundled demo family: where its shipped teacher and students are.

A 12-layer Llama teacher trained from scratch on the demo corpus and three 7-layer students
distilled from it (the boomerang student and two ablations), shipped as package data so that
``load_pair("demo")`` works offline out of the box; beside them, students distilled directly at
8 to 11 layers (:func:`same_size_deltas`), stored as deltas over the teacher. :mod:`boomerang.recipes.demo` rebuilds them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BoomerangError, CheckpointError
from ..paths import demo_assets_dir

#: Students shipped with the demo: the method and its two ablations.
DEMO_STUDENTS: tuple[str, ...] = ("boomerang", "no-align", "random-init")
#: Folder (under the demo's assets) of the students distilled directly at each intermediate size.
SAME_SIZE_FOLDER = "same_size"


def demo_dirs(student: str = "boomerang", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(teacher_dir, student_dir)`` of the shipped demo family (package data by default).

    ``student`` is one of :data:`DEMO_STUDENTS`: the boomerang student or an ablation.
    """
    if student not in DEMO_STUDENTS:
        raise BoomerangError(f"Unknown demo student {student!r}; choose one of {', '.join(DEMO_STUDENTS)}.")
    base = Path(root) if root is not None else demo_assets_dir()
    teacher_dir, student_dir = base / "teacher", base / "students" / student
    for d in (teacher_dir, student_dir):
        if not (d / "config.json").is_file():
            raise CheckpointError(
                f"The demo weights are missing from {str(d)!r}; rebuild them with `python -m boomerang demo build`."
            )
    return teacher_dir, student_dir


def demo_student_dirs() -> dict[str, Path]:
    """Demo student name -> folder, for the students that exist on disk."""
    out = {}
    for name in DEMO_STUDENTS:
        try:
            out[name] = demo_dirs(name)[1]
        except CheckpointError:  # a missing or half-built demo student is just not offered
            continue
    return out


def same_size_deltas(root: str | os.PathLike | None = None) -> dict[int, Path]:
    """Layer count -> delta folder of the demo students distilled directly at that size (8 to 11
    layers, the boomerang student's recipe and budget), the paper's comparison for an
    interpolated model; composed from the demo teacher when compared (empty when not shipped)."""
    base = (Path(root) if root is not None else demo_assets_dir()) / SAME_SIZE_FOLDER
    out = {}
    for d in sorted(base.glob("*-layers")) if base.is_dir() else ():
        head = d.name.split("-", 1)[0]
        if head.isdigit() and (d / "delta.json").is_file():
            out[int(head)] = d
    return dict(sorted(out.items()))
