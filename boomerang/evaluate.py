"""Measure interpolated models: perplexity, lm-eval accuracy, generation, and whole size curves.

**Perplexity.** A causal LM assigns each token ``x_t`` a probability given the tokens before
it; the negative log-likelihood (NLL) averaged over the scored tokens, and its exponential,
the perplexity, measure how well the model predicts text. :func:`perplexity` scores fixed
windows of ``seq_len`` tokens. With ``stride < seq_len`` the token blocks are joined into one
stream and read with overlapping windows that start every ``stride`` tokens, each scoring only
its last ``stride`` tokens (the new ones), so that every token after the first window is
predicted with at least ``seq_len - stride`` tokens of context (sliding-window evaluation).

**Accuracy.** :func:`accuracy` runs tasks of the lm-evaluation-harness on a model object.
Besides every lm-eval task whose data is reachable, two tasks ship with boomerang and run
offline (``boomerang/tasks/``): ``bbc_news`` (5-way topic classification of held-out BBC News
articles) and ``demo_cloze`` (pick the true next line of held-out demo-corpus text among 4).

**Sweeps.** :func:`sweep` measures every size of one or more patch orders (see
:mod:`boomerang.orders`) and returns a tidy :class:`pandas.DataFrame`, one row per
``(order, k)``. Sequential orders share prefixes: all sizes of last-to-first start with the
student's first layers, all sizes of first-to-last with the teacher's first blocks, and
:class:`~boomerang.runner.PatchRunner` computes each shared prefix once. Results are cached on
disk keyed by fingerprints of the pair's weights, the data and the settings, so the dashboard
and the CLI share them. :func:`evaluate_patched` measures one model, with an in-memory LRU
cache for interactive use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedModel

from .errors import BoomerangError
from .pair import BoomerangPair
from .runner import PatchRunner, autocast_context

#: ``progress(done, total)``: called during long operations (tqdm in the CLI, st.status in the UI).
Progress = Callable[[int, int], None]

#: Sweep "orders" that are pruning baselines built from the teacher rather than patch orders.
BASELINES = ("naive-pruning", "block-influence")
#: Version of the on-disk sweep cache format (bump when a row's meaning changes).
CACHE_VERSION = 1
#: Folder with the lm-eval task YAMLs shipped with boomerang.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: Tasks that ship with boomerang and run offline.
OFFLINE_TASKS = ("bbc_news", "demo_cloze")


@dataclass(frozen=True)
class PerplexityResult:
    """Mean token NLL (nats), its exponential, and the number of scored tokens."""

    nll: float
    perplexity: float
    tokens: int


# --------------------------------------------------------------------------------------------
# Windows and token scores


def windows(blocks: torch.Tensor, stride: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation windows ``[W, L]`` and a mask ``[W, L]`` of the tokens each window scores.

    Without ``stride`` (or with ``stride >= L``) the windows are the blocks and each scores its
    tokens ``1..L-1``. With ``stride < L`` the blocks are joined into one stream of ``S`` tokens
    and window ``w`` covers ``[w * stride, w * stride + L)``; the first scores tokens ``1..L-1``,
    the others only their last ``stride`` tokens (a last window that would run past the end is
    shifted back to end at the stream's end and scores only the tokens not yet scored).
    """
    if blocks.dim() != 2 or blocks.size(1) < 2:
        raise BoomerangError(f"Token blocks must be a [n, seq_len >= 2] tensor, not {list(blocks.shape)}.")
    n, L = blocks.shape
    if stride is None or stride >= L:
        mask = torch.ones(n, L, dtype=torch.bool)
        mask[:, 0] = False
        return blocks, mask
    if stride < 1:
        raise BoomerangError(f"stride must be at least 1, not {stride}.")
    stream = blocks.reshape(-1)  # [S]
    S = stream.numel()
    starts, firsts = [0], [1]  # window start, first scored offset inside the window
    scored_to = L  # tokens [0, scored_to) are scored
    while scored_to < S:
        end = min(scored_to + stride, S)
        start = end - L
        starts.append(start)
        firsts.append(scored_to - start)
        scored_to = end
    ids = torch.stack([stream[s : s + L] for s in starts])  # [W, L]
    pos = torch.arange(L)
    mask = pos.unsqueeze(0) >= torch.tensor(firsts).unsqueeze(1)  # [W, L]
    return ids, mask


