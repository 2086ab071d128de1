"""boomerang: boomerang distillation and zero-shot model size interpolation.

Build a student from a subset of a teacher's layers, distill it, then patch teacher blocks back
in to get models of every size in between, with no further training. See DESIGN.md.
"""

from .distill import DistillConfig, distill
from .errors import BoomerangError
from .evaluate import sweep
from .loading import load_model, load_pair
from .mapping import LayerMapping
from .orders import patch_order
from .pair import BoomerangPair
from .student import init_student, save_student

__all__ = [
    "BoomerangError",
    "BoomerangPair",
    "DistillConfig",
    "LayerMapping",
    "distill",
    "init_student",
    "load_model",
    "load_pair",
    "patch_order",
    "save_student",
    "sweep",
]
