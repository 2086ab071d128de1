"""The curve type: the intermediate sizes, the first model of each size, the half-way model."""

import pandas as pd
import pytest

from boomerang.eval import Curve
from boomerang.eval.curve import mean_ratio

# A 4-layer student of an 8-layer teacher whose layer 0 is one-to-one: k=1 keeps the size.
ROWS = [
    {"k": 0, "layers": 4, "perplexity": 40.0},
    {"k": 1, "layers": 4, "perplexity": 39.0},
    {"k": 2, "layers": 6, "perplexity": 30.0},
    {"k": 3, "layers": 7, "perplexity": 25.0},
    {"k": 4, "layers": 8, "perplexity": 20.0},
]


def test_intermediate_sizes_are_strictly_between_student_and_teacher():
    c = Curve(ROWS)
    assert c.ends == (4, 8)
    assert c.is_intermediate() == [False, False, True, True, False]
    assert [r["k"] for r in c.intermediate().rows] == [2, 3]
    assert Curve(ROWS[:2]).intermediate().rows == ()


def test_the_first_model_reached_stands_for_its_size():
    c = Curve(ROWS)
    assert sorted(c.by_size()) == [4, 6, 7, 8]
    assert c.at_size(4)["k"] == 0 and c.at_size(7)["perplexity"] == 25.0 and c.at_size(5) is None


def test_midway_is_the_intermediate_size_nearest_the_middle_smaller_on_a_tie():
    assert Curve(ROWS).midway()["k"] == 2  # middle 6: exactly 6 layers
    tie = [{"k": 0, "layers": 2}, {"k": 1, "layers": 3}, {"k": 2, "layers": 5}, {"k": 3, "layers": 6}]
    assert Curve(tie).midway()["layers"] == 3  # middle 4: 3 and 5 tie, the smaller wins
    flat = [{"k": 0, "layers": 3}, {"k": 1, "layers": 3}]
    assert Curve(flat).midway()["k"] == 0  # no intermediate size: the first row


def test_a_frame_becomes_a_curve_in_k_order_and_back():
    df = pd.DataFrame(ROWS[::-1])
    c = Curve.from_frame(df)
    assert [r["k"] for r in c.rows] == [0, 1, 2, 3, 4]
    assert c.to_frame()["perplexity"].tolist() == [40.0, 39.0, 30.0, 25.0, 20.0]


def test_mean_ratio_over_intermediate_sizes_only():
    other = [dict(r, perplexity=r["perplexity"] * f) for r, f in zip(ROWS, (9, 9, 2, 1, 9))]
    assert mean_ratio(Curve(other), Curve(ROWS)) == pytest.approx(1.5)
    assert mean_ratio(Curve(ROWS[:2]), Curve(ROWS[:2])) is None


def test_curves_line_up_by_size():
    table = Curve(ROWS).to_frame_by_size()
    assert table.index.name == "layers" and list(table.index) == [4, 6, 7, 8]
    assert table["k"].tolist() == [0, 2, 3, 4] and "layers" not in table


def test_rows_values_and_their_intervals():
    rows = [dict(r, perplexity_lo=r["perplexity"] - 1, perplexity_hi=r["perplexity"] + 1) for r in ROWS[:2]]
    c = Curve(rows + ROWS[2:])
    assert c[0]["k"] == 0 and c[-1]["layers"] == 8 and len(c) == 5
    assert c.intervals()[:3] == [(39.0, 41.0), (38.0, 40.0), None]
    timed = c.with_values("latency", [1.0, 1.0, 2.0, 3.0, 4.0])
    assert timed.values("latency") == [1.0, 1.0, 2.0, 3.0, 4.0] and "latency" not in c[0]
    with pytest.raises(ValueError):
        c.with_values("latency", [1.0])
