"""Where a training run runs: this process's rank, the number of processes, its device.

Runs started by ``torchrun`` or ``accelerate launch`` are ranks of one process group. Accelerate
forms that group on CPUs (gloo) only when told ``cpu=True``; without it every rank trains alone
as if it were the only one. :func:`process_state` asks Accelerate with the right flag, and every
loop (whole-model, block-local) takes its device from it.
"""

from __future__ import annotations

import os

import torch
from accelerate.state import PartialState


def use_cpu() -> bool:
    """Whether Accelerate must run on the CPU: no CUDA device, or ``accelerate launch --cpu``
    (``ACCELERATE_USE_CPU``, also set by the dashboard for a run on its CPU)."""
    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def process_state() -> PartialState:
    """This process's place in the run: rank, world size, device (the process group forms on first use)."""
    return PartialState(cpu=use_cpu())
