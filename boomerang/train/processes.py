"""Where a training run runs: this process's rank, the number of processes, its device.

Runs started by ``torchrun`` or ``accelerate launch`` are ranks of one process group. Accelerate
forms that group on CPUs (gloo) only when told ``cpu=True``; without it every rank trains alone
as if it were the only one. :func:`process_state` asks Accelerate with the right flag, and every
loop (whole-model, block-local) takes its device from it; :class:`Peers` is how a loop that
syncs by hand (block-local) sums and gathers across the group.
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


class Peers:
    """The processes that train one model together, for a loop that syncs by hand (block-local
    distillation): sums and gathers across them, or the identity when this process trains alone.

    Every method is collective: all processes call it at the same point of the loop.
    """

    def __init__(self, state: PartialState | None = None) -> None:
        state = state or process_state()
        self.world: int = state.num_processes
        self.rank: int = state.process_index
        self.main: bool = state.is_main_process
        self._state = state

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes, in place (a tensor on this process's device)."""
        if self.world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every process's ``t`` (same shape on each), concatenated in rank order along dim 0."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def values(self, x: int) -> list[int]:
        """Every process's whole number ``x``, in rank order."""
        if self.world == 1:
            return [x]
        return [int(v) for v in self.gather(torch.tensor([x], device=self._state.device)).tolist()]

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any (a stop, a time limit)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._state.device)
        return bool(self.sum(t).item() > 0)

    def barrier(self) -> None:
        """Wait until every process gets here (after the main process wrote something)."""
        if self.world > 1:
            self._state.wait_for_everyone()
