"""What the sidebar picks: pair specs, the pairs on offer, devices and threads.

A :class:`PairSpec` names a loadable pair (the demo and its ablations, SmolLM2, or teacher and
student folders) and round-trips through the URL's query parameters, so a link reproduces what
its sender saw. :func:`discover_pairs` lists what can be offered without typing.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import BoomerangPair, recorded_teacher_path
from ..errors import BoomerangError
from ..paths import runs_dir
from ..zoo import (
    demo_student_dirs,
    distilled_smollm2_info,
    load_pair,
    resolve_teacher,
    same_size_deltas,
    smollm2_available,
    smollm2_paths,
)
from .present import student_is_distilled
from .query import check_local_ref, is_under


def dashboard_runs_dir() -> Path:
    """Where the Train page writes its runs."""
    return runs_dir() / "dashboard"


SMOLLM2_LABEL = "SmolLM2-135M: undistilled"
SMOLLM2_DISTILLED_LABEL = "SmolLM2-135M: distilled"


@dataclass(frozen=True)
class PairSpec:
    """A loadable pair: ``kind`` is "demo" (with a demo ``student`` name), "smollm2", or
    "folders" (``teacher`` and ``student`` are local folders or hub ids)."""

    kind: str
    student: str = ""
    teacher: str = ""
    label: str = ""

    @property
    def key(self) -> str:
        """A stable id (URL, caches)."""
        if self.kind == "demo":
            return "demo" if self.student in ("", "boomerang") else f"demo:{self.student}"
        if self.kind == "smollm2":
            return "smollm2" if self.student == "distilled" else "smollm2:undistilled"
        return f"folders:{self.teacher}|{self.student}"

    @property
    def title(self) -> str:
        return self.label or self.key

    def to_query(self) -> dict[str, str]:
        """Query parameters that reproduce this spec."""
        if self.kind == "folders":
            q = {"pair": "folders", "student": self.student}
            if self.teacher:
                q["teacher"] = self.teacher
            return q
        return {"pair": self.key}

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "PairSpec | None":
        """The spec named by query parameters, or None when they name none."""
        pair = (q.get("pair") or "").strip()
        if pair in ("folders", "local", "hub") or (not pair and q.get("student")):
            student = (q.get("student") or "").strip()
            if not student:
                return None
            return cls("folders", student=student, teacher=(q.get("teacher") or "").strip(),
                       label=_folder_label(q.get("teacher") or "", student))
        if pair == "demo":
            return cls("demo", "boomerang", label="demo: boomerang student")
        if pair.startswith("demo:"):
            name = pair.split(":", 1)[1]
            return cls("demo", name, label=f"demo: {name} student")
        if pair == "smollm2":
            return cls("smollm2", "distilled", label=SMOLLM2_DISTILLED_LABEL)
        if pair == "smollm2:undistilled":
            return cls("smollm2", "undistilled", label=SMOLLM2_LABEL)
        return None

    @property
    def distilled(self) -> bool:
        """False when the student is only initialised from teacher layers (SmolLM2's, or a folder
        whose student_config.json says ``"distilled": false``)."""
        if self.kind == "smollm2":
            return self.student == "distilled"
        return self.kind == "demo" or student_is_distilled(self.student)

    def load(self, device: str | None = None) -> BoomerangPair:
        """Load the pair (slow: cache the result)."""
        if self.kind == "demo":
            student = None if self.student in ("", "boomerang") else self.student
            return load_pair("demo", student=student, device=device)
        if self.kind == "smollm2":
            return load_pair("smollm2", student=self.student or "undistilled", device=device)
        return load_pair(teacher=self.teacher or None, student=self.student, device=device)

    def teacher_ref(self) -> str:
        """The teacher's folder or hub id (what a new distillation starts from; a folder the
        student recorded relative to itself is resolved from there, as loading does)."""
        if self.kind == "folders":
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
        return resolve_teacher("demo" if self.kind == "demo" else "smollm2")


def _folder_label(teacher: str, student: str) -> str:
    s = Path(student)
    name = s.parent.name if s.name == "student" else s.name
    return f"{name} (local)" if not teacher else f"{Path(teacher).name} / {name}"


def smollm2_converted() -> bool:
    """True once the SmolLM2 teacher has been converted from GGUF (later loads take seconds)."""
    return (smollm2_paths()[0] / "config.json").is_file()


def smollm2_student_info() -> str | None:
    """One line on how the distilled SmolLM2 student was made, or None when there is none."""
    rec = distilled_smollm2_info()
    if rec is None:
        return None
    return (f"Distilled block-locally: {rec.get('tokens', 0):,} tokens of the demo corpus's train split, "
            f"{rec.get('steps', 0):,} steps; each student layer learned its teacher block alone.")


def demo_available() -> bool:
    """True when the bundled demo family is on disk."""
    return demo_student_dirs() != {}


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


def discover_pairs(root: Path | None = None) -> list[PairSpec]:
    """Every pair the sidebar can offer without typing: demo students, SmolLM2, trained runs."""
    out = [PairSpec("demo", name, label=f"demo: {name} student")
           for name in demo_student_dirs()]
    for s in trained_students(root):
        out.append(PairSpec("folders", student=str(s), label=_folder_label("", str(s))))
    if smollm2_available():
        if distilled_smollm2_info() is not None:
            out.append(PairSpec("smollm2", "distilled", label=SMOLLM2_DISTILLED_LABEL))
        out.append(PairSpec("smollm2", "undistilled", label=SMOLLM2_LABEL))
    return out


def comparable_models(spec: PairSpec, root: Path | None = None) -> dict[str, str]:
    """Other students of ``spec``'s teacher that the sidebar knows (demo students, trained runs),
    ``{label: student folder}``: models the Compare page can put beside the curves."""
    try:
        teacher = _teacher_folder(spec)
    except BoomerangError:
        return {}
    demo = demo_student_dirs()
    out = {}
    for other in discover_pairs(root):
        if other.key == spec.key or other.kind == "smollm2":
            continue
        try:
            same = _teacher_folder(other) == teacher
        except BoomerangError:
            continue
        if same:
            out[other.label] = str(demo[other.student] if other.kind == "demo" else other.student)
    return out


def same_size_students(spec: PairSpec) -> dict[int, Path]:
    """Layer count -> students of ``spec``'s teacher distilled directly at that size (the demo's
    shipped ones), drawn as points beside the interpolation curves; empty for other pairs."""
    return same_size_deltas() if spec.kind == "demo" else {}


def _teacher_folder(spec: PairSpec) -> str:
    """The teacher of a spec as an absolute path when it is a folder here, else as written (a hub id)."""
    ref = spec.teacher_ref()
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def recorded_teacher_refusal(spec: PairSpec, allow_outside: bool = False) -> str | None:
    """Why the dashboard may not load the teacher a folder student's ``student_config.json``
    names, or None when it may: the same rule as a typed path (the runs folder, the bundled demo,
    or a hub id; anywhere once the user allows paths outside), plus the converted SmolLM2 teacher
    this app made. Otherwise a student planted under the runs folder could make the server read
    any folder on the machine."""
    if spec.kind != "folders" or spec.teacher or allow_outside:
        return None
    try:
        teacher = _teacher_folder(spec)
    except BoomerangError:
        return None  # no teacher recorded: loading says so itself
    if not Path(teacher).exists() or is_under(Path(teacher), smollm2_paths()[0]):
        return None  # nothing to read (loading says what is missing), or the teacher this app converted
    parsed = check_local_ref("the teacher its student_config.json names", teacher, "")
    if parsed.ok:
        return None
    return (f"The student {spec.student!r} names its teacher {teacher!r}, outside the runs folder and the "
            "bundled demo; tick 'Allow paths outside the runs folder' in the sidebar to load it.")


def default_pair() -> PairSpec | None:
    """The pair the app opens on: the demo when it exists, else the newest trained student."""
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
    if spec.kind == "folders":
        for ref in (spec.student, spec.teacher):
            p = Path(ref) if ref else None
            if p is not None and p.exists():
                stamp += f"|{max((f.stat().st_mtime_ns for f in p.glob('*.safetensors')), default=0)}"
    return f"{spec.key}@{device}{stamp}"

