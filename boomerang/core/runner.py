"""Evaluate many patched models on the same tokens, computing shared work once.

Every model a :class:`~boomerang.core.BoomerangPair` builds is a path through the student's
``n`` positions: at position ``j`` it runs either student layer ``j`` (``S``) or the teacher
block ``blocks[j]`` (``T``)::

    patched = {4, 5, 6}   emb(S) -> S0 -> S1 -> S2 -> S3 -> T8-9 -> T10 -> T11 -> norm+head(T)
    patched = {5, 6}      emb(S) -> S0 -> S1 -> S2 -> S3 -> S4   -> T10 -> T11 -> norm+head(T)
                          `-------- shared prefix ------'

The hidden state after position ``j`` depends only on the choices at positions ``0..j`` (the
embedding source is the choice at position 0), so two models that agree on their first ``L``
choices share the hidden states of those ``L`` positions. :class:`PatchRunner` walks a list of
patched sets sorted lexicographically by their choice strings (a depth-first walk of the trie
of choice strings): each set reuses the states of the longest prefix it shares with the set
before it, which, in lexicographic order, is the longest prefix it shares with *any* earlier
set, while only one path of ``n`` states is kept in memory.

Layers are run directly with the keyword arguments (attention masks, rotary embeddings, ...)
that the student's and the teacher's own forward passes gave them, captured once per batch with
forward pre-hooks on zero-copy clones (so the shared models are never hooked). The two full
forwards also give the all-student and all-teacher paths for free. The final norm and head are
applied by hand; at start-up the runner checks that doing so reproduces the models' own logits,
and falls back to a plain forward of ``pair.build(patched)`` for every set if it does not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import BoomerangError
from ..progress import Progress, report
from .pair import BoomerangPair

#: ``consume(set_index, batch_index, logits [B, T, V])``: receives each set's logits per batch.
Consumer = Callable[[int, int, torch.Tensor], None]


def choice_string(patched: Iterable[int], n: int) -> tuple[bool, ...]:
    """``(c_0, ..., c_{n-1})`` with ``c_j`` True iff student position ``j`` runs its teacher block."""
    s = set(patched)
    return tuple(j in s for j in range(n))


def autocast_context(model: nn.Module):
    """bf16 autocast on CUDA, nothing on CPU (fp32)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Stop(Exception):
    pass


