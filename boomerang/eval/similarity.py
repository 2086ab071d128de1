"""How closely the student's hidden states track the teacher's, layer by layer.

Boomerang distillation aligns student layer ``i``'s output with the teacher's hidden state at
the end of the block it stands for. :func:`similarity_matrix` shows how well that worked: the
mean token cosine similarity between *every* student hidden state and *every* teacher hidden
state on the same text, as in the paper's figure. A well-distilled student gives a bright
staircase along the mapping (student state ``s_i`` most similar to teacher state
``t_{block_end(i)}``); a student that learned nothing from the alignment loss drifts away from
it as depth grows.

:func:`block_similarity` condenses this into one row per student layer, next to the quantity
the similarity is meant to predict: how much patching that layer alone brings the model
closer to the teacher (KL and perplexity gains on the calibration text).
"""

from __future__ import annotations

import pandas as pd
import torch

from ..core import BoomerangPair, PatchRunner, Recorded, autocast_context
from ..errors import BoomerangError
from ..orders import calib_batches, kl_to_teacher, layer_cosines
from .perplexity import token_nll


def _states(rec: Recorded) -> list[torch.Tensor]:
    """Embedding output, then every decoder layer's output (before the final norm)."""
    return [rec.inputs[0], *rec.outputs]


def similarity_matrix(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8) -> pd.DataFrame:
    """Mean token cosine similarity between student and teacher hidden states on ``calib_ids``.

    Rows ``emb, s0 .. s{n-1}``: the student's embedding output and its layer outputs; columns
    ``emb, t0 .. t{N-1}`` likewise for the teacher. Entry ``(s_i, t_j)`` averages
    ``cos(h_s[i][b, t], h_t[j][b, t])`` over every token position ``(b, t)``. The last layer's
    state is taken before the final norm.
    """
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    s_model = pair.build(patched=()).eval()
    t_model = pair.build(patched=range(n)).eval()
    s_layers, t_layers = pair.parts.layer_list(s_model), pair.parts.layer_list(t_model)
    sums = torch.zeros(n + 1, N + 1, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for ids in calib_batches(calib_ids, batch_size):
            ids = ids.to(next(s_model.parameters()).device)
            with autocast_context(s_model):
                hs = torch.stack(_states(Recorded(s_model, s_layers, ids))).float()  # [n+1, B, T, H]
                ht = torch.stack(_states(Recorded(t_model, t_layers, ids))).float()  # [N+1, B, T, H]
            hs = torch.nn.functional.normalize(hs, dim=-1)
            ht = torch.nn.functional.normalize(ht, dim=-1)
            sums += torch.einsum("ibth,jbth->ij", hs, ht).double()
            count += ids.numel()
    rows = ["emb"] + [f"s{i}" for i in range(n)]
    cols = ["emb"] + [f"t{j}" for j in range(N)]
    return pd.DataFrame((sums / count).numpy(), index=rows, columns=cols)


def block_similarity(pair: BoomerangPair, calib_ids: torch.Tensor, batch_size: int = 8) -> pd.DataFrame:
    """One row per student layer: its block, how well it imitates it, and what patching it brings.

    Columns:

    * ``layer``, ``block`` (e.g. ``"2-3"``), ``block_end``;
    * ``cos_global``: cosine between the student's own state after layer ``i`` and the
      teacher's state at the end of block ``i`` (the diagonal of :func:`similarity_matrix`
      along the mapping): accumulated drift;
    * ``cos_local``: cosine between student layer ``i`` and teacher block ``i`` run on the same
      teacher input (:func:`boomerang.orders.layer_cosines`): this layer's own error;
    * ``kl_alone``: ``KL(teacher || model)`` with only layer ``i`` patched, and ``kl_gain`` =
      the student's KL minus it;
    * ``ppl_alone``, ``ppl_gain``: the same with the perplexity of the calibration text.
    """
    n = pair.num_student_layers
    if calib_ids is None:
        raise BoomerangError("block_similarity needs calibration token ids.")
    sim = similarity_matrix(pair, calib_ids, batch_size)
    local = layer_cosines(pair, calib_ids, batch_size)
    sets = [frozenset()] + [frozenset({i}) for i in range(n)]
    kls = kl_to_teacher(pair, sets, calib_ids, batch_size=batch_size)
    batches = calib_batches(calib_ids, batch_size)
    totals = [0.0] * len(sets)
    counts = [0] * len(sets)

    def consume(i: int, b: int, logits: torch.Tensor) -> None:
        ids = batches[b]
        mask = torch.ones_like(ids, dtype=torch.bool)
        s, c = token_nll(logits, ids, mask)
        totals[i] += s
        counts[i] += c

    PatchRunner(pair).run(sets, batches, consume)
    ppl = [float(torch.tensor(t / c).exp()) for t, c in zip(totals, counts)]
    rows = []
    for i, block in enumerate(pair.mapping.blocks):
        rows.append(dict(
            layer=i,
            block=f"{block[0]}" if len(block) == 1 else f"{block[0]}-{block[-1]}",
            block_end=block[-1],
            cos_global=float(sim.loc[f"s{i}", f"t{block[-1]}"]),
            cos_local=local[i],
            kl_alone=kls[i + 1],
            kl_gain=kls[0] - kls[i + 1],
            ppl_alone=ppl[i + 1],
            ppl_gain=ppl[0] - ppl[i + 1],
        ))
    return pd.DataFrame(rows)
