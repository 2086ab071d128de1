"""What a distillation run needs, in one dataclass built from code, a JSON/YAML file or the CLI.

:class:`DistillConfig` holds the teacher, data, layer mapping rule, mode, schedule, loss weights
(:class:`LossWeights`) and checkpointing settings; ``validate()`` names the first bad field in
one sentence. The CLI, the dashboard's Train page and config files all build the same object:
defaults < ``--config`` file < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import BoomerangError

MODES = ("boomerang", "no-align", "ce-only", "random-init", "pretrain", "local")
#: Losses of block-local distillation (mode "local"): on each student layer's output hidden state.
LOCAL_LOSSES = ("cosine", "mse", "cosine+mse")
#: Student parts that ``DistillConfig.freeze`` can keep at their teacher weights.
FREEZABLE = ("one-to-one", "embeddings", "head")
#: Experiment trackers ``DistillConfig.log_with`` accepts (Accelerate's names; "all": every installed one).
TRACKERS = ("tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab",
            "trackio", "all")


@dataclass
class LossWeights:
    """Weights of the loss terms. ``cos=None`` means ``2 / number of aligned hidden states``."""

    ce: float = 1.0
    kl: float = 0.1
    tau: float = 1.0
    cos: float | None = None


@dataclass
class DistillConfig:
    """Everything a distillation run needs; build it in code, from CLI args or a JSON/YAML file.

    ``batch_size`` is per process and per micro-batch: one optimizer step sees
    ``batch_size * grad_accum * num_processes`` sequences of ``seq_len`` tokens.
    """

    # Model directory, hub id, or a bundled pair's name ("demo", "smollm2"). With mode="pretrain"
    # a folder holding only the architecture (config.json) and a tokenizer: the model starts random.
    teacher: str = ""
    data: str = "demo"  # "demo", a text file/folder, or an HF dataset id (see boomerang.data)
    out: str = "runs/distill"
    keep_first: int = 0
    every: int = 2
    keep_last: int = 2
    # boomerang | no-align | ce-only | random-init | pretrain (no teacher) | local (block-local:
    # each student layer learns its teacher block alone; see boomerang.train.local)
    mode: str = "boomerang"
    steps: int = 1000
    seq_len: int = 256
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup: int = 100  # steps of linear warmup
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    weights: LossWeights = field(default_factory=LossWeights)
    # Parts kept at the teacher's weights (see FREEZABLE and frozen_parameters).
    freeze: tuple[str, ...] = ()
    save_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    split: str = "train"
    max_blocks: int | None = None  # cap on the number of training blocks loaded
    threads: int | None = None  # CPU threads for torch (None: torch's default)
    eval_every: int = 0  # steps between validation perplexities in log.jsonl (0: never)
    eval_blocks: int = 32  # validation blocks (of ``data``'s validation split) they are measured on
    local_loss: str = "cosine+mse"  # mode "local": loss on each student layer's output (LOCAL_LOSSES)
    teacher_input_prob: float = 0.5  # mode "local": chance a layer sees the teacher's block input
    # Experiment trackers fed through Accelerate's ``log_with`` (see TRACKERS), writing under
    # ``OUT/trackers``: e.g. ("tensorboard",), then ``tensorboard --logdir OUT/trackers``.
    log_with: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if isinstance(self.freeze, str):
            self.freeze = tuple(p.strip() for p in self.freeze.split(",") if p.strip())
        self.freeze = tuple(self.freeze)
        if isinstance(self.log_with, str):
            self.log_with = tuple(t.strip() for t in self.log_with.split(",") if t.strip())
        self.log_with = tuple(self.log_with)
        self.out = str(self.out)
        self.teacher = str(self.teacher)
        self.data = str(self.data)

    # ---- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` for the first bad field."""
        if not self.teacher:
            raise BoomerangError("No teacher given: pass --teacher with a model directory or hub id.")
        if self.mode not in MODES:
            raise BoomerangError(f"Unknown mode {self.mode!r}; choose one of {', '.join(MODES)}.")
        bad = [p for p in self.freeze if p not in FREEZABLE]
        if bad:
            raise BoomerangError(
                f"Cannot freeze {', '.join(map(repr, bad))}; choose from {', '.join(FREEZABLE)}."
            )
        if self.freeze and self.mode in ("random-init", "pretrain"):
            raise BoomerangError(
                f"A {self.mode} model has no teacher weights to keep; drop --freeze."
            )
        unknown = [t for t in self.log_with if t not in TRACKERS]
        if unknown:
            raise BoomerangError(
                f"Unknown tracker {unknown[0]!r} in log_with; choose from {', '.join(TRACKERS)}."
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BoomerangError(f"Unknown precision {self.precision!r}; choose auto, fp32 or bf16.")
        for name in ("steps", "seq_len", "batch_size", "grad_accum", "save_every", "log_every",
                     "keep_checkpoints", "eval_blocks"):
            if int(getattr(self, name)) < 1:
                raise BoomerangError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.seq_len < 2:
            raise BoomerangError(f"seq_len must be at least 2, not {self.seq_len}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BoomerangError(f"The learning rate must be a positive number, not {self.lr}.")
        if self.warmup < 0:
            raise BoomerangError(f"warmup must be >= 0, not {self.warmup}.")
        if self.local_loss not in LOCAL_LOSSES:
            raise BoomerangError(f"Unknown local loss {self.local_loss!r}; choose one of {', '.join(LOCAL_LOSSES)}.")
        if not 0.0 <= self.teacher_input_prob <= 1.0:
            raise BoomerangError(f"teacher_input_prob is a probability in [0, 1], not {self.teacher_input_prob!r}.")
        if self.eval_every < 0:
            raise BoomerangError(f"eval_every must be >= 0 (0: never), not {self.eval_every}.")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise BoomerangError(f"max_blocks must be at least 1, not {self.max_blocks}.")
        if self.threads is not None and self.threads < 1:
            raise BoomerangError(f"threads must be at least 1, not {self.threads}.")
        w = self.weights
        if min(w.ce, w.kl, w.cos if w.cos is not None else 0.0) < 0 or w.tau <= 0:
            raise BoomerangError("Loss weights must be >= 0 and the temperature tau > 0.")

    def effective_weights(self, num_states: int) -> LossWeights:
        """The loss weights this mode actually uses, with ``cos=None`` resolved."""
        w = dataclasses.replace(self.weights)
        if w.cos is None:
            w.cos = 2.0 / num_states
        if self.mode == "no-align":
            w.cos = 0.0
        elif self.mode in ("ce-only", "pretrain"):
            w.kl, w.cos = 0.0, 0.0
        return w

    def resume_conflict(self, saved: dict[str, Any]) -> str | None:
        """The first setting that differs from a run's saved ``config.json`` and would change what
        it trains (data, mapping, batch, learning rate, loss...), or None. Output cadence, threads
        and the number of steps (to extend a run) may change."""
        free = {"resume", "steps", "save_every", "log_every", "keep_checkpoints", "threads", "out",
                "precision", "eval_every", "eval_blocks", "log_with"}
        mine = self.to_dict()
        for name, value in mine.items():
            if name in free or name not in saved:
                continue
            if saved[name] != value:
                return f"{name} (the run has {saved[name]!r}, these settings {value!r})"
        return None

    # ---- (de)serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["freeze"] = list(self.freeze)
        d["log_with"] = list(self.log_with)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DistillConfig":
        """Build from a dict; unknown keys are an error (typos should not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BoomerangError(
                f"Unknown distillation setting(s) {', '.join(unknown)}; known are {', '.join(sorted(names))}."
            )
        d = dict(d)
        if isinstance(d.get("weights"), dict):
            wnames = {f.name for f in dataclasses.fields(LossWeights)}
            bad = sorted(set(d["weights"]) - wnames)
            if bad:
                raise BoomerangError(f"Unknown loss weight(s) {', '.join(bad)}; known are {', '.join(sorted(wnames))}.")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "DistillConfig":
        """Read a JSON or YAML config file (a flat mapping of field names to values)."""
        p = Path(path)
        if not p.is_file():
            raise BoomerangError(f"Config file {str(p)!r} does not exist.")
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                d = yaml.safe_load(text)
            else:
                d = json.loads(text)
        except Exception as e:  # noqa: BLE001 - any parse error is the user's file
            raise BoomerangError(f"Could not parse config file {str(p)!r}: {e}.") from None
        if not isinstance(d, dict):
            raise BoomerangError(f"Config file {str(p)!r} must hold a mapping of settings.")
        return cls.from_dict(d)

    # ---- CLI ------------------------------------------------------------------------------

    @staticmethod
    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        """Add ``distill`` flags to ``parser``; every flag defaults to None (= config/default)."""
        a = parser.add_argument
        a("--config", help="JSON or YAML file with settings; flags given here override it")
        a("--teacher", help="teacher model directory, hub id, or a bundled pair: demo, smollm2")
        a("--data", help="'demo', a text file or folder, or an HF dataset id")
        a("--out", help="output directory (checkpoints, log.jsonl, student/)")
        a("--keep-first", type=int, dest="keep_first")
        a("--every", type=int)
        a("--keep-last", type=int, dest="keep_last")
        a("--mode", choices=MODES)
        a("--freeze", help=f"comma-separated parts kept at the teacher's weights: {', '.join(FREEZABLE)}")
        a("--steps", type=int)
        a("--seq-len", type=int, dest="seq_len")
        a("--batch-size", type=int, dest="batch_size", help="sequences per process per micro-batch")
        a("--grad-accum", type=int, dest="grad_accum")
        a("--lr", type=float)
        a("--warmup", type=int)
        a("--weight-decay", type=float, dest="weight_decay")
        a("--grad-clip", type=float, dest="grad_clip")
        a("--w-kl", type=float, dest="w_kl", help="weight of the KL term (default 0.1)")
        a("--w-cos", type=float, dest="w_cos", help="weight of each cosine term (default 2/#states)")
        a("--tau", type=float, help="KL temperature (default 1)")
        a("--save-every", type=int, dest="save_every")
        a("--log-every", type=int, dest="log_every")
        a("--seed", type=int)
        a("--precision", choices=("auto", "fp32", "bf16"))
        a("--max-blocks", type=int, dest="max_blocks")
        a("--local-loss", choices=LOCAL_LOSSES, dest="local_loss", help="mode local: loss on each layer's output")
        a("--teacher-input-prob", type=float, dest="teacher_input_prob",
          help="mode local: chance a student layer sees the teacher's block input, else the student's own (default 0.5)")
        a("--eval-every", type=int, dest="eval_every", help="steps between validation perplexities (0: never)")
        a("--eval-blocks", type=int, dest="eval_blocks", help="validation blocks for --eval-every (default 32)")
        a("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
        a("--log-with", dest="log_with", help="experiment trackers through Accelerate, comma-separated: "
          "tensorboard, wandb, ... (logs under OUT/trackers)")
        a("--resume", action="store_true", default=None, help="continue from the last checkpoint in --out")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "DistillConfig":
        """Build from parsed args: defaults < ``--config`` file < flags given on the command line."""
        cfg = cls.from_file(ns.config) if getattr(ns, "config", None) else cls()
        names = {f.name for f in dataclasses.fields(cls)} - {"weights"}
        updates = {k: v for k, v in vars(ns).items() if k in names and v is not None}
        cfg = dataclasses.replace(cfg, **updates)
        w = dataclasses.replace(cfg.weights)
        for flag, attr in (("w_kl", "kl"), ("w_cos", "cos"), ("tau", "tau")):
            if getattr(ns, flag, None) is not None:
                setattr(w, attr, getattr(ns, flag))
        cfg.weights = w
        return cfg
