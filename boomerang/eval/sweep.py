"""Whole size curves: every size of one or more patch orders and pruning baselines, measured.

:func:`sweep` returns a tidy :class:`pandas.DataFrame`, one row per ``(order, k)``. Sequential
orders share prefixes: all sizes of last-to-first start with the student's first layers, all
sizes of first-to-last with the teacher's first blocks, and :class:`~boomerang.core.PatchRunner`
computes each shared prefix once. Results are cached on disk as JSON, keyed by fingerprints of
the pair's weights, the data and the settings, so the dashboard and the CLI share them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..cache import pair_fingerprint, tensor_fingerprint
from ..core import BoomerangPair, Patched, load_model
from ..core.arch import check_token_ids, num_layers
from ..core.delta import apply_delta, is_delta_folder, read_delta_meta
from ..data import load_blocks, tokenizer_fingerprint
from ..errors import BoomerangError
from ..io import atomic_write
from ..orders import (
    BASELINES,
    calibration_ids,
    get_order,
    needs_calibration,
    patch_order,
    prune_teacher,
    pruning_method,
    pruning_order,
)
from ..paths import cache_dir
from ..progress import Progress, report, scaled
from .accuracy import accuracy, accuracy_intervals
from .perplexity import PerplexityResult, check_batch_fits, perplexity, perplexity_many

#: The columns the ``perplexity`` metric fills: the perplexity, its 95% bootstrap interval over
#: evaluation blocks (:meth:`PerplexityResult.interval`) and the mean NLL.
PERPLEXITY_COLUMNS = ("perplexity", "perplexity_lo", "perplexity_hi", "nll")
#: Version of the on-disk sweep cache format (bump when a row's meaning changes).
CACHE_VERSION = 4


def sweep_cache_dir() -> Path:
    """Where sweep results are cached (``<boomerang cache>/sweeps``)."""
    return cache_dir() / "sweeps"


def _count_params(model: nn.Module) -> int:
    return int(model.num_parameters())


def _cache_load(path: Path) -> pd.DataFrame | None:
    """A cached frame (JSON: columns + rows), or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("version") != CACHE_VERSION:
            return None
        return pd.DataFrame(d["rows"], columns=d["columns"])
    except (OSError, ValueError, KeyError, TypeError):  # a corrupt entry is recomputed, not fatal
        return None


def _cache_store(path: Path, frame: pd.DataFrame) -> None:
    """Store a frame as JSON (a data format: reading it can never run code); Python floats
    round-trip exactly. An unwritable cache only disables caching."""
    rows = [[v.item() if hasattr(v, "item") else v for v in row]
            for row in frame.itertuples(index=False, name=None)]
    text = json.dumps({"version": CACHE_VERSION, "columns": list(frame.columns), "rows": rows})
    try:
        atomic_write(path, text)
    except OSError:
        pass


