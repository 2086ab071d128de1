"""Patch orders: which student layers to patch for each intermediate size, and pruning baselines.

A *patch order* answers, for every size ``k = 0..n``, which ``k`` of the student's ``n`` layers
to replace by their teacher blocks; :func:`patch_order` returns the list ``[P_0, ..., P_n]``
with ``|P_k| = k``, ``P_0 = {}`` (the student) and ``P_n`` = everything (the teacher).

* ``last-to-first`` / ``first-to-last``: patch from the top or from the bottom. Nested.
* ``custom``: the user gives the order in which layers are patched. Nested.
* ``similarity``: patch first the student layers that imitate their teacher block worst, by the
  cosine similarity between student layer ``i`` and teacher block ``i`` run on the same
  (teacher) input hidden states. Nested; needs one teacher and one student forward.
* ``klpatch``: greedy. ``P_k = P_{k-1} + {i}`` for the ``i`` that minimises the mean token
  ``KL(teacher || model)`` on calibration text. Nested; ``n(n+1)/2`` model evaluations.
* ``optimal``: for each ``k`` the subset of size ``k`` with the smallest KL, by exhaustive search
  over all ``2^n`` subsets (``n <= 12``). Not nested in general.
* ``shortest-path``: for students too large to search, the minimiser of a decomposable
  surrogate of that KL, found exactly by dynamic programming (a shortest path in a DAG); see
  :func:`shortest_path_subsets`. Not nested in general.

KL-based orders evaluate many patched models on the same calibration tokens; a
:class:`~boomerang.runner.PatchRunner` shares their common prefixes.

**Pruning baselines.** A fair comparison for an interpolated model of ``L`` layers is the
teacher pruned to ``L`` layers with no training: :func:`prune_teacher` builds it (zero-copy),
:func:`pruning_order` says which layers each size keeps (``naive``: drop the layers the
student dropped, re-adding them last-to-first; ``block-influence``: drop the layers whose
output is most similar to their input, ShortGPT's *block influence*).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from .arch import config_for_layers
from .errors import BoomerangError
from .pair import BoomerangPair, clone_module
from .runner import PatchRunner, _output_tensor, _Recorded, autocast_context

#: ``progress(done, total)``.
Progress = Callable[[int, int], None]

#: Every name :func:`patch_order` accepts.
ORDER_NAMES: tuple[str, ...] = (
    "last-to-first", "first-to-last", "custom", "similarity", "klpatch", "optimal", "shortest-path",
)
#: ``optimal`` searches all 2^n subsets; beyond this many student layers use ``shortest-path``.
MAX_EXHAUSTIVE_LAYERS = 12
#: Methods of :func:`pruning_order`.
PRUNING_METHODS = ("naive", "block-influence")


# --------------------------------------------------------------------------------------------
# Calibration data and the KL of patched models


def calibration_ids(pair: BoomerangPair, n: int = 8, seq_len: int = 128, source: str = "demo") -> torch.Tensor:
    """``[n, seq_len]`` token ids from the *training* split of ``source`` for KL-guided orders."""
    from .data import load_blocks

    if pair.tokenizer is None:
        raise BoomerangError("This pair has no tokenizer; pass calibration token ids yourself.")
    return load_blocks(source, pair.tokenizer, seq_len, split="train", max_blocks=n)


def _calib_batches(calib_ids: torch.Tensor | None, batch_size: int = 8) -> list[torch.Tensor]:
    if calib_ids is None:
        raise BoomerangError("This order needs calibration token ids (see boomerang.orders.calibration_ids).")
    if calib_ids.dim() != 2 or calib_ids.size(1) < 2:
        raise BoomerangError(f"Calibration ids must be a [n, seq_len] tensor, not {list(calib_ids.shape)}.")
    return [calib_ids[i : i + batch_size] for i in range(0, len(calib_ids), batch_size)]


def kl_to_teacher(
    pair: BoomerangPair,
    sets: Sequence[Iterable[int]],
    calib_ids: torch.Tensor,
    progress: Progress | None = None,
    batch_size: int = 8,
    runner: PatchRunner | None = None,
) -> list[float]:
    """Mean token ``KL(teacher || model)`` (nats) of each patched model on ``calib_ids``.

    ``KL(p || q) = sum_v p(v) (log p(v) - log q(v))`` per position, averaged over every position
    of every sequence; the teacher's own distribution ``p`` is the reference, so 0 means the
    model predicts exactly like the teacher. Pass a ``PatchRunner(pair, keep_recordings=True)``
    to share the student's and teacher's forwards between calls on the same ``calib_ids``.
    """
    batches = _calib_batches(calib_ids, batch_size)
    sums = [0.0] * len(sets)
    teacher_logp: dict[int, torch.Tensor] = {}
    runner = runner if runner is not None else PatchRunner(pair)

    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        if b not in teacher_logp:
            teacher_logp[b] = torch.log_softmax(runner.teacher_logits[b].float(), -1)  # [B, T, V]
        lp = teacher_logp[b]
        lq = torch.log_softmax(logits.float(), -1)
        sums[i] += float((lp.exp() * (lp - lq)).sum(-1).double().sum())

    runner.run(sets, batches, consume, progress=progress, keep_teacher_logits=True)
    tokens = calib_ids.numel()
    return [s / tokens for s in sums]


# --------------------------------------------------------------------------------------------
# Orders


def _check_full(sets: list[frozenset[int]], n: int) -> list[frozenset[int]]:
    assert len(sets) == n + 1 and all(len(s) == k for k, s in enumerate(sets))
    return sets


def nested_from_sequence(sequence: Sequence[int]) -> list[frozenset[int]]:
    """``[{}, {a}, {a, b}, ...]`` from the order ``[a, b, ...]`` in which layers are patched."""
    return [frozenset(sequence[:k]) for k in range(len(sequence) + 1)]


def _custom(pair: BoomerangPair, custom: Sequence[int] | None) -> list[frozenset[int]]:
    n = pair.num_student_layers
    if custom is None:
        raise BoomerangError("The custom order needs the list of student layers in patching order.")
    seq = [next(iter(pair.mapping.check_patched([c]))) for c in custom]
    if sorted(seq) != list(range(n)):
        raise BoomerangError(
            f"A custom order must list every student layer 0..{n - 1} exactly once; got {list(custom)}."
        )
    return nested_from_sequence(seq)


def _recordings(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int):
    """Per calibration batch: the teacher's and the student's recorded forwards, their layer
    lists and the ids, under ``inference_mode`` (and bf16 autocast on GPU) while the caller
    works on them."""
    t_model = pair.build(patched=range(pair.num_student_layers)).eval()
    s_model = pair.build(patched=()).eval()
    t_layers, s_layers = pair.parts.layer_list(t_model), pair.parts.layer_list(s_model)
    with torch.inference_mode():
        for ids in _calib_batches(calib_ids, batch_size):
            ids = ids.to(next(t_model.parameters()).device)
            with autocast_context(t_model):
                yield (_Recorded(t_model, t_layers, ids), _Recorded(s_model, s_layers, ids),
                       t_layers, s_layers, ids)


def layer_cosines(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8) -> list[float]:
    """Per student layer ``i``: mean token cosine between student layer ``i`` and teacher block ``i``
    run on the same input, the teacher's hidden state entering block ``i``.

    A local measure of how well the student layer imitates the block it stands for (the
    teacher's embedding output feeds layer 0 for both).
    """
    blocks = pair.mapping.blocks
    sums = torch.zeros(pair.num_student_layers, dtype=torch.float64)
    count = 0
    for rt, rs, _, s_layers, ids in _recordings(pair, calib_ids, batch_size):
        for i, block in enumerate(blocks):
            h_in = rt.inputs[block[0]]  # [B, T, H]
            args, kw = rs.calls[i]
            out = _output_tensor(s_layers[i](h_in, *args, **kw))
            ref = rt.outputs[block[-1]]
            cos = torch.nn.functional.cosine_similarity(out.float(), ref.float(), dim=-1)
            sums[i] += cos.double().sum()
        count += ids.numel()
    return (sums / count).tolist()


def _similarity(pair: BoomerangPair, calib_ids: torch.Tensor) -> list[frozenset[int]]:
    cos = layer_cosines(pair, calib_ids)
    seq = sorted(range(pair.num_student_layers), key=lambda i: (cos[i], i))
    return nested_from_sequence(seq)


def _klpatch(pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None) -> list[frozenset[int]]:
    n = pair.num_student_layers
    current: frozenset[int] = frozenset()
    out = [current]
    total = n * (n + 1) // 2
    done = 0
    runner = PatchRunner(pair, keep_recordings=True)
    for _ in range(n):
        candidates = [i for i in range(n) if i not in current]
        sets = [current | {i} for i in candidates]
        kls = kl_to_teacher(pair, sets, calib_ids, runner=runner)
        best = min(range(len(candidates)), key=lambda j: (kls[j], candidates[j]))
        current = sets[best]
        out.append(current)
        done += len(candidates)
        if progress is not None:
            progress(done, total)
    return out


def all_subset_kls(
    pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None = None
) -> dict[frozenset[int], float]:
    """KL to the teacher of every one of the ``2^n`` patched models (``n <= 12``)."""
    n = pair.num_student_layers
    if n > MAX_EXHAUSTIVE_LAYERS:
        raise BoomerangError(
            f"The optimal order searches all 2^{n} subsets, too many for a {n}-layer student "
            f"(at most {MAX_EXHAUSTIVE_LAYERS}); use the shortest-path order instead."
        )
    sets = [frozenset(c) for k in range(n + 1) for c in itertools.combinations(range(n), k)]
    n_batches = len(_calib_batches(calib_ids))
    kls = kl_to_teacher(
        pair, sets, calib_ids,
        progress=(lambda d, t: progress(d // n_batches, len(sets))) if progress else None,
    )
    return dict(zip(sets, kls))


def _optimal(pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None) -> list[frozenset[int]]:
    n = pair.num_student_layers
    kls = all_subset_kls(pair, calib_ids, progress)
    best: list[frozenset[int]] = []
    for k in range(n + 1):
        size_k = [s for s in kls if len(s) == k]
        best.append(min(size_k, key=lambda s: (kls[s], sorted(s))))
    return best


def run_costs(
    pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None = None
) -> dict[tuple[int, int], float]:
    """``cost[(a, b)]``: KL to the teacher of the model that keeps only student layers ``a..b-1``.

    That is the teacher with one contiguous *run* of student layers ``[a, b)`` substituted for
    its blocks (student embeddings when ``a == 0``, student head when ``b == n``); ``n(n+1)/2``
    models, evaluated with shared prefixes.
    """
    n = pair.num_student_layers
    runs = [(a, b) for a in range(n) for b in range(a + 1, n + 1)]
    sets = [frozenset(range(n)) - frozenset(range(a, b)) for a, b in runs]
    kls = kl_to_teacher(pair, sets, calib_ids, progress=progress)
    return dict(zip(runs, kls))


def local_run_costs(
    pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8
) -> dict[tuple[int, int], float]:
    """A cheap stand-in for :func:`run_costs` from hidden states alone (``2n`` layer calls).

    The *mismatch* of student layer ``j`` on an input ``h`` is ``1 - cos(S_j(h), T_j(h))``, mean
    over tokens, where ``T_j`` is teacher block ``j``: the error that substituting the layer
    introduces, measured on the inputs it will actually see. A layer that starts a student run
    after a patched block sees the teacher's hidden state entering block ``j``; inside a run
    (or at position 0, fed by the student's embedding) it sees the student's own hidden state.
    The cost of the run ``[a, b)`` is the sum of its layers' mismatches on those inputs.
    """
    n = pair.num_student_layers
    blocks = pair.mapping.blocks
    on_teacher = torch.zeros(n, dtype=torch.float64)  # mismatch on the teacher's input
    on_student = torch.zeros(n, dtype=torch.float64)  # mismatch on the student's own input
    count = 0

    def mismatch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        cos = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
        return (1 - cos).clamp_min(0).double().sum()

    for rt, rs, t_layers, s_layers, ids in _recordings(pair, calib_ids, batch_size):
        for j, block in enumerate(blocks):
            args, kw = rs.calls[j]
            s_on_t = _output_tensor(s_layers[j](rt.inputs[block[0]], *args, **kw))
            on_teacher[j] += mismatch(s_on_t, rt.outputs[block[-1]])
            h = rs.inputs[j]  # [B, T, H]
            for t in block:
                t_args, t_kw = rt.calls[t]
                h = _output_tensor(t_layers[t](h, *t_args, **t_kw))
            on_student[j] += mismatch(rs.outputs[j], h)
        count += ids.numel()
    on_teacher, on_student = (on_teacher / count).tolist(), (on_student / count).tolist()
    costs = {}
    for a in range(n):
        first = on_teacher[a] if a > 0 else on_student[0]
        for b in range(a + 1, n + 1):
            costs[(a, b)] = first + sum(on_student[a + 1 : b])
    return costs


def shortest_path_subsets(
    pair: BoomerangPair,
    calib_ids: torch.Tensor,
    costs: dict[tuple[int, int], float] | None = None,
    progress: Progress | None = None,
) -> list[frozenset[int]]:
    """For each size ``k``, the patched set minimising a run-additive surrogate of the KL.

    **Cost.** A patched set splits the student positions into maximal runs of unpatched
    (student) layers separated by patched (teacher) blocks, e.g. ``S S T S T T`` has the runs
    ``[0, 2)`` and ``[3, 4)``. The surrogate cost of the set is the sum over its runs of
    :func:`run_costs`: the KL to the teacher of the model in which *only that run* is student
    and everything else teacher. It is exact for every set with at most one run (both
    sequential orders, for instance) and assumes that the errors of separate runs add up. It
    keeps what a per-layer cost would lose: consecutive student layers were trained together
    and usually hurt less as a run than apart. :func:`local_run_costs` gives a cheaper cost
    from hidden states alone (pass it as ``costs``).

    **Search.** The surrogate decomposes along the positions, so its minimiser for every size
    at once is a shortest path in a DAG whose states are ``(position j, patched so far m, last
    position patched?)``: from ``j`` a path either patches position ``j`` (cost 0, ``m + 1``)
    or runs the student from ``j`` to some ``b > j`` (cost ``run_costs[(j, b)]``), which must be
    followed by a patched position or the end. Dynamic programming over the ``O(n^2)``
    states with ``O(n)`` edges each takes microseconds; measuring the costs takes
    ``n(n+1)/2`` calibration forwards instead of ``2^n``.
    """
    n = pair.num_student_layers
    if costs is None:
        costs = run_costs(pair, calib_ids, progress)
    INF = float("inf")
    # best[j][m][free]: min cost to reach position j with m patched so far; free = a student
    # run may start at j (the previous position was patched, or j == 0).
    best = [[[INF, INF] for _ in range(n + 1)] for _ in range(n + 1)]
    back: dict[tuple[int, int, int], tuple[int, int, int, tuple[int, ...]]] = {}
    best[0][0][1] = 0.0
    for j in range(n):
        for m in range(j + 1):
            for free in (0, 1):
                cur = best[j][m][free]
                if cur == INF:
                    continue
                # patch position j
                if cur < best[j + 1][m + 1][1]:
                    best[j + 1][m + 1][1] = cur
                    back[(j + 1, m + 1, 1)] = (j, m, free, (j,))
                if free:  # a student run [j, b)
                    for b in range(j + 1, n + 1):
                        c = cur + costs[(j, b)]
                        if c < best[b][m][0]:
                            best[b][m][0] = c
                            back[(b, m, 0)] = (j, m, free, ())
    out = []
    for k in range(n + 1):
        state = min(((n, k, f) for f in (0, 1)), key=lambda s: best[s[0]][s[1]][s[2]])
        patched: list[int] = []
        while state != (0, 0, 1):
            pj, pm, pf, add = back[state]
            patched.extend(add)
            state = (pj, pm, pf)
        out.append(frozenset(patched))
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

    See the module docstring for the orders. KL- and similarity-guided orders need
    ``calib_ids`` (``[n, seq_len]`` token ids, e.g. :func:`calibration_ids`); ``custom`` is
    the patching sequence for the ``custom`` order; ``progress(done, total)`` reports the
    model evaluations of ``klpatch``, ``optimal`` and ``shortest-path``.
    """
    n = pair.num_student_layers
    if name in ("last-to-first", "first-to-last"):
        return _check_full([pair.sequential(name, k) for k in range(n + 1)], n)
    if name == "custom":
        return _check_full(_custom(pair, custom), n)
    if name not in ORDER_NAMES:
        raise BoomerangError(f"Unknown order '{name}'; choose one of {', '.join(ORDER_NAMES)}.")
    _calib_batches(calib_ids)
    if name == "similarity":
        return _check_full(_similarity(pair, calib_ids), n)
    if name == "klpatch":
        return _check_full(_klpatch(pair, calib_ids, progress), n)
    if name == "optimal":
        return _check_full(_optimal(pair, calib_ids, progress), n)
    return _check_full(shortest_path_subsets(pair, calib_ids, progress=progress), n)


# --------------------------------------------------------------------------------------------
# Pruning baselines


def prune_teacher(pair: BoomerangPair, keep: Sequence[int]) -> PreTrainedModel:
    """The teacher with only the decoder layers ``keep`` (in order), zero-copy.

    Like :meth:`BoomerangPair.build`, every module is a shallow clone sharing the teacher's
    parameters; the config's per-layer lists follow the kept layers and ``layer_idx`` is
    renumbered so that generation with a KV cache works.
    """
    teacher = pair.teacher
    N = pair.mapping.num_teacher_layers
    keep = [int(k) for k in keep]
    if not keep or any(not 0 <= k < N for k in keep) or sorted(set(keep)) != keep:
        raise BoomerangError(
            f"Layers to keep must be distinct, increasing teacher layers in 0..{N - 1}; got {keep}."
        )
    config = config_for_layers(teacher.config, [(teacher.config, k) for k in keep])
    parts = pair.parts
    t_layers = parts.layer_list(teacher)
    top = clone_module(teacher, config)  # zero-copy; its layer list is replaced below
    base = parts.base_module(top)
    base._modules[parts.layers] = nn.ModuleList(
        [clone_module(t_layers[k], config, layer_idx=p) for p, k in enumerate(keep)]
    )
    if "has_sliding_layers" in base.__dict__ and hasattr(config, "layer_types"):
        base.__dict__["has_sliding_layers"] = "sliding_attention" in config.layer_types
    top.__dict__["generation_config"] = copy.deepcopy(teacher.generation_config)
    top.name_or_path = f"pruned-teacher:{keep}"
    top.boomerang_kept = tuple(keep)
    return top


def block_influence(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8) -> list[float]:
    """Per teacher layer: ``1 - mean token cos(layer input, layer output)`` (ShortGPT's BI).

    A layer that barely changes its input (low BI) is the cheapest to drop.
    """
    N = pair.mapping.num_teacher_layers
    t_model = pair.build(patched=range(pair.num_student_layers)).eval()
    layers = pair.parts.layer_list(t_model)
    sums = torch.zeros(N, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for ids in _calib_batches(calib_ids, batch_size):
            ids = ids.to(next(t_model.parameters()).device)
            with autocast_context(t_model):
                rec = _Recorded(t_model, layers, ids)
            for t in range(N):
                cos = torch.nn.functional.cosine_similarity(
                    rec.inputs[t].float(), rec.outputs[t].float(), dim=-1
                )
                sums[t] += (1 - cos).double().sum()
            count += ids.numel()
    return (sums / count).tolist()


def pruning_order(
    pair: BoomerangPair,
    method: str = "naive",
    calib_ids: torch.Tensor | None = None,
    sizes: Iterable[int] | None = None,
) -> dict[int, list[int]]:
    """``{layers: kept teacher layers}``: the pruned teacher of each size, for :func:`prune_teacher`.

    ``sizes`` are layer counts (default: every count from the student's ``n`` to the teacher's
    ``N``, the sizes interpolation reaches).

    * ``naive``: drop teacher layers with no training and no data: the ones the student
      dropped (``mapping.pruned``), re-added from the last: a model of ``N - d`` layers lacks
      the first ``d`` of them. At ``n`` layers this is the student's initialisation before
      distillation; the layer choice mirrors the last-to-first patch order. Sizes must lie in
      ``n..N``.
    * ``block-influence``: drop the ``N - L`` layers with the lowest :func:`block_influence`
      on ``calib_ids`` (one-shot, ShortGPT). Any size ``1..N``.
    """
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    sizes = sorted(set(int(s) for s in (range(n, N + 1) if sizes is None else sizes)))
    if method not in PRUNING_METHODS:
        raise BoomerangError(f"Unknown pruning method '{method}'; choose {' or '.join(PRUNING_METHODS)}.")
    out: dict[int, list[int]] = {}
    if method == "naive":
        bad = [s for s in sizes if not n <= s <= N]
        if bad:
            raise BoomerangError(f"Naive pruning gives sizes {n}..{N} layers, not {bad}.")
        pruned = pair.mapping.pruned
        for L in sizes:
            drop = set(pruned[: N - L])
            out[L] = [t for t in range(N) if t not in drop]
        return out
    bad = [s for s in sizes if not 1 <= s <= N]
    if bad:
        raise BoomerangError(f"Pruned sizes must lie in 1..{N} layers, not {bad}.")
    bi = block_influence(pair, calib_ids)
    ranked = sorted(range(N), key=lambda t: (bi[t], t))  # least influential first
    for L in sizes:
        drop = set(ranked[: N - L])
        out[L] = [t for t in range(N) if t not in drop]
    return out
