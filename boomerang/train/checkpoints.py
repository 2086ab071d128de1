"""Checkpoints of a training run: one format for every objective, safetensors and JSON, no pickle.

A run folder holds ``checkpoints/step-N`` folders, the newest ``keep`` of them. Each holds

- ``state.safetensors``: the weights that train (``model.<parameter name>``), the optimizer's
  tensors (``opt.<parameter index>.<name>``: AdamW's moments) and the random generator's state
  (``rng.cpu``, ``rng.cuda``);
- ``trainer_state.json`` (:data:`STATE_FILE`): the step, tokens, training time, number of
  processes and global batch, the layer mapping, the optimizer's scalars and parameter groups,
  the scheduler's state, and whatever the objective adds. It is written last, so its presence
  marks a checkpoint complete; a checkpoint is written into a temporary folder and renamed into
  place, so a kill leaves the newest checkpoint whole or absent.

Whole-model and block-local distillation write the same format (:func:`save_checkpoint`,
:func:`read_checkpoint`); a sharded student (FSDP, :mod:`.sharding`) writes the same tensors,
each process its slices, as ``shard-<rank>.safetensors`` beside the same state file. ``log.jsonl`` (one JSON line per
logged step) is trimmed back to a resumed checkpoint's step, so it never holds a step twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from ..errors import BoomerangError
from ..io import atomic_write, replace_dir
from .processes import Peers

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last inside a checkpoint: its presence marks it complete
TENSORS_FILE = "state.safetensors"


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


# ---- the optimizer and the random generator as tensors + JSON ---------------------------------


def _own(t: torch.Tensor) -> torch.Tensor:
    """This process's part of ``t``: its slice of a sharded tensor, else ``t`` itself (detached)."""
    return (t.to_local() if isinstance(t, DTensor) else t).detach()


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` (this process's part of each) as safetensors at ``path``."""
    # Tied weights share storage, which safetensors refuses: each entry gets its own copy.
    save_file({k: _own(v).cpu().contiguous().clone() for k, v in tensors.items()}, str(path))


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as tensors (``opt.<index>.<name>``, this process's slices of sharded
    ones; not yet copied) and a JSON part (its scalars, such as AdamW's step count, and its
    parameter groups: the same on every process)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, float]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"opt.{pid}.{k}"] = _own(v)
            else:
                scalars.setdefault(str(pid), {})[k] = float(v)
    return tensors, {"param_groups": sd["param_groups"], "optimizer_scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_state` (the optimizer moves the tensors to its parameters'
    device; a sharded parameter's moments become sharded tensors again, from this process's slices)."""
    params = [p for group in opt.param_groups for p in group["params"]]  # the order of the indices
    per_param: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            p = params[int(pid)]
            if isinstance(p, DTensor):
                v = DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, run_check=False,
                                       shape=p.shape, stride=p.stride())
            per_param.setdefault(int(pid), {})[name] = v
    for pid, scalars in state.get("optimizer_scalars", {}).items():
        for name, value in scalars.items():
            per_param.setdefault(int(pid), {})[name] = torch.tensor(value)
    opt.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random generator states (dropout draws from them), as tensors."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def load_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state` (a CUDA state is restored only where CUDA runs)."""
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


# ---- writing and reading ----------------------------------------------------------------------


def checkpoint_folders(out: Path, step: int) -> tuple[Path, Path]:
    """(the checkpoint of ``step`` in run folder ``out``, the temporary folder it is written in)."""
    root = out / CHECKPOINT_DIR
    return root / f"step-{step:08d}", root / f".tmp-step-{step:08d}"


