"""LaCo: the teacher with runs of consecutive layers collapsed into one, at every size.

Layer Collapse (Yang, Cao and Zhao, "LaCo: Large Language Model Pruning via Layer Collapse",
2024) is a pruning baseline that *merges* layers instead of dropping them. Collapsing the
layers ``l, l+1, ..., l+m`` into layer ``l`` with the paper's **RDSC** layer merge
(Reserving-Differences-while-Seeking-Common) gives, for every parameter tensor of the layer
(attention, MLP and norms alike)::

    theta*_l = theta_l + sum_{k=1..m} (theta_{l+k} - theta_l)

Layer ``l`` is the common part; each collapsed layer adds what it does differently from it.
The merged model has ``m`` fewer layers and the teacher's architecture, so it runs, saves and
generates like any model of that size.

**Search.** A merge is kept only while the merged model still computes like the teacher. Its
*similarity* is measured on calibration text: for each calibration sequence, the cosine
similarity between the merged model's and the teacher's final hidden states, flattened over
every token position (``[T, H]`` -> one vector of ``T * H`` numbers), averaged over sequences.
The final hidden state is the base model's ``last_hidden_state``, i.e. after the final norm
(for Llama and the like the same tensor as ``output_hidden_states=True``'s ``hidden_states[-1]``):
what the head reads, and, the norm giving every position about the same length, every position
counts about equally. This is what the authors' released code measures; every position, not only
the last, because a language model predicts at every position. The reference is the original
teacher, as in that code (not the model before the merge), so a chain of merges that each change
little cannot drift away from the teacher unnoticed.

The paper scans merge positions ``l`` from a top index ``H`` down to a bottom index ``L``,
merging ``C`` consecutive layers (``m = C - 1``) at a time: when the similarity is at least
the threshold ``T`` it keeps the merge and jumps ``I`` layers down, otherwise it moves one
layer down. :func:`laco_merges` follows it with these choices, made so that every size
``1..N`` is well defined and reachable:

* **Bounds.** ``L = 1`` and ``H = N - 1`` of the *current* model: a merged run ``l .. l+k``
  satisfies ``1 <= l`` and ``l + k <= size - 2``, so the first layer is never merged and the
  last layer is never collapsed into a layer below. The scan starts at the top-most such run.
  Only where these bounds leave too few layers for the run (a target of 1 or 2 layers) is
  layer 0 allowed, and then, for a target of 1, the last layer.
* **Run length.** Each merge collapses ``layers_per_merge`` consecutive current layers, except
  that when fewer layers remain to be removed than a full merge removes, the merge collapses
  exactly as many as needed to land on the target size (``k + 1`` layers remove ``k``).
* **Scan.** From the top down; a merge with similarity ``>= threshold`` is kept and the scan
  jumps ``interval`` layers down (then clamped to the top run of the smaller model), otherwise
  it moves one layer down. The paper stops at the bottom; here, while the model is still larger
  than the target, the scan starts again from the top of the current model, and a whole scan
  that keeps nothing keeps its candidate of highest similarity (the top-most one on a tie), so
  every size is reached even once no merge clears the threshold.
* **Sharing.** A smaller target runs the same full merges as a larger one until the larger one
  needs its final partial merge, so all sizes come from one pass of full merges (down to the
  smallest size) with a branch per size for its partial merge; similarities are memoised by the
  candidate's groups. A candidate is evaluated from the current model's recorded input to its
  first merged layer, so only the layers from the merge upward are run again.

**Merging merged layers.** The models are described by *groups*: the merged model's layer ``p``
is the collapse of the consecutive original teacher layers ``groups[p] = (a, ..., b)``, whose
parameters are ``theta_a + sum_{t in g, t != a} (theta_t - theta_a)``. A merge that swallows
layers that were already merged forms the union of their groups, built from the original layers
by the same rule. The paper's rule applied to already merged layers does *not* compose this way,
and depends on the order of the merges: ``(a, b)`` merged gives ``theta_a + (theta_b - theta_a)
= theta_b``, and merging that with ``c`` gives ``theta_b + (theta_c - theta_b) = theta_c``,
while the group ``(a, b, c)`` at once gives ``theta_b + theta_c - theta_a``. The whole-group
rule keeps every original layer's difference from the group's first layer exactly once, needs
no merge history, and equals the paper's rule for every merge of unmerged layers (all of them
at sizes ``N - C + 1`` and up).

The authors' notebooks merge only the attention and MLP projection weights, and update the base
layer in place while adding differences (which reduces the sum to ``theta_{l+m}``); this module
follows the paper's equation, for every parameter including the norms. The paper keeps a merge
when ``s > T``; here ``s >= T``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers import PreTrainedModel

from ..cache import pair_fingerprint, tensor_fingerprint
from ..core import (
    BoomerangPair,
    Recorded,
    autocast_context,
    clone_module,
    output_tensor,
)
from ..core.arch import check_token_ids, config_for_layers
from ..errors import BoomerangError
from ..io import atomic_write
from ..paths import cache_dir
from ..progress import Progress, report
from .calibration import calib_batches

#: ``C`` in the paper: consecutive layers collapsed into one per merge (``m = C - 1`` removed).
LACO_LAYERS_PER_MERGE = 4
#: ``L`` in the paper: the lowest layer a merge may start at (layer 0 is never merged).
LACO_BOTTOM = 1
#: Calibration sequences per forward pass.
LACO_BATCH_SIZE = 8
#: ``T`` in the paper: the similarity to the teacher a merge must keep.
LACO_THRESHOLD = 0.65
#: ``I`` in the paper: layers the scan jumps down after a kept merge.
LACO_INTERVAL = 2

Groups = tuple[tuple[int, ...], ...]


def _check_groups(groups: object, N: int) -> Groups:
    try:
        out = tuple(tuple(int(t) for t in g) for g in groups)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        out = ()
    if not out or any(not g for g in out) or [t for g in out for t in g] != list(range(N)):
        raise BoomerangError(
            f"LaCo groups must be runs of consecutive teacher layers that cover 0..{N - 1} in order; "
            f"got {groups!r}."
        )
    return out


def _merged_layer(pair: BoomerangPair, group: Sequence[int], config, layer_idx: int) -> nn.Module:
    """Teacher layer ``group[0]`` with every parameter replaced by the RDSC merge of ``group``
    (new tensors; buffers and the module tree are shared with the teacher as in a clone)."""
    t_layers = pair.parts.layer_list(pair.teacher)
    layer = clone_module(t_layers[group[0]], config, layer_idx=layer_idx)
    sources = [t_layers[t] for t in group]
    with torch.no_grad():
        for name, module in layer.named_modules():
            for pname, p in list(module._parameters.items()):
                if p is None:
                    continue
                theta = [src.get_submodule(name)._parameters[pname] for src in sources]
                # Low-precision weights are summed in float32 and rounded once.
                work = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                base = theta[0].to(work)
                acc = base.clone()
                for th in theta[1:]:
                    acc += th.to(work) - base
                module._parameters[pname] = nn.Parameter(acc.to(p.dtype), requires_grad=p.requires_grad)
    return layer


def _build(pair: BoomerangPair, groups: Groups, merged: dict[tuple[int, ...], nn.Module] | None = None
           ) -> PreTrainedModel:
    teacher = pair.teacher
    parts = pair.parts
    config = config_for_layers(teacher.config, [(teacher.config, g[0]) for g in groups])
    t_layers = parts.layer_list(teacher)
    top = clone_module(teacher, config)  # zero-copy; its layer list is replaced below
    base = parts.base_module(top)
    layers = []
    for p, g in enumerate(groups):
        if len(g) == 1:
            layers.append(clone_module(t_layers[g[0]], config, layer_idx=p))
        elif merged is not None:
            if g not in merged:
                merged[g] = _merged_layer(pair, g, config, p)
            layers.append(clone_module(merged[g], config, layer_idx=p))  # shares the merged weights
        else:
            layers.append(_merged_layer(pair, g, config, p))
    base._modules[parts.layers] = nn.ModuleList(layers)
    if "has_sliding_layers" in base.__dict__ and hasattr(config, "layer_types"):
        base.__dict__["has_sliding_layers"] = "sliding_attention" in config.layer_types
    top.__dict__["generation_config"] = copy.deepcopy(teacher.generation_config)
    top.name_or_path = f"laco:{[list(g) for g in groups]}"
    top.boomerang_groups = tuple(tuple(g) for g in groups)
    return top


def build_laco(pair: BoomerangPair, groups: Iterable[Sequence[int]]) -> PreTrainedModel:
    """The teacher with each group of consecutive layers collapsed into one layer by RDSC.

    ``groups`` (as :func:`laco_merges` gives them) partition the teacher layers ``0..N-1`` in
    order; layer ``p`` of the result is ``groups[p]`` collapsed. A group of one is the teacher's
    layer, sharing its parameters zero-copy like :func:`~boomerang.orders.prune_teacher`; a
    merged group ``(a, ..., b)`` is a clone of teacher layer ``a`` (its config entry, e.g. a
    sliding window, is ``a``'s) with new parameter tensors ``theta_a + sum_t (theta_t -
    theta_a)``, so the teacher is never modified. ``layer_idx`` is renumbered so that generation
    with a KV cache works; ``model.boomerang_groups`` records the groups.
    """
    N = pair.mapping.num_teacher_layers
    return _build(pair, _check_groups(groups, N))


def _window(size: int, k: int) -> tuple[int, int]:
    """The lowest and highest current layer a run of ``k + 1`` layers may cover."""
    lo, hi = LACO_BOTTOM, size - 2  # never the first layer nor the last
    if hi - lo + 1 < k + 1:
        lo = 0
    if hi - lo + 1 < k + 1:
        hi = size - 1
    return lo, hi


@dataclass
class _State:
    """Where a LaCo scan stands: the current model, the next run to try, and this scan's record."""

    groups: Groups
    pos: int | None = None  # the next run's first layer; None: the top run
    kept: bool = False  # whether this scan has kept a merge
    best: tuple[float, Groups] | None = None  # best candidate of a scan that kept nothing


