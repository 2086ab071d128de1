"""Slow results computed beside the page: started once, polled while the page stays usable.

Task accuracy at every size takes half a minute on the demo, so it cannot block the page the
way a perplexity curve (a second or two) may. :func:`start` runs ``fn(progress)`` in a daemon
thread under a results key and returns its :class:`Task`: the latest progress update while it
runs, then its value (also put in :data:`~boomerang.ui.compute.RESULTS` under the same key, so
later reruns read it like any cached result) or the exception it raised. A second call with the
same key while the first runs, or after it has finished, starts nothing.

A thread rather than the training worker's child process: these are batched forward passes
that release the GIL inside torch, and they end; a training loop's thousands of tiny calls a
second are what starved the pages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..progress import Update
from .compute import RESULTS


@dataclass
class Task:
    """One background computation: its latest progress, then its value or its error."""

    key: Hashable
    update: Update = field(default_factory=lambda: Update(0, 1, "starting"))
    value: Any = None
    error: BaseException | None = None
    finished: bool = False

    @property
    def fraction(self) -> float:
        """How much is done, 0..1 (for a progress bar)."""
        return min(1.0, self.update.done / max(self.update.total, 1))


_TASKS: dict[Hashable, Task] = {}
_LOCK = threading.Lock()


def start(key: Hashable, fn: Callable[[Callable[[Update], None]], Any]) -> Task:
    """The task computing ``fn(progress)`` under ``key``: finished at once when ``RESULTS``
    already holds the key, the running or finished task when one was started, else a new one."""
    hit = RESULTS.get(key)
    if hit is not None:
        return Task(key, Update(1, 1, "done"), hit, None, True)
    with _LOCK:
        task = _TASKS.get(key)
        if task is not None and not (task.finished and task.error is None and RESULTS.get(key) is None):
            return task  # running, failed (shown until the key changes) or done and still cached
        task = _TASKS[key] = Task(key)

    def progress(u: Update) -> None:
        task.update = u

    def run() -> None:
        try:
            task.value = RESULTS.put(key, fn(progress))
        except Exception as e:  # noqa: BLE001 - the page shows it as one sentence
            task.error = e
        finally:
            task.finished = True

    threading.Thread(target=run, name=f"boomerang-background-{len(_TASKS)}", daemon=True).start()
    return task
