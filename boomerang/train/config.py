"""What a distillation run needs, in one dataclass built from code, a JSON/YAML file or the CLI.

:class:`RunConfig` holds what every run shares: teacher, data, layer mapping rule, schedule,
checkpoint cadence. Its ``validate()`` checks each setting's type and range and names the first
bad one in one sentence; ``resume_conflict()`` names a setting a resumed run may not change.
:class:`DistillConfig` adds the mode, loss weights (:class:`LossWeights`) and the rest of a
distillation run; :class:`~boomerang.train.local.LocalDistillConfig` adds what block-local
distillation needs. The CLI, the dashboard's Train page and config files all build the same
object: defaults < ``--config`` file < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

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
class RunConfig:
    """The settings every distillation run shares, with their checks, (de)serialisation and the
    rule for resuming. Subclasses add their own fields and may change defaults (a field declared
    again keeps its place and takes the new default)."""

    # Model directory, hub id, or a bundled pair's name ("demo", "smollm2").
    teacher: str = ""
    data: str = "demo"  # "demo", a text file/folder, or an HF dataset id (see boomerang.data)
    out: str = "runs/distill"
    keep_first: int = 0  # the mapping rule (LayerMapping.from_rule)
    every: int = 2
    keep_last: int = 2
    steps: int = 1000
    seq_len: int = 256
    batch_size: int = 8
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup: int = 100  # steps of linear warmup
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables
    save_every: int = 500  # steps between checkpoints
    log_every: int = 10
    resume: bool = False  # continue from the last checkpoint in ``out``
    seed: int = 0
    split: str = "train"
    max_blocks: int | None = None  # cap on the number of training blocks loaded
    threads: int | None = None  # CPU threads for torch (None: boomerang.threads.default_threads)
    # Block-local distillation: the chance a student layer sees the teacher's block input rather
    # than the previous student layer's output.
    teacher_input_prob: float = 0.5

    #: What the error for an unknown key calls these settings.
    NOUN: ClassVar[str] = "distillation"
    #: Settings a resumed run may change: they do not change what a step computes.
    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"resume", "out", "save_every", "log_every", "threads"})
    #: Lowest allowed value of whole-number settings (None: any whole number).
    AT_LEAST: ClassVar[dict[str, int | None]] = {
        "keep_first": 0, "every": 1, "keep_last": 0, "steps": 1, "seq_len": 2, "batch_size": 1,
        "warmup": 0, "save_every": 1, "log_every": 1, "seed": None, "max_blocks": 1, "threads": 1}

    def __post_init__(self) -> None:
        for name in ("teacher", "data", "out"):  # paths are welcome; validate() judges the rest
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))

    # ---- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` for the first bad setting."""
        if not self.teacher:
            raise BoomerangError("No teacher given: set teacher (--teacher) to a model directory, "
                                 "hub id or bundled pair.")
        for name, (kind, optional) in _field_kinds(type(self)).items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if kind is bool and not isinstance(value, bool):
                raise BoomerangError(f"{name} must be true or false, not {value!r}.")
            if kind is str and not isinstance(value, str):
                raise BoomerangError(f"{name} must be text, not {value!r}.")
            if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise BoomerangError(f"{name} must be a whole number, not {value!r}.")
            if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value)):
                raise BoomerangError(f"{name} must be a finite number, not {value!r}.")
        for name, least in self.AT_LEAST.items():
            if least is not None and getattr(self, name) is not None and getattr(self, name) < least:
                raise BoomerangError(f"{name} must be at least {least}, not {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise BoomerangError(f"The learning rate must be a positive number, not {self.lr!r}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise BoomerangError(f"min_lr_ratio must lie in [0, 1], not {self.min_lr_ratio!r}.")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise BoomerangError(f"{name} must not be negative, not {getattr(self, name)!r}.")
        if not self.split:
            raise BoomerangError("split must name a data split (train, validation, ...), not ''.")
        if not 0.0 <= self.teacher_input_prob <= 1.0:
            raise BoomerangError(f"teacher_input_prob is a probability in [0, 1], not {self.teacher_input_prob!r}.")

    def resume_conflict(self, saved: dict[str, Any]) -> str | None:
        """The first setting that differs from a run's saved settings and would change what it
        trains (data, mapping, batch, learning rate, loss...), or None. Settings the saved run
        does not know (an older version wrote it) are not compared."""
        for name, value in self.to_dict().items():
            if name in self.RESUME_FREE or name not in saved:
                continue
            if saved[name] != value:
                return f"{name} (the run has {saved[name]!r}, these settings {value!r})"
        return None

    # ---- (de)serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from a dict; unknown keys are an error (typos should not pass silently).

        Numbers written as text are read as numbers: YAML reads ``lr: 3e-4`` (no dot) as the
        string "3e-4", and ``steps: 1e3`` is a whole number too.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BoomerangError(f"Unknown {cls.NOUN} setting(s) {', '.join(unknown)}; known are "
                                 f"{', '.join(sorted(names))}.")
        d = dict(d)
        for name, (kind, _) in _field_kinds(cls).items():
            if name in d and d[name] is not None and kind in (int, float):
                d[name] = _number_from_text(name, d[name], kind)
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Self:
        """Read a JSON or YAML config file (a flat mapping of field names to values)."""
        p = Path(path)
        if p.is_dir():
            raise BoomerangError(f"Config file {str(p)!r} is a folder; give a JSON or YAML file.")
        if p.exists() and not p.is_file():
            raise BoomerangError(f"Config file {str(p)!r} is not a regular file (a pipe or device); give a JSON or YAML file.")
        if not p.is_file():
            raise BoomerangError(f"Config file {str(p)!r} does not exist.")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BoomerangError(f"Config file {str(p)!r} is not UTF-8 text.") from None
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


def _field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """{field: (int | float | bool | str, may it be None)} for the settings of those types;
    other fields (tuples, nested dataclasses) are checked by their class's ``validate``."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint, args = hints[f.name], set(typing.get_args(hints[f.name]))
        optional = type(None) in args and len(args) == 2
        if optional:
            hint = next(a for a in args if a is not type(None))
        if hint in (int, float, bool, str):
            kinds[f.name] = (hint, optional)
    return kinds


def _number_from_text(name: str, value: Any, kind: type) -> Any:
    """``value`` read as a ``kind`` when it is a number written as text, or a whole float for an
    int setting; anything else is returned as is (``validate`` judges it)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BoomerangError(f"{name} must be a number, not {value!r}.") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class DistillConfig(RunConfig):
    """Everything a distillation run needs; build it in code, from CLI args or a JSON/YAML file.

    ``batch_size`` is per process and per micro-batch: one optimizer step sees
    ``batch_size * grad_accum * num_processes`` sequences of ``seq_len`` tokens. With
    ``mode="pretrain"``, ``teacher`` is a folder holding only the architecture (config.json) and
    a tokenizer: the model starts random.
    """

    # boomerang | no-align | ce-only | random-init | pretrain (no teacher) | local (block-local:
    # each student layer learns its teacher block alone; see boomerang.train.local)
    mode: str = "boomerang"
    grad_accum: int = 1
    betas: tuple[float, float] = (0.9, 0.95)
    weights: LossWeights = field(default_factory=LossWeights)
    # Parts kept at the teacher's weights (see FREEZABLE and frozen_parameters).
    freeze: tuple[str, ...] = ()
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    eval_every: int = 0  # steps between validation perplexities in log.jsonl (0: never)
    eval_blocks: int = 32  # validation blocks (of ``data``'s validation split) they are measured on
    local_loss: str = "cosine+mse"  # mode "local": loss on each student layer's output (LOCAL_LOSSES)
    # Experiment trackers fed through Accelerate's ``log_with`` (see TRACKERS), writing under
    # ``OUT/trackers``: e.g. ("tensorboard",), then ``tensorboard --logdir OUT/trackers``.
    log_with: tuple[str, ...] = ()

    # The batch size and accumulation may change on resume so that a run can move between numbers of
    # processes; the loop checks that the checkpoint's global batch (their product with the
    # number of processes) stays the same.
    RESUME_FREE: ClassVar[frozenset[str]] = RunConfig.RESUME_FREE | {
        "steps", "keep_checkpoints", "precision", "eval_every", "eval_blocks", "log_with", "batch_size",
        "grad_accum"}
    AT_LEAST: ClassVar[dict[str, int | None]] = {
        **RunConfig.AT_LEAST, "grad_accum": 1, "keep_checkpoints": 1, "eval_every": 0, "eval_blocks": 1}

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        try:
            self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise BoomerangError(f"betas must be two numbers in [0, 1), not {self.betas!r}.") from None
        if isinstance(self.freeze, str):
            self.freeze = tuple(p.strip() for p in self.freeze.split(",") if p.strip())
        self.freeze = tuple(self.freeze)
        if isinstance(self.log_with, str):
            self.log_with = tuple(t.strip() for t in self.log_with.split(",") if t.strip())
        self.log_with = tuple(self.log_with)

    # ---- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` for the first bad setting."""
        super().validate()
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
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise BoomerangError(f"betas must be two numbers in [0, 1), not {self.betas!r}.")
        if self.local_loss not in LOCAL_LOSSES:
            raise BoomerangError(f"Unknown local loss {self.local_loss!r}; choose one of {', '.join(LOCAL_LOSSES)}.")
        w = self.weights
        numbers_ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                         for v in (w.ce, w.kl, w.tau, 0.0 if w.cos is None else w.cos))
        if not numbers_ok or min(w.ce, w.kl, w.cos if w.cos is not None else 0.0) < 0 or w.tau <= 0:
            raise BoomerangError("Loss weights must be numbers >= 0 and the temperature tau > 0, "
                                 f"not {dataclasses.asdict(w)}.")

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from a dict; unknown keys, also among the loss weights, are an error."""
        if isinstance(d.get("weights"), dict):
            wnames = {f.name for f in dataclasses.fields(LossWeights)}
            bad = sorted(set(d["weights"]) - wnames)
            if bad:
                raise BoomerangError(f"Unknown loss weight(s) {', '.join(bad)}; known are {', '.join(sorted(wnames))}.")
            d = {**d, "weights": {k: None if v is None else _number_from_text(f"weights.{k}", v, float)
                                  for k, v in d["weights"].items()}}
        return super().from_dict(d)

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
        a("--threads", type=int, help="CPU threads for torch (default: $BOOMERANG_THREADS, else one per two cores)")
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
