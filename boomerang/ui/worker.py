"""The dashboard's training runs in a child process: a job in on stdin, progress out on stdout.

Why a process and not a thread: a training loop on a small model makes thousands of short torch
calls a second and holds Python's GIL between them. In the server's own process that starved
every page of the dashboard (a slider move took a second instead of a fifth of one). A child
process has its own interpreter; the server only reads its lines.

The protocol is JSON text on the child's pipes (nothing is pickled):

- stdin, first line: ``{"kind": "distill", "config": {...DistillConfig...}, "threads": n}`` or
  ``{"kind": "build", "family": name, "out": folder}`` (a named pair's student recipe, see
  :data:`boomerang.recipes.STUDENT_BUILDS`; threads optional). Then a ``stop`` line asks for a
  checkpoint and an end; end of file (the server went away) does the same, so no run trains on
  unwatched and none dies without its checkpoint.
- stdout: one object per training step (the fields of a
  :class:`~boomerang.train.DistillProgress`), then a last ``{"result": folder, "stopped": bool}``
  or ``{"error": sentence}``.

Run as ``python -m boomerang.ui.worker``; :func:`launch` starts it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import torch

from ..errors import BoomerangError
from ..recipes import build_student
from ..train import DistillConfig, DistillProgress, distill

KINDS = ("distill", "build")


def device_env(device: str | None) -> dict[str, str]:
    """Environment that makes a child train on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:<i>"``;
    None: wherever Accelerate would choose): CUDA hidden for the CPU, one GPU shown for ``cuda:<i>``."""
    if device in (None, "cuda"):
        return {}
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    index = device.removeprefix("cuda:") if isinstance(device, str) else ""
    if not index.isdigit():
        raise BoomerangError(f"Unknown training device {device!r}; choose cpu, cuda or cuda:<index>.")
    return {"CUDA_VISIBLE_DEVICES": index}


def launch(job: dict[str, Any], device: str | None = None) -> subprocess.Popen:
    """Start a worker for ``job`` (the first stdin line, as a dict) on ``device`` (see
    :func:`device_env`); its pipes stay open."""
    if job.get("kind") not in KINDS:
        raise BoomerangError(f"Unknown training job kind {job.get('kind')!r}; known are {', '.join(KINDS)}.")
    # The child imports this same copy of the package, installed or not (the working folder is
    # kept: relative paths in the job mean what they meant to the server).
    here = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p),
           **device_env(device)}
    proc = subprocess.Popen([sys.executable, "-m", "boomerang.ui.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            bufsize=1, env=env)
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    return proc


def progress_record(p: DistillProgress) -> dict[str, Any]:
    """The JSON line of one progress update (also what the dashboard keeps as history)."""
    return {"step": p.step, "total": p.total, "lr": p.lr, "tokens_per_s": p.tokens_per_s, "eta_s": p.eta_s,
            "elapsed_s": p.elapsed_s, "event": p.event, **p.losses}


def _watch_stdin(stdin: TextIO, stop: threading.Event) -> None:
    for line in stdin:
        if line.strip() == "stop":
            break
    stop.set()  # asked to stop, or the server closed the pipe


def _run(job: dict[str, Any], out: TextIO, stop: threading.Event) -> None:
    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    try:
        threads = job.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        if job["kind"] == "distill":
            result = distill(DistillConfig.from_dict(job["config"]),
                             progress=lambda p: emit(progress_record(p)), should_stop=stop)
        else:  # the recipe's own thread count unless the job names one
            result = build_student(job["family"], job["out"], progress=lambda p: emit(progress_record(p)),
                                   should_stop=stop, **({"threads": int(threads)} if threads else {}))
        emit({"result": str(result), "stopped": stop.is_set()})
    except BoomerangError as e:
        emit({"error": str(e)})
    except Exception as e:  # noqa: BLE001 - reported to the dashboard as one sentence
        emit({"error": f"Training failed: {type(e).__name__}: {e}".split("\n")[0]})


def main() -> int:
    """The child's side: read the job, train, write progress lines."""
    # Protocol lines go to the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    job = json.loads(sys.stdin.readline() or "{}")
    if job.get("kind") not in KINDS:
        out.write(json.dumps({"error": f"Unknown training job kind {job.get('kind')!r}."}) + "\n")
        return 2
    stop = threading.Event()
    # Ctrl-C in the server's terminal reaches this process too: checkpoint, then end.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=_watch_stdin, args=(sys.stdin, stop), daemon=True).start()
    _run(job, out, stop)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
