"""What the dashboard's pages compute: pair descriptions, curves, points, similarity, exports.

Adapters from the backend (:mod:`boomerang.eval`, :mod:`boomerang.orders`) to what a page shows:
a whole curve for one order, one point with its size, the composed layer strip, similarity
tables, latency, a zipped export. Pages call these and only lay out the results.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import eval as evaluate
from .. import orders
from ..cache import Memo
from ..core import BoomerangPair, Patched, export_model
from ..eval.curve import Curve
from ..errors import BoomerangError
from ..progress import Progress, report

#: Results the pages computed, shared by sessions (values are treated as read-only).
RESULTS = Memo()


# --------------------------------------------------------------------------------------------
# Describing a pair


def block_label(block: tuple[int, ...]) -> str:
    """``(4, 5)`` -> "T4–5", ``(11,)`` -> "T11"."""
    return f"T{block[0]}" if len(block) == 1 else f"T{block[0]}–{block[-1]}"


def layer_labels(pair: BoomerangPair) -> list[str]:
    """One label per student layer: "S2 → T4–5"."""
    return [f"S{i} → {block_label(b)}" for i, b in enumerate(pair.mapping.blocks)]


def strip_cells(pair: BoomerangPair, patched: Iterable[int]) -> list[dict[str, Any]]:
    """The composed model, bottom to top: one dict per layer (position, source, index, student layer)."""
    patched = pair.mapping.check_patched(patched)
    cells = []
    for i, block in enumerate(pair.mapping.blocks):
        if i in patched:
            cells += [{"source": "teacher", "index": t, "student_layer": i} for t in block]
        else:
            cells.append({"source": "student", "index": i, "student_layer": i})
    for p, c in enumerate(cells):
        c["position"] = p
    return cells


def size_of(pair: BoomerangPair, patched: Iterable[int]) -> dict[str, int]:
    """Layers and parameters of the model built with ``patched``."""
    patched = pair.mapping.check_patched(patched)
    return {"layers": pair.mapping.patched_layers(patched),
            "params": int(pair.num_parameters(patched))}


def pair_summary(pair: BoomerangPair) -> dict[str, Any]:
    """Sizes of both ends, for headers and the Learn page."""
    n = pair.mapping.num_student_layers
    return {
        "name": pair.name or "",
        "architecture": type(pair.teacher).__name__,
        "student_layers": n,
        "teacher_layers": pair.mapping.num_teacher_layers,
        "student_params": int(pair.num_parameters(())),
        "teacher_params": int(pair.num_parameters(range(n))),
        "device": str(next(pair.teacher.parameters()).device),
    }


# --------------------------------------------------------------------------------------------
# Data


def load_eval_blocks(pair: BoomerangPair, source: str, seq_len: int, max_blocks: int,
                     split: str = "validation") -> torch.Tensor:
    """Held-out token blocks of ``source`` for evaluation (:meth:`EvalConfig.eval_blocks`)."""
    return evaluate.EvalConfig(data=source, split=split, seq_len=seq_len, blocks=max_blocks).eval_blocks(pair)


def calibration_ids(pair: BoomerangPair, source: str, seq_len: int, n: int = 8) -> torch.Tensor:
    """A few training blocks to choose data-driven orders on, never the evaluation blocks
    (:meth:`EvalConfig.calibration`)."""
    return evaluate.EvalConfig(calib_data=source, calib_len=seq_len, calib_n=n).calibration(pair)


# --------------------------------------------------------------------------------------------
# Evaluation (adapters over boomerang.eval / boomerang.orders)


def perplexity(model: Any, blocks: torch.Tensor) -> tuple[float, float]:
    """(perplexity, mean NLL) of ``model`` on ``blocks``."""
    r = evaluate.perplexity(model, blocks)
    return float(r.perplexity), float(r.nll)


def evaluate_point(pair: BoomerangPair, patched: Iterable[int], blocks: torch.Tensor) -> dict[str, Any]:
    """Perplexity, NLL, layers and parameters of the model built with ``patched``."""
    patched = pair.mapping.check_patched(patched)
    r = evaluate.evaluate_patched(pair, patched, blocks)
    return {"patched": patched.as_tuple(), "perplexity": float(r.perplexity), "nll": float(r.nll),
            **size_of(pair, patched)}


def available_orders(pair: BoomerangPair | None = None) -> list[str]:
    """Patch orders the backend can compute for ``pair`` (no exhaustive search on large students)."""
    return orders.available_orders(pair)


def missing_orders_note(pair: BoomerangPair) -> str | None:
    """Why the exhaustive optimum is not offered for ``pair`` (a student too large for it), or
    None when it is."""
    if "optimal" in orders.available_orders(pair):
        return None
    return ("Not offered here: optimal, the exhaustive search over every subset, which is "
            f"limited to students of at most {orders.MAX_EXHAUSTIVE_LAYERS} layers (this one has "
            f"{pair.num_student_layers}: 2^{pair.num_student_layers} subsets). shortest-path finds the best "
            "subset of each size for a run-additive estimate of the same KL in polynomial time.")


def available_baselines() -> list[str]:
    """Pruning baselines the backend's sweep knows."""
    return list(orders.BASELINES)


