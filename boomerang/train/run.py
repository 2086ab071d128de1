"""The life of a training run, the same for every objective: one step loop around any objective.

Whole-model distillation and pretraining (:mod:`.loop`) and block-local distillation
(:mod:`.local`) train different weights in different ways. Each is an :class:`Objective`: it
owns its models, optimizer and data, makes one optimizer update per :meth:`~Objective.step`,
and says how its state is checkpointed and restored. Everything around the steps is written
here once, and :func:`train` does it for every objective:

1. :func:`check_out` refuses an ``--out`` that holds something other than this run, and
   :func:`run_lock` keeps a second process from training into it;
2. the newest checkpoint that the objective accepts is restored (``resume``), and
   :meth:`RunFolder.begin` starts the folder: on a resume it trims ``log.jsonl`` and
   ``curves.jsonl`` back to the checkpoint's step, on a fresh start it drops what a run killed
   before its first checkpoint left, and it records the settings in ``config.json``;
3. every ``log_every`` steps (and at the last, at an evaluation, and where a time limit ends
   the run) one JSON line goes to
   ``log.jsonl``: the objective's losses of the whole process group, the learning rate, tokens,
   tokens/s, number of processes, training time, and any validation figures;
4. every ``save_every`` steps, and when stopped, a checkpoint in the one format of
   :mod:`.checkpoints` (:meth:`RunFolder.checkpoint`);
5. a stop request or a time limit on the main process stops every process at the same step
   (:meth:`RunFolder.stop_now`: a checkpoint is collective);
6. a :class:`~.events.DistillProgress` event after every step, and the CLI's progress bar;
7. at the end the objective saves its result.

Only the main process of a multi-process run writes and reports; every method may be called on
every process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from tqdm.auto import tqdm

from ..errors import BoomerangError
from ..io import atomic_write
from ..progress import StopSignal, stop_requested
from . import trackers
from .checkpoints import (
    CHECKPOINT_DIR,
    checkpoint_folders,
    checkpoints,
    read_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    trim_log,
)
from .config import RunConfig
from .curves import CURVES_FILE, trim_curves
from .events import DistillProgress, Event, progress_event
from .processes import Peers, process_state

LOG_FILE = "log.jsonl"


def _saved_run(out: Path) -> dict[str, Any] | None:
    """``out/config.json`` when it is a run's settings (a mapping with a teacher and steps), else None."""
    try:
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "steps" in saved and "teacher" in saved else None


