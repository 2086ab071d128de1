"""What the dashboard's pages compute (never imports streamlit): specs, adapters, jobs.

:mod:`.specs` names pairs and what the sidebar offers, :mod:`.compute` adapts the backend to
what a page shows, :mod:`.jobs` runs distillation in a child process (:mod:`.worker`). Pages
import this package as ``ui`` and call only these names.
"""

from ..core import SEQUENTIAL_ORDERS, Patched
from ..eval import Curve
from ..eval import SAME_SIZE_ORDER, EvalConfig, latency_ms_per_token, stream_generate
from ..orders import needs_calibration
from ..paths import runs_dir
from ..threads import configure_threads
from ..train.curves import read_curves
from ..recipes.smollm2 import report_figure as smollm2_report_figure
from ..zoo import demo_student_dirs, distilled_smollm2_student, shipped_smollm2_report, smollm2_available
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
    mean_ratio_at_intermediate_sizes,
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
    smollm2_build_job,
    start_smollm2_build,
    start_training,
    training_job,
)
from .query import Parsed
from .specs import (
    PairSpec,
    comparable_models,
    dashboard_runs_dir,
    default_pair,
    demo_available,
    devices,
    discover_pairs,
    recorded_teacher_refusal,
    release_memory,
    same_size_students,
    smollm2_converted,
    smollm2_student_info,
    spec_fingerprint,
    trained_students,
)

__all__ = [
    "ACCURACY_EXAMPLES", "EvalConfig", "RESULTS", "SAME_SIZE_ORDER", "accuracy_curve", "accuracy_point", "background", "SEQUENTIAL_ORDERS", "Curve", "PairSpec", "Parsed", "Patched", "present", "query", "tour", "TrainingJob", "all_runs", "available_baselines",
    "available_metrics", "available_orders", "block_label", "calibration_ids", "comparable_models", "compare_model", "same_size_points", "same_size_students",
    "configure_threads", "curve",
    "dashboard_runs", "dashboard_runs_dir", "default_pair", "demo_available", "demo_student_dirs", "devices",
    "discover_pairs", "evaluate_point", "export_patched", "LATENCY_BATCHES", "latency_ms_per_token", "latency_profile", "with_latency",
    "layer_labels", "load_eval_blocks", "log_is_live", "mapping_cells", "mean_ratio_at_intermediate_sizes",
    "missing_orders_note",
    "needs_calibration", "normalize_sweep", "order_caption", "order_sets", "pair_summary", "perplexity",
    "read_curves", "read_log", "recorded_teacher_refusal", "release_memory", "run_status", "runs_dir", "shipped_smollm2_report", "similarity_tables",
    "single_layer_gains", "smollm2_report_figure",
    "size_of", "distilled_smollm2_student", "smollm2_available", "smollm2_build_job", "start_smollm2_build",
    "smollm2_converted", "smollm2_student_info", "spec_fingerprint", "start_training", "stream_generate", "strip_cells",
    "sweep", "trained_students", "training_job", "zip_folder",
]
