"""What the sidebar picks: pair specs, the pairs on offer, devices and threads.

A :class:`PairSpec` names a loadable pair (a named pair of :mod:`boomerang.zoo.registry`, or
teacher and student folders) and round-trips through the URL's query parameters, so a link reproduces what
its sender saw. :func:`discover_pairs` lists what can be offered without typing.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch

from ..core import BoomerangPair, recorded_teacher_path
from ..errors import BoomerangError
from ..paths import runs_dir
from ..zoo import NamedPair, load_pair, registry
from .present import student_is_distilled
from .query import check_local_ref, is_under


def dashboard_runs_dir() -> Path:
    """Where the Train page writes its runs."""
    return runs_dir() / "dashboard"


FOLDERS = "folders"


@dataclass(frozen=True)
class PairSpec:
    """A loadable pair: ``kind`` is "named" (``name`` is a key of the registry of named pairs,
    :mod:`boomerang.zoo.registry`) or "folders" (``teacher`` and ``student`` are local folders or
    hub ids)."""

    kind: Literal["named", "folders"]
    student: str = ""
    teacher: str = ""
    label: str = ""
    name: str = ""

    @classmethod
    def named(cls, pair: NamedPair) -> "PairSpec":
        """The spec of a named pair of the registry."""
        return cls("named", label=pair.label, name=pair.key)

    @property
    def entry(self) -> NamedPair | None:
        """The registry's entry of a named pair (None for folders)."""
        return registry.find(self.name) if self.kind == "named" else None

    @property
    def key(self) -> str:
        """A stable id (URL, caches)."""
        if self.kind == "named":
            return self.name
        return f"folders:{self.teacher}|{self.student}"

    @property
    def title(self) -> str:
        return self.label or self.key

    def to_query(self) -> dict[str, str]:
        """Query parameters that reproduce this spec."""
        if self.kind == FOLDERS:
            q = {"pair": FOLDERS, "student": self.student}
            if self.teacher:
                q["teacher"] = self.teacher
            return q
        return {"pair": self.key}

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "PairSpec | None":
        """The spec named by query parameters, or None when they name none."""
        pair = (q.get("pair") or "").strip()
        if pair in (FOLDERS, "local", "hub") or (not pair and q.get("student")):
            student = (q.get("student") or "").strip()
            if not student:
                return None
            return cls(FOLDERS, student=student, teacher=(q.get("teacher") or "").strip(),
                       label=_folder_label(q.get("teacher") or "", student))
        found = registry.find(pair)
        return cls.named(found) if found is not None else None

    @property
    def distilled(self) -> bool:
        """False when the student is only initialised from teacher layers (a named pair's
        undistilled student, or a folder whose student_config.json says ``"distilled": false``)."""
        entry = self.entry
        if entry is not None:
            return entry.distilled
        return student_is_distilled(self.student)

    def load(self, device: str | None = None) -> BoomerangPair:
        """Load the pair (slow: cache the result)."""
        entry = self.entry
        if entry is not None:
            return load_pair(entry.family.name, student=entry.student, device=device)
        if self.kind == "named":
            raise BoomerangError(f"Unknown named pair {self.name!r}.")
        return load_pair(teacher=self.teacher or None, student=self.student, device=device)

    def teacher_ref(self) -> str:
        """The teacher's folder or hub id (what a new distillation starts from; a folder the
        student recorded relative to itself is resolved from there, as loading does)."""
        entry = self.entry
        if entry is not None:
            return str(entry.family.teacher_dir())
        if self.teacher:
            return self.teacher
        meta = Path(self.student) / "student_config.json"
        if meta.is_file():
            t = json.loads(meta.read_text()).get("teacher")
            if t:
                return recorded_teacher_path(self.student, str(t))
        raise BoomerangError(
            f"The student {self.student} does not record its teacher; give the teacher folder."
        )

    def first_use(self) -> str:
        """What loading this pair costs the first time, while still to pay ("" when nothing)."""
        entry = self.entry
        if entry is None or entry.family.ready():
            return ""
        return entry.family.first_use

    def student_record(self) -> str | None:
        """One line on how a named pair's family made its distilled student, or None when it has none."""
        entry = self.entry
        rec = entry.family.student_record() if entry is not None else None
        if rec is None:
            return None
        return (f"Distilled block-locally: {rec.get('tokens', 0):,} tokens of the demo corpus's train split, "
                f"{rec.get('steps', 0):,} steps; each student layer learned its teacher block alone.")


