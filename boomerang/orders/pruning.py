"""Pruning baselines: the teacher with layers dropped and no training, at every size.

A fair comparison for an interpolated model of ``L`` layers is the teacher pruned to ``L``
layers with no training: :func:`prune_teacher` builds it (zero-copy), :func:`pruning_order` says
which layers each size keeps (``naive``: drop the layers the student dropped, re-adding them
last-to-first; ``block-influence``: drop the layers whose output is most similar to their input,
ShortGPT's *block influence*; ``angular``: drop the run of consecutive layers across which the
last token's hidden state turns least, Gromov et al.'s angular distance; ``sleb``: drop one layer
at a time, each time the one whose removal hurts calibration perplexity least, Song et al.'s SLEB;
``laco``: collapse runs of consecutive layers into one by adding their differences, Yang et al.'s
LaCo, :mod:`boomerang.orders.laco`, whose models have new weights rather than fewer of the old).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import torch
from torch import nn
from transformers import PreTrainedModel

from ..core import BoomerangPair, Recorded, autocast_context, clone_module
from ..core.arch import check_token_ids, config_for_layers
from ..errors import BoomerangError
from ..progress import Progress, report
from .calibration import calib_batches
from .laco import build_laco, cached_laco_merges

#: Methods of :func:`pruning_order`, the pruning baselines: which teacher layers to drop (or, for LaCo, merge) at each size.
PruningMethod = Literal["naive", "block-influence", "angular", "sleb", "laco"]
PRUNING_METHODS: tuple[str, ...] = get_args(PruningMethod)


def pruning_method(baseline: str) -> str:
    """The :func:`pruning_order` method of a registered baseline: ``naive-pruning`` is ``naive``,
    the others share their method's name."""
    return "naive" if baseline == "naive-pruning" else baseline


def prune_teacher(pair: BoomerangPair, keep: Sequence[int] | Sequence[Sequence[int]]) -> PreTrainedModel:
    """The teacher with only the decoder layers ``keep`` (in order), zero-copy.

    Like :meth:`BoomerangPair.build`, every module is a shallow clone sharing the teacher's
    parameters; the config's per-layer lists follow the kept layers and ``layer_idx`` is
    renumbered so that generation with a KV cache works. ``keep`` may also be LaCo's groups of
    consecutive layers (what :func:`pruning_order` gives for ``laco``): each group collapses into
    one layer (:func:`~boomerang.orders.laco.build_laco`).
    """
    if any(isinstance(k, (list, tuple)) for k in keep):
        return build_laco(pair, keep)
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
        for ids in calib_batches(calib_ids, batch_size):
            ids = ids.to(next(t_model.parameters()).device)
            with autocast_context(t_model):
                rec = Recorded(t_model, layers, ids)
            for t in range(N):
                cos = torch.nn.functional.cosine_similarity(
                    rec.inputs[t].float(), rec.outputs[t].float(), dim=-1
                )
                sums[t] += (1 - cos).double().sum()
            count += ids.numel()
    return (sums / count).tolist()


