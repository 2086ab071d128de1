"""The interpolation curve while a student trains: every size, from the student to the teacher.

The boomerang phenomenon is a curve, not a number: patching student layers back into their
teacher blocks, last to first, walks from the student to the teacher through every size in
between. A training run with ``eval_every`` measures that whole curve on validation text every
``eval_every`` steps and appends it to ``OUT/curves.jsonl``, one JSON line per curve::

    {"step": 200, "tokens": 409600, "order": "last-to-first", "layers": [7, 8, ..., 12],
     "perplexity": [41.2, 38.0, ..., 17.3]}

At step 0 the run also measures the curve of the student as initialised and, once, the teacher
pruned naively to every size (``"order": "naive-pruning"``): the reference a distilled student
must beat. Watching the curves of successive steps shows the boomerang forming: at step 0 the
intermediate sizes are the pruned teacher's; as the student learns, the whole curve drops
towards a smooth line from student to teacher. The Train page draws them live and replays them.
Every objective measures them the same way (:func:`starting_curves` when a run starts,
:func:`validate` at each evaluation): whole-model and block-local distillation alike.

The models are built zero-copy from the student being trained (:meth:`BoomerangPair.build`), so
a curve costs a few forwards of shared prefixes (:func:`~boomerang.eval.perplexity_many`). Under
bf16 the student keeps float32 master weights while the teacher is bf16: the curve is measured
with a bf16 copy of the student, so that every size runs in one dtype.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SEQUENTIAL_ORDERS, BoomerangPair, LayerMapping
from ..data import load_blocks
from ..errors import BoomerangError
from ..eval import Curve, perplexity, perplexity_many
from ..io import atomic_write
from ..orders import prune_teacher, pruning_order
from .config import RunConfig

CURVES_FILE = "curves.jsonl"
NAIVE = "naive-pruning"


def eval_pair(teacher: nn.Module, student: nn.Module, mapping: LayerMapping) -> BoomerangPair:
    """A pair for measuring patched sizes of a student in training (a copy in the teacher's
    dtype when the two differ, as under bf16 mixed precision; else the student itself)."""
    t_dtype = next(teacher.parameters()).dtype
    if next(student.parameters()).dtype != t_dtype:
        # A new model, not a deepcopy: Accelerate's mixed-precision forward lives in the trained
        # model's __dict__ and would run the original from inside the copy.
        twin = type(student)(student.config)
        twin.load_state_dict(student.state_dict())
        student = twin.to(device=next(teacher.parameters()).device, dtype=t_dtype).eval()
    return BoomerangPair(teacher, student, mapping)


@torch.no_grad()
def sequential_perplexities(pair: BoomerangPair, val_blocks: torch.Tensor, order: str = "last-to-first",
                            batch_size: int = 8) -> list[float]:
    """Validation perplexity of ``order``'s model with ``k`` student layers patched, for every
    ``k`` from 0 (the student) to all (the teacher), sharing the forwards of common prefixes."""
    if order not in SEQUENTIAL_ORDERS:
        raise ValueError(f"curves are measured for {SEQUENTIAL_ORDERS}, not {order!r}")
    sets = [pair.sequential(order, k) for k in range(pair.num_student_layers + 1)]
    results, _ = perplexity_many(pair, sets, val_blocks, batch_size=batch_size)
    return [r.perplexity for r in results]


def curve_record(pair: BoomerangPair, per_k: list[float], step: int, tokens: int,
                 order: str = "last-to-first") -> dict[str, Any]:
    """The ``curves.jsonl`` line of ``step`` from :func:`sequential_perplexities`: one point per
    size (several ``k`` reach one size when frozen one-to-one layers are patched: the first)."""
    by_size = Curve({"layers": pair.mapping.patched_layers(pair.sequential(order, k)), "perplexity": p}
                    for k, p in enumerate(per_k)).by_size()
    sizes = sorted(by_size)
    return {"step": step, "tokens": tokens, "order": order, "layers": sizes,
            "perplexity": [round(by_size[L]["perplexity"], 4) for L in sizes]}


@torch.no_grad()
def pruning_record(pair: BoomerangPair, val_blocks: torch.Tensor, batch_size: int = 8) -> dict[str, Any]:
    """The naively pruned teacher at every size from the student's to the teacher's, as a
    ``curves.jsonl`` line (step 0: it does not change while the student trains)."""
    kept = pruning_order(pair, "naive")
    sizes = sorted(kept)
    ppl = [perplexity(prune_teacher(pair, kept[L]), val_blocks, batch_size=batch_size).perplexity for L in sizes]
    return {"step": 0, "tokens": 0, "order": NAIVE, "layers": sizes, "perplexity": [round(p, 4) for p in ppl]}


def append_curve(out: str | os.PathLike, record: dict[str, Any]) -> None:
    """Add one curve to ``OUT/curves.jsonl``."""
    with open(Path(out) / CURVES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_curves(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The curves of a run folder, in the order they were measured (a torn last line is skipped)."""
    path = Path(out) / CURVES_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and {"step", "order", "layers", "perplexity"} <= rec.keys():
            rows.append(rec)
    return rows


