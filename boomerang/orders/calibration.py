"""Calibration text and the KL of patched models to the teacher: what data-driven orders minimise.

Orders such as KLPatch, optimal and shortest-path choose which layers to patch by how far each
candidate model's next-token distribution is from the teacher's, measured on a few blocks of
*training* text (calibration text), never on the text the results are evaluated on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..core import BoomerangPair, PatchRunner
from ..core.arch import max_positions
from ..data import load_blocks
from ..errors import BoomerangError
from ..progress import Progress


def calibration_ids(pair: BoomerangPair, n: int = 8, seq_len: int = 128, source: str = "demo") -> torch.Tensor:
    """``[n, seq_len]`` token ids from the *training* split of ``source`` for KL-guided orders."""
    if pair.tokenizer is None:
        raise BoomerangError("This pair has no tokenizer; pass calibration token ids yourself.")
    limit = max_positions(pair.teacher)
    if limit is not None and seq_len > limit:
        raise BoomerangError(f"A calibration length of {seq_len} tokens exceeds the model's {limit} positions; "
                             f"choose at most {limit}.")
    return load_blocks(source, pair.tokenizer, seq_len, split="train", max_blocks=n)


def calib_batches(calib_ids: torch.Tensor | None, batch_size: int = 8) -> list[torch.Tensor]:
    """``calib_ids`` cut into batches of ``batch_size`` sequences, checked to be ``[n, seq_len]``."""
    if calib_ids is None:
        raise BoomerangError("This order needs calibration token ids (see boomerang.orders.calibration_ids).")
    if calib_ids.dim() != 2 or calib_ids.size(1) < 2:
        raise BoomerangError(f"Calibration ids must be a [n, seq_len] tensor, not {list(calib_ids.shape)}.")
    return [calib_ids[i : i + batch_size] for i in range(0, len(calib_ids), batch_size)]


def kl_to_teacher(
    pair: BoomerangPair,
    sets: Sequence[Iterable[int]],
    calib_ids: torch.Tensor,
    progress: Progress | None = None,
    batch_size: int = 8,
    runner: PatchRunner | None = None,
) -> list[float]:
    """Mean token ``KL(teacher || model)`` (nats) of each patched model on ``calib_ids``.

    ``KL(p || q) = sum_v p(v) (log p(v) - log q(v))`` per position, averaged over every position
    of every sequence; the teacher's own distribution ``p`` is the reference, so 0 means the
    model predicts exactly like the teacher. Pass a ``PatchRunner(pair, keep_recordings=True)``
    to share the student's and teacher's forwards between calls on the same ``calib_ids``.
    """
    batches = calib_batches(calib_ids, batch_size)
    sums = [0.0] * len(sets)
    teacher: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    runner = runner if runner is not None else PatchRunner(pair)

    # With teacher logits t, model logits x and p = softmax(t), per position
    #   KL(p || q) = sum_v p (log p - log q) = sum_v p (t - x) - logsumexp(t) + logsumexp(x),
    # since sum_v p = 1. p and logsumexp(t) are computed once per batch, so each model costs
    # one difference, one dot product and one logsumexp over the vocabulary rather than a
    # log-softmax and four [B, T, V] passes; the teacher's own logits give exactly 0.
    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        t = runner.teacher_logits[b].float()  # [B, T, V]
        if b not in teacher:
            teacher[b] = (torch.softmax(t, -1), torch.logsumexp(t, -1).double())
        p, lse_t = teacher[b]
        x = logits.float()
        p_dot_d = torch.einsum("btv,btv->bt", p, t - x)  # [B, T]
        kl = p_dot_d.double() + (torch.logsumexp(x, -1).double() - lse_t)
        sums[i] += float(kl.sum())

    runner.run(sets, batches, consume, progress=progress, keep_teacher_logits=True)
    tokens = calib_ids.numel()
    return [s / tokens for s in sums]
