"""The learning-rate schedule every training loop uses: linear warmup, then cosine decay.

The multiplier of step ``s`` (0-based) is ``(s + 1) / (warmup + 1)`` during warmup, then falls
along half a cosine from 1 to ``min_ratio`` over the remaining steps.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, warmup: int, steps: int, min_ratio: float, progress_at_least: float = 0.0) -> float:
    """The peak learning rate's multiplier at ``step``.

    ``progress_at_least`` (0..1) moves the decay further along than the step count says: a run
    with a time limit passes the fraction of its time used, so a run cut short still ends annealed.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if steps <= warmup:
        return 1.0
    progress = max(min(1.0, (step - warmup) / (steps - warmup)), min(1.0, progress_at_least))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
