"""Which student layers to patch at each size: patch orders, their registry, pruning baselines.

:data:`ORDERS` lists every order (see :mod:`.registry` for what each one optimises);
:func:`patch_order` computes one; :func:`pruning_order` and :func:`prune_teacher` build the
baselines an interpolated model is compared with; :func:`build` gives any order's model of one
size (``BoomerangPair.build`` itself knows only the sequential orders: the engine never calls up
into the searches).
"""

from .calibration import calib_batches, calibration_ids, kl_to_teacher
from .laco import build_laco, laco_merges
from .pruning import PRUNING_METHODS, block_influence, prune_teacher, pruning_method, pruning_order
from .registry import (
                       BASELINES,
                       ORDER_NAMES,
                       ORDERS,
                       Order,
                       available_orders,
                       build,
                       get_order,
                       needs_calibration,
                       order_sets,
                       patch_order,
)
from .search import (
                       MAX_EXHAUSTIVE_LAYERS,
                       all_subset_kls,
                       layer_cosines,
                       local_run_costs,
                       nested_from_sequence,
                       recordings,
                       run_costs,
                       shortest_path_subsets,
)

__all__ = [
    "BASELINES", "MAX_EXHAUSTIVE_LAYERS", "ORDERS", "ORDER_NAMES", "PRUNING_METHODS", "Order",
    "all_subset_kls", "available_orders", "block_influence", "build", "build_laco", "calib_batches", "calibration_ids",
    "get_order", "kl_to_teacher", "laco_merges", "layer_cosines", "local_run_costs", "needs_calibration",
    "nested_from_sequence", "order_sets", "patch_order", "prune_teacher", "pruning_method", "pruning_order", "recordings",
    "run_costs", "shortest_path_subsets",
]
