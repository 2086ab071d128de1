"""Progress of long operations: one callback signature for the whole package.

Every long operation (a sweep, choosing an order, distillation, building the demo) takes an
optional ``progress`` callable and calls it with one :class:`Update`: how much is done, of how
much, and a short note for a human. Operations that have more to say pass a subclass
(distillation's :class:`boomerang.train.loop.DistillProgress` adds losses and the learning
rate). The CLI turns updates into a tqdm bar (:func:`tqdm_progress`), the dashboard into an
``st.status`` box; :func:`scaled` nests a sub-operation inside a larger one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm


@dataclass(frozen=True)
class Update:
    """``done`` of ``total`` units of work, with a short ``note`` ("klpatch: 12/28")."""

    done: int
    total: int
    note: str = ""


#: The one progress callback type: ``progress(update)``.
Progress = Callable[[Update], None]


#: How a caller asks a long operation to stop at its next safe point: a ``threading.Event``
#: or a callable returning True (None: never).
StopSignal = Callable[[], bool] | threading.Event | None


def stop_requested(stop: StopSignal) -> bool:
    """True when ``stop`` asks the operation to stop now."""
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def report(progress: Progress | None, done: int, total: int, note: str = "") -> None:
    """Call ``progress`` with an :class:`Update` (no-op when it is None)."""
    if progress is not None:
        progress(Update(int(done), int(total), note))


def scaled(progress: Progress | None, offset: int, span: int, total: int, label: str = "") -> Progress | None:
    """A callback for a sub-operation that fills ``[offset, offset + span)`` of ``total`` units."""
    if progress is None:
        return None

    def inner(u: Update) -> None:
        frac = u.done / u.total if u.total else 1.0
        note = f"{label}: {u.note}" if label and u.note else (label or u.note)
        progress(Update(offset + int(round(frac * span)), total, note))

    return inner


def tqdm_progress(desc: str) -> tuple[Progress, Callable[[], None]]:
    """A callback drawing a tqdm bar on stderr, and a function that closes the bar."""
    bar: dict[str, Any] = {}

    def progress(u: Update) -> None:
        if "bar" not in bar:
            # A resumed run starts at its step: counting from there keeps the rate and the ETA to
            # this call's own work (from 0, the first update would look like thousands of steps/s).
            bar["bar"] = tqdm(total=u.total, initial=u.done, desc=desc, dynamic_ncols=True)
        b = bar["bar"]
        if b.total != u.total:
            b.total = u.total
        b.n = u.done
        tok_s = getattr(u, "tokens_per_s", None)  # training events carry their throughput
        note = f"{u.note}, {tok_s:,.0f} tokens/s" if tok_s else u.note
        if note:
            b.set_postfix_str(note, refresh=False)
        b.refresh()

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return progress, close
