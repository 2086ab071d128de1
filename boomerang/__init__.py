"""boomerang: boomerang distillation and zero-shot model size interpolation.

Build a student from a subset of a teacher's layers, distill it, then patch teacher blocks back
in to get models of every size in between, with no further training.

The package is layered, data flowing down only: ``errors``, ``paths``, ``io``, ``progress`` and
``cache`` at the bottom; :mod:`.core` (mappings, students, zero-copy patching); :mod:`.data`
(text); :mod:`.zoo` (named pairs); :mod:`.orders` (which layers to patch); :mod:`.eval`
(measuring); :mod:`.train` (distillation); :mod:`.recipes` (rebuilding shipped artifacts);
:mod:`.ui` (what the dashboard computes) and :mod:`.cli` on top.
"""

import os

# A hub that never answers must not hang a command: bounded waits unless the user set their own
# (read by huggingface_hub when it is first imported, which the imports below do).
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")

from .core import BoomerangPair, LayerMapping, Patched, init_student, load_model, save_student  # noqa: E402
from .errors import BoomerangError  # noqa: E402
from .eval import sweep  # noqa: E402
from .orders import patch_order  # noqa: E402
from .reference import build_intermediate_model  # noqa: E402
from .train import DistillConfig, distill  # noqa: E402
from .zoo import load_pair  # noqa: E402

__all__ = [
    "BoomerangError",
    "BoomerangPair",
    "DistillConfig",
    "LayerMapping",
    "Patched",
    "build_intermediate_model",
    "distill",
    "init_student",
    "load_model",
    "load_pair",
    "patch_order",
    "save_student",
    "sweep",
]
