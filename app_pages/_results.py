"""Results the pages compute: the loaded pairs and evaluation text (cached resources), any result
cached under its key with a progress box while it is computed, and errors in one sentence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st
import torch

from app_pages._context import Context
from boomerang import ui
from boomerang.core import BoomerangPair
from boomerang.errors import BoomerangError
from boomerang.progress import Progress, Update

@st.cache_resource(max_entries=4, show_spinner=False)
def load_pair(key: str, _spec: ui.PairSpec, device: str) -> BoomerangPair:
    pair = _spec.load(device)
    for m in (pair.teacher, pair.student):
        m.eval().requires_grad_(False)
    return pair


def load_spec(spec: ui.PairSpec, device: str) -> BoomerangPair:
    """Load another pair (e.g. a demo ablation) through the same cache as the sidebar's."""
    key = ui.spec_fingerprint(spec, device)
    with st.spinner(f"Loading {spec.title}…"):
        return load_pair(key, spec, device)


@st.cache_resource(max_entries=16, show_spinner=False)
def _eval_blocks(pair_key: str, data_key: str, _pair: BoomerangPair, _cfg: ui.EvalConfig) -> torch.Tensor:
    return _cfg.eval_blocks(_pair)


def eval_blocks(ctx: Context, pair: BoomerangPair | None = None, pair_key: str | None = None) -> torch.Tensor:
    """The evaluation blocks of the sidebar's data for ``pair`` (default: the sidebar's), cached."""
    with st.spinner(f"Tokenizing {ctx.data} ({ctx.split})…"):
        return _eval_blocks(pair_key or ctx.pair_key, ctx.data_key, pair or ctx.pair, ctx.eval)


def calib_ids(ctx: Context) -> torch.Tensor:
    """Training blocks to choose data-driven orders on (cached)."""
    cfg = ctx.eval
    key = ctx.key("calib", cfg.calib_data, cfg.calib_n, cfg.calib_len, on_text=False)
    return ui.RESULTS.get_or_compute(key, lambda: cfg.calibration(ctx.pair))


def computed(key: tuple, label: str, fn: Callable[[Progress], Any]) -> Any:
    """``fn(progress)`` cached under ``key``; on a miss, shows an expanding status with a bar."""
    hit = ui.RESULTS.get(key)
    if hit is not None:
        return hit
    holder = st.empty()  # the status disappears once the result is there
    with holder.status(label + "…", expanded=True):
        bar = st.progress(0.0, text="starting")

        def progress(u: Update) -> None:
            bar.progress(min(1.0, u.done / max(u.total, 1)), text=u.note or f"{u.done}/{u.total}")

        value = fn(progress)
    holder.empty()
    return ui.RESULTS.put(key, value)


def show_error(e: Exception) -> None:
    """One sentence the user can act on."""
    # Messages quote user input (paths, URL values): shown as literal text, never as Markdown.
    if isinstance(e, BoomerangError):
        st.error(ui.present.literal(str(e)), icon=":material/error:")
    else:
        first = str(e).splitlines()[0] if str(e) else ""
        st.error(ui.present.literal(f"Something went wrong: {type(e).__name__}: {first}. Try another pair or "
                                    "smaller settings; if it persists, report it with this message."),
                 icon=":material/error:")


def pair_summary(ctx: Context) -> dict[str, Any]:
    return ui.RESULTS.get_or_compute(ctx.key("summary", on_text=False), lambda: ui.pair_summary(ctx.pair))
