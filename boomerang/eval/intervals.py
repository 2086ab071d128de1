"""95% intervals for the numbers a curve shows: how far a measured accuracy could be from the truth.

An accuracy measured on ``n`` items is a binomial proportion; with a few hundred items its
uncertainty is several points, enough to turn a "win" into noise. :func:`wilson_interval` is
the Wilson score interval (Wilson 1927): unlike the textbook ``p +- 1.96 sqrt(p(1-p)/n)`` it
never leaves [0, 1] and keeps close to its nominal 95% coverage when ``p`` is near 0 or 1 or
``n`` is small. Two results whose intervals overlap are "within noise" of each other.
"""

from __future__ import annotations

import math

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
