"""URL <-> session state: a widget's value from the link or from the page the user left, kept and
written back to the URL, and the paths a session may name (under the runs folder unless allowed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from boomerang import ui

Parse = Callable[[str | None], ui.Parsed]


def warn(message: str) -> None:
    """Show a refused input (its message quotes the value) above the page, as literal text."""
    st.warning(ui.present.literal(message), icon=":material/warning:")


def url_default(key: str, default: Any, parse: Parse | None = None) -> Any:
    """The value of ``key`` for this session: kept value, else the URL's, else ``default``.

    ``parse`` checks the URL's text (see :mod:`boomerang.ui.query`); a refused value is named in
    a warning and ``default`` (or what ``parse`` chose) is used instead.
    """
    keep = f"_keep_{key}"
    if keep in st.session_state:
        return st.session_state[keep]
    raw = st.query_params.get(key)
    if parse is None:
        return default if raw is None else raw
    parsed = parse(raw)
    if parsed.message:
        warn(parsed.message)
    return parsed.value


def bind(key: str, default: Any, parse: Parse | None = None) -> None:
    """Give widget ``key`` its value from the URL/kept state before the widget is drawn.

    Streamlit forgets a widget's value when its page is left; the kept copy brings it back.
    """
    if key not in st.session_state:
        st.session_state[key] = url_default(key, default, parse)


def keep(key: str, value: Any, url: bool = True) -> None:
    """Remember a widget value across pages and (``url``) write it to the URL (shareable state)."""
    st.session_state[f"_keep_{key}"] = value
    if url and st.query_params.get(key) != str(value):
        st.query_params[key] = str(value)
    elif not url and key in st.query_params:
        del st.query_params[key]


def allow_outside() -> bool:
    """Whether the user opted in to paths outside the runs folder (this session only, never in a URL)."""
    return bool(st.session_state.get("allow_outside", False))


def checked_ref(name: str, ref: str, default: str = "", *, hub: str = "repo") -> str:
    """``ref`` when it may be used (a hub id, or a path the session may read), else ``default`` with a warning."""
    parsed = ui.query.check_local_ref(name, ref, default, hub=hub, allow_outside=allow_outside())
    if parsed.message:
        warn(parsed.message)
    return parsed.value


def in_url(name: str, ref: str, hub: str = "repo") -> bool:
    """Whether ``ref`` may go into a shareable URL (never a path outside the runs folder)."""
    return ui.query.check_local_ref(name, ref, hub=hub).ok
