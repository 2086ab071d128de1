"""The paper's evaluation: its lm-eval task suite at every size of a patch order, one JSON per size.

The reference evaluates each intermediate model with lm-evaluation-harness on ten classification
tasks, wikitext perplexity and three generation tasks (:data:`PRESETS`). :func:`evaluate_sizes`
does that for every requested size of one order and writes one self-describing JSON file per
size: the patched layers, parameter counts (with and without the token embedding, which matters
when the embedding is shared with the head), every metric lm-eval reports with its standard
error, and what is needed to rerun it (seeds, limit, few-shot counts, batch size, package
versions). The task data is loaded before any model runs, so without a network the call fails at
once with one sentence naming the task whose data is unreachable.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from ..core import BoomerangPair
from ..core.arch import text_config
from ..errors import BoomerangError
from ..io import atomic_write
from ..orders import order_sets
from ..progress import Progress, report
from .accuracy import known_tasks
from .perplexity import model_device

_CLASSIFICATION = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "piqa",
                   "winogrande", "race", "mmlu", "rte")
_PERPLEXITY = ("wikitext",)
_GENERATION = ("gsm8k_cot", "ifeval", "hendrycks_math")

#: Named task suites: the paper's full suite and its three parts (the reference's evaluate.py
#: runs ``paper-classification`` when given no tasks; its README names ``paper``).
PRESETS: dict[str, tuple[str, ...]] = {
    "paper": _CLASSIFICATION + _PERPLEXITY + _GENERATION,
    "paper-classification": _CLASSIFICATION,
    "paper-perplexity": _PERPLEXITY,
    "paper-generation": _GENERATION,
}

#: lm-eval's own default seeds (python ``random``, numpy, torch, few-shot sampler).
DEFAULT_SEEDS = {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234}

_VERSIONED = ("boomerang", "torch", "transformers", "lm_eval", "datasets", "accelerate")


def preset_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names for a preset name, a comma-separated string, or a list (presets expand inside)."""
    items = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for t in items:
        for name in PRESETS.get(t, (t,)):
            if name and name not in out:
                out.append(name)
    if not out:
        raise BoomerangError(f"Give a task preset ({', '.join(PRESETS)}) or lm-eval task names.")
    return out


def default_order(pair: BoomerangPair) -> str:
    """The order the paper patches a family in: first-to-last for Llama, else last-to-first."""
    model_type = getattr(text_config(pair.teacher), "model_type", "")
    return "first-to-last" if model_type == "llama" else "last-to-first"


