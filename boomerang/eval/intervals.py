"""95% intervals for the numbers a curve shows: how far a measured accuracy or perplexity could be
from the truth.

An accuracy measured on ``n`` items is a binomial proportion; with a few hundred items its
uncertainty is several points, enough to turn a "win" into noise. :func:`wilson_interval` is
the Wilson score interval (Wilson 1927): unlike the textbook ``p +- 1.96 sqrt(p(1-p)/n)`` it
never leaves [0, 1] and keeps close to its nominal 95% coverage when ``p`` is near 0 or 1 or
``n`` is small. Two results whose intervals overlap are "within noise" of each other.

A perplexity is measured on ``n`` evaluation blocks, and blocks differ far more than tokens within
one do (a block of verse against one of news), so :func:`bootstrap_perplexity` resamples whole
blocks: the percentile bootstrap (Efron 1979) of ``exp(sum NLL / sum tokens)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import BoomerangError

#: The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(lo, hi)`` of a proportion of ``correct`` successes in ``n`` trials.

    ``lo, hi = (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = correct / n``.
    """
    if isinstance(correct, bool) or isinstance(n, bool) or not (
            isinstance(correct, int) and isinstance(n, int)) or n < 1 or not 0 <= correct <= n:
        raise BoomerangError(f"An interval needs 0 <= correct <= n and n >= 1, not correct={correct!r}, n={n!r}.")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding would leave 0.9999999999999999.
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


#: Resamples and seed of :func:`bootstrap_perplexity`: fixed, so a number's interval is reproducible.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_perplexity(block_nll: Sequence[float], block_tokens: Sequence[int], level: float = 0.95,
                         resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile-bootstrap interval ``(lo, hi)`` of a perplexity over evaluation blocks.

    Each of ``resamples`` draws picks ``n`` blocks with replacement (``numpy.random.default_rng(seed)``)
    and computes ``exp(sum of their summed NLL / sum of their scored tokens)``; the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those perplexities. One block gives
    no spread: its interval is the point.
    """
    nll = np.asarray(block_nll, dtype=np.float64)
    tokens = np.asarray(block_tokens, dtype=np.float64)
    if nll.ndim != 1 or nll.shape != tokens.shape or len(nll) == 0 or not 0 < level < 1:
        raise BoomerangError(f"A bootstrap needs one NLL and one token count per block and 0 < level < 1, not "
                             f"{len(nll)} NLLs, {len(tokens)} counts and level {level!r}.")
    draws = np.random.default_rng(seed).integers(0, len(nll), size=(resamples, len(nll)))
    ppl = np.exp(nll[draws].sum(axis=1) / tokens[draws].sum(axis=1))
    lo, hi = np.quantile(ppl, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
