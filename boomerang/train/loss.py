"""The boomerang loss: cross-entropy + KL to the teacher + cosine alignment of hidden states.

    L = CE + w_kl * tau^2 * KL(p_teacher || p_student) + w_cos * sum_j (1 - cos(h_s[j], h_t[b(j)]))

over the aligned hidden states ``j``: the embedding output, the output of every student layer
``i`` against the output of the *last* teacher layer of the block it stands for, and the final
normed output. Padding (``attention_mask == 0`` / ``labels == -100``) is masked in every term.
Defaults: ``w_kl = 0.1``, ``tau = 1``, ``w_cos = 2 / number of aligned states``.

Why hooks as well as ``output_hidden_states``: in transformers 5 a Llama-like model returns
``num_hidden_layers + 1`` hidden states, ``[embeddings, out(layer 0), ..., out(layer N-2),
norm(out(layer N-1))]`` -- the last entry is *replaced* by the final-normed output, so the last
layer's own (pre-norm) output is not in the tuple. :func:`forward_states` adds it back with a
forward hook on the last decoder layer, giving ``N + 2`` states (pinned by a test against hooks
on every layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..core import find_parts
from .config import LossWeights


class ForwardStates(NamedTuple):
    """Logits and hidden states of one forward pass.

    ``states`` has ``num_layers + 2`` entries, each ``[B, T, H]``: ``states[0]`` the embedding
    output, ``states[i + 1]`` the output of decoder layer ``i``, ``states[-1]`` the final-normed
    output (the input of the head).
    """

    logits: torch.Tensor  # [B, T, V]
    states: list[torch.Tensor]


def last_decoder_layer(model: nn.Module) -> nn.Module:
    """The model's last decoder layer (found by structure)."""
    return find_parts(model).layer_list(model)[-1]


def forward_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    last_layer: nn.Module | None = None,
) -> ForwardStates:
    """Run ``model`` and return its logits and all ``N + 2`` hidden states (see :class:`ForwardStates`).

    ``last_layer`` is the model's last decoder layer; pass it when ``model`` is wrapped (DDP,
    FSDP) and the layer was located on the unwrapped model.
    """
    if last_layer is None:
        last_layer = last_decoder_layer(model)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = last_layer.register_forward_hook(hook)
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hs = out.hidden_states  # N + 1 entries; the last one is the final-normed output
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the last decoder layer, got {len(captured)}")
    return ForwardStates(out.logits, [*hs[:-1], captured[0], hs[-1]])


def frozen_parameters(student: nn.Module, mapping: Any, parts: Sequence[str]) -> list[nn.Parameter]:
    """The student's parameters that ``parts`` (names from :data:`FREEZABLE`) keep fixed.

    A student layer that stands for a single teacher layer ("one-to-one") starts as an exact
    copy of it, so patching it is a no-op only if it stays one: freezing keeps such layers, and
    with "embeddings" and "head" the token embeddings and the final norm + output head,
    swappable with the teacher's at no cost. What distillation can still change is then only
    the student layers that stand for several teacher layers. With tied embeddings, freezing
    either of "embeddings" or "head" freezes the shared matrix.
    """
    arch = find_parts(student)
    modules: list[nn.Module] = []
    if "one-to-one" in parts:
        layers = arch.layer_list(student)
        modules += [layers[i] for i, block in enumerate(mapping.blocks) if len(block) == 1]
    if "embeddings" in parts:
        modules += arch.embedding_modules(student)
    if "head" in parts:
        modules += [arch.norm_module(student), arch.head_module(student)]
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def alignment_pairs(mapping: Any) -> list[tuple[int, int]]:
    """``(student state, teacher state)`` index pairs into :attr:`ForwardStates.states`.

    Embeddings to embeddings, student layer ``i``'s output to the output of the last teacher
    layer of ``mapping.blocks[i]``, final-normed output to final-normed output.
    """
    n_s = len(mapping.blocks)
    n_t = mapping.blocks[-1][-1] + 1
    pairs = [(0, 0)]
    pairs += [(i + 1, block[-1] + 1) for i, block in enumerate(mapping.blocks)]
    pairs.append((n_s + 1, n_t + 1))
    return pairs


