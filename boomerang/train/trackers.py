"""Experiment trackers for distillation runs, through Accelerate's ``log_with``.

``DistillConfig.log_with = ("tensorboard",)`` (``--log-with tensorboard``) sends every logged
step (losses, learning rate, throughput, validation perplexity) to the named trackers besides
``OUT/log.jsonl``; local ones write under ``OUT/trackers`` (``tensorboard --logdir
OUT/trackers``). Accelerate silently drops a tracker whose package is missing; here that is an
error naming the package, raised before any model is loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from ..errors import BoomerangError
from .config import DistillConfig

#: Folder under the run's ``out`` where local trackers write.
TRACKER_DIR = "trackers"
#: Run name the trackers see (TensorBoard: the sub-folder of ``OUT/trackers``).
RUN_NAME = "boomerang"
#: Tracker -> the module that must be importable for it (tensorboard: either writer).
_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "comet_ml": ("comet_ml",),
            "aim": ("aim",), "mlflow": ("mlflow",), "clearml": ("clearml",), "dvclive": ("dvclive",),
            "swanlab": ("swanlab",), "trackio": ("trackio",)}


def check_trackers(names: tuple[str, ...]) -> None:
    """Raise one sentence for the first tracker in ``names`` whose package is not installed."""
    for name in names:
        modules = _MODULES.get(name, ())
        if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
            raise BoomerangError(
                f"The tracker {name!r} needs the {modules[0]} package, which is not installed; "
                f"pip install {modules[0]} (see requirements.txt) or drop it from log_with."
            )


def accelerator_kwargs(config: DistillConfig) -> dict[str, Any]:
    """``Accelerator(...)`` arguments that switch the configured trackers on (none: ``{}``)."""
    if not config.log_with:
        return {}
    check_trackers(config.log_with)
    out = Path(config.out)
    return {"log_with": list(config.log_with),
            "project_config": ProjectConfiguration(project_dir=str(out),
                                                   logging_dir=str(out / TRACKER_DIR))}


def hyperparameters(config: DistillConfig) -> dict[str, int | float | str | bool]:
    """The run's settings, flattened to the scalar types every tracker accepts."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in config.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            name = key if sub is None else f"{key}.{sub}"
            flat[name] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return flat


def start(acc: Accelerator, config: DistillConfig) -> None:
    """Open the trackers (main process only) with the run's settings as hyperparameters."""
    if config.log_with:
        acc.init_trackers(RUN_NAME, config=hyperparameters(config))


def log(acc: Accelerator, config: DistillConfig, record: dict[str, Any], step: int) -> None:
    """Send one logged step's numbers to the trackers."""
    if config.log_with:
        acc.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))},
                step=step)


def finish(acc: Accelerator) -> None:
    """Flush and close the trackers (unlike ``end_training``, the process group stays up)."""
    for tracker in acc.trackers:
        tracker.finish()