def _folder_label(teacher: str, student: str) -> str:
    s = Path(student)
    name = s.parent.name if s.name == "student" else s.name
    return f"{name} (local)" if not teacher else f"{Path(teacher).name} / {name}"


def discover_pairs(root: Path | None = None) -> list[PairSpec]:
    """Every pair the sidebar can offer without typing: the named pairs installed here (the
    registry's order), the students trained under the runs folder (newest first), then the
    published students the local Hugging Face cache holds."""
    out = [PairSpec.named(p) for p in registry.offered()]
    for s in registry.trained_students(root):
        out.append(PairSpec(FOLDERS, student=str(s), label=_folder_label("", str(s))))
    for p in registry.cached_published():
        out.append(PairSpec(FOLDERS, student=p.student, teacher=p.teacher, label=f"{p.student} (published)"))
    return out


def comparable_models(spec: PairSpec, root: Path | None = None) -> dict[str, str]:
    """Other students of ``spec``'s teacher that the sidebar knows (named pairs, trained runs),
    ``{label: student folder}``: models the Compare page can put beside the curves."""
    try:
        teacher = _teacher_folder(spec)
    except BoomerangError:
        return {}
    out = {}
    for other in discover_pairs(root):
        entry = other.entry
        if other.key == spec.key or (entry is not None and not entry.comparable):
            continue
        try:
            same = _teacher_folder(other) == teacher
        except BoomerangError:
            continue
        if same:
            out[other.label] = str(entry.dirs()[1] if entry is not None else other.student)
    return out


def same_size_students(spec: PairSpec) -> dict[int, Path]:
    """Layer count -> students of ``spec``'s teacher distilled directly at that size (those its
    family ships), drawn as points beside the interpolation curves; empty for other pairs."""
    entry = spec.entry
    return entry.family.same_size() if entry is not None else {}


def _teacher_folder(spec: PairSpec) -> str:
    """The teacher of a spec as an absolute path when it is a folder here, else as written (a hub id)."""
    ref = spec.teacher_ref()
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def recorded_teacher_refusal(spec: PairSpec, allow_outside: bool = False) -> str | None:
    """Why the dashboard may not load the teacher a folder student's ``student_config.json``
    names, or None when it may: the same rule as a typed path (the runs folder, the bundled demo,
    or a hub id; anywhere once the user allows paths outside), plus the teachers this package made
    (a converted named teacher). Otherwise a student planted under the runs folder could make the server read
    any folder on the machine."""
    if spec.kind != FOLDERS or spec.teacher or allow_outside:
        return None
    try:
        teacher = _teacher_folder(spec)
    except BoomerangError:
        return None  # no teacher recorded: loading says so itself
    if not Path(teacher).exists() or any(is_under(Path(teacher), d) for d in registry.made_here()):
        return None  # nothing to read (loading says what is missing), or a teacher this package made
    parsed = check_local_ref("the teacher its student_config.json names", teacher, "")
    if parsed.ok:
        return None
    return (f"The student {spec.student!r} names its teacher {teacher!r}, outside the runs folder and the "
            "bundled demo; tick 'Allow paths outside the runs folder' in the sidebar to load it.")


def default_pair() -> PairSpec | None:
    """The pair the app opens on: the first named pair installed (the demo), else the newest trained student."""
    pairs = discover_pairs()
    return pairs[0] if pairs else None


def devices() -> list[str]:
    """Devices to offer: CUDA first when present, then CPU."""
    out = [f"cuda:{i}" if torch.cuda.device_count() > 1 else "cuda"
           for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return out + ["cpu"]


def release_memory() -> None:
    """Give memory back after a pair is dropped (CUDA cache included)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()



def spec_fingerprint(spec: PairSpec, device: str) -> str:
    """Key of a loaded pair in result caches: changes when a local student is retrained."""
    stamp = ""
    if spec.kind == FOLDERS:
        for ref in (spec.student, spec.teacher):
            p = Path(ref) if ref else None
            if p is not None and p.exists():
                stamp += f"|{max((f.stat().st_mtime_ns for f in p.glob('*.safetensors')), default=0)}"
    return f"{spec.key}@{device}{stamp}"