def pruning_order(
    pair: BoomerangPair,
    method: PruningMethod = "naive",
    calib_ids: torch.Tensor | None = None,
    sizes: Iterable[int] | None = None,
    progress: Progress | None = None,
) -> dict[int, list[int]]:
    """``{layers: kept teacher layers}``: the pruned teacher of each size, for :func:`prune_teacher`.

    ``sizes`` are layer counts (default: every count from the student's ``n`` to the teacher's
    ``N``, the sizes interpolation reaches). ``progress`` hears about the slow search (``sleb``).

    * ``naive``: drop teacher layers with no training and no data: the ones the student
      dropped (``mapping.pruned``), re-added from the last: a model of ``N - d`` layers lacks
      the first ``d`` of them. At ``n`` layers this is the student's initialisation before
      distillation; the layer choice mirrors the last-to-first patch order. Sizes must lie in
      ``n..N``.
    * ``block-influence``: drop the ``N - L`` layers with the lowest :func:`block_influence`
      on ``calib_ids`` (one-shot, ShortGPT). Any size ``1..N``.
    * ``angular``: drop the ``N - L`` *consecutive* layers ``l .. l + N - L - 1`` whose input and
      output are closest in :func:`angular_distances` on ``calib_ids`` (Gromov et al. 2024). The
      last layer is never dropped. Any size ``1..N``.
    * ``sleb``: drop layers one at a time, each time the one whose removal gives the lowest
      perplexity on ``calib_ids`` (:func:`sleb_removals`, Song et al. 2024). Sizes are nested:
      each keeps the layers of the next larger one but one. Any size ``1..N``.
    * ``laco``: collapse runs of consecutive layers into one while the output stays similar to
      the teacher's on ``calib_ids`` (:func:`~boomerang.orders.laco.laco_merges`, Yang et al.
      2024). Each size is a list of *groups* of consecutive teacher layers (``[[0], [1, 2, 3],
      [4], ...]``), one per layer of the merged model; searched once and cached. Any size ``1..N``.
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
    if calib_ids is not None:
        check_token_ids(calib_ids, pair.teacher, "Calibration ids")
    if method == "angular":
        dist = angular_distances(pair, calib_ids)
        for L in sizes:
            d = N - L
            if d == 0:
                out[L] = list(range(N))
                continue
            # First start l of the closest run; l + d <= N - 1 keeps the last layer.
            best = min(range(N - d), key=lambda l: (dist[(l, l + d)], l))  # noqa: E741
            out[L] = [t for t in range(N) if not best <= t < best + d]
        return out
    if method == "laco":
        return {L: [list(g) for g in groups] for L, groups in cached_laco_merges(pair, calib_ids, sizes, progress).items()}
    if method == "sleb":
        removed = sleb_removals(pair, calib_ids, N - min(sizes), progress=progress)
        for L in sizes:
            drop = set(removed[: N - L])
            out[L] = [t for t in range(N) if t not in drop]
        return out
    bi = block_influence(pair, calib_ids)
    ranked = sorted(range(N), key=lambda t: (bi[t], t))  # least influential first
    for L in sizes:
        drop = set(ranked[: N - L])
        out[L] = [t for t in range(N) if t not in drop]
    return out


def angular_distances(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8) -> dict[tuple[int, int], float]:
    """``{(i, j): d}`` for teacher layer inputs ``0 <= i < j <= N - 1``: the angular distance
    ``arccos(cos(x_i, x_j)) / pi`` between the hidden states entering teacher layers ``i`` and
    ``j`` (``x_0`` is the embedding output), at the last position of each calibration sequence,
    averaged over the sequences.

    Gromov et al. ("The Unreasonable Ineffectiveness of the Deeper Layers", 2024) find that the
    layers between two nearby states that point the same way can be removed together with the
    least harm: the residual stream barely turns across them. Only the last token is compared,
    as in the paper: it is the one that has read the whole sequence.
    """
    if calib_ids is None:
        raise BoomerangError("Angular-distance pruning needs calibration text (calib_ids).")
    N = pair.mapping.num_teacher_layers
    t_model = pair.build(patched=range(pair.num_student_layers)).eval()
    layers = pair.parts.layer_list(t_model)
    sums = torch.zeros(N, N, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for ids in calib_batches(calib_ids, batch_size):
            ids = ids.to(next(t_model.parameters()).device)
            with autocast_context(t_model):
                rec = Recorded(t_model, layers, ids)
            x = torch.stack([rec.inputs[t][:, -1].double() for t in range(N)])  # [N, B, H]
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            cos = torch.einsum("ibh,jbh->ijb", x, x).clamp(-1.0, 1.0)  # [N, N, B]
            sums += (torch.arccos(cos) / torch.pi).sum(-1)
            count += ids.shape[0]
    mean = sums / max(count, 1)
    return {(i, j): float(mean[i, j]) for i in range(N) for j in range(i + 1, N)}


def sleb_removals(pair: BoomerangPair, calib_ids: torch.Tensor | None, count: int,
                  batch_size: int = 8, progress: Progress | None = None) -> list[int]:
    """The first ``count`` teacher layers SLEB removes, in the order it removes them.

    SLEB (Song et al., "SLEB: Streamlining LLMs through Redundancy Verification and Elimination
    of Transformer Blocks", 2024) prunes greedily and re-measures after every removal: of the
    layers still there, it drops the one without which the pruned teacher's perplexity on the
    calibration text is lowest, then asks again. Unlike one-shot scores (block influence), the
    choice sees how the remaining layers work together, at the cost of one perplexity per
    remaining layer per removal. Every size's choice extends the next larger size's, so all
    sizes come from one pass down to the smallest; ties go to the lower layer.
    """
    if calib_ids is None:
        raise BoomerangError("SLEB pruning needs calibration text (calib_ids).")
    N = pair.mapping.num_teacher_layers
    keep, removed = list(range(N)), []
    total = sum(N - i for i in range(count))  # perplexities to measure
    done = 0
    for i in range(count):
        scores = {}
        for t in keep:
            scores[t] = _calib_nll(prune_teacher(pair, [k for k in keep if k != t]), calib_ids, batch_size)
            done += 1
            report(progress, done, total, f"SLEB: removal {i + 1} of {count}, without layer {t}")
        drop = min(keep, key=lambda t: (scores[t], t))
        keep.remove(drop)
        removed.append(drop)
    return removed


def _calib_nll(model: PreTrainedModel, calib_ids: torch.Tensor, batch_size: int) -> float:
    """Mean next-token negative log-likelihood of ``model`` on the calibration blocks (a NaN
    counts as infinitely bad, so a layer whose removal breaks the model is never chosen)."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for ids in calib_batches(calib_ids, batch_size):
            ids = ids.to(device)
            with autocast_context(model):
                logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                    ids[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += ids[:, 1:].numel()
    mean = total / max(count, 1)
    return math.inf if math.isnan(mean) else mean
