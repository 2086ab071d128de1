"""Perplexity of a model, of many patched models at once, and of one point for interactive use.

A causal LM assigns each token ``x_t`` a probability given the tokens before it; the negative
log-likelihood (NLL) averaged over the scored tokens, and its exponential, the perplexity,
measure how well the model predicts text. :func:`perplexity` scores fixed windows of
``seq_len`` tokens. With ``stride < seq_len`` the token blocks are joined into one stream and
read with overlapping windows that start every ``stride`` tokens, each scoring only its last
``stride`` tokens (the new ones), so that every token after the first window is predicted with
at least ``seq_len - stride`` tokens of context (sliding-window evaluation).

:func:`perplexity_many` measures many patched models of one pair on the same blocks, computing
their shared prefixes once (:class:`~boomerang.core.PatchRunner`); :func:`evaluate_patched`
measures one, memoised for a dashboard that asks again on every slider move.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ..cache import Memo, pair_fingerprint, tensor_fingerprint
from ..core import BoomerangPair, PatchRunner, autocast_context
from ..core.arch import check_token_ids, max_positions, text_config
from ..errors import BoomerangError
from ..progress import Progress, report
from .intervals import bootstrap_perplexity

#: Entries kept by :func:`evaluate_patched`'s in-memory cache.
POINT_CACHE_SIZE = 256
_POINTS = Memo(POINT_CACHE_SIZE)


@dataclass(frozen=True)
class PerplexityResult:
    """Mean token NLL (nats), its exponential, the number of scored tokens, and each evaluation
    window's summed NLL and scored tokens (what :meth:`interval` resamples)."""

    nll: float
    perplexity: float
    tokens: int
    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The 95% (or ``level``) bootstrap interval of the perplexity over evaluation windows
        (the blocks, without a stride); see :func:`boomerang.eval.intervals.bootstrap_perplexity`."""
        if not self.window_nll:
            raise BoomerangError("This result has no per-window NLLs to resample.")
        return bootstrap_perplexity(self.window_nll, self.window_tokens, level)


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
    total, count, _, _ = window_token_nll(logits, ids, mask)
    return total, count


def window_token_nll(logits: torch.Tensor, ids: torch.Tensor,
                     mask: torch.Tensor) -> tuple[float, int, list[float], list[int]]:
    """:func:`token_nll`'s sum and count, and the same per window (row of ``ids``)."""
    B, T, V = logits.shape
    target = torch.full((B, T), -100, dtype=torch.long, device=logits.device)
    target[:, :-1] = ids[:, 1:].to(logits.device)
    keep = torch.zeros(B, T, dtype=torch.bool, device=logits.device)
    keep[:, :-1] = mask[:, 1:].to(logits.device)
    target[~keep] = -100
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(B * T, V).float(), target.view(-1), reduction="none"
    ).double()  # [B * T], 0 where ignored
    rows = nll.view(B, T).sum(1)  # [B]
    return float(nll.sum()), int(keep.sum()), rows.tolist(), keep.sum(1).tolist()


def _result(total: float, count: int, window_nll: Sequence[float] = (),
            window_tokens: Sequence[int] = ()) -> PerplexityResult:
    if count == 0:
        raise BoomerangError("No token was scored; give longer blocks.")
    nll = total / count
    return PerplexityResult(nll=nll, perplexity=math.exp(nll), tokens=count,
                            window_nll=tuple(window_nll), window_tokens=tuple(window_tokens))


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: free GPU memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def estimated_bytes(model: nn.Module, batch_size: int, seq_len: int, training: bool = False) -> int:
    """A rough lower bound on the memory one batch needs: fp32 logits and their log-softmax,
    eager attention scores and a few hidden states (times every layer when training keeps
    activations for the backward pass)."""
    cfg = text_config(model)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0) or 0)
    heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1) or 1)
    layers = int(getattr(cfg, "num_hidden_layers", 1) or 1)
    tokens = batch_size * seq_len
    per_layer = 4 * (tokens * hidden * 8 + batch_size * heads * seq_len * seq_len * 2)
    logits = 4 * tokens * vocab * 3
    return logits + per_layer * (layers if training else 1)


