"""A Plotly chart that is updated in place when its figure changes.

``st.plotly_chart`` derives the element's identity from the figure, so a figure that changes on
every slider move (the curve's "current" marker) is a new chart each time: the browser tears the
old one down and draws the new one from scratch. This component keeps one iframe per ``key`` and
hands each new figure to ``Plotly.react``, which redraws only what changed. plotly.js comes from
the installed ``plotly`` package (served by Streamlit, no network), so the page works offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit.components.v1 as components
from plotly.utils import PlotlyJSONEncoder

_PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
_HERE = Path(__file__).resolve().parent / "live_chart"

# Serves plotly.min.js (never drawn itself); the chart's page loads it by this name.
_plotly_js = components.declare_component("plotly_js", path=str(_PLOTLY_DIR))
_live = components.declare_component("live_plotly", path=str(_HERE))


def live_plotly_chart(fig: go.Figure, key: str) -> None:
    """Draw ``fig`` (full width, its layout's height) under ``key``; later calls with the same key
    update that chart in place."""
    spec = fig.to_plotly_json()
    spec["layout"].pop("template", None)  # plotly.py's default look (6 kB); the chart applies the app's
    _live(figure=json.dumps(spec, cls=PlotlyJSONEncoder), height=int(fig.layout.height or 450),
          plotly_js=_plotly_js.name, key=key, default=None)
