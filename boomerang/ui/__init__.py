"""What the dashboard's pages compute (never imports streamlit): specs, adapters, jobs.

:mod:`.specs` names pairs and what the sidebar offers, :mod:`.compute` adapts the backend to
what a page shows, :mod:`.jobs` runs distillation in a child process (:mod:`.worker`). Pages
import this package as ``ui`` and call only these names.
"""

from ..core import SEQUENTIAL_ORDERS, Patched
from ..eval import SAME_SIZE_ORDER, Curve, EvalConfig, latency_ms_per_token, mean_ratio, stream_generate
from ..orders import needs_calibration
from ..paths import runs_dir
from ..threads import configure_threads
from ..train.curves import read_curves
from ..recipes import report_figure
from ..zoo import Family, NamedPair, registry
from ..zoo.registry import trained_students
from . import background, present, query, tour
from .compute import (
    ACCURACY_EXAMPLES,
    RESULTS,
    accuracy_curve,
    accuracy_point,
    available_baselines,
    available_metrics,
    available_orders,
    block_label,
    calibration_ids,
    compare_model,
    curve,
    evaluate_point,
    export_patched,
    LATENCY_BATCHES,
    latency_profile,
    with_latency,
    layer_labels,
    load_eval_blocks,
    mapping_cells,
    missing_orders_note,
    normalize_sweep,
    order_caption,
    order_sets,
    pair_summary,
    perplexity,
    same_size_points,
    similarity_tables,
    single_layer_gains,
    size_of,
    strip_cells,
    sweep,
    zip_folder,
)
from .jobs import (
    TrainingJob,
    all_runs,
    dashboard_runs,
    log_is_live,
    read_log,
    run_status,
    start_student_build,
    start_training,
    student_build_job,
    training_job,
)
from .query import Parsed
from .specs import (
    PairSpec,
    comparable_models,
    dashboard_runs_dir,
    default_pair,
    devices,
    discover_pairs,
    recorded_teacher_refusal,
    release_memory,
    same_size_students,
    spec_fingerprint,
)

__all__ = [
    "ACCURACY_EXAMPLES", "EvalConfig", "RESULTS", "SAME_SIZE_ORDER", "accuracy_curve", "accuracy_point", "background", "SEQUENTIAL_ORDERS", "Curve", "mean_ratio", "Family", "NamedPair", "PairSpec", "Parsed", "Patched", "present", "query", "registry", "report_figure", "tour", "start_student_build", "student_build_job", "TrainingJob", "all_runs", "available_baselines",
    "available_metrics", "available_orders", "block_label", "calibration_ids", "comparable_models", "compare_model", "same_size_points", "same_size_students",
    "configure_threads", "curve",
    "dashboard_runs", "dashboard_runs_dir", "default_pair", "devices",
    "discover_pairs", "evaluate_point", "export_patched", "LATENCY_BATCHES", "latency_ms_per_token", "latency_profile", "with_latency",
    "layer_labels", "load_eval_blocks", "log_is_live", "mapping_cells",
    "missing_orders_note",
    "needs_calibration", "normalize_sweep", "order_caption", "order_sets", "pair_summary", "perplexity",
    "read_curves", "read_log", "recorded_teacher_refusal", "release_memory", "run_status", "runs_dir", "similarity_tables",
    "single_layer_gains",
    "size_of",
    "spec_fingerprint", "start_training", "stream_generate", "strip_cells",
    "sweep", "trained_students", "training_job", "zip_folder",
]
