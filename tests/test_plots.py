"""The dashboard's figure builders produce figures plotly itself accepts (they skip validation)."""

from __future__ import annotations

import pandas as pd
import pytest
import plotly.graph_objects as go

from boomerang import plots


def _valid(fig: go.Figure) -> None:
    go.Figure(fig.to_dict())  # raises on any invalid property
    fig.to_json()


def test_every_builder_makes_a_valid_figure():
    df = pd.DataFrame({"order": ["last-to-first"] * 3 + ["naive-pruning"] * 3, "k": [0, 1, 2] * 2,
                       "patched": [(), (2,), (1, 2), (), (), ()], "layers": [3, 4, 5, 3, 4, 5],
                       "params": [100, 150, 200, 100, 150, 200], "perplexity": [9.0, 7.0, 5.0, 30, 20, 5],
                       "nll": [2.2, 1.9, 1.6, 3.4, 3.0, 1.6]})
    cur = df.iloc[1].to_dict()
    _valid(plots.curve_figure(df, current=cur, extra=[{**cur, "name": "pick"}]))
    _valid(plots.curve_figure(df, x="layers", y="nll", traces=plots.curve_traces(df, "layers", "nll")))
    cells = [{"source": "student", "index": 0, "student_layer": 0, "position": 0},
             {"source": "teacher", "index": 2, "student_layer": 1, "position": 1}]
    _valid(plots.strip_figure(cells, ["S0 → T0–1", "S1 → T2"]))
    sim = pd.DataFrame([[1.0, 0.5], [0.4, 0.9]], index=["emb", "s0"], columns=["emb", "t0"])
    _valid(plots.heatmap_figure(sim, [("emb", "emb"), ("s0", "t0")]))
    per = pd.DataFrame({"label": ["a", "b", "c"], "cos": [0.9, 0.5, 0.7], "gain": [1.0, 3.0, 2.0]})
    _valid(plots.bar_figure(per, "label", "cos", title="t"))
    _valid(plots.scatter_figure(per, "cos", "gain", text="label"))
    _valid(plots.loss_figure(pd.DataFrame({"step": [1, 2], "loss": [3.0, 2.5], "kl": [1.0, 0.8]})))


def test_current_marker_carries_its_size():
    df = pd.DataFrame({"order": ["a", "a"], "k": [0, 1], "patched": [(), (0,)], "layers": [2, 3],
                       "params": [10, 20], "perplexity": [5.0, 4.0]})
    fig = plots.curve_figure(df, current=df.iloc[1].to_dict())
    cur = [t for t in fig.data if t.name == "current"][0]
    assert list(cur.customdata) == [1] and list(cur.x) == [20]


def test_orders_stay_visible_on_the_optimal_line_and_repeated_sizes_are_labelled():
    df = pd.DataFrame({"order": ["optimal"] * 3 + ["klpatch"] * 3 + ["last-to-first"] * 3, "k": [0, 1, 2] * 3,
                       "layers": [3, 3, 5] * 3, "params": [1, 2, 3] * 3, "perplexity": [9.0, 9.0, 5.0] * 3})
    traces = {t["name"]: t for t in plots.curve_traces(df, "layers")}
    names = [t["name"] for t in plots.curve_traces(df, "layers")]
    assert names[0] == "optimal"  # drawn first: underneath
    kl, opt = traces["klpatch"], traces["optimal"]
    assert kl["line"]["dash"] != "solid" and kl["marker"]["symbol"] != opt["marker"]["symbol"]
    assert traces["last-to-first"]["text"] == ["k=0,1", "", ""]  # k = 0 and 1 share 3 layers


def test_exported_html_opens_offline():
    """The downloaded figure carries plotly.js itself: no script is fetched from a CDN."""
    import re

    fig = plots.curve_figure(pd.DataFrame({"order": ["a", "a"], "k": [0, 1], "layers": [7, 8],
                                           "params": [10, 12], "perplexity": [40.0, 38.0]}), x="layers")
    html = plots.figure_html(fig).decode()
    assert not re.search(r"<script[^>]+src=", html)
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # the library itself is inline


def test_validation_figure_has_a_line_per_watched_model():
    log = pd.DataFrame({"step": [10, 20, 30, 40], "loss": [3.0, 2.5, 2.2, 2.0],
                        "val_ppl": [None, 50.0, None, 40.0], "val_ppl_k2": [None, 45.0, None, 38.0]})
    fig = plots.validation_figure(log)
    _valid(fig)
    assert [t.name for t in fig.data] == ["student", "2 layers patched"]
    assert list(fig.data[0].x) == [20, 40] and list(fig.data[1].y) == [45.0, 38.0]
    assert fig.layout.xaxis.tickvals is None
    first = plots.validation_figure(log.iloc[:2])  # one evaluation so far
    assert list(first.layout.xaxis.tickvals) == [20]  # not 19.5, 20, 20.5


