"""The Learn page's claims, computed from the curves its plots show (so each sentence is true of its plot).

Each function picks the numbers a step of the tour quotes: the size half-way between student
and teacher, two orders at the same *size* (not the same number of patched layers), which single
patches help. ``tests/test_app.py`` checks the sentences against the demo's numbers.
"""

from __future__ import annotations

import pandas as pd


def midway_row(curve_df: pd.DataFrame) -> pd.Series:
    """The row of a curve whose layer count is closest to half-way between its first (student)
    and last (teacher) rows; among rows of that size, the first reached (smallest k)."""
    lo, hi = int(curve_df["layers"].iloc[0]), int(curve_df["layers"].iloc[-1])
    middle = (lo + hi) / 2
    inner = curve_df[(curve_df["layers"] > lo) & (curve_df["layers"] < hi)]
    pool = inner if not inner.empty else curve_df
    dist = (pool["layers"] - middle).abs()
    best = pool[dist == dist.min()]
    return best.sort_values(["layers", "k"]).iloc[0]


def first_at_each_size(curve_df: pd.DataFrame) -> pd.DataFrame:
    """One row per layer count: the first (smallest k) model of the curve with that many layers."""
    return curve_df.sort_values("k").drop_duplicates("layers", keep="first").set_index("layers")


def at_equal_sizes(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Perplexity of each named curve at every layer count strictly between student and teacher
    that all of them reach: index ``layers``, one column per name (plus ``k_<name>``)."""
    parts = []
    for name, df in curves.items():
        first = first_at_each_size(df)
        parts.append(first[["perplexity", "k"]].rename(columns={"perplexity": name, "k": f"k_{name}"}))
    table = pd.concat(parts, axis=1, join="inner").sort_index()
    any_df = next(iter(curves.values()))
    lo, hi = int(any_df["layers"].min()), int(any_df["layers"].max())
    return table[(table.index > lo) & (table.index < hi)]


def largest_gap(table: pd.DataFrame, a: str, b: str) -> tuple[int, float, float] | None:
    """(layers, perplexity of ``a``, of ``b``) at the size where they differ most (relative); None if no size."""
    if table.empty:
        return None
    ratio = (table[a] / table[b]).map(lambda r: max(r, 1 / r))
    layers = int(ratio.idxmax())
    return layers, float(table.loc[layers, a]), float(table.loc[layers, b])


def single_patch_summary(gains: pd.DataFrame) -> dict[str, object]:
    """From :func:`boomerang.ui.single_layer_gains`: which layers help alone, the best, the worst.

    ``helps``/``hurts``/``neutral`` are student layer lists (gain > 0, < 0, == 0 within 1e-9).
    """
    helps = [int(r.student_layer) for r in gains.itertuples() if r.gain > 1e-9]
    hurts = [int(r.student_layer) for r in gains.itertuples() if r.gain < -1e-9]
    neutral = [int(r.student_layer) for r in gains.itertuples() if abs(r.gain) <= 1e-9]
    best = gains.loc[gains["gain"].idxmax()]
    worst = gains.loc[gains["gain"].idxmin()]
    return {"helps": helps, "hurts": hurts, "neutral": neutral, "best": int(best.student_layer),
            "worst": int(worst.student_layer)}
