"""boomerang: boomerang distillation and zero-shot model size interpolation.

Build a student from a subset of a teacher's layers, distill it, then patch teacher blocks back
in to get models of every size in between, with no further training.

The package is layered, data flowing down only: ``errors``, ``paths``, ``io``, ``progress`` and
``cache`` at the bottom; :mod:`.core` (mappings, students, zero-copy patching); :mod:`.data`
(text); :mod:`.zoo` (named pairs); :mod:`.orders` (which layers to patch); :mod:`.eval`
(measuring); :mod:`.train` (distillation); :mod:`.recipes` (rebuilding shipped artifacts);
:mod:`.ui` (what the dashboard computes) and :mod:`.cli` on top.
"""

from .core import BoomerangPair, LayerMapping, init_student, load_model, save_student
from .errors import BoomerangError
from .eval import sweep
from .orders import patch_order
from .reference import build_intermediate_model
from .train import DistillConfig, distill
from .zoo import load_pair

__all__ = [
    "BoomerangError",
    "BoomerangPair",
    "DistillConfig",
    "LayerMapping",
    "build_intermediate_model",
    "distill",
    "init_student",
    "load_model",
    "load_pair",
    "patch_order",
    "save_student",
    "sweep",
]