def test_a_bar_axis_that_does_not_start_at_zero_says_so():
    df = pd.DataFrame({"layer": ["S0", "S1"], "cos": [0.955, 0.99]})
    zoomed = plots.bar_figure(df, "layer", "cos", y_title="cosine similarity", y_range=(0.95, 1.0))
    assert zoomed.layout.yaxis.title.text == "cosine similarity<br>(axis from 0.95, not 0)"
    assert list(zoomed.layout.yaxis.range) == [0.95, 1.0]
    plain = plots.bar_figure(df, "layer", "cos", y_title="cosine similarity")
    assert plain.layout.yaxis.title.text == "cosine similarity"


def test_scatter_leaves_room_for_the_labels_of_its_end_points():
    df = pd.DataFrame({"sim": [0.96, 0.98, 1.0], "gain": [0.1, 0.5, 0.0], "label": ["a", "b", "c"]})
    fig = plots.scatter_figure(df, "sim", "gain", text="label")
    lo, hi = fig.layout.xaxis.range
    assert lo < 0.96 - 0.01 and hi > 1.0 + 0.01
    bottom, top = fig.layout.yaxis.range
    assert bottom < 0.0 and top > 0.5 + 0.05


def test_points_on_the_same_spot_share_one_label():
    df = pd.DataFrame({"sim": [0.96, 1.0, 1.0], "gain": [0.3, 0.0, 0.0], "label": ["S0", "S5", "S6"]})
    fig = plots.scatter_figure(df, "sim", "gain", text="label")
    assert list(fig.data[0].text) == ["S0", "S5, S6", ""]


def test_a_sweeps_intervals_are_drawn_as_error_bars():
    df = pd.DataFrame({"order": ["a", "a"], "k": [0, 1], "patched": [(), (0,)], "layers": [2, 3],
                       "params": [10, 20], "perplexity": [5.0, 4.0], "perplexity_lo": [4.5, 3.0],
                       "perplexity_hi": [6.0, 4.25]})
    fig = plots.curve_figure(df, x="layers")
    _valid(fig)
    bars = [t for t in fig.data if t.name == "a"][0].error_y
    assert list(bars.array) == [1.0, 0.25] and list(bars.arrayminus) == [0.5, 1.0] and not bars.symmetric
    # No interval columns (a frame from elsewhere, or nll): no bars.
    assert not plots.curve_figure(df.drop(columns=["perplexity_lo", "perplexity_hi"])).data[0].error_y.array


def test_students_distilled_at_each_size_are_points_not_a_curve():
    df = pd.DataFrame({"order": ["last-to-first"] * 2 + ["distilled at this size"] * 2, "k": [0, 1, 0, 0],
                       "patched": [(), (0,), "", ""], "layers": [2, 3, 2, 3], "params": [10, 20, 10, 20],
                       "perplexity": [5.0, 4.0, 4.8, 3.9]})
    fig = plots.curve_figure(df, x="layers")
    _valid(fig)
    by_name = {t.name: t for t in fig.data}
    assert by_name["last-to-first"].mode == "lines+markers"
    points = by_name["distilled at this size"]
    assert points.mode == "markers" and list(points.x) == [2, 3] and list(points.y) == [4.8, 3.9]


def test_repeated_size_labels_sit_on_the_side_the_curve_does_not_come_from():
    # Perplexity falls towards the teacher: the end's label goes below (the curve comes from above),
    # the start's above; accuracy rises, so its labels go the other way.
    df = pd.DataFrame({"order": ["a"] * 6, "k": range(6), "layers": [3, 3, 4, 5, 6, 6],
                       "params": range(6), "perplexity": [9.0, 9.0, 7.0, 6.0, 5.0, 5.0],
                       "acc": [0.2, 0.2, 0.3, 0.4, 0.5, 0.5]})
    ppl = plots.curve_traces(df, "layers")[0]
    assert ppl["text"] == ["k=0,1", "", "", "", "k=4,5", ""]
    assert ppl["textposition"][0] == "top right" and ppl["textposition"][4] == "bottom left"
    acc = plots.curve_traces(df, "layers", "acc")[0]
    assert acc["textposition"][0] == "bottom right" and acc["textposition"][4] == "top left"


def test_a_curve_that_breaks_the_model_is_named_off_scale_instead_of_flattening_the_rest():
    df = pd.DataFrame({"order": ["last-to-first"] * 3 + ["laco"] * 3, "k": [0, 1, 2] * 2, "layers": [7, 8, 9] * 2,
                       "params": [1, 2, 3] * 2, "perplexity": [40.0, 35.0, 30.0, 250_000.0, 900.0, 33.0]})
    fig = plots.curve_figure(df, x="layers")
    _valid(fig)
    lo, hi = fig.layout.yaxis.range
    assert 10 ** hi == pytest.approx(200 * 40.0) and 10 ** lo < 30.0  # up to 200x the best at its worst size
    (note,) = fig.layout.annotations
    assert note.text == "off scale: laco (up to 250,000)"
    # Nothing off scale: the axis is left to plotly.
    assert plots.curve_figure(df[df.order == "last-to-first"], x="layers").layout.yaxis.range is None
