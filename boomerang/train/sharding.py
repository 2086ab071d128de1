"""Fully sharded data parallel training of the student (FSDP2), on CPUs and GPUs alike.

With FSDP each of ``W`` processes holds ``1/W`` of every student weight, gradient and optimizer
moment (torch's ``fully_shard``: each decoder layer is one unit, gathered for its forward and
backward and freed after). The arithmetic is that of plain data parallel training: each process
computes the loss of its share of the batch, and the gradients are averaged across processes
(reduce-scatter instead of all-reduce), so a sharded run trains the student a data-parallel run
trains, up to the order of floating-point sums.

A launch asks for it the way Accelerate's FSDP configs do (``ACCELERATE_USE_FSDP=true``, as
``accelerate launch --config_file configs/accelerate_fsdp.yaml`` sets). Accelerate itself shards
only across GPUs, and would train plain data parallel on CPUs; sharding here, with the process
group Accelerate formed (gloo on CPUs, NCCL on GPUs), makes one code path for both, so the CPU
test suite checks what a GPU cluster runs. The frozen teacher is not sharded.

A sharded checkpoint is one ``shard-<rank>.safetensors`` per process (its slices of the weights
and optimizer moments) beside the run's state file, and resumes in as many processes as wrote it;
the finished student is gathered whole (:func:`full_state`) and saved by the main process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ..core import find_parts
from .checkpoints import load_optimizer_state, load_rng_state, optimizer_state, rng_state, write_tensors


def sharding_requested() -> bool:
    """True when the launch asks for FSDP (``ACCELERATE_USE_FSDP``, set by an FSDP Accelerate config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def shard(model: nn.Module, device: torch.device, world: int) -> None:
    """Shard ``model`` in place across the ``world`` processes of the group: each decoder layer is
    one unit, the rest (embeddings, final norm, head) the root's."""
    # The root returns its outputs as views; torch warns that an in-place change of one would skip
    # a gradient all-gather. The loss reads them out of place (tested equal to data parallel).
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world,))
    for layer in find_parts(model).layer_list(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def shard_file(rank: int) -> str:
    """The file of process ``rank``'s shard inside a checkpoint."""
    return f"shard-{rank}.safetensors"


def save_shard(folder: Path, rank: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Write this process's slices of the weights (``model.<name>``) and optimizer moments
    (``opt.<index>.<name>``), and its random generator's state, to ``folder``."""
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    write_tensors(folder / shard_file(rank), {**weights, **optimizer_state(opt)[0], **rng_state()})


def load_shard(folder: Path, rank: int, model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of :func:`save_shard`, with the optimizer's scalars and groups from the run's ``state``."""
    tensors = load_file(str(folder / shard_file(rank)))
    with torch.no_grad():
        for k, v in model.state_dict().items():
            target = v.to_local() if isinstance(v, DTensor) else v
            target.copy_(tensors[f"model.{k}"])
    load_optimizer_state(opt, tensors, state)
    load_rng_state(tensors)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole student's weights, gathered from every process (collective: all call it)."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu() for k, v in model.state_dict().items()}