KL_CHUNK = 4096  # tokens per chunk of the KL term: bounds its [chunk, V] fp32 temporaries


def _kl_chunk(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    t_logp = F.log_softmax(t.float() / tau, dim=-1)  # [n, V]
    s_logp = F.log_softmax(s.float() / tau, dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [n]


def _kl_per_token(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau))`` per row of ``[N, V]`` logits.

    Computed in chunks of :data:`KL_CHUNK` rows under activation checkpointing, so that with a
    large vocabulary (SmolLM2: 49k) only one chunk's log-probabilities are alive at a time
    instead of several ``[N, V]`` fp32 tensors saved for the backward pass.
    """
    if s.shape[0] <= KL_CHUNK or not torch.is_grad_enabled() or not s.requires_grad:
        return _kl_chunk(s, t, tau)
    return torch.cat([
        checkpoint(_kl_chunk, s[i : i + KL_CHUNK], t[i : i + KL_CHUNK], tau, use_reentrant=False)
        for i in range(0, s.shape[0], KL_CHUNK)
    ])


def distill_loss(
    student_out: ForwardStates,
    teacher_out: ForwardStates | None,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None,
    mapping: Any,
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """The boomerang loss and its terms, all scalars (fp32).

    Returns ``loss = ce_w * ce + w_kl * kl + w_cos * cos`` with ``ce`` the next-token cross
    entropy, ``kl = tau^2 * KL(p_t || p_s)`` averaged over real tokens,
    ``cos = sum_j mean_tokens (1 - cos(h_s[j], h_t[b(j)]))`` over the aligned states, and
    ``cos_states`` (``[num_states]``) the per-state terms. ``teacher_out`` may be None when
    ``w_kl == w_cos == 0``; ``kl``/``cos`` are then NaN. ``weights.cos`` must be resolved.
    Padding -- positions with ``attention_mask == 0`` or ``labels == -100`` -- is left out of
    every term (``attention_mask=None``: labels alone decide).
    """
    logits = student_out.logits.float()  # [B, T, V]
    V = logits.shape[-1]
    # A position is padding when its attention_mask is 0 or its label is -100.
    real = labels != -100  # [B, T]
    if attention_mask is not None:
        real = real & attention_mask.bool()
    labels = labels.masked_fill(~real, -100)

    # Cross entropy: real position t predicts real labels[t + 1].
    tgt = labels[:, 1:].masked_fill(~real[:, :-1], -100)  # [B, T-1]
    n_tgt = (tgt != -100).sum().clamp(min=1)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), tgt.reshape(-1), ignore_index=-100,
                         reduction="sum") / n_tgt

    n_real = real.sum().clamp(min=1)
    nan = torch.full((), float("nan"), device=logits.device)
    need_teacher = weights.kl > 0 or (weights.cos or 0.0) > 0
    if teacher_out is None:
        if need_teacher:
            raise ValueError("teacher_out is required when the KL or cosine weight is non-zero")
        loss = weights.ce * ce
        return {"loss": loss, "ce": ce.detach(), "kl": nan, "cos": nan,
                "cos_states": torch.full((len(alignment_pairs(mapping)) if mapping is not None else 0,), float("nan"))}

    # KL(p_t || p_s) per token, summed over the vocabulary, averaged over real tokens.
    kl_tok = _kl_per_token(logits.reshape(-1, V), teacher_out.logits.reshape(-1, V), weights.tau)
    kl = weights.tau**2 * (kl_tok.view_as(real) * real).sum() / n_real

    # Cosine alignment, one mean over real tokens per aligned state.
    terms = []
    for s_idx, t_idx in alignment_pairs(mapping):
        h_s = student_out.states[s_idx].float()  # [B, T, H]
        h_t = teacher_out.states[t_idx].float()
        c = F.cosine_similarity(h_s, h_t, dim=-1, eps=1e-8)  # [B, T]
        terms.append(((1.0 - c) * real).sum() / n_real)
    cos_states = torch.stack(terms)  # [num_states]
    cos = cos_states.sum()

    loss = weights.ce * ce + weights.kl * kl + float(weights.cos or 0.0) * cos
    return {"loss": loss, "ce": ce.detach(), "kl": kl.detach(), "cos": cos.detach(),
            "cos_states": cos_states.detach()}