def check_out(config: RunConfig, out: Path, result_dir: Path) -> None:
    """Refuse an ``--out`` that would overwrite something that is not this run's."""
    if out.exists() and not out.is_dir():
        raise BoomerangError(f"--out {str(out)!r} is a file; give a folder for the run.")
    saved = _saved_run(out)
    if config.resume:
        if saved is None:
            raise BoomerangError(f"{str(out)!r} holds no run to resume (no run config.json); drop --resume or check --out.")
        conflict = config.resume_conflict(saved)
        if conflict:
            raise BoomerangError(
                f"Cannot resume {str(out)!r} with different settings: {conflict}; resume with the run's "
                "own settings or choose another --out."
            )
        return
    if checkpoints(out) or result_dir.exists():
        raise BoomerangError(
            f"{str(out)!r} already holds a run (checkpoints or a result); pass --resume to "
            "continue it or choose another --out."
        )
    # What a run killed before its first checkpoint leaves may be started over.
    leftovers = (LOG_FILE, CURVES_FILE, "config.json", ".lock", CHECKPOINT_DIR, trackers.TRACKER_DIR)
    if out.is_dir() and any(p for p in out.iterdir() if p.name not in leftovers):
        raise BoomerangError(
            f"{str(out)!r} is not empty and is not a run of these settings; choose a new --out folder."
        )
    if out.is_dir() and (out / "config.json").exists() and (saved is None or config.resume_conflict(saved)):
        raise BoomerangError(
            f"{str(out)!r} holds a config.json that is not a run of these settings; choose a new --out folder."
        )


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` for the run: a second process training into the same folder is refused.

    Only the main process of a multi-process run takes it (its ranks share the folder)."""
    if not process_state().is_main_process:
        yield
        return
    created_dir = not out.exists()
    lock = out / ".lock"
    created_lock = not lock.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
    except OSError as e:
        raise BoomerangError(f"Cannot write to --out {str(out)!r}: {e.strerror or e}.") from None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BoomerangError(
                f"Another process is training into {str(out)!r}; wait for it or choose another --out."
            ) from None
        try:
            yield
        except BaseException:
            # A run refused before it wrote anything leaves the disk as it found it.
            if created_lock and [p.name for p in out.iterdir()] == [".lock"]:
                lock.unlink()
                if created_dir:
                    out.rmdir()
            raise
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class RunFolder:
    """A run's output folder while it trains (see the module docstring)."""

    def __init__(self, out: Path, peers: Peers, keep_checkpoints: int) -> None:
        self.out = out
        self.peers = peers
        self.keep = keep_checkpoints
        self._log: IO[str] | None = None

    @property
    def log_path(self) -> Path:
        return self.out / LOG_FILE

    def begin(self, resumed_step: int | None, settings: dict[str, Any]) -> None:
        """Start (``resumed_step`` None) or continue the folder, and record ``settings``."""
        if self.peers.main:
            self.out.mkdir(parents=True, exist_ok=True)
            if resumed_step is not None:
                trim_log(self.log_path, resumed_step)
                trim_curves(self.out, resumed_step)
            else:  # a fresh run: logs left by a run killed before its first checkpoint start over
                for stale in (self.log_path, self.out / CURVES_FILE):
                    if stale.exists():
                        stale.unlink()
            remove_partial_checkpoints(self.out)
            atomic_write(self.out / "config.json", json.dumps(settings, indent=2) + "\n")
            self._log = open(self.log_path, "a", encoding="utf-8")
        self.peers.barrier()

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to ``log.jsonl`` (main process; flushed, so a dashboard reads it live)."""
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def close(self) -> None:
        """Close the log (the folder stays)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def checkpoint(self, step: int,
                   contents: Callable[[], tuple[dict[str, Any], dict[str, torch.Tensor] | None]],
                   write_more: Callable[[Path], None] | None = None) -> Path:
        """Write ``checkpoints/step-<step>`` (see :func:`.checkpoints.save_checkpoint`); collective.

        ``contents()`` gives the state (JSON) and tensors, on the main process only;
        ``write_more(folder)`` runs on every process (a sharded state, each process its shard)."""
        final, tmp = checkpoint_folders(self.out, step)
        if write_more is not None:
            if self.peers.main:
                tmp.mkdir(parents=True, exist_ok=True)
            self.peers.barrier()
            write_more(tmp)
            self.peers.barrier()
        if self.peers.main:
            state, tensors = contents()
            save_checkpoint(self.out, step, {**state, "world_size": self.peers.world}, self.keep, tensors)
        self.peers.barrier()
        return final

    def stop_now(self, should_stop: StopSignal, over_time: bool = False) -> bool:
        """Whether every process stops after this step: the main process was asked to stop or ran
        out of its time (collective: all processes call it at the same step)."""
        return self.peers.any(self.peers.main and (stop_requested(should_stop) or over_time))


# ---------------------------------------------------------------------------------------------
# Objectives and the one step loop
# ---------------------------------------------------------------------------------------------


class StepDone(NamedTuple):
    """What one optimizer step hands back: its learning rate and this process's loss terms
    (scalar tensors, not yet combined with the other processes': see :meth:`Objective.reduce`)."""

    lr: float
    terms: dict[str, torch.Tensor]


@dataclass(frozen=True)
class RunEnd:
    """Where a run ended, for :meth:`Objective.finish`."""

    step: int  # optimizer steps done
    tokens: int  # training tokens of the whole process group
    elapsed_s: float  # training time, over every launch of the run
    stopped_early: bool  # its time limit ran out before its steps


class Objective(ABC):
    """One kind of training, as :func:`train` drives it.

    An objective holds what it trains (models, optimizer, schedule, data order) and knows how to
    make one optimizer update, how to combine its losses across processes, and how to write and
    restore its state. Methods marked collective are called on every process at the same point
    of the loop. The data order must be a pure function of the step, so that a restored
    checkpoint continues exactly where the run left off.
    """

    #: The losses (keys of :meth:`losses`) that the CLI's progress bar shows.
    bar_fields: tuple[str, ...] = ("loss",)

    @abstractmethod
    def check(self, ckpt: Path, state: dict[str, Any]) -> None:
        """Raise :class:`BoomerangError` if this run cannot continue checkpoint ``ckpt``, whose
        ``trainer_state.json`` is ``state`` (other settings, another student, another batch)."""

    @abstractmethod
    def load(self, ckpt: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> None:
        """Restore the weights, optimizer and schedule of a checked checkpoint (its
        ``state.safetensors`` as ``tensors``: None when it has none)."""

    def begin(self, step: int) -> None:
        """Called once the run folder is ready, before step ``step`` (0 on a fresh run); collective."""

    @abstractmethod
    def tokens_after(self, step: int) -> int:
        """Training tokens the whole process group has seen after the first ``step`` steps."""

    @abstractmethod
    def step(self, step: int, elapsed_s: float, reported: bool) -> StepDone:
        """Make optimizer update number ``step`` (0-based), ``elapsed_s`` seconds into training;
        collective. ``reported``: its losses will be logged or shown, so terms the objective only
        reports (not trains on) are worth computing."""

    @abstractmethod
    def reduce(self, terms: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A step's loss terms over the whole process group, as the values of a ``log.jsonl``
        line (called on logged steps and a launch's first step only, so a GPU is not synchronised
        at every step); collective."""

    def losses(self, values: dict[str, Any]) -> dict[str, float]:
        """The named losses a progress event carries, from :meth:`reduce`'s values (default: its numbers)."""
        return {k: float(v) for k, v in values.items() if isinstance(v, float)}

    def evaluate(self, step: int, tokens: int) -> dict[str, float]:
        """Validation figures after ``step``, every ``eval_every`` steps and at the last (the main
        process's are logged); collective."""
        return {}

    def logged(self, record: dict[str, Any]) -> None:
        """Called on the main process with every line written to ``log.jsonl`` (experiment trackers)."""

    @abstractmethod
    def checkpoint(self, folder: RunFolder, step: int, record: dict[str, Any]) -> Path:
        """Write the checkpoint of ``step`` through ``folder.checkpoint``, with ``record`` (tokens,
        training time) in its state; return its folder. Collective."""

    @abstractmethod
    def finish(self, end: RunEnd) -> Path:
        """Save the trained result (main process) and return its folder; collective."""

    def close(self) -> None:
        """Release what the run held (trackers), whether it finished, stopped or failed."""


def train(
    objective: Objective,
    config: RunConfig,
    out: Path,
    settings: dict[str, Any],
    progress: Callable[[DistillProgress], None] | None = None,
    should_stop: StopSignal = None,
    *,
    time_limit_s: float | None = None,
    show_progress_bar: bool = False,
) -> Path:
    """Run ``objective`` for ``config.steps`` steps into ``out`` (see the module docstring); return
    the objective's result folder, or the checkpoint it stopped at.

    ``settings`` is what ``config.json`` records. ``progress`` gets an event after every step and
    at the end (main process). ``should_stop`` is polled after every step: a checkpoint is written
    and the run returns it; ``config.resume`` later continues from it. After ``time_limit_s``
    seconds of training the run ends early and still saves its result. Call it inside
    :func:`run_lock`, after :func:`check_out`.
    """
    peers = Peers()
    say = progress if peers.main else None
    folder = RunFolder(out, peers, config.keep_checkpoints)
    found = read_checkpoint(out, objective.check, objective.load, peers) if config.resume else None
    step = int(found[1]["step"]) if found is not None else 0
    before = float(found[1].get("elapsed_s", 0.0)) if found is not None else 0.0  # earlier launches
    folder.begin(step if found is not None else None, settings)

    bar = tqdm(total=config.steps, initial=step, disable=not (show_progress_bar and say is not None),
               dynamic_ncols=True)
    start = step
    elapsed, lr, tok_s = 0.0, 0.0, 0.0  # this launch's training time, the last step's lr, its speed
    last: dict[str, float] = {}  # the losses of the last logged step
    stopped_early = False

    def evaluated(s: int) -> bool:  # validation after step s
        return bool(config.eval_every) and (s % config.eval_every == 0 or s == config.steps)

    def logged(s: int) -> bool:  # a log.jsonl line after step s (a time limit's end adds one)
        return s % config.log_every == 0 or s == config.steps or evaluated(s)

    def event(kind: Event, eta: float | None, ck: Path | None = None) -> None:
        if say is not None:
            say(progress_event(step, config.steps, last, lr, tok_s, eta, before + elapsed, kind, ck))

    try:
        objective.begin(step)
        t0 = time.perf_counter()  # training time starts after the objective's preparations
        while step < config.steps:
            done = objective.step(step, before + time.perf_counter() - t0, logged(step + 1) or step == start)
            step += 1
            lr, elapsed = done.lr, time.perf_counter() - t0
            tokens = objective.tokens_after(step)
            tok_s = (tokens - objective.tokens_after(start)) / max(elapsed, 1e-9)
            eta = (config.steps - step) * elapsed / max(1, step - start)

            # Collective: every process stops at the same step (the main one's clock and signals).
            over_time = time_limit_s is not None and step < config.steps and folder.stop_now(
                None, before + elapsed >= time_limit_s)
            stop = step < config.steps and folder.stop_now(should_stop)

            validation = objective.evaluate(step, tokens) if evaluated(step) else {}
            log_now = logged(step) or over_time
            if log_now or step == start + 1:  # the first step's losses stand until the first log line
                values = objective.reduce(done.terms)
                last = objective.losses(values)
                bar.set_postfix({k: f"{last[k]:.4g}" for k in objective.bar_fields if k in last}, refresh=False)
            if log_now:
                record = {"step": step, **values, "lr": lr, "tokens": tokens, "tokens_per_s": round(tok_s, 1),
                          "world_size": peers.world, "elapsed_s": round(before + elapsed, 2), "eta_s": round(eta, 1),
                          **{k: round(v, 4) for k, v in validation.items()}}
                folder.log(record)
                if peers.main:
                    objective.logged(record)
            bar.update(1)

            ck = None
            if step % config.save_every == 0 or stop:
                ck = objective.checkpoint(folder, step, {"tokens": tokens, "elapsed_s": before + elapsed})
            event("checkpoint" if ck is not None else "step", eta, ck)
            if stop:
                event("stopped", None, ck)
                return ck  # type: ignore[return-value]
            if over_time:
                stopped_early = True
                break
    finally:
        bar.close()
        folder.close()
        objective.close()

    result = objective.finish(RunEnd(step, objective.tokens_after(step), before + elapsed, stopped_early))
    event("done", 0.0)
    return result
