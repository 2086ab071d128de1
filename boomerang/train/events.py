"""What a training run reports as it goes: one :class:`DistillProgress` per step.

Every training loop (global distillation, block-local distillation, pretraining) calls its
``progress`` callback with the same event type, so the CLI's bar and the dashboard's live
curves work for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from pathlib import Path

from ..progress import Update


#: What happened at a step: an ordinary step, a checkpoint written, the run done, or stopped.
Event = Literal["step", "checkpoint", "done", "stopped"]


@dataclass(frozen=True, kw_only=True)
class DistillProgress(Update):
    """What a progress callback receives after every step and at the end: an
    :class:`~boomerang.progress.Update` (``done`` steps of ``total``) with the run's state."""

    losses: dict[str, float]  # loss, ce, kl, cos of the last logged step
    lr: float
    tokens_per_s: float
    eta_s: float | None
    elapsed_s: float
    event: Event = "step"
    checkpoint: Path | None = None

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.done


def progress_event(step: int, total: int, losses: dict[str, float], lr: float, tok_s: float,
                   eta: float | None, elapsed: float, event: Event, ck: Path | None = None) -> DistillProgress:
    """The :class:`DistillProgress` of step ``step`` of ``total``, with a one-line note."""
    loss = f", loss {losses['loss']:.4g}" if "loss" in losses else ""
    return DistillProgress(done=step, total=total, note=f"step {step}/{total}{loss}", losses=dict(losses),
                           lr=lr, tokens_per_s=tok_s, eta_s=eta, elapsed_s=elapsed, event=event, checkpoint=ck)
