"""Training from the dashboard: a distillation in a child process, and the runs on disk.

A :class:`TrainingJob` runs :func:`boomerang.train.distill` (or a named pair's student recipe) in a
:mod:`.worker` process, records every step's losses for live curves, and stops at the next
step with a checkpoint when asked. The other functions read what runs left on disk (logs,
checkpoints, finished students).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from ..errors import BoomerangError
from ..paths import runs_dir
from ..recipes import student_build
from ..train import DistillConfig, last_checkpoint
from ..zoo import Family
from ..zoo.registry import folders_holding
from .specs import dashboard_runs_dir
from .worker import launch


@dataclass
class TrainingJob:
    """A training run in a child process (:mod:`.worker`): poll ``history``/``state``; ``stop()``
    checkpoints and ends it.

    ``kind`` is ``"distill"`` (``config`` is the run) or ``"build"`` (the student recipe of the
    named family ``family``; ``config`` then only describes it: its ``out`` and ``steps``).
    """

    config: DistillConfig
    kind: Literal["distill", "build"] = "distill"
    family: str = ""  # a "build": the named family whose student it builds
    device: str | None = None  # cpu, cuda, cuda:<i>; None: Accelerate's choice
    history: list[dict[str, Any]] = field(default_factory=list)
    state: Literal["starting", "running", "stopped", "done", "failed"] = "starting"
    message: str = ""
    result: Path | None = None
    started: float = field(default_factory=time.time)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _reader: threading.Thread | None = field(default=None, repr=False)
    _stderr: deque = field(default_factory=lambda: deque(maxlen=20), repr=False)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def running(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    @property
    def step(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    def start(self) -> "TrainingJob":
        self.config.validate()
        # A distillation uses the server's CPU threads; a student recipe its own (as on the CLI).
        job = {"kind": self.kind, "config": self.config.to_dict(), "threads": torch.get_num_threads()} \
            if self.kind == "distill" else {"kind": self.kind, "family": self.family, "out": str(self.out)}
        self._proc = launch(job, self.device)
        threading.Thread(target=self._drain_stderr, name=f"stderr:{self.out.name}", daemon=True).start()
        self._reader = threading.Thread(target=self._read, name=f"train:{self.out.name}", daemon=True)
        self._reader.start()
        return self

    def stop(self) -> None:
        """Ask the run to save a checkpoint and end after its current step."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.write("stop\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it has just ended

    def wait(self, timeout: float | None = None) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def _drain_stderr(self) -> None:
        for line in self._proc.stderr:
            if line.strip():
                self._stderr.append(line.rstrip())

    def _read(self) -> None:
        final: dict[str, Any] = {}
        for line in self._proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                self.state = "running"
                self.history.append(rec)
            else:
                final = rec
        code = self._proc.wait()
        if "result" in final:
            self.result = Path(final["result"])
            self.state = "stopped" if final["stopped"] and self.result.name != "student" else "done"
            self.message = f"Student saved to {self.result}" if self.state == "done" else \
                f"Stopped at step {self.step}; checkpoint {self.result}"
        else:
            last = self._stderr[-1] if self._stderr else "no message"
            self.state = "failed"
            self.message = final.get("error") or f"Training ended unexpectedly (exit code {code}): {last}"


_JOBS: dict[str, TrainingJob] = {}
_JOBS_LOCK = threading.Lock()


def start_training(config: DistillConfig, kind: Literal["distill", "build"] = "distill", device: str | None = None,
                   family: str = "") -> TrainingJob:
    """Start a distillation in a child process on ``device`` (the sidebar's; None: Accelerate's
    choice); one job per output folder."""
    key = str(Path(config.out).resolve())
    with _JOBS_LOCK:
        old = _JOBS.get(key)
        if old is not None and old.running:
            raise BoomerangError(f"A run is already training into {config.out}; stop it or pick another name.")
        job = TrainingJob(config, kind, device=device, family=family).start()
        _JOBS[key] = job
    return job


def start_student_build(family: Family) -> TrainingJob:
    """Build a named family's distilled student in the background (its recipe, as the CLI runs it)."""
    if family.build_run is None:
        raise BoomerangError(f"No recipe builds a student of {family.title}.")
    run = family.build_run()
    return start_training(student_build(family.name).describe(run), kind="build", family=family.name)


def student_build_job(family: Family) -> TrainingJob | None:
    """The build of ``family``'s student started in this process, if any."""
    return training_job(family.build_run()) if family.build_run is not None else None


def training_job(out: str | os.PathLike) -> TrainingJob | None:
    """The job (running or finished in this process) writing to ``out``."""
    return _JOBS.get(str(Path(out).resolve()))


def read_log(out: str | os.PathLike) -> pd.DataFrame:
    """A run's ``log.jsonl`` as a frame (empty when there is none)."""
    p = Path(out) / "log.jsonl"
    if not p.is_file():
        return pd.DataFrame()
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return pd.DataFrame(rows)


def run_status(out: str | os.PathLike) -> dict[str, Any]:
    """What is on disk for a run: finished student, last checkpoint step, logged steps."""
    out = Path(out)
    ck = last_checkpoint(out) if out.is_dir() else None
    return {"student": (out / "student") if (out / "student" / "config.json").is_file() else None,
            "checkpoint": ck, "checkpoint_step": int(ck.name.split("-")[-1]) if ck else 0,
            "config": json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None}


def dashboard_runs() -> list[Path]:
    """Runs started from the dashboard, newest first."""
    root = dashboard_runs_dir()
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)



def all_runs(max_depth: int = 3) -> list[Path]:
    """Every distillation run under the runs folder (a folder with ``log.jsonl``), newest first;
    the dashboard's own runs first."""
    found = folders_holding(runs_dir(), "log.jsonl", max_depth)
    own = [p for p in found if p.parent == dashboard_runs_dir()]
    other = [p for p in found if p.parent != dashboard_runs_dir()]
    key = lambda p: (p / "log.jsonl").stat().st_mtime  # noqa: E731
    return sorted(own, key=key, reverse=True) + sorted(other, key=key, reverse=True)


def log_is_live(out: str | os.PathLike, within_s: float = 60) -> bool:
    """True when a run's log was written in the last ``within_s`` seconds (someone trains it)."""
    p = Path(out) / "log.jsonl"
    return p.is_file() and time.time() - p.stat().st_mtime < within_s