def output_tensor(output: Any) -> torch.Tensor:
    """The hidden state a decoder layer returned (some return a tuple, some a tensor)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def split_layer_call(args: tuple, kwargs: dict[str, Any]) -> tuple[torch.Tensor, tuple, dict[str, Any]]:
    """(hidden states, remaining positional args, kwargs) of a decoder-layer call, as a forward
    pre-hook with ``with_kwargs=True`` sees it (the hidden states come positionally or by name)."""
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    kwargs = dict(kwargs)
    if "hidden_states" not in kwargs:
        raise BoomerangError("A decoder layer was called without hidden states; this architecture is not supported.")
    return kwargs.pop("hidden_states"), (), kwargs


class Recorded:
    """One forward of a model with every decoder layer's call arguments and output recorded.

    ``inputs[i]`` / ``outputs[i]`` are layer ``i``'s hidden states in and out (``[B, T, H]``),
    ``calls[i]`` the other ``(args, kwargs)`` it was called with (masks, rotary embeddings...),
    so a layer can be run again by hand on another input; ``logits`` the model's output, or, for
    a base model without a head, ``final`` its last hidden state.
    """

    def __init__(self, model: nn.Module, layers: nn.ModuleList, input_ids: torch.Tensor) -> None:
        self.calls: list[tuple[tuple, dict]] = [((), {})] * len(layers)
        self.inputs: list[torch.Tensor | None] = [None] * len(layers)
        self.outputs: list[torch.Tensor | None] = [None] * len(layers)
        handles = []
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            handles.append(layer.register_forward_hook(self._post(i)))
        try:
            out = model(input_ids=input_ids, use_cache=False)
            self.logits = getattr(out, "logits", None)  # [B, T, V]
            self.final = getattr(out, "last_hidden_state", None)  # [B, T, H] (a base model)
        finally:
            for h in handles:
                h.remove()

    def _pre(self, i: int):
        def hook(_m, args, kwargs):
            h, rest, kw = split_layer_call(args, kwargs)
            self.inputs[i] = h
            self.calls[i] = (rest, kw)

        return hook

    def _post(self, i: int):
        def hook(_m, _args, output):
            self.outputs[i] = output_tensor(output)

        return hook


class PatchRunner:
    """Final logits of many patched models of ``pair`` on the same token batches.

    ``runner.run(sets, batches, consume)`` calls ``consume(set_index, batch_index, logits)`` for
    every set and batch, sharing the computation of common prefixes (see the module docstring).
    ``runner.seconds[set_index]`` is the compute time attributed to each set (its own positions
    and head; shared prefixes are charged to the set that computed them first).
    """

    def __init__(self, pair: BoomerangPair, keep_recordings: bool = False) -> None:
        self.pair = pair
        # With keep_recordings, the student's and teacher's recorded forwards of each batch are
        # kept between run() calls on the same batches (greedy searches call run() repeatedly).
        self.keep_recordings = keep_recordings
        self._recordings: dict[tuple, dict[bool, Recorded]] = {}
        self.n = pair.num_student_layers
        self.blocks = pair.mapping.blocks
        # Zero-copy clones: the recording hooks never touch the shared teacher and student.
        self.s_model = pair.build(patched=())
        self.t_model = pair.build(patched=range(self.n))
        self.s_model.eval()
        self.t_model.eval()
        parts = pair.parts
        self.s_layers = parts.layer_list(self.s_model)
        self.t_layers = parts.layer_list(self.t_model)
        self.heads = {
            False: (parts.norm_module(self.s_model), parts.head_module(self.s_model)),
            True: (parts.norm_module(self.t_model), parts.head_module(self.t_model)),
        }
        cfg = self.s_model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.exact: bool | None = None  # decided on the first batch
        self.seconds: list[float] = []
        self.teacher_logits: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return next(self.s_model.parameters()).device

    def _head(self, teacher: bool, h: torch.Tensor) -> torch.Tensor:
        norm, head = self.heads[teacher]
        logits = head(norm(h))
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _position(self, j: int, teacher: bool, h: torch.Tensor, rec: dict[bool, Recorded]):
        if teacher:
            r = rec[True]
            for t in self.blocks[j]:
                args, kw = r.calls[t]
                h = output_tensor(self.t_layers[t](h, *args, **kw))
        else:
            args, kw = rec[False].calls[j]
            h = output_tensor(self.s_layers[j](h, *args, **kw))
        return h

    def _check_exact(self, rec: dict[bool, Recorded]) -> bool:
        for teacher, model_rec in rec.items():
            want = model_rec.logits[:1]  # one sequence is enough to tell
            got = self._head(teacher, model_rec.outputs[-1][:1])
            tol = 1e-4 if want.dtype == torch.float32 else 2e-2
            if not torch.allclose(got.float(), want.float(), atol=tol * max(1.0, want.abs().max().item()), rtol=tol):
                return False
        return True

    @torch.inference_mode()
    def run(
        self,
        sets: Sequence[Iterable[int]],
        batches: Sequence[torch.Tensor],
        consume: Consumer,
        progress: Progress | None = None,
        keep_teacher_logits: bool = False,
    ) -> None:
        """Compute the logits of every set on every batch (``[B, T]`` token ids) and consume them."""
        n = self.n
        sets = [self.pair.mapping.check_patched(s) for s in sets]
        strings = [choice_string(s, n) for s in sets]
        order = sorted(range(len(sets)), key=lambda i: strings[i])
        self.seconds = [0.0] * len(sets)
        self.teacher_logits = []
        all_s, all_t = (False,) * n, (True,) * n
        total = len(batches) * len(sets)
        done = 0
        for b, ids in enumerate(batches):
            ids = ids.to(self.device)
            t0 = time.perf_counter()
            rec_key = (b, ids.data_ptr(), tuple(ids.shape))
            rec = self._recordings.get(rec_key)
            if rec is None:
                with autocast_context(self.s_model):
                    rec = {
                        False: Recorded(self.s_model, self.s_layers, ids),
                        True: Recorded(self.t_model, self.t_layers, ids),
                    }
                if self.keep_recordings:
                    self._recordings[rec_key] = rec
            if keep_teacher_logits:
                self.teacher_logits.append(rec[True].logits)
            if self.exact is None:
                self.exact = self._check_exact(rec)
            # The two recorded forwards are shared by every set; charge them evenly.
            shared = (time.perf_counter() - t0) / max(1, len(sets))
            stack: list[torch.Tensor | None] = [None] * n  # stack[j]: state after position j
            prev: tuple[bool, ...] | None = None
            for i in order:
                t0 = time.perf_counter()
                c = strings[i]
                if c == all_s:
                    logits = rec[False].logits
                elif c == all_t:
                    logits = rec[True].logits
                elif not self.exact:
                    with autocast_context(self.s_model):
                        logits = self.pair.build(patched=sets[i])(input_ids=ids, use_cache=False).logits
                else:
                    lcp = 0
                    if prev is not None:
                        while lcp < n and prev[lcp] == c[lcp]:
                            lcp += 1
                    with autocast_context(self.s_model):
                        for j in range(lcp, n):
                            if all(x == c[0] for x in c[: j + 1]):  # still on a recorded path
                                r = rec[c[0]]
                                stack[j] = r.outputs[self.blocks[j][-1] if c[0] else j]
                                continue
                            h = stack[j - 1] if j > 0 else rec[c[0]].inputs[0]
                            stack[j] = self._position(j, c[j], h, rec)
                        logits = self._head(c[-1], stack[-1])
                    prev = c
                consume(i, b, logits)
                self.seconds[i] += time.perf_counter() - t0 + shared
                done += 1
                report(progress, done, total, f"{done}/{total} model passes")
