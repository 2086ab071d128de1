"""What a training loop trains on: checked token blocks, and a resumable order over them.

Both loops (global distillation and block-local distillation) read ``[n, seq_len]`` blocks of the
training split, check them against the model's vocabulary, and visit them in an order that is a
pure function of ``(seed, sample index)``: the data position after a resume is just the step.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import load_blocks
from ..errors import BoomerangError


def training_blocks(
    data: str, tokenizer: Any, seq_len: int, split: str, max_blocks: int | None, vocab: int,
    blocks: torch.Tensor | None = None, teacher: str = "",
) -> torch.LongTensor:
    """``[n, seq_len]`` token ids of ``data``'s ``split`` (or the given ``blocks``), checked to fit
    the vocabulary of ``vocab`` tokens; one sentence for anything that does not fit."""
    if blocks is None:
        if tokenizer is None:
            raise BoomerangError(
                f"The teacher {teacher!r} has no tokenizer to tokenize {data!r} with; "
                "save one in its folder (tokenizer.save_pretrained) or pass token blocks."
            )
        blocks = load_blocks(data, tokenizer, seq_len, split=split, max_blocks=max_blocks)
    if blocks.ndim != 2 or blocks.shape[1] < seq_len or blocks.shape[0] < 1:
        raise BoomerangError(f"Training blocks have shape {tuple(blocks.shape)}; expected [n, {seq_len}].")
    blocks = blocks[:, :seq_len].long()
    if int(blocks.max()) >= vocab or int(blocks.min()) < 0:
        raise BoomerangError(
            f"The data has token ids outside the model's vocabulary of {vocab}; was it tokenized "
            "with another tokenizer?"
        )
    return blocks


class BlockOrder:
    """Sample ``k`` of the run is ``blocks[perm(epoch)[k % n]]`` with ``epoch = k // n``.

    The order depends only on ``seed`` and the sample index, so the data position after a resume
    is just the step number (no sampler state to save).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._perms: dict[int, torch.Tensor] = {}

    def perm(self, epoch: int) -> torch.Tensor:
        """The permutation of the blocks in ``epoch``."""
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep only one epoch
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> torch.Tensor:
        """Block indices of samples ``start .. start + count - 1``."""
        ks = range(start, start + count)
        return torch.stack([self.perm(k // self.n)[k % self.n] for k in ks])