def order_caption(order: str) -> str:
    """What ``order`` optimises and on which data, for a legend or caption."""
    return orders.get_order(order).optimises


def order_sets(pair: BoomerangPair, order: str, calib: torch.Tensor | None = None) -> list[frozenset]:
    """The patched set at each size ``k = 0..n`` of ``order``."""
    return orders.patch_order(pair, order, calib)


def normalize_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """A sweep frame with ``patched`` as sorted tuples (baseline rows: empty)."""
    df = df.copy()
    if "patched" in df:
        df["patched"] = df["patched"].map(lambda p: Patched.coerce(p).as_tuple())
    return df


def curve(pair: BoomerangPair, order: str, blocks: torch.Tensor, calib: torch.Tensor | None = None,
          progress: Progress | None = None) -> Curve:
    """One order's :class:`~boomerang.eval.Curve`: a row per size k (order, k, patched, layers,
    params, perplexity with its 95% interval, nll)."""
    return Curve.from_frame(normalize_sweep(evaluate.sweep(pair, [order], data=blocks, calib_ids=calib,
                                                           progress=progress)))


def available_metrics() -> list[str]:
    """Metrics a sweep can report: perplexity, and the offline lm-eval tasks when supported."""
    return ["perplexity", *evaluate.OFFLINE_TASKS]


#: Examples per size behind an accuracy drawn beside perplexity (Interpolate, Layer picker): enough
#: for a 95% interval of about +-10 points, few enough for half a minute per demo curve.
ACCURACY_EXAMPLES = 100


def accuracy_curve(pair: BoomerangPair, order: str, task: str, blocks: torch.Tensor,
                   calib: torch.Tensor | None = None, progress: Progress | None = None) -> Curve:
    """Zero-shot accuracy on ``task`` at every size of ``order`` (:data:`ACCURACY_EXAMPLES`
    examples each), with its Wilson interval: a curve whose rows hold ``task``, ``task_lo`` and
    ``task_hi``, cached on disk like the perplexity curves."""
    return Curve.from_frame(sweep(pair, [order], blocks, calib, progress, task, ACCURACY_EXAMPLES))


def accuracy_point(pair: BoomerangPair, patched: Iterable[int], task: str,
                   progress: Progress | None = None) -> dict[str, float]:
    """Zero-shot accuracy on ``task`` of the model with ``patched`` student layers replaced
    (:data:`ACCURACY_EXAMPLES` examples): ``{"accuracy", "lo", "hi"}`` (95% Wilson interval)."""
    got = evaluate.accuracy_intervals(pair.build(patched=patched), pair.tokenizer, [task],
                                      limit=ACCURACY_EXAMPLES, progress=progress).get(task)
    if got is None:
        raise BoomerangError(f"Task {task!r} reports no accuracy, so it cannot be drawn beside perplexity.")
    return {"accuracy": got["accuracy"], "lo": got["lo"], "hi": got["hi"]}


def sweep(pair: BoomerangPair, orders: list[str], blocks: torch.Tensor, calib: torch.Tensor | None = None,
          progress: Progress | None = None, metric: str = "perplexity",
          limit: int | None = None) -> pd.DataFrame:
    """Several orders' curves (and pruning baselines) in one frame.

    ``metric`` is "perplexity" (columns perplexity, nll) or an lm-eval task name (a column with
    its accuracy, ``limit`` examples).
    """
    return normalize_sweep(evaluate.sweep(pair, list(orders), data=blocks, metrics=[metric],
                                          calib_ids=calib, limit=limit,
                                          progress=progress))


def compare_model(pair: BoomerangPair, label: str, folder: str, blocks: torch.Tensor,
                  metric: str = "perplexity", limit: int | None = None) -> pd.DataFrame:
    """Another model (e.g. a student of the same teacher trained otherwise) as one row beside the
    curves, ``order`` ``"model: <label>"``; refused when its tokenizer is not the pair's."""
    return normalize_sweep(evaluate.compare_rows(pair, {label: folder}, blocks, [metric], limit=limit))


def same_size_points(pair: BoomerangPair, students: dict[int, str | os.PathLike], blocks: torch.Tensor,
                     metric: str = "perplexity", limit: int | None = None) -> pd.DataFrame:
    """Students distilled directly at some sizes as points beside the curves (``order``
    ``"distilled at this size"``), measured on the same blocks."""
    return normalize_sweep(evaluate.same_size_rows(pair, students, blocks, [metric], limit=limit))


