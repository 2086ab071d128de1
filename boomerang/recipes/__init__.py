"""How shipped artifacts are rebuilt: the demo family (:mod:`.demo`) and the SmolLM2 student (:mod:`.smollm2`).

:data:`STUDENT_BUILDS` maps a named pair's family (see :mod:`boomerang.zoo.registry`) to the
recipe that builds its distilled student when none is installed, so the dashboard's worker can
run it by the family's name without knowing the family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BoomerangError
from ..train.config import DistillConfig
from . import smollm2


@dataclass(frozen=True)
class StudentBuild:
    """A recipe that builds a named family's distilled student (resumable, into ``out``), and
    draws the report it measured on it."""

    #: ``build(out, progress=..., should_stop=..., threads=...)`` -> the student folder (or a checkpoint when stopped).
    build: Callable[..., Path]
    #: The build as a :class:`DistillConfig` (its teacher, out folder, steps and shape), for a progress display.
    describe: Callable[[Path], DistillConfig]
    #: The family's shipped report (see :attr:`boomerang.zoo.Family.report`) as a plotly figure.
    report_figure: Callable[[dict[str, Any]], Any]


def _smollm2_config(out: Path) -> DistillConfig:
    r = smollm2.RECIPE
    return DistillConfig(teacher="smollm2", mode="local", out=str(out), steps=r["steps"], seq_len=r["seq_len"],
                         batch_size=r["batch_size"], lr=r["lr"])


#: Family name -> the recipe that builds its distilled student.
STUDENT_BUILDS: dict[str, StudentBuild] = {"smollm2": StudentBuild(smollm2.build_smollm2_student, _smollm2_config,
                                                                    smollm2.report_figure)}


def student_build(family: str) -> StudentBuild:
    """The recipe that builds ``family``'s student; one sentence when it has none."""
    if family not in STUDENT_BUILDS:
        raise BoomerangError(f"No recipe builds a student of {family!r}; ones that do: {', '.join(STUDENT_BUILDS)}.")
    return STUDENT_BUILDS[family]


def build_student(family: str, out: str | Path, **kwargs: Any) -> Path:
    """Build (or resume building) ``family``'s distilled student into ``out`` (see :class:`StudentBuild`)."""
    return student_build(family).build(out, **kwargs)


def report_figure(family: str, report: dict[str, Any]) -> Any:
    """``family``'s shipped report drawn as its recipe draws it (a plotly figure)."""
    return student_build(family).report_figure(report)