def save_checkpoint(out: Path, step: int, state: dict[str, Any], keep: int,
                    tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``checkpoints/step-<step>`` of run folder ``out`` (main process only): ``tensors``
    to :data:`TENSORS_FILE`, then ``state`` (with ``step``) to :data:`STATE_FILE`, beside
    whatever the processes already wrote into its temporary folder (their shards, see
    :meth:`.run.RunFolder.checkpoint`); keep the newest ``keep`` checkpoints."""
    final, tmp = checkpoint_folders(out, step)
    tmp.mkdir(parents=True, exist_ok=True)
    if tensors is not None:
        write_tensors(tmp / TENSORS_FILE, tensors)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2) + "\n", encoding="utf-8")
    replace_dir(tmp, final)  # a checkpoint is complete or absent
    for _, old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial_checkpoints(out: Path) -> None:
    """Delete what a save cut short by a kill left behind (``checkpoints/.tmp-step-*``)."""
    for stale in (out / CHECKPOINT_DIR).glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_checkpoint(out: Path, check: Callable[[Path, dict[str, Any]], None],
                    load: Callable[[Path, dict[str, Any], dict[str, torch.Tensor] | None], None],
                    peers: Peers | None = None) -> tuple[Path, dict[str, Any]] | None:
    """Resume from the newest checkpoint of ``out`` that reads back; None when there is none.

    ``check(folder, state)`` raises a :class:`BoomerangError` when the checkpoint cannot serve
    these settings (another mapping, another global batch): that is the user's to fix, not a
    reason to fall back. ``load(folder, state, tensors)`` restores it (``tensors``: the
    checkpoint's :data:`TENSORS_FILE`, None when it has none). A checkpoint whose files cannot
    be read (torn by a kill, a full disk) is skipped for the one before it, and said so.

    With ``peers`` (several processes, each reading its files: a shard of its own) every process
    must resume from the same step; a process that fell back alone stops them all in one sentence."""
    got = _read_newest(out, check, load)
    if peers is not None and peers.world > 1:
        steps = peers.values(got[1]["step"] if got is not None else -1)
        if len(set(steps)) > 1:
            raise BoomerangError(
                f"The processes could not read the same checkpoint in {str(out / CHECKPOINT_DIR)!r} (steps "
                f"{', '.join(str(s) if s >= 0 else 'none' for s in steps)}, in process order); a file of "
                "the newest is damaged: delete that checkpoint folder and resume again.")
    return got


def _read_newest(out: Path, check: Callable[[Path, dict[str, Any]], None],
                 load: Callable[[Path, dict[str, Any], dict[str, torch.Tensor] | None], None]
                 ) -> tuple[Path, dict[str, Any]] | None:
    found = checkpoints(out)
    for _, ckpt in reversed(found):
        try:
            state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
            if not isinstance(state, dict) or not isinstance(state.get("step"), int):
                raise ValueError("no step recorded")
        except (OSError, ValueError) as e:
            log.warning("checkpoint %s cannot be read (its %s: %s); trying the one before it",
                        ckpt, STATE_FILE, str(e).split("\n")[0][:200])
            continue
        check(ckpt, state)
        try:
            tensors = load_file(str(ckpt / TENSORS_FILE)) if (ckpt / TENSORS_FILE).is_file() else None
            load(ckpt, state, tensors)
        except BoomerangError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt file: try the one before
            log.warning("checkpoint %s cannot be read (%s: %s); trying the one before it",
                        ckpt, type(e).__name__, str(e).split("\n")[0][:200])
            continue
        if ckpt != found[-1][1]:
            log.warning("resuming from %s, the newest checkpoint that reads back", ckpt)
        return ckpt, state
    if found:
        raise BoomerangError(
            f"No checkpoint in {str(out / CHECKPOINT_DIR)!r} reads back (all are damaged); start a new run "
            "with another --out.")
    return None


def check_global_batch(ckpt: Path, state: dict[str, Any], global_batch: int, what: str) -> None:
    """Refuse a checkpoint trained with another number of sequences per step: the data order and
    the averaged gradient depend on it (``what`` names its factors, for the message)."""
    saved = state.get("global_batch")
    if saved is not None and saved != global_batch:
        raise BoomerangError(
            f"The checkpoint {str(ckpt)!r} was trained with {saved} sequences per step "
            f"({what} x {state.get('world_size', 1)} process(es)), but these settings give {global_batch}; "
            f"choose a batch size that keeps {saved} sequences per step.")
