"""Which student layers a model runs as their teacher blocks: the :class:`Patched` set.

Every intermediate model of a boomerang pair is named by one set of student layer indices:
those replaced by the teacher block they stand for (see :mod:`.mapping`). The empty set is the
student; the set of every layer is the teacher. The same set travels through the CLI
(``--patched 1,3``), a dashboard link (``?patched=1,3``), a sweep's CSV column (``[1, 3]``) and
the Python API (``pair.build(patched={1, 3})``); :class:`Patched` is its one home: reading and
writing each spelling and checking indices against a student.

A :class:`Patched` *is* a ``frozenset`` of ints (equal to, and hashed like, the plain set), so
code that holds a ``frozenset`` keeps working and a ``Patched`` may key any dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import BoomerangError


def layer_numbers(text: str | None) -> list[int]:
    """``'6, 5,0'`` -> ``[6, 5, 0]``: a comma-separated list of whole numbers, in the order
    written (a patch sequence, a list of sizes). Raises a :class:`BoomerangError` whose message
    is the reason alone (``"'x' is not a layer number"``), for the caller to complete."""
    if text is None or not str(text).strip():
        return []
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if not (item.isascii() and item.isdigit()):
            raise BoomerangError(f"{item!r} is not a layer number")
        out.append(int(item))
    return out


class Patched(frozenset):
    """A set of student layer indices run as their teacher blocks (a ``frozenset[int]``)."""

    def __new__(cls, layers: Iterable[int] = ()) -> "Patched":
        return super().__new__(cls, (int(i) for i in layers))

    # ---- reading --------------------------------------------------------------------------

    @classmethod
    def check(cls, layers: Any, n: int) -> "Patched":
        """``layers`` checked against a student of ``n`` layers; one clear error if one is bad.

        Accepts any iterable of integers (Python, numpy or torch integer scalars, or strings of
        digits as typed in a URL). A bare number or a string such as ``"12"`` is refused rather
        than read as its digits, so no spelling silently patches the wrong layers.
        """
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise BoomerangError(
                f"Patched layers must be a collection of student layer indices such as [1, 2], not {layers!r}."
            )
        out = set()
        for p in layers:
            if isinstance(p, bool):
                raise BoomerangError(f"Student layer {p!r} is not a number; use indices 0..{n - 1}.")
            if hasattr(p, "__index__"):
                p = int(p.__index__())
            else:
                text = str(p).strip()
                if not (text.isascii() and text.isdigit()):
                    raise BoomerangError(f"Student layer {p!r} is not a whole number; use indices 0..{n - 1}.")
                p = int(text)
            if not 0 <= p < n:
                raise BoomerangError(f"Student layer {p} is out of range: this student has layers 0..{n - 1}.")
            out.add(p)
        return cls(out)

    @classmethod
    def problem(cls, text: str | None, n: int | None = None) -> str | None:
        """Why ``text`` (as :meth:`parse` reads it) names no patched set, or None when it does.

        The reason is a fragment (``"'abc' is not a layer number"``, ``"the student has layers 0
        to 3 only (no 9)"``) that the CLI and the dashboard each complete in their own words."""
        try:
            numbers = layer_numbers(text)
        except BoomerangError as e:
            return str(e)
        over = [str(i) for i in numbers if n is not None and i >= n]
        if over:
            return f"the student has layers 0 to {n - 1} only (no {', '.join(over)})"
        return None

    @classmethod
    def parse(cls, text: str | None, n: int | None = None, *, example: str = "1,2,5") -> "Patched":
        """``'1,3'`` (a CLI flag, a URL) -> ``Patched({1, 3})``; ``''`` or None is the student.

        With ``n``, indices are checked against a student of ``n`` layers. A bad value raises
        one sentence that names it and shows ``example``."""
        why = cls.problem(text, n)
        if why is not None:
            raise BoomerangError(f"{why}; write e.g. {example}.")
        return cls(layer_numbers(text))

    @classmethod
    def from_json(cls, text: str | None) -> "Patched":
        """Inverse of :meth:`to_json` (``"[1, 3]"``; an empty cell is the student)."""
        return cls(json.loads(text)) if text else cls()

    @classmethod
    def coerce(cls, value: Any) -> "Patched":
        """A patched set from any spelling a table may hold: a set, a list, the JSON text of
        :meth:`to_json`, or an empty cell (None, NaN, ``""``: the student)."""
        if isinstance(value, str):
            return cls.from_json(value.strip())
        if value is None or value != value:  # NaN: a baseline row's empty cell
            return cls()
        return cls(value)

    # ---- writing --------------------------------------------------------------------------

    def text(self) -> str:
        """The CLI's and the URL's spelling: ``"1,3"`` (sorted; ``""`` for the student)."""
        return ",".join(str(i) for i in sorted(self))

    def to_json(self) -> str:
        """A table column's spelling: ``"[1, 3]"`` (sorted, JSON)."""
        return json.dumps(sorted(self))

    def as_tuple(self) -> tuple[int, ...]:
        """The sorted indices (a DataFrame cell that compares and sorts)."""
        return tuple(sorted(self))

    def __repr__(self) -> str:
        return f"Patched({sorted(self)})"