def single_layer_gains(pair: BoomerangPair, blocks: torch.Tensor,
                       progress: Progress | None = None) -> pd.DataFrame:
    """Perplexity drop from patching each student layer alone (student ppl - patched ppl)."""
    base = evaluate_point(pair, (), blocks)
    rows = []
    n = pair.mapping.num_student_layers
    for i in range(n):
        report(progress, i, n, f"patching layer {i} alone")
        p = evaluate_point(pair, (i,), blocks)
        rows.append({"student_layer": i, "block": block_label(pair.mapping.blocks[i]),
                     "perplexity": p["perplexity"], "gain": base["perplexity"] - p["perplexity"],
                     "nll_gain": base["nll"] - p["nll"], "params_added": p["params"] - base["params"]})
    return pd.DataFrame(rows)


def similarity_tables(pair: BoomerangPair, calib: torch.Tensor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(student x teacher cosine-similarity matrix, one row per student layer with its gains)."""
    per_layer = evaluate.block_similarity(pair, calib).copy()
    per_layer["label"] = [f"S{i} → {block_label(b)}" for i, b in enumerate(pair.mapping.blocks)]
    return evaluate.similarity_matrix(pair, calib), per_layer


def mapping_cells(pair: BoomerangPair) -> list[tuple[str, str]]:
    """(row, column) labels of the similarity matrix where each student state should match."""
    cells = [("emb", "emb")]
    cells += [(f"s{i}", f"t{b[-1]}") for i, b in enumerate(pair.mapping.blocks)]
    return cells


def time_layer_counts(pair: BoomerangPair, counts: Iterable[int], measured: dict[int, float], batch: int = 1,
                      progress: Progress | None = None) -> dict[int, float]:
    """Latency per token (ms, median of 3 runs, decoding ``batch`` sequences) of a model of this
    pair with each of ``counts`` decoder layers, timed once per count into ``measured``.

    Every decoder layer of a pair has the teacher's shapes, so any two models with as many layers
    (patched in any order, pruned, or distilled at that size) do the same work: each count is
    timed on the last-to-first model of that depth, or, below the student's depth (a pruning
    baseline), on the teacher cut to it. ``measured`` keeps the timings between calls, so a
    second order's sizes cost nothing to time."""
    n = pair.mapping.num_student_layers
    by_layers = {pair.mapping.patched_layers(pair.sequential("last-to-first", k)): k for k in range(n + 1)}
    todo = sorted({int(c) for c in counts} - set(measured))
    for i, layers in enumerate(todo):
        report(progress, i, len(todo), f"timing {layers} layers")
        if layers in by_layers:
            model = pair.build(patched=pair.sequential("last-to-first", by_layers[layers]))
        else:
            model = orders.prune_teacher(pair, list(range(layers)))
        measured[layers] = evaluate.latency_ms_per_token(model, batch=batch)
    return measured


def latency_profile(pair: BoomerangPair, sets: list[frozenset],
                    measured: dict[int, float] | None = None, batch: int = 1) -> list[float]:
    """Latency per token of the model of each patched set (:func:`time_layer_counts`: timed once
    per layer count)."""
    measured = {} if measured is None else measured
    counts = [pair.mapping.patched_layers(s) for s in sets]
    time_layer_counts(pair, counts, measured, batch)
    return [measured[c] for c in counts]


#: Batches the latency x axis can be timed at (sequences decoded at once).
LATENCY_BATCHES = (1, 8, 32)


def with_latency(pair: BoomerangPair, frames: pd.DataFrame, measured: dict[int, float], batch: int = 1,
                 progress: Progress | None = None) -> pd.DataFrame:
    """``frames`` with a ``latency`` column: ms per token at ``batch`` of a model of each row's
    layer count (:func:`time_layer_counts`; ``measured`` keeps the timings)."""
    out = frames.copy()
    time_layer_counts(pair, out["layers"], measured, batch, progress)
    out["latency"] = [measured[int(v)] for v in out["layers"]]
    return out


# --------------------------------------------------------------------------------------------
# Export


def export_patched(pair: BoomerangPair, patched: Iterable[int], out_dir: str | os.PathLike) -> Path:
    """Save the model built with ``patched`` as a standalone checkpoint folder."""
    return export_model(pair.build(patched=pair.mapping.check_patched(patched)), out_dir, pair.tokenizer)


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The folder as a zip archive, in memory (for a download button)."""
    folder = Path(folder)
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{folder.name}/{f.relative_to(folder)}")
    return buf.getvalue()

