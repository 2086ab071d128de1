"""Checkpoints of a training run: where they live, which is the newest complete one, the log.

A run folder holds ``checkpoints/step-N`` folders (Accelerate's ``save_state`` plus
:data:`STATE_FILE`, written last, so its presence marks a checkpoint complete) and
``log.jsonl``, one JSON line per logged step. After a resume the log is trimmed back to the
checkpoint's step so that it never holds a step twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import atomic_write

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last inside a checkpoint: its presence marks it complete


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out``, oldest first."""
    root = out / CHECKPOINT_DIR
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("step-") and (p / STATE_FILE).is_file():
                try:
                    found.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(found)


def last_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    cks = checkpoints(Path(out))
    return cks[-1][1] if cks else None


def trim_log(log_path: Path, max_step: int) -> None:
    """Drop log lines after ``max_step`` (and a torn last line) so a resumed log stays continuous."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by kill -9
        if int(rec.get("step", 0)) <= max_step:
            keep.append(line)
    atomic_write(log_path, "".join(k + "\n" for k in keep))