class _Search:
    """Similarities of merged models to the teacher on the calibration batches, memoised."""

    def __init__(self, pair: BoomerangPair, batches: list[torch.Tensor], progress: Progress | None,
                 total: int) -> None:
        self.pair = pair
        self.parts = pair.parts
        self.device = next(pair.teacher.parameters()).device
        self.batches = [b.to(self.device) for b in batches]
        self.sims: dict[Groups, float] = {}
        self.merged: dict[tuple[int, ...], nn.Module] = {}  # merged layers of the live models
        self.live: list[_State] = []
        self.recordings: dict[Groups, tuple[PreTrainedModel, list[Recorded]]] = {}
        self.progress, self.total, self.done = progress, total, 0
        N = pair.mapping.num_teacher_layers
        teacher = _build(pair, tuple((t,) for t in range(N))).eval()  # a clone: hooks stay off the teacher
        self.exact: bool | None = None  # decided on the teacher's own recording
        self.reference = [r.final for r in self._record(tuple((t,) for t in range(N)), teacher)[1]]

    def _record(self, groups: Groups, model: PreTrainedModel | None = None
                ) -> tuple[PreTrainedModel, list[Recorded]]:
        if groups not in self.recordings:
            model = model if model is not None else _build(self.pair, groups, self.merged).eval()
            base, layers = self.parts.base_module(model), self.parts.layer_list(model)
            with autocast_context(model):
                recs = [Recorded(base, layers, ids) for ids in self.batches]
            if self.exact is None:
                self.exact = self._check_exact(model, recs[0])
            self.recordings[groups] = (model, recs)
        return self.recordings[groups]

    def _check_exact(self, model: PreTrainedModel, rec: Recorded) -> bool:
        """Whether running the layers by hand on the recorded arguments gives the model's output
        (otherwise every candidate gets a plain forward)."""
        h = rec.inputs[0]
        with autocast_context(model):
            for i, layer in enumerate(self.parts.layer_list(model)):
                args, kw = rec.calls[i]
                h = output_tensor(layer(h, *args, **kw))
            got = self.parts.norm_module(model)(h)
        want = rec.final
        tol = 1e-4 if want.dtype == torch.float32 else 2e-2
        return bool(torch.allclose(got.float(), want.float(), atol=tol * max(1.0, want.abs().max().item()), rtol=tol))

    def forget(self) -> None:
        """Drop merged layers and recordings no live scan state uses."""
        keep = {s.groups for s in self.live}
        self.recordings = {g: r for g, r in self.recordings.items() if g in keep}
        used = {g for s in self.live for g in s.groups}
        self.merged = {g: m for g, m in self.merged.items() if g in used}

    def similarity(self, current: Groups, start: int, k: int, candidate: Groups) -> float:
        """Mean over sequences of cos(flattened final states of ``candidate``, the teacher's);
        ``candidate`` is ``current`` with its layers ``start .. start + k`` merged."""
        if candidate in self.sims:
            return self.sims[candidate]
        model, recs = self._record(current)
        finals = []
        if self.exact:
            layers = self.parts.layer_list(model)
            merged = _merged_layer(self.pair, candidate[start], model.config, start)
            norm = self.parts.norm_module(model)
            with autocast_context(model):
                for rec in recs:
                    args, kw = rec.calls[start]
                    h = output_tensor(merged(rec.inputs[start], *args, **kw))
                    for p in range(start + k + 1, len(layers)):
                        args, kw = rec.calls[p]
                        h = output_tensor(layers[p](h, *args, **kw))
                    finals.append(norm(h))
        else:
            cand = _build(self.pair, candidate, dict(self.merged)).eval()  # the candidate's own merge is not kept
            base = self.parts.base_module(cand)
            with autocast_context(cand):
                finals = [base(input_ids=ids, use_cache=False).last_hidden_state for ids in self.batches]
        total, count = 0.0, 0
        for got, want in zip(finals, self.reference, strict=True):
            cos = torch.nn.functional.cosine_similarity(got.flatten(1).double(), want.flatten(1).double(), dim=-1)
            total += float(cos.sum())
            count += cos.numel()
        sim = total / max(count, 1)
        self.sims[candidate] = sim
        report(self.progress, self.done, self.total,
               f"LaCo: {len(self.sims)} merges measured, at {len(current)} layers")
        return sim