def check_batch_fits(model: nn.Module, batch_size: int, seq_len: int, training: bool = False) -> None:
    """Refuse, before any work, sequences longer than the model's positions and batches that
    cannot fit in memory (a CPU process would otherwise be killed without a word)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BoomerangError(f"batch_size must be a whole number of at least 1, not {batch_size!r}.")
    positions = max_positions(model)
    if positions is not None and seq_len > positions:
        raise BoomerangError(
            f"Sequences of {seq_len} tokens are longer than the {positions} positions this model handles; "
            f"use a sequence length of at most {positions}."
        )
    free = available_memory(model_device(model))
    need = estimated_bytes(model, batch_size, seq_len, training)
    if free is not None and need > 0.9 * free:
        raise BoomerangError(
            f"A batch of {batch_size} x {seq_len} tokens needs about {need / 2**30:.1f} GiB, but only "
            f"{free / 2**30:.1f} GiB are free; use a smaller batch size or sequence length."
        )


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter."""
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
    check_token_ids(blocks, model, "Evaluation blocks")
    ids, mask = windows(blocks, stride)
    check_batch_fits(model, batch_size, ids.shape[1])
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    w_nll: list[float] = []
    w_tok: list[int] = []
    batches = _batches(ids, mask, batch_size)
    try:
        for i, (b_ids, b_mask) in enumerate(batches):
            with autocast_context(model):
                logits = model(input_ids=b_ids.to(device), use_cache=False).logits  # [B, L, V]
            s, c, rs, rc = window_token_nll(logits, b_ids, b_mask)
            total += s
            count += c
            w_nll += rs
            w_tok += rc
            report(progress, i + 1, len(batches), f"{i + 1}/{len(batches)} batches")
    finally:
        model.train(was_training)
    return _result(total, count, w_nll, w_tok)


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
    :class:`~boomerang.core.PatchRunner`. Returns the results and the seconds spent per set.
    """
    check_token_ids(blocks, pair.teacher, "Evaluation blocks")
    ids, mask = windows(blocks, stride)
    check_batch_fits(pair.teacher, batch_size, ids.shape[1])
    batches = _batches(ids, mask, batch_size)
    totals = [0.0] * len(sets)
    counts = [0] * len(sets)
    # Per set, per batch: the windows' NLLs and token counts (batches may arrive in any order).
    rows: list[dict[int, tuple[list[float], list[int]]]] = [{} for _ in sets]

    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        s, c, rs, rc = window_token_nll(logits, batches[b][0], batches[b][1])
        totals[i] += s
        counts[i] += c
        rows[i][b] = (rs, rc)

    runner = PatchRunner(pair)
    runner.run(sets, [b for b, _ in batches], consume, progress=progress)
    results = []
    for t, c, r in zip(totals, counts, rows):
        w_nll = [x for b in sorted(r) for x in r[b][0]]
        w_tok = [x for b in sorted(r) for x in r[b][1]]
        results.append(_result(t, c, w_nll, w_tok))
    return results, list(runner.seconds)



def evaluate_patched(
    pair: BoomerangPair, patched: Iterable[int], blocks: torch.Tensor, batch_size: int = 8
) -> PerplexityResult:
    """Perplexity of the model with ``patched`` student layers, memoised in an in-memory LRU.

    The key is the pair's content fingerprint (so retraining a pair in place, or another pair
    at the same address, never returns stale numbers), the patched set and a hash of ``blocks``.
    """
    patched = pair.mapping.check_patched(patched)
    key = (pair_fingerprint(pair), patched.as_tuple(), tensor_fingerprint(blocks), batch_size)
    return _POINTS.get_or_compute(
        key, lambda: perplexity(pair.build(patched=patched), blocks, batch_size=batch_size))


def clear_point_cache() -> None:
    """Forget every result :func:`evaluate_patched` memoised."""
    _POINTS.clear()