def _order_rows(
    pair: BoomerangPair, order: str, calib_ids: torch.Tensor | None, custom: Sequence[int] | None,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """``order``, ``k``, ``patched``, ``layers``, ``params``, ``kept`` for each size of ``order``."""
    rows = []
    if order in BASELINES:
        n = pair.num_student_layers
        for layers, keep in pruning_order(pair, pruning_method(order), calib_ids=calib_ids, progress=progress).items():
            rows.append(dict(order=order, k=layers - n, patched="", layers=layers,
                             params=_count_params(prune_teacher(pair, keep)), kept=json.dumps(keep)))
        return rows
    sets = patch_order(pair, order, calib_ids, custom=custom, progress=progress)
    for k, s in enumerate(sets):
        rows.append(dict(order=order, k=k, patched=Patched(s).to_json(),
                         layers=pair.mapping.patched_layers(s),
                         params=_count_params(pair.build(patched=s)), kept=""))
    return rows


def sweep(
    pair: BoomerangPair,
    orders: Sequence[str] | str = ("last-to-first",),
    data: str | os.PathLike | torch.Tensor = "demo",
    metrics: Sequence[str] | str = ("perplexity",),
    *,
    split: str = "validation",
    seq_len: int | None = None,
    max_blocks: int | None = 64,
    calib_ids: torch.Tensor | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    custom: Sequence[int] | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    use_cache: bool = True,
    compare: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Measure every size of each patch order: one row per ``(order, k)``.

    ``orders`` are names from :data:`boomerang.orders.ORDER_NAMES` (``custom`` takes the
    ``custom`` list) or the pruning baselines ``naive-pruning`` and ``block-influence``, whose
    rows are teachers pruned to every layer count from the student's to the teacher's (their
    ``k`` is the number of layers above the student's, ``kept`` the teacher layers kept).
    ``data`` is a text source for :func:`boomerang.data.load_blocks` (``split``, ``seq_len``
    (default 128), ``max_blocks``) or a ready ``[n, seq_len]`` tensor of token ids.
    ``metrics``: ``perplexity`` (columns ``perplexity``, its 95% bootstrap interval over blocks
    ``perplexity_lo`` and ``perplexity_hi``, and ``nll``) and lm-eval task names (a column per
    task with its accuracy, and ``<task>_lo``, ``<task>_hi`` its 95% Wilson interval over items;
    ``limit`` examples per task). Calibration-based orders
    (similarity, klpatch, optimal, shortest-path, block-influence) use ``calib_ids``, by default
    :func:`boomerang.orders.calibration_ids` of the pair (from the training split).

    Columns: ``order, k, patched, layers, params, kept, perplexity, perplexity_lo, perplexity_hi,
    nll, <task, task_lo, task_hi...>, seconds``.
    Each (order, metric) part is cached under ``cache_dir`` (default
    :func:`sweep_cache_dir`), keyed by the pair's :func:`pair_fingerprint`, the order, a hash
    of the token blocks and calibration ids, the metric and the settings; a cache hit returns
    an identical frame. All uncached perplexities of one call are computed in one
    :class:`~boomerang.core.PatchRunner` walk, so sizes and orders share prefixes.

    ``compare`` adds other models (folders, student delta folders or hub ids: a student distilled
    at some size, a pruned or published model) as one row each, ``order`` ``"model: <folder name>"``, measured on the
    same blocks with the same metrics, so they land on the same curve plot. Each must use the
    pair's tokenizer (else its numbers would not be comparable), checked before any work.
    """
    if isinstance(orders, str):
        orders = [o.strip() for o in orders.split(",") if o.strip()]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    orders, metrics = list(dict.fromkeys(orders)), list(dict.fromkeys(metrics))
    if not orders or not metrics:
        raise BoomerangError("Give at least one order and one metric.")
    for o in orders:
        get_order(o)
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2):
        raise BoomerangError(f"seq_len must be a whole number of at least 2 tokens, not {seq_len!r}.")
    tokenizer = pair.tokenizer
    if not isinstance(data, (str, os.PathLike, torch.Tensor)):
        raise BoomerangError("data must be a text source (demo, a file, a folder or a dataset id) or a "
                             f"[n, seq_len] tensor of token ids, not a {type(data).__name__}.")
    if isinstance(data, torch.Tensor):
        check_token_ids(data, pair.teacher, "Evaluation blocks")
    if calib_ids is not None:
        check_token_ids(calib_ids, pair.teacher, "Calibration ids")
    others = _compare_models(pair, compare)
    check_batch_fits(pair.teacher, batch_size, data.shape[1] if isinstance(data, torch.Tensor) else seq_len or 128)
    if isinstance(data, torch.Tensor):
        blocks = data
    else:
        if tokenizer is None:
            raise BoomerangError("This pair has no tokenizer to read text with; pass token ids.")
        blocks = load_blocks(data, tokenizer, seq_len or 128, split=split, max_blocks=max_blocks)
    needs_calib = any(needs_calibration(o) for o in orders)
    if needs_calib and calib_ids is None:
        calib_ids = calibration_ids(pair)

    pair_fp = pair_fingerprint(pair)
    data_fp = tensor_fingerprint(blocks)
    calib_fp = tensor_fingerprint(calib_ids) if calib_ids is not None else ""
    tok_fp = tokenizer_fingerprint(tokenizer) if tokenizer is not None and any(m != "perplexity" for m in metrics) else ""
    root = Path(cache_dir) if cache_dir is not None else sweep_cache_dir()

    def key(order: str, metric: str) -> Path:
        settings = dict(
            v=CACHE_VERSION, pair=pair_fp, order=order, metric=metric,
            custom=list(custom) if order == "custom" and custom is not None else None,
            calib=calib_fp if needs_calibration(order) else "",
            data=data_fp if metric == "perplexity" else "", batch_size=batch_size,
            limit=limit if metric != "perplexity" else None,
            tokenizer=tok_fp if metric != "perplexity" else "",
        )
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
        return root / f"{digest}.json"

    parts: dict[tuple[str, str], pd.DataFrame] = {}
    todo: list[tuple[str, str]] = []
    for o in orders:
        for m in metrics:
            cached = _cache_load(key(o, m)) if use_cache else None
            if cached is not None:
                parts[(o, m)] = cached
            else:
                todo.append((o, m))

    if todo:
        # Choosing data-driven orders can take a while: report it as its own phase.
        base_rows = {o: _order_rows(pair, o, calib_ids, custom, progress)
                     for o in dict.fromkeys(o for o, _ in todo)}
        # Perplexity: one shared walk over every distinct patched set still needed.
        ppl_orders = [o for o, m in todo if m == "perplexity"]
        interp = [o for o in ppl_orders if o not in BASELINES]
        ppl: dict[str, tuple[PerplexityResult, float]] = {}
        sets = list(dict.fromkeys(r["patched"] for o in interp for r in base_rows[o]))
        n_acc = sum(len(base_rows[o]) for o, m in todo if m != "perplexity")
        n_base = sum(len(base_rows[o]) for o in ppl_orders if o in BASELINES)
        total = len(sets) + n_base + n_acc
        done = 0

        def tick(step: int = 1) -> None:
            nonlocal done
            done += step
            report(progress, done, total, f"{done}/{total} models measured")

        if sets:
            results, seconds = perplexity_many(
                pair, [Patched.from_json(s) for s in sets], blocks, batch_size=batch_size,
                progress=scaled(progress, done, len(sets), total, "perplexity"),
            )
            done += len(sets)
            ppl = {s: (r, sec) for s, r, sec in zip(sets, results, seconds)}
        for o, m in todo:
            rows = []
            for r in base_rows[o]:
                row = dict(r)
                t0 = time.perf_counter()
                if o in BASELINES:
                    model = prune_teacher(pair, json.loads(r["kept"]))
                else:
                    model = None
                if m == "perplexity":
                    if model is not None:
                        res = perplexity(model, blocks, batch_size=batch_size)
                        sec = time.perf_counter() - t0
                        tick()
                    else:
                        res, sec = ppl[r["patched"]]
                    lo, hi = res.interval()
                    row.update(perplexity=res.perplexity, perplexity_lo=lo, perplexity_hi=hi, nll=res.nll,
                               seconds=sec)
                else:
                    if model is None:
                        model = pair.build(patched=Patched.from_json(r["patched"]))
                    row.update(_task_score(model, tokenizer, m, limit, batch_size))
                    row["seconds"] = time.perf_counter() - t0
                    tick()
                rows.append(row)
            frame = pd.DataFrame(rows)
            parts[(o, m)] = frame
            if use_cache:
                _cache_store(key(o, m), frame)

    frames = []
    id_cols = ["order", "k", "patched", "layers", "params", "kept"]
    for o in orders:
        merged = None
        for m in metrics:
            part = parts[(o, m)]
            if merged is None:
                merged = part.copy()
            else:
                merged = merged.merge(part.drop(columns=id_cols[3:]), on=["order", "k", "patched"],
                                      suffixes=("", "_r"))
                merged["seconds"] = merged["seconds"] + merged.pop("seconds_r")
        frames.append(merged)
    frames += [_model_row(name, model, blocks, tokenizer, metrics, limit, batch_size) for name, model in others]
    out = pd.concat(frames, ignore_index=True)
    metric_cols = [c for m in metrics for c in (PERPLEXITY_COLUMNS if m == "perplexity" else (m, f"{m}_lo", f"{m}_hi"))]
    return out[id_cols + metric_cols + ["seconds"]]


#: The ``order`` of a compared model's row: this prefix and its folder name.
COMPARE_PREFIX = "model: "


def compare_rows(pair: BoomerangPair, refs: Sequence[str | os.PathLike] | dict[str, str | os.PathLike],
                 blocks: torch.Tensor, metrics: Sequence[str] = ("perplexity",), *,
                 limit: int | float | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Other models measured like a sweep's rows on ``blocks``: one row each, ``order``
    ``"model: <name>"`` (the folder's name, or the key of a ``{name: folder}`` dict), their own
    layer count and parameters, ``k`` 0. Each must use the pair's tokenizer (checked, for all of
    them, before any is measured), so that the numbers compare with the pair's curves."""
    others = _compare_models(pair, refs)
    frames = [_model_row(name, model, blocks, pair.tokenizer, metrics, limit, batch_size) for name, model in others]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


#: The ``order`` of students distilled directly at one size, one row each at its own depth.
SAME_SIZE_ORDER = "distilled at this size"


def same_size_rows(pair: BoomerangPair, students: dict[int, str | os.PathLike], blocks: torch.Tensor,
                   metrics: Sequence[str] = ("perplexity",), *, limit: int | float | None = None,
                   batch_size: int = 8) -> pd.DataFrame:
    """Students distilled directly at some sizes (``{layers: folder or delta folder}``), measured
    like :func:`compare_rows` and named :data:`SAME_SIZE_ORDER`: the paper's test of whether an
    interpolated model matches one trained for its size. A student whose depth is not the one
    it is filed under is refused, since its point would land at the wrong size."""
    df = compare_rows(pair, {f"{n} layers": d for n, d in students.items()}, blocks, metrics,
                      limit=limit, batch_size=batch_size)
    if df.empty:
        return df
    for want, got in zip(students, df["layers"]):
        if int(got) != int(want):
            raise BoomerangError(f"The student filed as distilled at {want} layers has {int(got)} layers.")
    df["order"] = SAME_SIZE_ORDER
    return df


def _compare_models(pair: BoomerangPair, refs: Sequence[str | os.PathLike] | dict[str, str | os.PathLike],
                    ) -> list[tuple[str, nn.Module]]:
    """Load each model to compare (on the teacher's device and dtype), refusing one whose
    tokenizer differs from the pair's; returns ``(order name, model)`` pairs. A student delta
    folder (:mod:`boomerang.core.delta`) is composed from the pair's own teacher, and refused
    in one sentence when it was made from another teacher."""
    if isinstance(refs, (str, os.PathLike)):
        refs = [refs]
    if isinstance(refs, dict):
        named = dict(refs)
    else:
        names = [Path(str(r)).name or str(r) for r in refs]
        if len(set(names)) < len(names):  # two folders of one name: number them
            names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
        named = dict(zip(names, refs))
    if not named:
        return []
    if pair.tokenizer is None:
        raise BoomerangError("Comparing other models needs the pair's tokenizer, and this pair has none.")
    want = tokenizer_fingerprint(pair.tokenizer)
    out: list[tuple[str, nn.Module]] = []
    teacher_param = next(pair.teacher.parameters())
    for label, ref in named.items():
        if is_delta_folder(ref):  # a student stored as what it adds to this pair's teacher
            model = _delta_student(pair, ref, want)
            out.append((COMPARE_PREFIX + label, model.to(device=teacher_param.device, dtype=teacher_param.dtype).eval()))
            continue
        model, tok = load_model(ref, device=teacher_param.device, dtype=teacher_param.dtype)
        if tok is None:
            raise BoomerangError(f"Model {str(ref)!r} has no tokenizer, so it cannot be checked to read the "
                                 "text as this pair does; save its tokenizer beside it.")
        if tokenizer_fingerprint(tok) != want:
            raise BoomerangError(f"Model {str(ref)!r} uses another tokenizer than this pair, so its perplexity "
                                 "would not be comparable; compare models of the same tokenizer.")
        out.append((COMPARE_PREFIX + label, model))
    return out


def _delta_student(pair: BoomerangPair, ref: str | os.PathLike, tokenizer_fp: str) -> nn.Module:
    """The student a delta folder describes, composed from the pair's teacher when it holds the
    very weights the delta was made from, else from the teacher folder the delta records (a pair
    loaded in bfloat16 on a GPU holds other bits than the float32 teacher), refused in one
    sentence when neither is that teacher or the recorded one reads text otherwise."""
    try:
        return apply_delta(pair.teacher, ref)[0]
    except BoomerangError:
        recorded = read_delta_meta(ref).get("teacher")
        folder = Path(ref) / recorded if isinstance(recorded, str) and recorded else None
        if folder is None or not (folder / "config.json").is_file():
            raise
    teacher, tok = load_model(folder, device="cpu", dtype=torch.float32)
    if tok is None or tokenizer_fingerprint(tok) != tokenizer_fp:
        raise BoomerangError(f"The student delta {str(ref)!r} belongs to a teacher that reads text otherwise "
                             "than this pair, so its perplexity would not be comparable.")
    return apply_delta(teacher, ref)[0]


def _model_row(name: str, model: nn.Module, blocks: torch.Tensor, tokenizer: Any, metrics: Sequence[str],
               limit: int | float | None, batch_size: int) -> pd.DataFrame:
    """One compared model measured like a sweep's rows (its layer count from its config)."""
    t0 = time.perf_counter()
    row: dict[str, Any] = dict(order=name, k=0, patched="", layers=num_layers(model),
                               params=_count_params(model), kept="")
    for m in metrics:
        if m == "perplexity":
            res = perplexity(model, blocks, batch_size=batch_size)
            lo, hi = res.interval()
            row.update(perplexity=res.perplexity, perplexity_lo=lo, perplexity_hi=hi, nll=res.nll)
        else:
            row.update(_task_score(model, tokenizer, m, limit, batch_size))
    row["seconds"] = time.perf_counter() - t0
    return pd.DataFrame([row])


def _task_score(model: nn.Module, tokenizer: Any, task: str, limit: int | float | None,
                batch_size: int) -> dict[str, float]:
    """A task's accuracy and its 95% Wilson interval over items (``task``, ``task_lo``,
    ``task_hi``); a task scored by another metric than accuracy gets that metric and no interval."""
    got = accuracy_intervals(model, tokenizer, [task], limit=limit, batch_size=batch_size).get(task)
    if got is not None:
        return {task: got["accuracy"], f"{task}_lo": got["lo"], f"{task}_hi": got["hi"]}
    value = accuracy(model, tokenizer, [task], limit=limit, batch_size=batch_size).get(task, float("nan"))
    return {task: value, f"{task}_lo": float("nan"), f"{task}_hi": float("nan")}
