"""The x axis of a curve plot: decoder layers, parameters, or measured latency at a chosen batch."""

import streamlit as st

from app_pages._context import Context
from app_pages._state import bind, keep
from boomerang import plots, ui

AXES = ["layers", "params", "latency"]


def x_axis_choice(key: str, default: str = "layers") -> tuple[str, int]:
    """``(x, batch)``: the axis a page's curves are drawn against (kept in the URL as ``?<key>=``),
    and, for latency, how many sequences are decoded at once while it is timed (else 1)."""
    bind(key, default, lambda raw: ui.query.parse_choice(f"?{key}", raw, AXES, default))
    x = st.segmented_control("x axis", AXES, key=key, wrap=True, format_func=_short) or default
    keep(key, x)
    batch = 1
    if x == "latency":
        batch = st.segmented_control(
            "Latency batch", ui.LATENCY_BATCHES, default=1, key=f"{key}_batch",
            format_func=lambda b: f"batch {b}",
            help="Sequences decoded at once while timing: milliseconds per generated token of each "
                 "sequence (greedy, KV cache, median of 3 runs), one timing per layer count.") or 1
    return x, int(batch)


def _short(axis: str) -> str:
    return {"layers": "decoder layers", "params": "parameters", "latency": "latency"}[axis]


def latency_title(batch: int) -> str:
    """The latency axis' title at ``batch``."""
    return f"{plots.X_TITLES['latency']}, batch {batch}"


def latency_timings(ctx: Context, batch: int) -> dict[int, float]:
    """Layer count -> ms per token at ``batch`` for the sidebar's pair, shared by every page (a
    size timed once is timed for all)."""
    return ui.RESULTS.get_or_compute(ctx.key("latency", batch, on_text=False), dict)
