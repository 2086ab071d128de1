"""Calibration text and the KL of patched models to the teacher: what data-driven orders minimise.

Orders such as KLPatch, optimal and shortest-path choose which layers to patch by how far each
candidate model's next-token distribution is from the teacher's, measured on a few blocks of
*training* text (calibration text), never on the text the results are evaluated on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..core import BoomerangPair, PatchRunner
from ..data import load_blocks
from ..errors import BoomerangError
from ..progress import Progress


def calibration_ids(pair: BoomerangPair, n: int = 8, seq_len: int = 128, source: str = "demo") -> torch.Tensor:
    """``[n, seq_len]`` token ids from the *training* split of ``source`` for KL-guided orders."""
    if pair.tokenizer is None:
        raise BoomerangError("This pair has no tokenizer; pass calibration token ids yourself.")
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
    teacher_logp: dict[int, torch.Tensor] = {}
    runner = runner if runner is not None else PatchRunner(pair)

    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        if b not in teacher_logp:
            teacher_logp[b] = torch.log_softmax(runner.teacher_logits[b].float(), -1)  # [B, T, V]
        lp = teacher_logp[b]
        lq = torch.log_softmax(logits.float(), -1)
        sums[i] += float((lp.exp() * (lp - lq)).sum(-1).double().sum())

    runner.run(sets, batches, consume, progress=progress, keep_teacher_logits=True)
    tokens = calib_ids.numel()
    return [s / tokens for s in sums]
