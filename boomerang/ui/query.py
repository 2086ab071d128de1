"""Check what a URL (or a typed field) asks the dashboard for, before a page uses it.

Every function returns a :class:`Parsed`: the value to use and, when the input was refused, one
sentence that quotes the bad value and says what is used instead. Pages show the message
(``st.warning``) and go on with the value; nothing here clamps or drops a value silently.

Paths get a stricter check (:func:`check_local_ref`): a link must not make the server read or
write arbitrary files, so a local path is accepted only under the runs folder or inside the
bundled demo, unless the user has opted in for this session.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Patched, layer_numbers
from ..paths import demo_assets_dir, runs_dir

#: ``org/name`` (a hub repository id): no leading dot, no ``..`` part, one slash.
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
#: A whole number, optionally signed, with thousands separators (``,`` or ``_``) only between groups of 3.
_WHOLE = re.compile(r"[+-]?(\d{1,3}([,_]\d{3})+|\d+)")
#: A hub dataset id: ``name``, ``org/name``, optionally ``:config``.
_HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?$")


@dataclass(frozen=True)
class Parsed:
    """A checked value and, when the input was refused, why (``message`` quotes the input)."""

    value: Any
    message: str | None = None

    @property
    def ok(self) -> bool:
        """True when the input was used as given (or there was none)."""
        return self.message is None


def _shown(raw: str, limit: int = 300) -> str:
    raw = str(raw)
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")


def refused(name: str, raw: str, why: str, default: Any, shown: str | None = None) -> Parsed:
    """``default`` with the message "Ignored ?name='raw': why; using default." (``shown`` names it)."""
    shown = shown if shown is not None else default
    using = f"; using {shown}" if shown not in ("", None) else ""
    return Parsed(default, f"Ignored {name}={_shown(raw)}: {why}{using}.")


def parse_int(name: str, raw: str | None, default: int, lo: int, hi: int) -> Parsed:
    """A whole number in ``[lo, hi]`` (thousands separators allowed where they belong: ``1,024``,
    not ``1,6``), else ``default`` with a message."""
    if raw is None or str(raw).strip() == "":
        return Parsed(default)
    text = str(raw).strip()
    if not _WHOLE.fullmatch(text):
        return refused(name, raw, "not a whole number", default)
    value = int(text.replace(",", "").replace("_", ""))
    if not lo <= value <= hi:
        return refused(name, raw, f"must be between {lo:,} and {hi:,}", default)
    return Parsed(value)


def parse_choice(name: str, raw: str | None, options: Sequence[str], default: str) -> Parsed:
    """One of ``options``, else ``default`` with a message listing the options."""
    if raw is None or str(raw).strip() == "":
        return Parsed(default)
    value = str(raw).strip()
    if value in options:
        return Parsed(value)
    return refused(name, raw, f"not one of {', '.join(map(str, options))}", default)


def parse_choices(name: str, raw: str | None, options: Sequence[str], default: Sequence[str]) -> Parsed:
    """A comma-separated subset of ``options``; unknown names are dropped with a message naming them."""
    if raw is None:
        return Parsed(list(default))
    names = [t.strip() for t in str(raw).split(",") if t.strip()]
    good = [t for t in names if t in options]
    bad = [t for t in names if t not in options]
    if not bad:
        return Parsed(good if names else list(default))
    value = good or list(default)
    return Parsed(value, f"Ignored {name}={_shown(','.join(bad))}: not one of {', '.join(options)}; "
                         f"using {', '.join(value) or 'none'}.")


def parse_layers(name: str, raw: str | None, n: int) -> Parsed:
    """Student layer indices ``'1,3'`` -> ``Patched({1, 3})``, each in ``0..n-1``.

    Anything else (a word, an index out of range) refuses the whole value: the empty set is
    used and the message names the bad parts, so a half-applied link never goes unnoticed.
    """
    text = None if raw is None else str(raw)
    why = Patched.problem(text, n)
    if why is not None:
        return refused(name, raw, why, Patched(), "no patched layer (the student)")
    return Parsed(Patched(layer_numbers(text)))


# ---- paths -----------------------------------------------------------------------------------


def is_under(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        Path(path).expanduser().resolve().relative_to(Path(root).expanduser().resolve())
        return True
    except ValueError:
        return False


def allowed_roots() -> list[Path]:
    """Folders a link may name files in: the runs folder and the bundled demo."""
    return [runs_dir(), demo_assets_dir()]


def _local_ok(path: Path) -> bool:
    return any(is_under(path, root) for root in allowed_roots())


#: The longest name (one path component) and whole path, in bytes, Linux file systems accept.
NAME_MAX = 255
PATH_MAX = 4096


def _too_long(path: Path) -> bool:
    return (any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in path.parts)
            or len(str(path).encode("utf-8", "surrogateescape")) >= PATH_MAX)


def check_local_ref(name: str, raw: str | None, default: str = "", *, hub: str = "repo",
                    allow_outside: bool = False) -> Parsed:
    """A model folder or text source named by a URL or a typed field, or ``default`` with a message.

    Accepted: empty (``default``); ``demo`` for data; a hub id (``hub="repo"``: ``org/name``;
    ``hub="dataset"``: ``name``, ``org/name`` or ``name:config``) that is not a local path; a
    local path under the runs folder or the bundled demo, or anywhere when ``allow_outside``.
    """
    if raw is None or str(raw).strip() == "":
        return Parsed(default)
    ref = str(raw).strip()
    if hub == "dataset" and ref == "demo":
        return Parsed(ref)
    path = Path(ref).expanduser()
    if _too_long(path):
        return refused(name, raw, f"a path with a name over {NAME_MAX} bytes, or over {PATH_MAX} bytes in all, "
                                  "is longer than file systems allow", default)
    looks_local = path.is_absolute() or ref.startswith((".", "~")) or "\\" in ref or ".." in ref.split("/")
    pattern = _HUB_DATASET if hub == "dataset" else _HUB_REPO
    if not looks_local and not path.exists() and pattern.match(ref):
        return Parsed(ref)  # a hub id: names no file on this machine
    if allow_outside or _local_ok(path):
        return Parsed(ref)
    return refused(name, raw, f"only paths under the runs folder ({runs_dir()}) or the bundled demo are "
                              "accepted here (to use another path, tick 'Allow paths outside the runs "
                              "folder' in the sidebar and type it in)", default)


def check_export_dir(raw: str, *, allow_outside: bool = False) -> Parsed:
    """Where an export may be written: under the runs folder unless the user opted in.

    Returns the resolved folder, or ``None`` with a message quoting the refused path.
    """
    text = str(raw or "").strip()
    if not text:
        return Parsed(None, "Give a folder to export to.")
    path = Path(text).expanduser()
    if _too_long(path):
        return Parsed(None, f"Refused to write to {_shown(text)}: a name over {NAME_MAX} bytes, or a path over "
                            f"{PATH_MAX} bytes, is longer than file systems allow.")
    if not path.is_absolute():
        path = runs_dir() / path
    if allow_outside or is_under(path, runs_dir()):
        return Parsed(path)
    return Parsed(None, f"Refused to write to {_shown(text)}: exports go under the runs folder "
                        f"({runs_dir()}) unless you tick 'Write outside the runs folder'.")
