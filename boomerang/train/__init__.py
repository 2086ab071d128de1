"""Distillation: the config, the boomerang loss, checkpoints, and the one training step loop.

``distill(DistillConfig(teacher=..., data=..., out=...))`` trains a boomerang student (or an
ablation, or block-locally) and returns its folder; see :mod:`.run` for the step loop every
objective runs in, :mod:`.loop` and :mod:`.local` for the two objectives (whole-model through
Accelerate, block-local), :mod:`.loss` for the loss, :mod:`.config` for every setting and
:mod:`.checkpoints` for the run folder's layout.
"""

from .checkpoints import CHECKPOINT_DIR, STATE_FILE, last_checkpoint
from .config import FREEZABLE, MODES, DistillConfig, LossWeights
from .events import DistillProgress
from .loop import distill
from .loss import (
    ForwardStates,
    alignment_pairs,
    distill_loss,
    forward_states,
    frozen_parameters,
)
from .processes import process_state

__all__ = [
    "CHECKPOINT_DIR", "FREEZABLE", "MODES", "STATE_FILE", "DistillConfig", "DistillProgress",
    "ForwardStates", "LossWeights", "alignment_pairs", "distill", "distill_loss", "forward_states",
    "frozen_parameters", "last_checkpoint", "process_state",
]
