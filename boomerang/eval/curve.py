"""An interpolation curve: one patch order's models from the student to the teacher, in order.

Patching student layers one at a time walks from the student (``k = 0``, the first row) to the
teacher (``k = n``, the last row). Each row is one model: how many layers were patched (``k``),
which (``patched``), its decoder ``layers`` and ``params``, and what was measured on it
(``perplexity`` with ``perplexity_lo``/``perplexity_hi`` 95% bounds, an accuracy, ...). Several
rows may share a size: patching a layer whose block is a single teacher layer swaps it for its
twin and keeps the depth.

The questions asked of a curve are the same everywhere (the dashboard, the tour, the shipped
reports' checks), so they live here once:

- :meth:`Curve.intermediate`: the models *strictly between* student and teacher in size -- the
  ones boomerang distillation is about (the ends are the two trained models);
- :meth:`Curve.at_size`: the first model reached with a given number of layers;
- :meth:`Curve.midway`: the model half-way in size.

A curve becomes a DataFrame only at the edges (:meth:`to_frame`, for CSV and plots).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Curve:
    """The rows of one patch order, student first and teacher last (see the module docstring).

    ``rows`` are mappings with at least ``layers``; a row's other keys are whatever was measured.
    """

    rows: tuple[Mapping[str, Any], ...]

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        object.__setattr__(self, "rows", tuple(dict(r) for r in rows))

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "Curve":
        """A curve from a sweep frame of one order (rows sorted by ``k`` when it has one)."""
        if "k" in df:
            df = df.sort_values("k", kind="stable")
        return cls(df.to_dict("records"))

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (CSV, plots)."""
        return pd.DataFrame(list(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> Mapping[str, Any]:
        """Row ``k`` (``curve[0]`` is the student, ``curve[-1]`` the teacher)."""
        return self.rows[k]

    def with_values(self, name: str, values: Iterable[Any]) -> "Curve":
        """This curve with one more measured value per row (a latency, an order's label ...)."""
        return Curve({**r, name: v} for r, v in zip(self.rows, values, strict=True))

    @property
    def layers(self) -> list[int]:
        """Decoder layers of each row's model."""
        return [int(r["layers"]) for r in self.rows]

    def values(self, metric: str = "perplexity") -> list[float]:
        """``metric`` of each row, in order."""
        return [r[metric] for r in self.rows]

    def intervals(self, metric: str = "perplexity") -> list[tuple[float, float] | None]:
        """Each row's 95% interval of ``metric`` (its ``<metric>_lo`` and ``<metric>_hi``), None
        where the row has none."""
        lo, hi = f"{metric}_lo", f"{metric}_hi"
        return [(r[lo], r[hi]) if r.get(lo) is not None and r.get(hi) is not None else None for r in self.rows]

    @property
    def ends(self) -> tuple[int, int]:
        """(student layers, teacher layers): the sizes of the first and the last row."""
        return int(self.rows[0]["layers"]), int(self.rows[-1]["layers"])

    def is_intermediate(self) -> list[bool]:
        """For each row: whether its size lies strictly between the student's and the teacher's."""
        lo, hi = self.ends
        return [lo < n < hi for n in self.layers]

    def intermediate(self) -> "Curve":
        """The rows whose size lies strictly between the student's and the teacher's."""
        return Curve(r for r, inner in zip(self.rows, self.is_intermediate()) if inner)

    def by_size(self) -> dict[int, Mapping[str, Any]]:
        """Layer count -> the first row (the fewest patched layers) of that size."""
        out: dict[int, Mapping[str, Any]] = {}
        for r, n in zip(self.rows, self.layers):
            out.setdefault(n, r)
        return out

    def to_frame_by_size(self) -> pd.DataFrame:
        """:meth:`by_size` as a DataFrame indexed by ``layers`` (to line curves up by size)."""
        rows = self.by_size()
        return pd.DataFrame(list(rows.values())).drop(columns="layers").set_axis(
            pd.Index(list(rows), name="layers"))

    def at_size(self, layers: int) -> Mapping[str, Any] | None:
        """The first row with ``layers`` decoder layers, or None when the curve has no such size."""
        return self.by_size().get(int(layers))

    def midway(self) -> Mapping[str, Any]:
        """The row half-way in size between student and teacher: among the intermediate sizes
        (all rows when there are none), the one closest to the middle, the smaller on a tie,
        the first reached of that size."""
        lo, hi = self.ends
        pool = self.intermediate() if any(self.is_intermediate()) else self
        sizes = pool.by_size()
        return sizes[min(sizes, key=lambda n: (abs(n - (lo + hi) / 2), n))]


def mean_ratio(curve: Curve, reference: Curve, metric: str = "perplexity") -> float | None:
    """Mean of ``curve``'s ``metric`` over ``reference``'s, row by row, over the rows of
    intermediate size (as ``reference`` says; both curves are of one order on one pair shape).
    None when the curve has no intermediate size."""
    inner = reference.is_intermediate()
    ratios = [a / b for a, b, keep in zip(curve.values(metric), reference.values(metric), inner) if keep]
    return sum(ratios) / len(ratios) if ratios else None

