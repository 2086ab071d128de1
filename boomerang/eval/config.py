"""What models are measured on: one evaluation config for the CLI, the Python API and the dashboard.

A perplexity means little without its text: which source, which split, how many blocks of how
many tokens. Data-driven orders and pruning baselines also decide on *calibration* text, always
from the training split so that they never see the blocks they are judged on. :class:`EvalConfig`
holds both. The commands that measure or choose (``sweep``, ``similarity``, ``patch``, ``prune``)
take their flags from its fields (:meth:`EvalConfig.add_cli_arguments`), and the dashboard's
sidebar fills the same dataclass, so a number on the page and one from the CLI are measured on
the same tokens when their settings agree, and every default is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..core import BoomerangPair
from ..data import load_blocks
from ..errors import BoomerangError, DataError
from ..orders import calibration_ids
from ..settings import add_flag, field_kinds, flag_of, setting

#: Splits a text source is cut into (``all``: the whole text).
SPLITS: tuple[str, ...] = ("train", "validation", "test", "all")


@dataclass
class EvalConfig:
    """Evaluation text (source, split, blocks of ``seq_len`` tokens) and calibration text (the
    train split of ``calib_data``, ``calib_n`` sequences of ``calib_len`` tokens)."""

    data: str = setting("demo", "text to measure on: demo, a .txt/.jsonl file, a folder of them, or a dataset id")
    split: str = setting("validation", "split of the text to measure on", choices=SPLITS)
    seq_len: int = setting(128, "tokens per evaluation block")
    blocks: int = setting(64, "evaluation blocks, the first of the split's fixed order", flag="--max-blocks")
    calib_data: str = setting("demo", "text whose train split data-driven orders and baselines decide on")
    calib_n: int = setting(8, "calibration sequences")
    calib_len: int = setting(128, "tokens per calibration sequence")

    #: The smallest value of each whole-number setting.
    AT_LEAST: ClassVar[dict[str, int]] = {"seq_len": 2, "blocks": 1, "calib_n": 1, "calib_len": 2}
    #: The settings about calibration text (commands that only choose layers take these alone).
    CALIBRATION: ClassVar[tuple[str, ...]] = ("calib_data", "calib_n", "calib_len")

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` naming the first bad setting."""
        flags = {f.name: flag_of(f) for f in dataclasses.fields(self)}
        for name, low in self.AT_LEAST.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BoomerangError(f"{flags[name]} must be a whole number of at least {low}, not {value!r}.")
        if self.split not in SPLITS:
            raise BoomerangError(f"Unknown split {self.split!r}; choose one of {', '.join(SPLITS)}.")
        for name in ("data", "calib_data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise BoomerangError(f"{name} must name a text source, not {getattr(self, name)!r}.")

    @property
    def key(self) -> str:
        """The evaluation text as a cache key (``demo|validation|128|16``)."""
        return f"{self.data}|{self.split}|{self.seq_len}|{self.blocks}"

    def eval_blocks(self, pair: BoomerangPair) -> torch.Tensor:
        """``[blocks, seq_len]`` token ids of the evaluation text, read with the pair's tokenizer."""
        self.validate()
        if pair.tokenizer is None:
            raise BoomerangError("This pair has no tokenizer; save one with the student or teacher.")
        try:
            return load_blocks(self.data, pair.tokenizer, self.seq_len, split=self.split, max_blocks=self.blocks)
        except DataError:
            raise
        except (OSError, ValueError) as e:
            raise BoomerangError(f"Could not read evaluation data '{self.data}': {e}".split("\n")[0]) from None

    def calibration(self, pair: BoomerangPair) -> torch.Tensor:
        """``[calib_n, calib_len]`` token ids of the calibration text's train split."""
        self.validate()
        return calibration_ids(pair, n=self.calib_n, seq_len=self.calib_len, source=self.calib_data)

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
        """A flag for each setting (or those in ``only``), generated from the fields."""
        kinds = field_kinds(cls)
        for f in dataclasses.fields(cls):
            if only is None or f.name in only:
                add_flag(parser, f, f.name, kinds[f.name][0], default=f.default)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> EvalConfig:
        """The config of parsed flags (settings without a flag keep their defaults), checked."""
        given: dict[str, Any] = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
        cfg = cls(**given)
        cfg.validate()
        return cfg


def check_limit(limit: float | None) -> int | float | None:
    """An lm-eval ``--limit``: a whole number of examples, a fraction below 1, or None (all)."""
    if limit is None:
        return None
    if not 0 < limit < math.inf:
        raise BoomerangError(f"--limit must be a positive number of examples (or a fraction below 1), not {limit:g}.")
    if limit >= 1:
        if limit != int(limit):
            raise BoomerangError(f"--limit above 1 counts examples and must be whole, not {limit:g}.")
        return int(limit)
    return limit
