"""Plotly figure builders for the dashboard (and for anyone who wants the same plots in a notebook).

Each function takes plain data (frames, lists) and returns a ``plotly.graph_objects.Figure``; no
computation beyond reshaping happens here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    "custom": "#EECA3B",
}
X_TITLES = {"params": "parameters", "layers": "decoder layers", "k": "student layers patched"}
Y_TITLES = {"perplexity": "perplexity (lower is better)", "nll": "NLL (nats/token)",
            "accuracy": "accuracy"}
_LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=40, b=10),
               legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))


def _hover(df: pd.DataFrame) -> list[str]:
    out = []
    for _, r in df.iterrows():
        patched = ", ".join(str(i) for i in r.get("patched", ())) or "none"
        out.append(f"{r.get('order', '')}<br>k={r.get('k', '')}, layers={r.get('layers', '')}, "
                   f"params={int(r.get('params', 0)):,}<br>patched: {patched}")
    return out


def curve_figure(df: pd.DataFrame, x: str = "params", y: str = "perplexity",
                 current: dict[str, Any] | None = None, extra: Sequence[dict[str, Any]] = (),
                 log_y: bool = True, title: str | None = None, height: int = 420) -> go.Figure:
    """Curves of ``y`` against ``x``, one per ``order`` in ``df``; ``current`` is marked with a star.

    ``extra`` are further marked points: dicts with x, y keys named like the axes and a ``name``.
    """
    fig = go.Figure()
    if not df.empty:
        for order, g in df.groupby("order", sort=False):
            g = g.sort_values(x)
            dash = "dot" if order in ("naive-pruning", "block-influence") else "solid"
            fig.add_trace(go.Scatter(
                x=g[x], y=g[y], mode="lines+markers", name=str(order),
                line=dict(color=ORDER_COLORS.get(str(order)), dash=dash,
                          width=3 if order == "optimal" else 2),
                marker=dict(size=6), hovertext=_hover(g), hoverinfo="text+y",
            ))
    for pt in extra:
        fig.add_trace(go.Scatter(x=[pt[x]], y=[pt[y]], mode="markers", name=pt.get("name", "point"),
                                 marker=dict(size=14, symbol=pt.get("symbol", "diamond"),
                                             color=pt.get("color", "#EECA3B"),
                                             line=dict(width=1, color="black"))))
    if current is not None:
        fig.add_trace(go.Scatter(x=[current[x]], y=[current[y]], mode="markers", name="current",
                                 marker=dict(size=18, symbol="star", color="#EECA3B",
                                             line=dict(width=1.5, color="black"))))
        fig.add_vline(x=current[x], line=dict(color="#888", width=1, dash="dash"))
    fig.update_layout(height=height, title=title, xaxis_title=X_TITLES.get(x, x),
                      yaxis_title=Y_TITLES.get(y, y), **_LAYOUT)
    if log_y and y == "perplexity":
        fig.update_yaxes(type="log")
    if x == "params":
        fig.update_xaxes(tickformat="~s")
    return fig


def strip_figure(cells: list[dict[str, Any]], labels: Sequence[str] | None = None,
                 height: int = 170) -> go.Figure:
    """The composed model as a strip of cells, input on the left: blue student, orange teacher."""
    fig = go.Figure()
    for who, color in (("student", STUDENT_COLOR), ("teacher", TEACHER_COLOR)):
        cs = [c for c in cells if c["source"] == who]
        if not cs:
            continue
        fig.add_trace(go.Bar(
            x=[1] * len(cs), base=[c["position"] for c in cs], y=["model"] * len(cs), orientation="h",
            marker=dict(color=color, line=dict(color="white", width=2)), name=who,
            text=[f"{'S' if who == 'student' else 'T'}{c['index']}" for c in cs],
            textposition="inside", insidetextanchor="middle",
            hovertext=[f"position {c['position']}: {who} layer {c['index']}"
                       f"<br>(student slot {c['student_layer']}"
                       f"{': ' + labels[c['student_layer']] if labels else ''})" for c in cs],
            hoverinfo="text",
        ))
    fig.update_layout(barmode="overlay", height=height, showlegend=True, bargap=0.1,
                      xaxis=dict(title="depth (input → output)", range=[-0.2, max(1, len(cells)) + 0.2],
                                 dtick=1, showgrid=False),
                      yaxis=dict(visible=False), **_LAYOUT)
    return fig


def heatmap_figure(sim: pd.DataFrame, outline: Sequence[tuple[str, str]] = (),
                   title: str | None = None, height: int = 440) -> go.Figure:
    """Student (rows) x teacher (columns) cosine similarity; ``outline`` cells (row, column labels)
    are framed — the mapping's student-layer/block-end pairs."""
    rows, cols = [str(r) for r in sim.index], [str(c) for c in sim.columns]
    fig = go.Figure(go.Heatmap(
        z=sim.values, x=cols, y=rows, colorscale="Viridis",
        zmin=float(min(0.0, sim.values.min())), zmax=1.0, colorbar=dict(title="cos"),
        hovertemplate="student %{y}<br>teacher %{x}<br>cos %{z:.3f}<extra></extra>",
    ))
    for r, c in outline:
        if r in rows and c in cols:
            i, j = rows.index(r), cols.index(c)
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                          line=dict(color="white", width=2.5))
    fig.update_layout(height=height, title=title, xaxis_title="teacher hidden state",
                      yaxis_title="student hidden state", **_LAYOUT)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def bar_figure(df: pd.DataFrame, x: str, y: str, title: str | None = None, y_title: str | None = None,
               color: str = STUDENT_COLOR, height: int = 300) -> go.Figure:
    """A plain bar chart."""
    fig = go.Figure(go.Bar(x=df[x].astype(str), y=df[y], marker_color=color,
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, title=title, yaxis_title=y_title or y, **_LAYOUT)
    return fig


def scatter_figure(df: pd.DataFrame, x: str, y: str, text: str | None = None,
                   x_title: str | None = None, y_title: str | None = None, title: str | None = None,
                   height: int = 380) -> go.Figure:
    """Labelled scatter with a least-squares line (when there are 3 points or more)."""
    fig = go.Figure(go.Scatter(x=df[x], y=df[y], mode="markers+text" if text else "markers",
                               text=df[text] if text else None, textposition="top center",
                               marker=dict(size=11, color=TEACHER_COLOR, line=dict(width=1, color="black")),
                               name="student layers"))
    if len(df) >= 3 and df[x].nunique() > 1:
        import numpy as np

        a, b = np.polyfit(df[x].astype(float), df[y].astype(float), 1)
        xs = np.linspace(float(df[x].min()), float(df[x].max()), 20)
        fig.add_trace(go.Scatter(x=xs, y=a * xs + b, mode="lines", name="trend",
                                 line=dict(color="#888", dash="dash")))
    fig.update_layout(height=height, title=title, xaxis_title=x_title or x, yaxis_title=y_title or y,
                      **_LAYOUT)
    return fig


def loss_figure(history: pd.DataFrame, keys: Sequence[str] = ("loss", "ce", "kl", "cos"),
                height: int = 340) -> go.Figure:
    """Training curves: one line per loss term against the step."""
    fig = go.Figure()
    if not history.empty:
        for k in keys:
            if k in history and history[k].notna().any():
                fig.add_trace(go.Scatter(x=history["step"], y=history[k], mode="lines", name=k))
    fig.update_layout(height=height, xaxis_title="step", yaxis_title="loss", **_LAYOUT)
    return fig


def figure_png(fig: go.Figure, width: int = 1000, height: int = 560) -> tuple[bytes | None, str]:
    """(PNG bytes, "") through kaleido, or (None, why) when kaleido cannot find a browser."""
    import os
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path and not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = path  # kaleido/choreographer look here
            break
    try:
        return fig.to_image(format="png", width=width, height=height), ""
    except Exception as e:  # noqa: BLE001 - any failure means: no PNG, explain why
        return None, f"PNG export is unavailable here ({type(e).__name__}: {str(e).splitlines()[0][:160]}); " \
                     "download the HTML figure instead."
