"""The engine: layer mappings, architectures by structure, students, zero-copy patching.

Nothing here reads text or trains: :class:`LayerMapping` says which teacher block each student
layer stands for, :func:`init_student` builds a student from a teacher, :class:`BoomerangPair`
builds every model in between without copying a tensor, :class:`PatchRunner` evaluates many of
them sharing common prefixes, and :mod:`.loading` / :mod:`.export` move them to and from disk.
"""

from .arch import ArchParts, find_parts
from .export import export_model
from .loading import load_model, load_pair, recorded_teacher_path
from .mapping import LayerMapping
from .patched import Patched, layer_numbers
from .pair import SEQUENTIAL_ORDERS, BoomerangPair, clone_module, shares_storage
from .runner import (
    PatchRunner,
    Recorded,
    autocast_context,
    output_tensor,
    split_layer_call,
)
from .student import STUDENT_CONFIG, init_student, read_student_config, save_student

__all__ = [
    "STUDENT_CONFIG", "SEQUENTIAL_ORDERS", "ArchParts", "BoomerangPair", "LayerMapping", "PatchRunner", "Patched", "layer_numbers",
    "Recorded", "autocast_context", "clone_module", "export_model", "find_parts", "init_student",
    "load_model", "load_pair", "output_tensor", "read_student_config", "recorded_teacher_path", "save_student", "shares_storage", "split_layer_call",
]