def _batches(ids: torch.Tensor, mask: torch.Tensor, batch_size: int):
    if batch_size < 1:
        raise BoomerangError(f"batch_size must be at least 1, not {batch_size}.")
    return [(ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(ids), batch_size)]


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed NLL (float64) and count of the tokens ``mask`` selects; ``logits`` is ``[B, T, V]``.

    Position ``t`` predicts token ``t + 1``; the targets are shifted instead of the logits so
    that the big ``[B, T, V]`` tensor is never copied.
    """
    B, T, V = logits.shape
    target = torch.full((B, T), -100, dtype=torch.long, device=logits.device)
    target[:, :-1] = ids[:, 1:].to(logits.device)
    keep = torch.zeros(B, T, dtype=torch.bool, device=logits.device)
    keep[:, :-1] = mask[:, 1:].to(logits.device)
    target[~keep] = -100
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(B * T, V).float(), target.view(-1), reduction="none"
    )  # [B * T], 0 where ignored
    return float(nll.double().sum()), int(keep.sum())


def _result(total: float, count: int) -> PerplexityResult:
    if count == 0:
        raise BoomerangError("No token was scored; give longer blocks.")
    nll = total / count
    return PerplexityResult(nll=nll, perplexity=math.exp(nll), tokens=count)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    blocks: torch.Tensor,
    batch_size: int = 8,
    stride: int | None = None,
    progress: Progress | None = None,
) -> PerplexityResult:
    """Token-level NLL and perplexity of ``model`` on ``blocks`` (``[n, seq_len]`` token ids).

    Fixed windows by default; ``stride < seq_len`` gives sliding-window evaluation (see
    :func:`windows`). Batched, deterministic, under ``torch.inference_mode`` (and bf16 autocast
    on GPU); the NLL is summed in float64.
    """
    ids, mask = windows(blocks, stride)
    was_training = model.training
    model.eval()
    device = _device(model)
    total, count = 0.0, 0
    batches = _batches(ids, mask, batch_size)
    try:
        for i, (b_ids, b_mask) in enumerate(batches):
            with autocast_context(model):
                logits = model(input_ids=b_ids.to(device), use_cache=False).logits  # [B, L, V]
            s, c = token_nll(logits, b_ids, b_mask)
            total += s
            count += c
            if progress is not None:
                progress(i + 1, len(batches))
    finally:
        model.train(was_training)
    return _result(total, count)


def perplexity_many(
    pair: BoomerangPair,
    sets: Sequence[Iterable[int]],
    blocks: torch.Tensor,
    batch_size: int = 8,
    stride: int | None = None,
    progress: Progress | None = None,
) -> tuple[list[PerplexityResult], list[float]]:
    """:func:`perplexity` of ``pair.build(patched=s)`` for every ``s``, sharing common prefixes.

    Same numbers as evaluating each model from scratch (up to float rounding), computed by a
    :class:`~boomerang.runner.PatchRunner`. Returns the results and the seconds spent per set.
    """
    ids, mask = windows(blocks, stride)
    batches = _batches(ids, mask, batch_size)
    totals = [0.0] * len(sets)
    counts = [0] * len(sets)

    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        s, c = token_nll(logits, batches[b][0], batches[b][1])
        totals[i] += s
        counts[i] += c

    runner = PatchRunner(pair)
    runner.run(sets, [b for b, _ in batches], consume, progress=progress)
    return [_result(t, c) for t, c in zip(totals, counts)], list(runner.seconds)


# --------------------------------------------------------------------------------------------
# One point, for interactive use


_POINT_CACHE: OrderedDict[tuple, PerplexityResult] = OrderedDict()
_POINT_LOCK = threading.Lock()
#: Entries kept by :func:`evaluate_patched`'s in-memory cache.
POINT_CACHE_SIZE = 256


def tensor_fingerprint(t: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pair_fingerprint(pair: BoomerangPair, samples_per_tensor: int = 512) -> str:
    """A content hash of a pair: its mapping, both configs and a strided sample of every weight.

    Stable across processes and machines for the same weights (unlike data pointers), cheap
    (a few hundred values per tensor), and it changes when training updates any tensor.
    """
    h = hashlib.sha256()
    h.update(json.dumps([list(b) for b in pair.mapping.blocks]).encode())
    for model in (pair.teacher, pair.student):
        h.update(model.config.to_json_string(use_diff=False).encode())
        for name, p in model.state_dict().items():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].float().cpu()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()


def evaluate_patched(
    pair: BoomerangPair, patched: Iterable[int], blocks: torch.Tensor, batch_size: int = 8
) -> PerplexityResult:
    """Perplexity of the model with ``patched`` student layers, memoised in an in-memory LRU.

    The key is the pair object, the patched set and a hash of ``blocks``; the dashboard calls
    this on every slider move, so a repeated point is free. (Train a pair in place and the
    cached values go stale: call :func:`clear_point_cache`.)
    """
    patched = pair.mapping.check_patched(patched)
    key = (id(pair), tuple(sorted(patched)), tensor_fingerprint(blocks), batch_size)
    with _POINT_LOCK:
        if key in _POINT_CACHE:
            _POINT_CACHE.move_to_end(key)
            return _POINT_CACHE[key]
    result = perplexity(pair.build(patched=patched), blocks, batch_size=batch_size)
    with _POINT_LOCK:
        _POINT_CACHE[key] = result
        while len(_POINT_CACHE) > POINT_CACHE_SIZE:
            _POINT_CACHE.popitem(last=False)
    return result


def clear_point_cache() -> None:
    """Forget every result :func:`evaluate_patched` memoised."""
    with _POINT_LOCK:
        _POINT_CACHE.clear()


# --------------------------------------------------------------------------------------------
# Generation


@torch.inference_mode()
def generate_text(
    model: PreTrainedModel,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    streamer: Any = None,
) -> str:
    """Continue ``prompt`` with ``model.generate``; greedy when ``temperature`` is 0.

    ``streamer`` (e.g. a ``transformers.TextIteratorStreamer``) receives tokens as they come.
    Returns the new text only.
    """
    if tokenizer is None:
        raise BoomerangError("Generation needs a tokenizer; this pair has none.")
    if max_new_tokens < 1:
        raise BoomerangError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
    if temperature < 0:
        raise BoomerangError(f"temperature must be 0 (greedy) or positive, not {temperature}.")
    enc = tokenizer(prompt, return_tensors="pt")
    ids = enc["input_ids"]
    if ids.size(1) == 0:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[bos]])
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    device = _device(model)
    kwargs: dict[str, Any] = dict(
        input_ids=ids.to(device),
        attention_mask=enc["attention_mask"].to(device),
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**kwargs)  # [1, prompt + new]
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, ids.size(1):], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------
# lm-eval accuracy


_TASK_MANAGERS: dict[bool, Any] = {}
_TM_LOCK = threading.Lock()


def task_manager(offline_only: bool = False):
    """An lm-eval ``TaskManager`` that knows boomerang's offline tasks (built once per kind).

    ``offline_only`` indexes only :data:`OFFLINE_TASKS` (instant); the full manager also
    indexes every task lm-eval ships, which takes a while on a slow CPU.
    """
    with _TM_LOCK:
        if offline_only not in _TASK_MANAGERS:
            from lm_eval.tasks import TaskManager

            _TASK_MANAGERS[offline_only] = TaskManager(
                include_path=str(TASKS_DIR), include_defaults=not offline_only
            )
        return _TASK_MANAGERS[offline_only]


def _primary_metric(entry: dict[str, Any]) -> float | None:
    for key in ("acc,none", "acc_norm,none", "exact_match,none", "f1,none"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    for key, value in entry.items():
        if "stderr" not in key and isinstance(value, (int, float)) and key != "alias":
            return float(value)
    return None


def accuracy(
    model: PreTrainedModel,
    tokenizer: Any,
    tasks: Sequence[str] | str,
    limit: int | float | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on lm-evaluation-harness tasks, ``{task: accuracy}``.

    Any task lm-eval knows whose data is reachable, plus boomerang's offline tasks
    (:data:`OFFLINE_TASKS`). ``limit`` caps the examples per task (an int, or a fraction).
    The model is wrapped with ``HFLM(pretrained=model, tokenizer=tokenizer)`` (no copy is made)
    and run zero-shot (unless a task's YAML sets ``num_fewshot``) by ``lm_eval.evaluator``.
    """
    from lm_eval.evaluator import evaluate as lm_evaluate
    from lm_eval.models.huggingface import HFLM

    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise BoomerangError("Give at least one lm-eval task name, e.g. bbc_news.")
    if tokenizer is None:
        raise BoomerangError("lm-eval accuracy needs a tokenizer; this pair has none.")
    tm = task_manager(offline_only=all(t in OFFLINE_TASKS for t in tasks))
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise BoomerangError(
            f"Unknown lm-eval task(s) {', '.join(unknown)}; offline tasks are "
            f"{', '.join(OFFLINE_TASKS)} (see `lm-eval ls tasks` for the rest)."
        )
    device = _device(model)
    was_training = model.training
    model.eval()
    # lm-eval warns about every model object and custom dataset it is given; keep errors only.
    lm_logger = logging.getLogger("lm_eval")
    old_level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)
    out: dict[str, float] = {}
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
        # One harness call per task when progress is wanted, else one for all (less overhead).
        groups = [[t] for t in tasks] if progress is not None else [list(tasks)]
        for i, group in enumerate(groups):
            # What simple_evaluate does, minus its environment report (it runs `pip list`).
            loaded = tm.load(group)
            for task_obj in loaded["tasks"].values():
                if task_obj.get_config("num_fewshot") is None:
                    task_obj.set_config(key="num_fewshot", value=0)
                task_obj.set_fewshot_seed(seed=1234)
            res = lm_evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0,
                              log_samples=False)
            for name, entry in (res or {}).get("results", {}).items():
                value = _primary_metric(entry)
                if value is not None:
                    out[name] = value
            if progress is not None:
                progress(i + 1, len(groups))
    finally:
        lm_logger.setLevel(old_level)
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------
# Sweeps


