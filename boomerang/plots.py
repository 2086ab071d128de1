"""Plotly figure builders for the dashboard (and for anyone who wants the same plots in a notebook).

Each function takes plain data (frames, lists) and returns a ``plotly.graph_objects.Figure``; no
computation beyond reshaping happens here. Figures are assembled as plain dicts and wrapped
without plotly's property validation (``_validate=False``): validation costs ~50-150 ms per
figure on a busy CPU, which would dominate a slider move. ``tests/test_plots.py`` validates every
builder's output once instead.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

STUDENT_COLOR = "#4C78A8"
TEACHER_COLOR = "#F58518"
#: One colour per order, stable across pages.
ORDER_COLORS = {
    "last-to-first": "#4C78A8",
    "first-to-last": "#E45756",
    "similarity": "#72B7B2",
    "klpatch": "#54A24B",
    "optimal": "#000000",
    "shortest-path": "#B279A2",
    "naive-pruning": "#9D755D",
    "block-influence": "#BAB0AC",
    "angular": "#FF9DA6",
    "sleb": "#79706E",
    "laco": "#D67195",
    "custom": "#EECA3B",
    "distilled at this size": "#F58518",
}
EXTRA_COLORS = ["#4C78A8", "#E45756", "#9D755D", "#72B7B2", "#54A24B", "#B279A2", "#FF9DA6"]
X_TITLES = {"params": "parameters", "layers": "decoder layers", "k": "student layers patched",
            "latency": "latency (ms per token, measured)"}
Y_TITLES = {"perplexity": "perplexity (lower is better)", "nll": "NLL (nats/token)"}


def _layout(**kw: Any) -> dict[str, Any]:
    # No template: the dashboard applies Streamlit's theme; exports get one in for_export().
    base = dict(margin=dict(l=10, r=10, t=40, b=10),
                legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))
    base.update(kw)
    return base


def _legend_below(title: str | None) -> dict[str, Any]:
    """Layout keys that put the legend under the plot: at the top, plotly's toolbar (top right, shown
    on hover) and the title cover it."""
    top = 30 if not title else 40 + 20 * title.count("<br>")
    return dict(margin=dict(l=10, r=10, t=top, b=10),
                legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, xanchor="left", x=0))


def figure(spec: dict[str, Any]) -> go.Figure:
    """Wrap a figure dict without validation (see the module docstring)."""
    return go.Figure(spec, _validate=False)


def _num(v: Any) -> Any:
    """Plain Python numbers (numpy scalars do not survive a dict-built figure's JSON)."""
    try:
        return v.item()
    except AttributeError:
        return v


def _hover(df: pd.DataFrame) -> list[str]:
    out = []
    for r in df.to_dict("records"):
        p = r.get("patched", ())
        patched = ", ".join(str(i) for i in p) if isinstance(p, (tuple, list, frozenset, set)) else str(p or "")
        out.append(f"{r.get('order', '')}<br>k={r.get('k', '')}, layers={r.get('layers', '')}, "
                   f"params={int(r.get('params', 0)):,}<br>patched: {patched or 'none'}")
    return out


#: Marker symbol and line dash per order, so curves that coincide stay visible (a greedy order
#: lying exactly on the optimal line shows its markers and dashes on top of it). A dash of None
#: draws separate models as points.
ORDER_STYLES = {
    "last-to-first": ("circle", "solid"),
    "first-to-last": ("square", "solid"),
    "similarity": ("diamond", "dot"),
    "klpatch": ("triangle-up", "dash"),
    "optimal": ("circle-open", "solid"),
    "shortest-path": ("x", "dashdot"),
    "naive-pruning": ("circle-open", "dot"),
    "block-influence": ("square-open", "dot"),
    "angular": ("diamond-open", "dot"),
    "sleb": ("triangle-down-open", "dot"),
    "laco": ("hexagon-open", "dot"),
    "custom": ("star-triangle-up", "longdash"),
    "distilled at this size": ("diamond", None),  # separate models: points, no line between them
}


def _repeat_labels(g: pd.DataFrame, x: str) -> list[str]:
    """Text for points that share an x within one curve: "k=0,1,2" on the first, "" elsewhere."""
    if "k" not in g:
        return [""] * len(g)
    seen: dict[Any, list[int]] = {}
    for xv, k in zip(g[x], g["k"]):
        seen.setdefault(_num(xv), []).append(int(k))
    out, done = [], set()
    for xv in g[x]:
        key = _num(xv)
        ks = seen[key]
        out.append(f"k={','.join(map(str, ks))}" if len(ks) > 1 and key not in done else "")
        done.add(key)
    return out


def _label_positions(xs: list[Any], ys: list[Any]) -> list[str]:
    """Where each point's text goes, so that it sits beside its curve rather than on it: towards
    the plot's inside at the right end (the edge would cut it), and above or below the point on
    the side the curve does not come from (a falling curve reaches its right end from above)."""
    out = []
    right_end = max(xs)
    for i, (x, y) in enumerate(zip(xs, ys)):
        if x == right_end:
            prev = next((ys[j] for j in range(i - 1, -1, -1) if xs[j] != x), None)
            out.append("bottom left" if prev is not None and prev > y else "top left")
        else:
            nxt = next((ys[j] for j in range(i + 1, len(xs)) if xs[j] != x), None)
            out.append("bottom right" if nxt is not None and nxt > y else "top right")
    return out


def curve_traces(df: pd.DataFrame, x: str = "params", y: str = "perplexity") -> list[dict[str, Any]]:
    """One line per ``order`` of a sweep frame (dicts, for :func:`curve_figure`).

    The optimal curve is drawn first, wide and pale, so the orders that reach it stay visible on
    top; points of one curve that share an x (one-to-one layers swapped) are labelled with their k.
    Where the frame has ``<y>_lo`` and ``<y>_hi`` (a sweep's 95% intervals), each point gets
    them as an error bar.
    """
    traces = []
    if df.empty:
        return traces
    groups = list(df.groupby("order", sort=False))
    groups.sort(key=lambda og: og[0] != "optimal")  # stable: the optimum underneath, the rest in order
    for i, (order, g) in enumerate(groups):
        g = g.sort_values([x, "k"] if "k" in g else x)
        name = str(order)
        symbol, dash = ORDER_STYLES.get(name, ("circle", "solid"))
        color = ORDER_COLORS.get(name, EXTRA_COLORS[i % len(EXTRA_COLORS)])
        labels = _repeat_labels(g, x)
        trace = dict(
            type="scatter", x=[_num(v) for v in g[x]], y=[_num(v) for v in g[y]],
            mode="lines+markers+text" if any(labels) else "lines+markers",
            name=name, hovertext=_hover(g), hoverinfo="text+y",
            line=dict(color=color, dash=dash, width=2),
            marker=dict(size=7, symbol=symbol, color=color),
        )
        if dash is None:
            trace.update(mode="markers", line=dict(color=color),
                         marker=dict(size=12, symbol=symbol, color=color, line=dict(width=1, color="black")))
        if f"{y}_lo" in g and f"{y}_hi" in g and g[f"{y}_lo"].notna().all():  # the 95% interval, as error bars
            ys = [_num(v) for v in g[y]]
            trace["error_y"] = dict(type="data", symmetric=False, thickness=1, width=3, color=color,
                                    array=[_num(h) - v for h, v in zip(g[f"{y}_hi"], ys)],
                                    arrayminus=[v - _num(lo) for lo, v in zip(g[f"{y}_lo"], ys)])
        if any(labels):
            trace.update(text=labels, textfont=dict(size=11, color=color),
                         textposition=_label_positions(trace["x"], trace["y"]))
        if name == "optimal":
            trace.update(line=dict(color=color, width=8), opacity=0.3, marker=dict(size=12, symbol=symbol,
                                                                                 color=color))
        traces.append(trace)
    return traces


#: A perplexity axis reaches at most this many times the best model's perplexity at its worst
#: size; higher points (a pruning baseline that breaks the model) are named, not drawn to scale.
OFF_SCALE = 200.0


def _cap_off_scale(data: list[dict[str, Any]], yaxis: dict[str, Any]) -> list[dict[str, Any]]:
    """Limit a log perplexity axis so that one broken curve (hundreds of thousands) does not flatten
    the rest into a line: the top is :data:`OFF_SCALE` times the highest of the per-size best
    values; a note names each curve that goes above it, with its highest value."""
    best: dict[float, float] = {}
    for t in data:
        for xv, yv in zip(t.get("x", []), t.get("y", [])):
            if xv is not None and yv is not None and yv > 0:
                best[xv] = min(best.get(xv, math.inf), yv)
    if not best:
        return []
    top = OFF_SCALE * max(best.values())
    off = [(str(t.get("name", "")), max(v for v in t["y"] if v is not None)) for t in data
           if any(v is not None and v > top for v in t.get("y", []))]
    if not off:
        return []
    low = min(v for t in data for v in t.get("y", []) if v is not None and v > 0)
    yaxis["range"] = [math.log10(low * 0.8), math.log10(top)]
    text = "off scale: " + "; ".join(f"{name} (up to {peak:,.0f})" for name, peak in off)
    return [dict(xref="paper", yref="paper", x=1, y=1, xanchor="right", yanchor="top", showarrow=False,
                 font=dict(size=12), text=text)]


def curve_figure(df: pd.DataFrame, x: str = "params", y: str = "perplexity",
                 current: dict[str, Any] | None = None, extra: Sequence[dict[str, Any]] = (),
                 log_y: bool = True, title: str | None = None, height: int = 420,
                 traces: list[dict[str, Any]] | None = None, y_title: str | None = None,
                 x_title: str | None = None) -> go.Figure:
    """Curves of ``y`` against ``x``, one per ``order`` in ``df``; ``current`` is marked with a star.

    ``extra`` are further marked points: dicts with x, y keys named like the axes and a ``name``.
    ``traces`` (from :func:`curve_traces`) skips rebuilding the curves when they are cached.
    """
    data = copy.deepcopy(traces) if traces is not None else curve_traces(df, x, y)
    for pt in extra:
        data.append(dict(type="scatter", x=[_num(pt[x])], y=[_num(pt[y])], mode="markers",
                         name=pt.get("name", "point"),
                         marker=dict(size=14, symbol=pt.get("symbol", "diamond"), color=pt.get("color", "#EECA3B"),
                                     line=dict(width=1, color="black"))))
    shapes = []
    if current is not None:
        data.append(dict(type="scatter", x=[_num(current[x])], y=[_num(current[y])], mode="markers",
                         name="current", customdata=[_num(current.get("k"))],
                         marker=dict(size=18, symbol="star", color="#EECA3B",
                                     line=dict(width=1.5, color="black"))))
        shapes.append(dict(type="line", xref="x", yref="paper", x0=_num(current[x]), x1=_num(current[x]),
                           y0=0, y1=1, line=dict(color="#888", width=1, dash="dash")))
    xaxis: dict[str, Any] = dict(title=dict(text=x_title or X_TITLES.get(x, x)))
    if x == "params":
        xaxis["tickformat"] = "~s"
    elif x in ("layers", "k"):
        xaxis["dtick"] = 1  # whole layers only
    yaxis: dict[str, Any] = dict(title=dict(text=y_title or Y_TITLES.get(y, "accuracy" if y not in df else y)))
    annotations = []
    if log_y and y == "perplexity":
        yaxis["type"] = "log"
        yaxis["tickformat"] = ",.4~r"  # 20, 50, 100, 2,000, 514.5: no bare "2" and "5" minor labels
        annotations = _cap_off_scale(data, yaxis)
    layout = _layout(height=height + 60, xaxis=xaxis, yaxis=yaxis, shapes=shapes, annotations=annotations,
                     **_legend_below(title))
    if title:
        layout["title"] = dict(text=title)
    return figure(dict(data=data, layout=layout))


def strip_figure(cells: list[dict[str, Any]], labels: Sequence[str] | None = None,
                 height: int = 170) -> go.Figure:
    """The composed model as a strip of cells, input on the left: blue student, orange teacher."""
    data = []
    for who, color in (("student", STUDENT_COLOR), ("teacher", TEACHER_COLOR)):
        cs = [c for c in cells if c["source"] == who]
        if not cs:
            continue
        data.append(dict(
            type="bar", orientation="h", x=[1] * len(cs), base=[c["position"] for c in cs],
            y=["model"] * len(cs), name=who, marker=dict(color=color, line=dict(color="white", width=2)),
            text=[f"{'S' if who == 'student' else 'T'}{c['index']}" for c in cs],
            textposition="inside", insidetextanchor="middle",
            hovertext=[f"position {c['position']}: {who} layer {c['index']}<br>(student slot "
                       f"{c['student_layer']}{': ' + labels[c['student_layer']] if labels else ''})"
                       for c in cs],
            hoverinfo="text",
        ))
    layout = _layout(barmode="overlay", height=height, showlegend=True, bargap=0.1,
                     xaxis=dict(title=dict(text="depth (input → output)"),
                                range=[-0.2, max(1, len(cells)) + 0.2], dtick=1, showgrid=False),
                     yaxis=dict(visible=False))
    return figure(dict(data=data, layout=layout))


def heatmap_figure(sim: pd.DataFrame, outline: Sequence[tuple[str, str]] = (),
                   title: str | None = None, height: int = 440) -> go.Figure:
    """Student (rows) x teacher (columns) cosine similarity; ``outline`` cells (row, column labels)
    are framed — the mapping's student-layer/block-end pairs."""
    rows, cols = [str(r) for r in sim.index], [str(c) for c in sim.columns]
    shapes = []
    for r, c in outline:
        if r in rows and c in cols:
            i, j = rows.index(r), cols.index(c)
            shapes.append(dict(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                               line=dict(color="white", width=2.5)))
    data = [dict(type="heatmap", z=sim.values.tolist(), x=cols, y=rows, colorscale="Viridis",
                 zmin=float(min(0.0, sim.values.min())), zmax=1.0, colorbar=dict(title=dict(text="cos")),
                 hovertemplate="student %{y}<br>teacher %{x}<br>cos %{z:.3f}<extra></extra>")]
    layout = _layout(height=height, shapes=shapes,
                     xaxis=dict(title=dict(text="teacher hidden state"), type="category"),
                     yaxis=dict(title=dict(text="student hidden state"), type="category", autorange="reversed"))
    if title:
        layout["title"] = dict(text=title)
    return figure(dict(data=data, layout=layout))


def bar_figure(df: pd.DataFrame, x: str, y: str, title: str | None = None, y_title: str | None = None,
               color: str | Sequence[str] = STUDENT_COLOR, height: int = 320,
               y_range: tuple[float, float] | None = None,
               reference: tuple[float, str] | None = None) -> go.Figure:
    """A plain bar chart (``y_range`` zooms in on values that differ little, and the axis title
    then says where it starts; ``reference`` is a labelled horizontal line ``(y, label)``)."""
    data = [dict(type="bar", x=[str(v) for v in df[x]], y=[_num(v) for v in df[y]],
                 marker=dict(color=color if isinstance(color, str) else list(color)),
                 hovertemplate="%{x}: %{y:,.3f}<extra></extra>", name=y_title or y)]
    y_text = y_title or y
    if y_range is not None and y_range[0] != 0:
        y_text += f"<br>(axis from {y_range[0]:,.2f}, not 0)"
    yaxis: dict[str, Any] = dict(title=dict(text=y_text))
    if y_range is not None:
        yaxis["range"] = list(y_range)
    shapes, annotations = [], []
    if reference is not None:
        shapes.append(dict(type="line", xref="paper", x0=0, x1=1, y0=_num(reference[0]), y1=_num(reference[0]),
                           line=dict(color="#444", width=1.5, dash="dash")))
        annotations.append(dict(xref="paper", x=1, xanchor="right", y=_num(reference[0]), yanchor="bottom",
                                text=reference[1], showarrow=False, font=dict(size=11, color="#444")))
    layout = _layout(height=height, yaxis=yaxis, shapes=shapes, annotations=annotations)
    if title:
        layout["title"] = dict(text=title)
    return figure(dict(data=data, layout=layout))


def _merged_labels(df: pd.DataFrame, x: str, y: str, text: str) -> list[str]:
    """Point labels, with the labels of points drawn on the same spot joined on the first of them
    (written on top of each other they could not be read)."""
    spots: dict[tuple, int] = {}
    labels = [str(t) for t in df[text]]
    for i, (a, b) in enumerate(zip(df[x].round(6), df[y].round(6))):
        first = spots.setdefault((a, b), i)
        if first != i:
            labels[first] += f", {labels[i]}"
            labels[i] = ""
    return labels


def scatter_figure(df: pd.DataFrame, x: str, y: str, text: str | None = None,
                   x_title: str | None = None, y_title: str | None = None, title: str | None = None,
                   height: int = 380) -> go.Figure:
    """Labelled scatter with a least-squares line (when there are 3 points or more)."""
    data = [dict(type="scatter", x=[_num(v) for v in df[x]], y=[_num(v) for v in df[y]],
                 mode="markers+text" if text else "markers",
                 text=_merged_labels(df, x, y, text) if text else None, textposition="top center",
                 marker=dict(size=11, color=TEACHER_COLOR, line=dict(width=1, color="black")),
                 name="student layers")]
    if len(df) >= 3 and df[x].nunique() > 1:

        a, b = np.polyfit(df[x].astype(float), df[y].astype(float), 1)
        xs = np.linspace(float(df[x].min()), float(df[x].max()), 20)
        data.append(dict(type="scatter", x=xs.tolist(), y=(a * xs + b).tolist(), mode="lines",
                         name="least-squares fit", line=dict(color="#888", dash="dash")))
    xaxis: dict[str, Any] = dict(title=dict(text=x_title or x))
    yaxis: dict[str, Any] = dict(title=dict(text=y_title or y))
    if text and len(df) > 1:  # room for the labels of the outermost points (above each, centred)
        for axis, col, lo_pad, hi_pad in ((xaxis, x, 0.3, 0.3), (yaxis, y, 0.08, 0.2)):
            v = df[col].astype(float)
            span = float(v.max() - v.min())
            if span > 0:
                axis["range"] = [float(v.min()) - lo_pad * span, float(v.max()) + hi_pad * span]
    layout = _layout(height=height + (40 if len(data) > 1 else 0), showlegend=len(data) > 1,
                     xaxis=xaxis, yaxis=yaxis, **_legend_below(title))
    if title:
        layout["title"] = dict(text=title)
    return figure(dict(data=data, layout=layout))


def loss_figure(history: pd.DataFrame, keys: Sequence[str] = ("loss", "ce", "kl", "cos"),
                height: int = 340) -> go.Figure:
    """Training curves: one line per loss term against the step."""
    data = []
    if not history.empty:
        for k in keys:
            if k in history and history[k].notna().any():
                data.append(dict(type="scatter", x=[_num(v) for v in history["step"]],
                                 y=[_num(v) for v in history[k]], mode="lines", name=k))
    layout = _layout(height=height, xaxis=dict(title=dict(text="step")), yaxis=dict(title=dict(text="loss")))
    return figure(dict(data=data, layout=layout))


def validation_figure(history: pd.DataFrame, height: int = 320) -> go.Figure:
    """Validation perplexity during training: the student, and each watched patched size."""
    rows = history[history["val_ppl"].notna()] if "val_ppl" in history else history.iloc[0:0]
    data = []
    for k in [c for c in history.columns if c == "val_ppl" or c.startswith("val_ppl_k")]:
        name = "student" if k == "val_ppl" else f"{k.removeprefix('val_ppl_k')} layers patched"
        data.append(dict(type="scatter", x=[_num(v) for v in rows["step"]], y=[_num(v) for v in rows[k]],
                         mode="lines+markers", name=name))
    xaxis: dict[str, Any] = dict(title=dict(text="step"))
    if len(rows) == 1:  # one evaluation so far: one tick at its step, not fractional steps around it
        xaxis["tickvals"] = [_num(rows["step"].iloc[0])]
    layout = _layout(height=height, xaxis=xaxis,
                     yaxis=dict(title=dict(text="validation perplexity"), type="log", tickformat=",.4~r"))
    return figure(dict(data=data, layout=layout))


def training_curves_figure(curves: Sequence[dict[str, Any]], upto_step: int | None = None,
                           height: int = 380) -> go.Figure:
    """The interpolation curve while a student trains (``curves.jsonl`` lines, see
    :mod:`boomerang.train.curves`): every last-to-first curve measured up to ``upto_step``
    (default: all), older ones fainter and thinner, the newest bold; naive pruning dotted."""
    l2f = [c for c in curves if c["order"] != "naive-pruning" and (upto_step is None or c["step"] <= upto_step)]
    data: list[dict[str, Any]] = []
    for c in curves:
        if c["order"] == "naive-pruning":
            data.append(dict(type="scatter", x=c["layers"], y=c["perplexity"], mode="lines+markers",
                             name="naive pruning", line=dict(color="#888888", dash="dot", width=1.5),
                             marker=dict(size=4), hovertemplate="%{x} layers: %{y:,.2f}<extra>naive pruning</extra>"))
    for i, c in enumerate(l2f):
        newest = i == len(l2f) - 1
        fade = 1.0 if newest else 0.15 + 0.55 * (i + 1) / max(1, len(l2f))
        name = f"step {c['step']:,}" + (" (newest)" if newest else "")
        data.append(dict(type="scatter", x=c["layers"], y=c["perplexity"], mode="lines+markers", name=name,
                         opacity=fade, line=dict(color=STUDENT_COLOR, width=3.5 if newest else 1.5),
                         marker=dict(size=7 if newest else 4), showlegend=newest or i == 0,
                         hovertemplate=f"{name}: " + "%{x} layers, %{y:,.2f}<extra></extra>"))
    title = (f"last-to-first, step {l2f[-1]['step']:,} ({l2f[-1].get('tokens', 0):,} tokens)"
             if l2f else "no curve measured yet")
    layout = _layout(height=height, title=dict(text=title), **_legend_below(title),
                     xaxis=dict(title=dict(text="decoder layers"), dtick=1),
                     yaxis=dict(title=dict(text="validation perplexity (log scale)"), type="log",
                                tickformat=",.4~r"))
    return figure(dict(data=data, layout=layout))


def for_export(fig: go.Figure) -> go.Figure:
    """A validated copy of ``fig`` with a white template, for HTML/PNG files."""
    out = go.Figure(fig.to_dict())
    out.update_layout(template="plotly_white")
    return out


def figure_html(fig: go.Figure) -> bytes:
    """The figure as a standalone HTML file that opens offline (plotly.js embedded, ~4.6 MB)."""
    return for_export(fig).to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_png(fig: go.Figure, width: int = 1000, height: int = 560) -> tuple[bytes | None, str]:
    """(PNG bytes, "") through kaleido, or (None, why) when kaleido cannot find a browser."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path and not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = path  # kaleido/choreographer look here
            break
    try:
        return for_export(fig).to_image(format="png", width=width, height=height), ""
    except Exception as e:  # noqa: BLE001 - any failure means: no PNG, explain why
        msg = str(e).splitlines()[0][:160] if str(e) else ""
        return None, (f"PNG export is unavailable here ({type(e).__name__}: {msg}); "
                      "download the HTML figure instead.")


def strip_html(cells: list[dict[str, Any]]) -> str:
    """The composed model as a row of small HTML chips (cheaper to redraw than a plotly strip)."""
    chips = []
    for c in cells:
        teacher = c["source"] == "teacher"
        color = TEACHER_COLOR if teacher else STUDENT_COLOR
        chips.append(f'<span title="{c["source"]} layer {c["index"]} (student slot {c["student_layer"]})" '
                     f'style="display:inline-block;min-width:2.6em;padding:0.25em 0.4em;margin:0 2px;'
                     f'border-radius:4px;background:{color};color:white;font-size:0.8em;text-align:center;'
                     f'font-family:monospace">{"T" if teacher else "S"}{c["index"]}</span>')
    # The legend gets a line of its own that never wraps: after 30 chips (SmolLM2) it used to
    # break in the middle of "teacher layer".
    legend = (f'<div style="font-size:0.8em;color:#666;white-space:nowrap">input → output · '
              f'<b style="color:{STUDENT_COLOR}">S</b> student layer · '
              f'<b style="color:{TEACHER_COLOR}">T</b> teacher layer</div>')
    return f'<div><div style="line-height:2.2em">{"".join(chips)}</div>{legend}</div>'
