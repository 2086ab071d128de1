"""The life of a training run in its output folder, the same for every objective.

Whole-model distillation and pretraining (:mod:`.loop`) and block-local distillation
(:mod:`.local`) train different weights in different ways, but around their steps a run lives
the same life, written here once:

1. :func:`check_out` refuses an ``--out`` that holds something other than this run, and
   :func:`run_lock` keeps a second process from training into it;
2. :meth:`RunFolder.begin` starts the folder: on a resume it trims ``log.jsonl`` and
   ``curves.jsonl`` back to the checkpoint's step, on a fresh start it drops what a run killed
   before its first checkpoint left, and it records the settings in ``config.json``;
3. :meth:`RunFolder.log` appends one JSON line per logged step;
4. :meth:`RunFolder.checkpoint` writes a checkpoint in the one format of :mod:`.checkpoints`;
5. :meth:`RunFolder.stop_now` decides, on every process at once, whether to stop at this step
   (a stop request or a time limit on the main process stops them all, since a checkpoint is
   collective).

Only the main process of a multi-process run writes; every method may be called on every process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import BoomerangError
from ..io import atomic_write
from ..progress import StopSignal, stop_requested
from . import trackers
from .checkpoints import (
    CHECKPOINT_DIR,
    checkpoint_folders,
    checkpoints,
    remove_partial_checkpoints,
    save_checkpoint,
    trim_log,
)
from .config import RunConfig
from .curves import CURVES_FILE, trim_curves
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