def _merge(groups: Groups, start: int, k: int) -> Groups:
    """``groups`` with its layers ``start .. start + k`` collapsed into one."""
    run = tuple(t for g in groups[start : start + k + 1] for t in g)
    return groups[:start] + (run,) + groups[start + k + 1 :]


def _advance(search: _Search, state: _State, target: int, m: int, threshold: float, interval: int,
             full_only: bool) -> None:
    """Run the scan on ``state`` until it has ``target`` layers (or, with ``full_only``, until the
    next merge would have to be a partial one)."""
    while len(state.groups) > target:
        size = len(state.groups)
        k = min(m, size - target)
        if full_only and k < m:
            return
        lo, hi = _window(size, k)
        top = hi - k
        pos = top if state.pos is None else min(state.pos, top)
        if pos < lo:  # the scan reached the bottom: start again from the top
            if not state.kept and state.best is not None:
                state.groups = state.best[1]  # nothing cleared the threshold: keep the best
                search.forget()
            state.pos, state.kept, state.best = None, False, None
            continue
        candidate = _merge(state.groups, pos, k)
        sim = search.similarity(state.groups, pos, k, candidate)
        if sim >= threshold:
            state.groups, state.pos, state.kept, state.best = candidate, pos - interval, True, None
            search.forget()
            continue
        if state.best is None or sim > state.best[0]:
            state.best = (sim, candidate)
        state.pos = pos - 1