def parameter_counts(model: PreTrainedModel) -> dict[str, Any]:
    """Parameters of ``model`` with and without its token embedding (each tensor counted once).

    When the embedding is shared with the head (tied), "without" drops the head too, which is
    the count the reference reports as ``training_time``; ``embedding_shared_with_head`` says
    which case applies.
    """
    total = int(model.num_parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    shared = head is not None and head.weight is embed
    return {
        "with_embedding": total,
        "without_embedding": total - int(embed.numel()),
        "embedding": int(embed.numel()),
        "embedding_shared_with_head": bool(shared),
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide the numbers (None where not installed)."""
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def load_task_data(tasks: Sequence[str]) -> dict[str, Any]:
    """lm-eval's task dict for ``tasks``, data loaded; one sentence naming a task it cannot load."""
    tm = known_tasks(tasks, f"see `lm-eval ls tasks` or the presets {', '.join(PRESETS)}")
    merged: dict[str, dict] = {"tasks": {}, "groups": {}, "group_map": {}}
    for task in tasks:
        try:
            loaded = tm.load([task])
        except ImportError as e:  # e.g. ifeval's langdetect
            raise BoomerangError(
                f"lm-eval task '{task}' needs a package that is not installed ({e}); install it, "
                "then run again."
            ) from None
        except OSError as e:  # ConnectionError, a dataset not found: the data is unreachable
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BoomerangError(
                f"The data of lm-eval task '{task}' is unreachable ({reason.rstrip('.')}); connect "
                "to the Hugging Face hub or fill the datasets cache, then run again."
            ) from None
        for key in merged:
            merged[key].update(loaded.get(key, {}))
    return merged


def _evaluate_model(model: PreTrainedModel, tokenizer: Any, task_dict: dict, limit: float | None,
                    batch_size: int, seeds: dict[str, int], bootstrap_iters: int) -> dict[str, Any]:
    from lm_eval.evaluator import (
        evaluate as lm_evaluate,  # seconds to import: only when used
    )
    from lm_eval.models.huggingface import HFLM

    # The reference's settings: the harness's generation defaults, not the model's.
    gen = model.generation_config
    gen.max_new_tokens = gen.temperature = gen.top_p = None
    random.seed(seeds["random"])
    np.random.seed(seeds["numpy"])
    torch.manual_seed(seeds["torch"])
    for task_obj in task_dict["tasks"].values():
        if task_obj.get_config("num_fewshot") is None:
            task_obj.set_config(key="num_fewshot", value=0)
        task_obj.set_fewshot_seed(seed=seeds["fewshot"])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              device=str(model_device(model)))
    res = lm_evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=bootstrap_iters,
                      log_samples=False) or {}
    keep = {"results": "results", "groups": "groups", "n-shot": "n-shot", "n-samples": "n-samples",
            "versions": "task_versions", "higher_is_better": "higher_is_better"}
    return {new: res[old] for old, new in keep.items() if old in res}


def evaluate_sizes(
    pair: BoomerangPair,
    out_dir: str | Path,
    *,
    tasks: str | Sequence[str] = "paper",
    order: str | None = None,
    sizes: Sequence[int] | None = None,
    limit: float | None = None,
    batch_size: int = 4,
    seeds: dict[str, int] | None = None,
    bootstrap_iters: int = 100000,
    progress: Progress | None = None,
) -> list[Path]:
    """Run the task suite at every size ``k`` in ``sizes`` of ``order``; one JSON file per size.

    ``order`` defaults to :func:`default_order` (the paper's per family), ``sizes`` to every
    ``k`` from 0 (the student) to the number of student layers (the teacher). Files are
    ``<out_dir>/<order>-k<k>.json``, written atomically; returns their paths in size order.
    """
    if pair.tokenizer is None:
        raise BoomerangError("The paper's evaluation needs a tokenizer; this pair has none.")
    names = preset_tasks(tasks)
    order = order or default_order(pair)
    sets = order_sets(pair, order)
    sizes = list(range(len(sets))) if sizes is None else list(sizes)
    bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(sets)]
    if bad:
        raise BoomerangError(f"Size k={bad[0]!r} is not a whole number from 0 to {len(sets) - 1}.")
    seeds = {**DEFAULT_SEEDS, **(seeds or {})}
    task_dict = load_task_data(names)  # fails here, before any model runs, when offline
    out = Path(out_dir)
    paths = []
    lm_logger = logging.getLogger("lm_eval")
    old_level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)
    try:
        for i, k in enumerate(sizes):
            model = pair.build(patched=sets[k])
            started = time.time()
            res = _evaluate_model(model, pair.tokenizer, task_dict, limit, batch_size, seeds,
                                  bootstrap_iters)
            record = {
                "pair": pair.name, "teacher": pair.teacher.name_or_path,
                "student": pair.student.name_or_path, "order": order, "k": k, "patched": sorted(sets[k]),
                "num_layers": pair.mapping.patched_layers(sets[k]),
                "parameters": parameter_counts(model), "tasks": names, "limit": limit,
                "batch_size": batch_size, "seeds": seeds, "bootstrap_iters": bootstrap_iters,
                "packages": package_versions(), "seconds": round(time.time() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **res,
            }
            path = out / f"{order}-k{k}.json"
            atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")
            paths.append(path)
            report(progress, i + 1, len(sizes), f"k={k} done")
    finally:
        lm_logger.setLevel(old_level)
    return paths
