"""Task accuracy beside perplexity (Interpolate, Layer picker): the choice, and results computed
in the background while the page stays usable."""

from collections.abc import Callable
from typing import Any

import streamlit as st

from app_pages._results import show_error
from app_pages._state import keep, url_default
from boomerang import ui
from boomerang.progress import Progress

OFF = "off"


def accuracy_choice(key: str) -> str | None:
    """The task whose accuracy to show beside perplexity, or None when off: a selectbox (widget
    ``key``, one per page) whose choice is kept across pages and in the URL as ``?acc=``."""
    options = [OFF, *ui.available_metrics()[1:]]
    # Each page has its own widget key: a key shared by two pages still holds the page left
    # behind's widget during the next page's first run, and Streamlit gives the new widget its
    # default instead. The choice travels in the kept value.
    if key not in st.session_state:
        st.session_state[key] = url_default("acc", OFF, lambda raw: ui.query.parse_choice("?acc", raw, options, OFF))
    task = st.selectbox("Accuracy beside perplexity", options, key=key,
                        format_func=lambda o: "off" if o == OFF else f"zero-shot accuracy: {o}",
                        help=f"Zero-shot accuracy on an offline lm-eval task, {ui.ACCURACY_EXAMPLES} examples "
                             "per model, with its 95% interval; computed in the background and cached.")
    keep("acc", task)
    return None if task == OFF else task


def in_background(key: tuple, label: str, fn: Callable[[Progress], Any]) -> Any | None:
    """``fn(progress)``'s value once computed (cached under ``key``); while it runs, a progress bar
    that polls each second and reruns the page when the value is there (None until then)."""
    task = ui.background.start(key, fn)
    if task.finished:
        if task.error is not None:
            show_error(task.error)
            return None
        return task.value

    @st.fragment(run_every=1.0)
    def _wait() -> None:
        if task.finished:
            st.rerun()
        st.progress(task.fraction, text=f"{label}… {task.update.note}".rstrip())

    _wait()
    return None


def accuracy_metric(column, task: str, accuracy: float, lo: float, hi: float) -> None:
    """The accuracy of one model as a metric in ``column``, its 95% interval under it."""
    column.metric(f"Accuracy: {task}", f"{100 * accuracy:.0f}%",
                  help=ui.present.accuracy_label(task, ui.ACCURACY_EXAMPLES),
                  delta=f"95% interval {100 * lo:.0f}-{100 * hi:.0f}%", delta_color="off", delta_arrow="off")