def trim_curves(out: str | os.PathLike, max_step: int) -> None:
    """Drop curves measured after ``max_step`` (a resumed run measures them again)."""
    path = Path(out) / CURVES_FILE
    if path.is_file():
        keep = [r for r in read_curves(out) if int(r["step"]) <= max_step]
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))


# ---- what a training run measures ---------------------------------------------------------------


def validation_blocks(config: RunConfig, tokenizer: Any, given: torch.Tensor | None) -> torch.Tensor | None:
    """The blocks a run with ``config.eval_every`` validates on: ``given`` (``[n, T]`` token ids,
    cut to ``config.seq_len``), else ``config.eval_blocks`` blocks of the data's validation
    split; None when the run does not validate."""
    if not config.eval_every:
        return None
    if given is not None:
        return given[:, : config.seq_len].long()
    if tokenizer is None:
        raise BoomerangError("--eval-every needs a tokenizer to read the validation text with.")
    return load_blocks(config.data, tokenizer, config.seq_len, split="validation", max_blocks=config.eval_blocks)


def patched_sizes(mapping: LayerMapping) -> list[int]:
    """The few sizes watched in ``log.jsonl`` during training: ``k`` student layers patched
    last-to-first at about a third and two thirds of the way from student to teacher
    (distinct, strictly between)."""
    n = mapping.num_student_layers
    return sorted({k for k in (round(n / 3), round(2 * n / 3)) if 0 < k < n})


def starting_curves(out: Path, teacher: nn.Module, student: nn.Module, mapping: LayerMapping,
                    val_blocks: torch.Tensor, batch_size: int) -> None:
    """Where the boomerang starts, appended to ``curves.jsonl``: the teacher pruned naively to
    every size and the student as initialised, patched last-to-first (step 0)."""
    pair = eval_pair(teacher, student, mapping)
    append_curve(out, pruning_record(pair, val_blocks, batch_size))
    append_curve(out, curve_record(pair, sequential_perplexities(pair, val_blocks, "last-to-first", batch_size), 0, 0))


def validate(out: Path, student: nn.Module, teacher: nn.Module | None, mapping: LayerMapping | None,
             val_blocks: torch.Tensor, batch_size: int, step: int, tokens: int,
             autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> dict[str, float]:
    """Validate the ``student`` in training (whole, on this process) after ``step``.

    Returns ``{"val_ppl": ..., "val_ppl_k<k>": ...}`` for ``log.jsonl``: the student's perplexity
    (its forward under ``autocast``, as it trains) and, with a teacher, the patched sizes of
    :func:`patched_sizes`; the whole last-to-first curve goes to ``curves.jsonl``."""
    with autocast():
        figures = {"val_ppl": perplexity(student, val_blocks, batch_size=batch_size).perplexity}
    if teacher is None or mapping is None:
        return figures
    pair = eval_pair(teacher, student, mapping)
    per_k = sequential_perplexities(pair, val_blocks, "last-to-first", batch_size)
    figures.update({f"val_ppl_k{k}": per_k[k] for k in patched_sizes(mapping)})
    append_curve(out, curve_record(pair, per_k, step, tokens))
    return figures
