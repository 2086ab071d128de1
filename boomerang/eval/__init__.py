"""Measuring interpolated models: perplexity, task accuracy, generation, size curves, similarity.

:func:`perplexity` and :func:`perplexity_many` score token blocks; :func:`accuracy` runs
lm-evaluation-harness tasks on a model object; :func:`sweep` measures every size of patch orders
and pruning baselines (cached on disk); :mod:`.similarity` compares student and teacher hidden
states; :mod:`.generation` produces text and times it; :class:`EvalConfig` says what text a
model is measured on, for the CLI and the dashboard alike.
"""

from .accuracy import OFFLINE_TASKS, TASKS_DIR, accuracy, accuracy_intervals, task_manager
from .config import EvalConfig
from .curve import Curve, mean_ratio
from .generation import generate_text, latency_ms_per_token, stream_generate
from .intervals import wilson_interval
from .paper import (
                         PRESETS,
                         default_order,
                         evaluate_sizes,
                         parameter_counts,
                         preset_tasks,
)
from .perplexity import (
                         PerplexityResult,
                         check_batch_fits,
                         clear_point_cache,
                         evaluate_patched,
                         model_device,
                         perplexity,
                         perplexity_many,
                         token_nll,
                         windows,
)
from .similarity import block_similarity, similarity_matrix
from .sweep import (
    CACHE_VERSION,
    SAME_SIZE_ORDER,
    compare_rows,
    same_size_rows,
    sweep,
    sweep_cache_dir,
)

__all__ = [
    "Curve", "mean_ratio",
    "CACHE_VERSION", "OFFLINE_TASKS", "PRESETS", "TASKS_DIR", "PerplexityResult", "accuracy", "accuracy_intervals",
    "block_similarity",
    "EvalConfig", "SAME_SIZE_ORDER", "check_batch_fits", "compare_rows", "clear_point_cache", "default_order", "evaluate_patched", "evaluate_sizes",
    "generate_text", "latency_ms_per_token", "model_device", "parameter_counts", "perplexity",
    "perplexity_many", "preset_tasks", "similarity_matrix",
    "same_size_rows", "stream_generate", "sweep", "sweep_cache_dir", "task_manager", "token_nll", "wilson_interval", "windows",
]
