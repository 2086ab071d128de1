"""The registry of patch orders and pruning baselines: one place that knows every order's name.

A *patch order* answers, for every size ``k = 0..n``, which ``k`` of the student's ``n`` layers
to replace by their teacher blocks: :func:`patch_order` returns ``[P_0, ..., P_n]`` with
``|P_k| = k``, ``P_0 = {}`` (the student) and ``P_n`` = everything (the teacher). A *pruning
baseline* is the teacher with layers dropped and no training, at every layer count from the
student's to the teacher's.

Each :class:`Order` says what it is: how it is chosen (``kind``), whether its sets grow one layer
at a time (``nested``), whether it needs calibration text, and what it optimises, on which data.
The CLI, the dashboard and :func:`build` (any order's model of one size) all read :data:`ORDERS`,
so a new order is added here once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedModel

from ..cache import tensor_fingerprint
from ..core import SEQUENTIAL_ORDERS, BoomerangPair
from ..core.arch import check_token_ids
from ..errors import BoomerangError
from ..progress import Progress
from .calibration import calib_batches
from .search import (
    MAX_EXHAUSTIVE_LAYERS,
    check_full,
    custom_sets,
    klpatch_sets,
    optimal_sets,
    shortest_path_subsets,
    similarity_sets,
)

#: ``sets(pair, calib_ids, custom, progress) -> [P_0, ..., P_n]``.
SetsFn = Callable[[BoomerangPair, "torch.Tensor | None", "Sequence[int] | None", "Progress | None"],
                  list[frozenset[int]]]


@dataclass(frozen=True)
class Order:
    """One patch order or pruning baseline and what it is.

    ``kind`` is ``"rule"`` (follows from the mapping), ``"user"`` (the user's own sequence),
    ``"search"`` (chosen from calibration text) or ``"pruning"`` (a baseline built from the
    teacher alone). ``optimises`` says, for a legend or caption, what the order minimises and on
    which data: an order that is optimal for KL on calibration text need not be the best for
    perplexity on evaluation text.
    """

    name: str
    kind: Literal["rule", "user", "search", "pruning"]
    nested: bool
    needs_calibration: bool
    optimises: str
    sets: SetsFn | None = None

    @property
    def is_baseline(self) -> bool:
        """True for pruning baselines (teacher layers dropped), False for patch orders."""
        return self.kind == "pruning"


def _sequential(name: str) -> SetsFn:
    return lambda pair, calib, custom, progress: [pair.sequential(name, k)
                                                   for k in range(pair.num_student_layers + 1)]


_ORDERS = (
    Order("last-to-first", "rule", True, False,
          "nothing: patches the top student layers first (no data)", _sequential("last-to-first")),
    Order("first-to-last", "rule", True, False,
          "nothing: patches the bottom student layers first (no data)", _sequential("first-to-last")),
    Order("custom", "user", True, False, "nothing: your own patching sequence",
          lambda pair, calib, custom, progress: custom_sets(pair, custom)),
    Order("similarity", "search", True, True,
          "per-layer cosine similarity to the teacher block on calibration text (least similar first)",
          lambda pair, calib, custom, progress: similarity_sets(pair, calib)),
    Order("klpatch", "search", True, True,
          "KL to the teacher on calibration text, greedily, one layer at a time",
          lambda pair, calib, custom, progress: klpatch_sets(pair, calib, progress)),
    Order("optimal", "search", False, True,
          f"KL to the teacher on calibration text, exactly, over all subsets (<= {MAX_EXHAUSTIVE_LAYERS} student layers)",
          lambda pair, calib, custom, progress: optimal_sets(pair, calib, progress)),
    Order("shortest-path", "search", False, True,
          "a run-additive surrogate of the KL to the teacher on calibration text, exactly (DAG shortest path)",
          lambda pair, calib, custom, progress: shortest_path_subsets(pair, calib, progress=progress)),
    Order("naive-pruning", "pruning", True, False,
          "nothing: the teacher without the layers the student dropped (no training)"),
    Order("block-influence", "pruning", False, True,
          "ShortGPT's block influence on calibration text: drops the layers that change their input least"),
    Order("angular", "pruning", False, True,
          "Gromov et al.'s angular distance on calibration text: drops the run of consecutive layers "
          "across which the last token's state turns least"),
    Order("sleb", "pruning", False, True,
          "SLEB on calibration text: drops one layer at a time, the one whose removal raises perplexity least"),
    Order("laco", "pruning", False, True,
          "LaCo on calibration text: collapses runs of consecutive layers into one (their differences added) "
          "while the output stays similar to the teacher's"),
)

#: Every order and baseline by name, in display order.
ORDERS: dict[str, Order] = {o.name: o for o in _ORDERS}
#: Names of the patch orders (what :func:`patch_order` accepts).
ORDER_NAMES: tuple[str, ...] = tuple(o.name for o in _ORDERS if not o.is_baseline)
#: Names of the pruning baselines.
BASELINES: tuple[str, ...] = tuple(o.name for o in _ORDERS if o.is_baseline)


def get_order(name: str) -> Order:
    """The registered order or baseline ``name``; one clear error for an unknown name."""
    if name not in ORDERS:
        raise BoomerangError(f"Unknown order '{name}'; choose one of {', '.join(ORDERS)}.")
    return ORDERS[name]


def needs_calibration(name: str) -> bool:
    """True for orders and baselines chosen from calibration text."""
    return get_order(name).needs_calibration


def available_orders(pair: BoomerangPair | None = None, include_custom: bool = False) -> list[str]:
    """Patch orders that can be computed for ``pair`` (no exhaustive search on large students)."""
    out = [o for o in ORDER_NAMES if include_custom or o != "custom"]
    if pair is not None and pair.num_student_layers > MAX_EXHAUSTIVE_LAYERS:
        out.remove("optimal")  # 2^n subsets: shortest-path stands in for it
    return out


def patch_order(
    pair: BoomerangPair,
    name: str,
    calib_ids: torch.Tensor | None = None,
    *,
    custom: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> list[frozenset[int]]:
    """``[P_0, ..., P_n]``: the student layers patched at each size ``k`` under order ``name``.

    Orders that need calibration need ``calib_ids`` (``[n, seq_len]`` token ids of training
    text, e.g. :func:`boomerang.orders.calibration_ids`); ``custom`` is the patching sequence of
    the ``custom`` order; ``progress`` reports the model evaluations of the searches.
    """
    order = get_order(name)
    if order.is_baseline:
        raise BoomerangError(
            f"'{name}' is a pruning baseline, not a patch order; use boomerang.orders.pruning_order."
        )
    if order.needs_calibration:
        calib_batches(calib_ids)
        check_token_ids(calib_ids, pair.teacher, "Calibration ids")
    assert order.sets is not None
    return check_full(order.sets(pair, calib_ids, custom, progress), pair.num_student_layers)


# Searched orders, per pair (dropped with it) and calibration text: a search runs once.
_SEARCHED: weakref.WeakKeyDictionary[BoomerangPair, dict[tuple, list[frozenset[int]]]] = weakref.WeakKeyDictionary()


def order_sets(pair: BoomerangPair, name: str, calib_ids: torch.Tensor | None = None) -> list[frozenset[int]]:
    """:func:`patch_order`, searched once per pair and calibration text and then reused (a pair
    whose weights change in place needs a new :class:`~boomerang.core.BoomerangPair`)."""
    key = (name, None if calib_ids is None else tensor_fingerprint(calib_ids))
    cache = _SEARCHED.setdefault(pair, {})
    if key not in cache:
        cache[key] = patch_order(pair, name, calib_ids)
    return list(cache[key])


def build(pair: BoomerangPair, name: str, k: int, calib_ids: torch.Tensor | None = None) -> PreTrainedModel:
    """The model of size ``k`` (student layers patched) of any registered patch order: a
    sequential one by its rule, one chosen from ``calib_ids`` by its search (:func:`order_sets`,
    so building every size searches once)."""
    if name in SEQUENTIAL_ORDERS:
        return pair.build(order=name, k=k)
    sets = order_sets(pair, name, calib_ids)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(sets):
        raise BoomerangError(f"k must be a whole number from 0 to {len(sets) - 1}, not {k!r}.")
    return pair.build(patched=sets[k])