def laco_merges(
    pair: BoomerangPair,
    calib_ids: torch.Tensor | None,
    sizes: Iterable[int] | None = None,
    *,
    layers_per_merge: int = LACO_LAYERS_PER_MERGE,
    threshold: float = LACO_THRESHOLD,
    interval: int = LACO_INTERVAL,
    progress: Progress | None = None,
) -> dict[int, list[tuple[int, ...]]]:
    """``{layers: groups}``: the LaCo-merged teacher of each size, for :func:`build_laco`.

    For each target size ``L`` in ``sizes`` (default: every size from the student's ``n`` to the
    teacher's ``N``; any size in ``1..N``), the merged model as a list of ``L`` groups of
    consecutive *original* teacher layer indices, in order, each group collapsed into one layer
    (a group of one is the teacher layer unchanged); the groups partition ``0..N-1``. Size ``N``
    is every layer on its own. ``layers_per_merge`` is the paper's ``C``, ``threshold`` its ``T``
    (a merge is kept when the mean cosine similarity of final hidden states to the teacher's on
    ``calib_ids`` is at least ``T``), ``interval`` its ``I``; see the module docstring for the
    scan, its bounds and what happens when nothing clears the threshold. ``progress`` hears about
    each similarity measured.
    """
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    sizes = sorted({int(s) for s in (range(n, N + 1) if sizes is None else sizes)}, reverse=True)
    if not sizes:
        raise BoomerangError(f"Give LaCo at least one size, in 1..{N} layers.")
    bad = [s for s in sizes if not 1 <= s <= N]
    if bad:
        raise BoomerangError(f"LaCo sizes must lie in 1..{N} layers, not {sorted(bad)}.")
    if isinstance(layers_per_merge, bool) or not isinstance(layers_per_merge, int) or layers_per_merge < 2:
        raise BoomerangError(f"LaCo merges at least 2 layers at a time, not layers_per_merge={layers_per_merge!r}.")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise BoomerangError(f"LaCo's interval must be a whole number of layers of at least 1, not {interval!r}.")
    if calib_ids is None:
        raise BoomerangError("LaCo merging needs calibration text (calib_ids).")
    check_token_ids(calib_ids, pair.teacher, "Calibration ids")
    batches = calib_batches(calib_ids, LACO_BATCH_SIZE)
    m = layers_per_merge - 1
    out: dict[int, list[tuple[int, ...]]] = {}
    singles = tuple((t,) for t in range(N))
    if sizes == [N]:
        return {N: list(singles)}
    with torch.inference_mode():
        search = _Search(pair, batches, progress, len(sizes))
        trunk = _State(singles)
        for L in sizes:  # largest first: the full merges of each size continue the previous size's
            search.live = [trunk]
            _advance(search, trunk, L, m, threshold, interval, full_only=True)
            branch = replace(trunk)
            search.live = [trunk, branch]
            _advance(search, branch, L, m, threshold, interval, full_only=False)
            out[L] = list(branch.groups)
            search.done += 1
            report(progress, search.done, len(sizes), f"LaCo: {L} layers")
    return dict(sorted(out.items()))


