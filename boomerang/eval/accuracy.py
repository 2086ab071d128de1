"""Task accuracy through the lm-evaluation-harness, on a model object (no copy, no reload).

Besides every lm-eval task whose data is reachable, two tasks ship with boomerang and run
offline (``boomerang/eval/tasks/``): ``bbc_news`` (5-way topic classification of held-out BBC
News articles) and ``demo_cloze`` (pick the true next line of held-out demo-corpus text among
4); their items are built by :mod:`boomerang.eval.task_items`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from ..errors import BoomerangError
from ..progress import Progress, report
from .intervals import wilson_interval
from .perplexity import model_device

#: Folder with the lm-eval task YAMLs shipped with boomerang.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: Tasks that ship with boomerang and run offline.
OFFLINE_TASKS = ("bbc_news", "demo_cloze")


_TASK_MANAGERS: dict[bool, Any] = {}
_TM_LOCK = threading.Lock()


def task_manager(offline_only: bool = False):
    """An lm-eval ``TaskManager`` that knows boomerang's offline tasks (built once per kind).

    ``offline_only`` indexes only :data:`OFFLINE_TASKS` (instant); the full manager also
    indexes every task lm-eval ships, which takes a while on a slow CPU.
    """
    with _TM_LOCK:
        if offline_only not in _TASK_MANAGERS:
            from lm_eval.tasks import (
                TaskManager,  # lm-eval takes seconds to import: only when used
            )

            _TASK_MANAGERS[offline_only] = TaskManager(
                include_path=str(TASKS_DIR), include_defaults=not offline_only
            )
        return _TASK_MANAGERS[offline_only]


def known_tasks(tasks: Sequence[str], hint: str) -> Any:
    """The task manager that knows every one of ``tasks``; one sentence (ending with ``hint``)
    naming those it does not."""
    tm = task_manager(offline_only=all(t in OFFLINE_TASKS for t in tasks))
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise BoomerangError(f"Unknown lm-eval task(s) {', '.join(unknown)}; {hint}.")
    return tm


def _primary_metric(entry: dict[str, Any]) -> float | None:
    for key in ("acc,none", "acc_norm,none", "exact_match,none", "f1,none"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    for key, value in entry.items():
        if "stderr" not in key and isinstance(value, (int, float)) and key != "alias":
            return float(value)
    return None


def _run_tasks(
    model: PreTrainedModel,
    tokenizer: Any,
    tasks: Sequence[str] | str,
    limit: int | float | None,
    batch_size: int,
    progress: Progress | None,
    log_samples: bool,
    items: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Run lm-eval ``tasks`` zero-shot on ``model`` (no copy); lm-eval's result dicts, one per call.

    ``items`` (``{task: [item index, ...]}``) scores only those items of a task."""
    from lm_eval.evaluator import (
        evaluate as lm_evaluate,  # seconds to import: only when used
    )
    from lm_eval.models.huggingface import HFLM

    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise BoomerangError("Give at least one lm-eval task name, e.g. bbc_news.")
    if tokenizer is None:
        raise BoomerangError("lm-eval accuracy needs a tokenizer; this pair has none.")
    tm = known_tasks(tasks, f"offline tasks are {', '.join(OFFLINE_TASKS)} (see `lm-eval ls tasks` for the rest)")
    device = model_device(model)
    was_training = model.training
    model.eval()
    # lm-eval warns about every model object and custom dataset it is given; keep errors only.
    lm_logger = logging.getLogger("lm_eval")
    old_level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)
    out: list[dict[str, Any]] = []
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
        # One harness call per task when progress is wanted, else one for all (less overhead).
        groups = [[t] for t in tasks] if progress is not None else [list(tasks)]
        for i, group in enumerate(groups):
            # What simple_evaluate does, minus its environment report (it runs `pip list`).
            loaded = tm.load(group)
            for task_obj in loaded["tasks"].values():
                if task_obj.get_config("num_fewshot") is None:
                    task_obj.set_config(key="num_fewshot", value=0)
                task_obj.set_fewshot_seed(seed=1234)
            chosen = {t: list(items[t]) for t in group if items and t in items} or None
            out.append(lm_evaluate(lm=lm, task_dict=loaded, limit=None if chosen else limit, samples=chosen,
                                   bootstrap_iters=0, log_samples=log_samples) or {})
            report(progress, i + 1, len(groups), f"{', '.join(group)} done")
    finally:
        lm_logger.setLevel(old_level)
        model.train(was_training)
    return out


def accuracy(
    model: PreTrainedModel,
    tokenizer: Any,
    tasks: Sequence[str] | str,
    limit: int | float | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on lm-evaluation-harness tasks, ``{task: accuracy}``.

    Any task lm-eval knows whose data is reachable, plus boomerang's offline tasks
    (:data:`OFFLINE_TASKS`). ``limit`` caps the examples per task (an int, or a fraction).
    The model is wrapped with ``HFLM(pretrained=model, tokenizer=tokenizer)`` (no copy is made)
    and run zero-shot (unless a task's YAML sets ``num_fewshot``) by ``lm_eval.evaluator``.
    """
    out: dict[str, float] = {}
    for res in _run_tasks(model, tokenizer, tasks, limit, batch_size, progress, log_samples=False):
        for name, entry in res.get("results", {}).items():
            value = _primary_metric(entry)
            if value is not None:
                out[name] = value
    return out


def accuracy_intervals(
    model: PreTrainedModel,
    tokenizer: Any,
    tasks: Sequence[str] | str,
    limit: int | float | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
    items: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float]]:
    """Zero-shot accuracy with its 95% interval over items: ``{task: {"accuracy", "n", "lo", "hi"}}``.

    The same run as :func:`accuracy`, but scored from lm-eval's per-item results: ``accuracy``
    is the fraction of the ``n`` items answered right (lm-eval's ``acc``) and ``[lo, hi]`` its
    Wilson score interval (:func:`~boomerang.eval.intervals.wilson_interval`), which stays
    inside [0, 1] and is honest for a few hundred items, where the normal approximation is not.
    ``items`` (``{task: [item index, ...]}``) scores a chosen subset of a task (``limit`` takes
    its first items, which for a task stored by label would all share one label).
    """
    out: dict[str, dict[str, float]] = {}
    for res in _run_tasks(model, tokenizer, tasks, limit, batch_size, progress, log_samples=True,
                          items=items):
        for name, samples in res.get("samples", {}).items():
            hits = [float(s["acc"]) for s in samples if "acc" in s]
            if not hits:
                continue
            right = int(round(sum(hits)))
            lo, hi = wilson_interval(right, len(hits))
            out[name] = {"accuracy": right / len(hits), "n": len(hits), "lo": lo, "hi": hi}
    return out
