"""Data-driven patch orders: similarity, KLPatch, the exhaustive optimum and the shortest path.

For every size ``k`` each function here picks which ``k`` student layers to patch (see
:mod:`boomerang.orders` for what each order optimises):

* ``similarity``: patch first the student layers that imitate their teacher block worst, by the
  cosine between student layer ``i`` and teacher block ``i`` run on the same (teacher) input.
  Nested; one teacher and one student forward.
* ``klpatch``: greedy. ``P_k = P_{k-1} + {i}`` for the ``i`` that minimises the mean token
  ``KL(teacher || model)`` on calibration text. Nested; ``n(n+1)/2`` model evaluations.
* ``optimal``: for each ``k`` the subset of size ``k`` with the smallest KL, by exhaustive search
  over all ``2^n`` subsets (``n <= 12``). Not nested in general.
* ``shortest-path``: for students too large to search, the minimiser of a decomposable surrogate
  of that KL, found exactly by dynamic programming (a shortest path in a DAG); see
  :func:`shortest_path_subsets`. Not nested in general.

KL-based orders evaluate many patched models on the same calibration tokens; a
:class:`~boomerang.core.PatchRunner` shares their common prefixes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from ..core import BoomerangPair, Patched, PatchRunner, Recorded, autocast_context, output_tensor
from ..errors import BoomerangError
from ..progress import Progress, report
from .calibration import calib_batches, kl_to_teacher

#: ``optimal`` searches all 2^n subsets; beyond this many student layers use ``shortest-path``.
MAX_EXHAUSTIVE_LAYERS = 12



def check_full(sets: list[frozenset[int]], n: int) -> list[frozenset[int]]:
    """``sets`` itself, after checking that it has one set of each size ``0..n``."""
    if len(sets) != n + 1 or any(len(s) != k for k, s in enumerate(sets)):
        raise RuntimeError(f"an order must give one set of each size 0..{n}, got sizes {[len(s) for s in sets]}")
    return sets


def nested_from_sequence(sequence: Sequence[int]) -> list[frozenset[int]]:
    """``[{}, {a}, {a, b}, ...]`` from the order ``[a, b, ...]`` in which layers are patched."""
    return [Patched(sequence[:k]) for k in range(len(sequence) + 1)]


def custom_sets(pair: BoomerangPair, custom: Sequence[int] | None) -> list[frozenset[int]]:
    """The nested sets of a user's patching sequence, which must name every layer once."""
    n = pair.num_student_layers
    if custom is None:
        raise BoomerangError("The custom order needs the list of student layers in patching order.")
    seq = [next(iter(pair.mapping.check_patched([c]))) for c in custom]
    if sorted(seq) != list(range(n)):
        raise BoomerangError(
            f"A custom order must list every student layer 0..{n - 1} exactly once; got {list(custom)}."
        )
    return nested_from_sequence(seq)


def recordings(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8):
    """Per calibration batch: the teacher's and the student's recorded forwards, their layer
    lists and the ids, under ``inference_mode`` (and bf16 autocast on GPU) while the caller
    works on them."""
    t_model = pair.build(patched=range(pair.num_student_layers)).eval()
    s_model = pair.build(patched=()).eval()
    t_layers, s_layers = pair.parts.layer_list(t_model), pair.parts.layer_list(s_model)
    with torch.inference_mode():
        for ids in calib_batches(calib_ids, batch_size):
            ids = ids.to(next(t_model.parameters()).device)
            with autocast_context(t_model):
                yield (Recorded(t_model, t_layers, ids), Recorded(s_model, s_layers, ids),
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
    for rt, rs, _, s_layers, ids in recordings(pair, calib_ids, batch_size):
        for i, block in enumerate(blocks):
            h_in = rt.inputs[block[0]]  # [B, T, H]
            args, kw = rs.calls[i]
            out = output_tensor(s_layers[i](h_in, *args, **kw))
            ref = rt.outputs[block[-1]]
            cos = torch.nn.functional.cosine_similarity(out.float(), ref.float(), dim=-1)
            sums[i] += cos.double().sum()
        count += ids.numel()
    return (sums / count).tolist()


def similarity_sets(pair: BoomerangPair, calib_ids: torch.Tensor) -> list[frozenset[int]]:
    """Patch the least similar layers first (lowest :func:`layer_cosines`)."""
    cos = layer_cosines(pair, calib_ids)
    seq = sorted(range(pair.num_student_layers), key=lambda i: (cos[i], i))
    return nested_from_sequence(seq)


def klpatch_sets(pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None = None) -> list[frozenset[int]]:
    """Greedy: grow the patched set one layer at a time, each time by the layer whose patch
    brings the model's KL to the teacher lowest."""
    n = pair.num_student_layers
    current = Patched()
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
        report(progress, done, total, f"klpatch: {done}/{total} candidate models")
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
    sets = [Patched(c) for k in range(n + 1) for c in itertools.combinations(range(n), k)]
    n_batches = len(calib_batches(calib_ids))
    kls = kl_to_teacher(
        pair, sets, calib_ids,
        progress=(lambda u: report(progress, u.done // n_batches, len(sets),
                                   f"optimal: {u.done // n_batches}/{len(sets)} subsets")) if progress else None,
    )
    return dict(zip(sets, kls))


def optimal_sets(pair: BoomerangPair, calib_ids: torch.Tensor, progress: Progress | None = None) -> list[frozenset[int]]:
    """For each size, the subset with the smallest KL to the teacher among all ``2^n``."""
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
    sets = [Patched(set(range(n)) - set(range(a, b))) for a, b in runs]
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

    for rt, rs, t_layers, s_layers, ids in recordings(pair, calib_ids, batch_size):
        for j, block in enumerate(blocks):
            args, kw = rs.calls[j]
            s_on_t = output_tensor(s_layers[j](rt.inputs[block[0]], *args, **kw))
            on_teacher[j] += mismatch(s_on_t, rt.outputs[block[-1]])
            h = rs.inputs[j]  # [B, T, H]
            for t in block:
                t_args, t_kw = rt.calls[t]
                h = output_tensor(t_layers[t](h, *t_args, **t_kw))
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
        out.append(Patched(patched))
    return out