#: Version of the on-disk cache of LaCo groups (bump when the search changes what it picks).
LACO_CACHE_VERSION = 1


def cached_laco_merges(pair: BoomerangPair, calib_ids: torch.Tensor | None, sizes: Iterable[int] | None = None,
                       progress: Progress | None = None) -> dict[int, list[tuple[int, ...]]]:
    """:func:`laco_merges` with the paper's settings, searched once per pair and calibration
    text: the groups of every size asked for are kept on disk (``<cache>/laco``, keyed by the
    pair's weights, the calibration ids and the settings), so sweeps with other metrics, the
    dashboard and ``boomerang prune`` rebuild the merged models in milliseconds from them. A
    damaged cache entry is searched again."""
    if calib_ids is None:
        raise BoomerangError("LaCo merging needs calibration text (calib_ids).")
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    want = sorted({int(s) for s in (range(n, N + 1) if sizes is None else sizes)})
    settings = dict(version=LACO_CACHE_VERSION, layers_per_merge=LACO_LAYERS_PER_MERGE,
                    threshold=LACO_THRESHOLD, interval=LACO_INTERVAL)
    key = hashlib.sha256(json.dumps([pair_fingerprint(pair), tensor_fingerprint(calib_ids), settings]).encode())
    path = cache_dir() / "laco" / f"{key.hexdigest()[:32]}.json"
    known: dict[int, list[tuple[int, ...]]] = {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = {int(L): list(_check_groups(g, N)) for L, g in raw.items()}
        if any(len(g) != L for L, g in known.items()):
            known = {}
    except (OSError, ValueError, TypeError, AttributeError, BoomerangError):
        known = {}
    missing = [L for L in want if L not in known]
    if missing:
        known.update(laco_merges(pair, calib_ids, missing, progress=progress))
        try:
            atomic_write(path, json.dumps({str(L): [list(g) for g in gs] for L, gs in sorted(known.items())}))
        except OSError:
            pass  # a cache that cannot be written only costs the search again
    return {L: known[L] for L in want}