def sweep_cache_dir() -> Path:
    """Where sweep results are cached (``<boomerang cache>/sweeps``, i.e. ~/.cache/boomerang/sweeps)."""
    from .data import cache_dir

    return cache_dir() / "sweeps"


def format_patched(patched: Iterable[int]) -> str:
    """The ``patched`` column's format: ``"[0, 5, 6]"`` (sorted; JSON-readable)."""
    return json.dumps(sorted(int(p) for p in patched))


def parse_patched(text: str) -> frozenset[int]:
    """Inverse of :func:`format_patched`."""
    return frozenset(int(p) for p in json.loads(text)) if text else frozenset()


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    if tokenizer is None:
        return ""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    desc = backend.to_str() if backend is not None else f"{type(tokenizer).__name__}|{len(tokenizer)}"
    return hashlib.sha256(desc.encode()).hexdigest()


def _count_params(model: nn.Module) -> int:
    return int(model.num_parameters())


def _cache_load(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_pickle(path)
    except Exception:  # a corrupt entry is recomputed, not fatal
        return None


def _cache_store(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    frame.to_pickle(tmp)
    os.replace(tmp, path)


def _order_rows(
    pair: BoomerangPair, order: str, calib_ids: torch.Tensor | None, custom: Sequence[int] | None,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    """``order``, ``k``, ``patched``, ``layers``, ``params``, ``kept`` for each size of ``order``."""
    from .orders import patch_order, prune_teacher, pruning_order

    rows = []
    if order in BASELINES:
        method = "naive" if order == "naive-pruning" else "block-influence"
        n = pair.num_student_layers
        for layers, keep in pruning_order(pair, method, calib_ids=calib_ids).items():
            rows.append(dict(order=order, k=layers - n, patched="", layers=layers,
                             params=_count_params(prune_teacher(pair, keep)), kept=json.dumps(keep)))
        return rows
    sets = patch_order(pair, order, calib_ids, custom=custom, progress=progress)
    for k, s in enumerate(sets):
        rows.append(dict(order=order, k=k, patched=format_patched(s),
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
) -> pd.DataFrame:
    """Measure every size of each patch order: one row per ``(order, k)``.

    ``orders`` are names from :data:`boomerang.orders.ORDER_NAMES` (``custom`` takes the
    ``custom`` list) or the pruning baselines ``naive-pruning`` and ``block-influence``, whose
    rows are teachers pruned to every layer count from the student's to the teacher's (their
    ``k`` is the number of layers above the student's, ``kept`` the teacher layers kept).
    ``data`` is a text source for :func:`boomerang.data.load_blocks` (``split``, ``seq_len``
    (default 128), ``max_blocks``) or a ready ``[n, seq_len]`` tensor of token ids.
    ``metrics``: ``perplexity`` (columns ``perplexity``, ``nll``) and lm-eval task names (a
    column per task with its accuracy; ``limit`` examples per task). Calibration-based orders
    (similarity, klpatch, optimal, shortest-path, block-influence) use ``calib_ids``, by default
    :func:`boomerang.orders.calibration_ids` of the pair (from the training split).

    Columns: ``order, k, patched, layers, params, kept, perplexity, nll, <tasks...>, seconds``.
    Each (order, metric) part is cached under ``cache_dir`` (default
    :func:`sweep_cache_dir`), keyed by the pair's :func:`pair_fingerprint`, the order, a hash
    of the token blocks and calibration ids, the metric and the settings; a cache hit returns
    an identical frame. All uncached perplexities of one call are computed in one
    :class:`~boomerang.runner.PatchRunner` walk, so sizes and orders share prefixes.
    """
    from .data import load_blocks
    from .orders import ORDER_NAMES, calibration_ids

    if isinstance(orders, str):
        orders = [o.strip() for o in orders.split(",") if o.strip()]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    orders, metrics = list(dict.fromkeys(orders)), list(dict.fromkeys(metrics))
    if not orders or not metrics:
        raise BoomerangError("Give at least one order and one metric.")
    for o in orders:
        if o not in ORDER_NAMES and o not in BASELINES:
            raise BoomerangError(
                f"Unknown order '{o}'; choose from {', '.join(ORDER_NAMES + BASELINES)}."
            )
    tokenizer = pair.tokenizer
    if isinstance(data, torch.Tensor):
        blocks = data
    else:
        if tokenizer is None:
            raise BoomerangError("This pair has no tokenizer to read text with; pass token ids.")
        blocks = load_blocks(data, tokenizer, seq_len or 128, split=split, max_blocks=max_blocks)
    needs_calib = any(o not in ("last-to-first", "first-to-last", "custom", "naive-pruning") for o in orders)
    if needs_calib and calib_ids is None:
        calib_ids = calibration_ids(pair)

    pair_fp = pair_fingerprint(pair)
    data_fp = tensor_fingerprint(blocks)
    calib_fp = tensor_fingerprint(calib_ids) if calib_ids is not None else ""
    tok_fp = _tokenizer_fingerprint(tokenizer) if any(m != "perplexity" for m in metrics) else ""
    root = Path(cache_dir) if cache_dir is not None else sweep_cache_dir()

    def key(order: str, metric: str) -> Path:
        settings = dict(
            v=CACHE_VERSION, pair=pair_fp, order=order, metric=metric,
            custom=list(custom) if order == "custom" and custom is not None else None,
            calib=calib_fp if order not in ("last-to-first", "first-to-last", "custom", "naive-pruning") else "",
            data=data_fp if metric == "perplexity" else "", batch_size=batch_size,
            limit=limit if metric != "perplexity" else None,
            tokenizer=tok_fp if metric != "perplexity" else "",
        )
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]
        return root / f"{digest}.pkl"

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
            if progress is not None:
                progress(done, total)

        if sets:
            results, seconds = perplexity_many(
                pair, [parse_patched(s) for s in sets], blocks, batch_size=batch_size,
                progress=(lambda d, t: progress(done + d * len(sets) // t, total)) if progress else None,
            )
            done += len(sets)
            ppl = {s: (r, sec) for s, r, sec in zip(sets, results, seconds)}
        for o, m in todo:
            rows = []
            for r in base_rows[o]:
                row = dict(r)
                t0 = time.perf_counter()
                if o in BASELINES:
                    from .orders import prune_teacher

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
                    row.update(perplexity=res.perplexity, nll=res.nll, seconds=sec)
                else:
                    if model is None:
                        model = pair.build(patched=parse_patched(r["patched"]))
                    acc = accuracy(model, tokenizer, [m], limit=limit, batch_size=batch_size)
                    row[m] = acc.get(m, float("nan"))
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
    out = pd.concat(frames, ignore_index=True)
    metric_cols = [c for m in metrics for c in (("perplexity", "nll") if m == "perplexity" else (m,))]
    return out[id_cols + metric_cols + ["seconds"]]
