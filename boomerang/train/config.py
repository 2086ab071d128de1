"""What a distillation run needs, in one dataclass built from code, a JSON/YAML file or the CLI.

:class:`RunConfig` holds what every run shares: teacher, data, layer mapping rule, schedule,
checkpoint cadence. Its ``validate()`` checks each setting's type and range and names the first
bad one in one sentence; ``resume_conflict()`` names a setting a resumed run may not change.
:class:`DistillConfig` adds the mode, loss weights (:class:`LossWeights`) and the rest of a
distillation run; :class:`~boomerang.train.local.LocalDistillConfig` adds what block-local
distillation needs. The CLI, the dashboard's Train page and config files all build the same
object: defaults < ``--config`` file < flags given on the command line. Each setting is declared
once, with its help text (:func:`boomerang.settings.setting`); the ``distill`` flags are generated from those fields,
so the CLI reaches every setting and cannot disagree with Python about a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args

import yaml

from ..errors import BoomerangError
from ..settings import add_flag, field_kinds, setting

#: What a run trains (see :class:`DistillConfig`'s ``mode``).
Mode = Literal["boomerang", "no-align", "ce-only", "random-init", "pretrain", "local"]
MODES: tuple[str, ...] = get_args(Mode)
#: Losses of block-local distillation (mode "local"): on each student layer's output hidden state.
LocalLoss = Literal["cosine", "mse", "cosine+mse"]
LOCAL_LOSSES: tuple[str, ...] = get_args(LocalLoss)
#: Student parts that ``DistillConfig.freeze`` can keep at their teacher weights.
FREEZABLE = ("one-to-one", "embeddings", "head")
#: Training precisions (``auto``: bf16 on CUDA, fp32 on CPU).
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Experiment trackers ``DistillConfig.log_with`` accepts (Accelerate's names; "all": every installed one).
TRACKERS = ("tensorboard", "wandb", "comet_ml", "aim", "mlflow", "clearml", "dvclive", "swanlab",
            "trackio", "all")


@dataclass
class LossWeights:
    """Weights of the loss terms. ``cos=None`` means ``2 / number of aligned hidden states``."""

    ce: float = setting(1.0, "weight of the next-token cross-entropy", flag="--w-ce")
    kl: float = setting(0.1, "weight of the KL term to the teacher's distribution", flag="--w-kl")
    tau: float = setting(1.0, "KL temperature", flag="--tau")
    cos: float | None = setting(None, "weight of each cosine alignment term (default: 2 / number of aligned "
                                      "hidden states)", flag="--w-cos")


@dataclass
class RunConfig:
    """The settings every distillation run shares, with their checks, (de)serialisation and the
    rule for resuming. Subclasses add their own fields and may change defaults (a field declared
    again keeps its place and takes the new default)."""

    teacher: str = setting("", "teacher model directory, hub id, or a bundled pair: demo, smollm2")
    data: str = setting("demo", "'demo', a text file or folder, or an HF dataset id (see boomerang.data)")
    out: str = setting("runs/distill", "output folder (checkpoints, log.jsonl, student/)")
    keep_first: int = setting(0, "layer mapping rule: the first teacher layers kept one-to-one")
    every: int = setting(2, "layer mapping rule: then one student layer per this many teacher layers")
    keep_last: int = setting(2, "layer mapping rule: the last teacher layers kept one-to-one")
    steps: int = setting(1000, "optimizer steps")
    seq_len: int = setting(256, "tokens per training sequence")
    batch_size: int = setting(8, "sequences per process per micro-batch")
    lr: float = setting(3e-4, "peak learning rate")
    min_lr_ratio: float = setting(0.1, "the cosine schedule decays to lr * min_lr_ratio")
    warmup: int = setting(100, "steps of linear warmup")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    betas: tuple[float, float] = setting((0.9, 0.95), "AdamW betas, two numbers: 0.9,0.95")
    grad_clip: float = setting(1.0, "gradient norm clip (0: none)")
    save_every: int = setting(500, "steps between checkpoints")
    keep_checkpoints: int = setting(2, "checkpoints kept (the newest)")
    log_every: int = setting(10, "steps between lines of log.jsonl")
    eval_every: int = setting(0, "steps between validation perplexities and last-to-first curves (0: never)")
    eval_blocks: int = setting(32, "validation blocks (of the data's validation split) they are measured on")
    resume: bool = setting(False, "continue from the last checkpoint in the output folder")
    seed: int = setting(0, "seed of the data order and initialisation")
    split: str = setting("train", "data split to train on")
    max_blocks: int | None = setting(None, "cap on the number of training blocks loaded (default: all)")
    threads: int | None = setting(None, "CPU threads for torch (default: $BOOMERANG_THREADS, else one per two cores)")
    teacher_input_prob: float = setting(
        0.5, "mode local: the chance a student layer sees the teacher's block input rather than the "
             "previous student layer's output (1: teacher forcing)")
    sink_weight: float = setting(
        1.0, "mode local: loss weight of massive-activation tokens (an attention sink) against the others")
    updates_per_batch: int = setting(1, "mode local: optimizer steps per batch and teacher forward")

    #: What the error for an unknown key calls these settings.
    NOUN: ClassVar[str] = "distillation"
    #: Settings a resumed run may change: they do not change what a step computes.
    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"resume", "out", "save_every", "keep_checkpoints",
                                                        "log_every", "eval_every", "eval_blocks", "threads"})
    #: Lowest allowed value of whole-number settings (None: any whole number).
    AT_LEAST: ClassVar[dict[str, int | None]] = {
        "keep_first": 0, "every": 1, "keep_last": 0, "steps": 1, "seq_len": 2, "batch_size": 1,
        "warmup": 0, "save_every": 1, "keep_checkpoints": 1, "log_every": 1, "seed": None, "max_blocks": 1, "threads": 1,
        "updates_per_batch": 1, "eval_every": 0, "eval_blocks": 1}

    def __post_init__(self) -> None:
        for name in ("teacher", "data", "out"):  # paths are welcome; validate() judges the rest
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        betas = self.betas.split(",") if isinstance(self.betas, str) else self.betas  # "0.9,0.95" from a flag
        try:
            self.betas = tuple(float(b) for b in betas)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise BoomerangError(f"betas must be two numbers in [0, 1), not {self.betas!r}.") from None

    # ---- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        """Raise a one-sentence :class:`BoomerangError` for the first bad setting."""
        if not self.teacher:
            raise BoomerangError("No teacher given: set teacher (--teacher) to a model directory, "
                                 "hub id or bundled pair.")
        for name, (kind, optional) in field_kinds(type(self)).items():
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
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise BoomerangError(f"betas must be two numbers in [0, 1), not {self.betas!r}.")
        if not self.sink_weight > 0:
            raise BoomerangError(f"sink_weight must be positive, not {self.sink_weight!r}.")

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
        _check_mapping(d, f"{cls.NOUN} settings")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BoomerangError(f"Unknown {cls.NOUN} setting(s) {', '.join(unknown)}; known are "
                                 f"{', '.join(sorted(names))}.")
        d = dict(d)
        for name, (kind, _) in field_kinds(cls).items():
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


def _names(setting: str, value: Any) -> tuple[str, ...]:
    """A list setting of names (``freeze``, ``log_with``): text ("a, b") or a list of texts."""
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise BoomerangError(f"{setting} must be names, comma-separated or a list, not {value!r}.")


def _check_mapping(d: Any, what: str) -> None:
    """Refuse settings that are not a mapping of names written as text (a YAML key ``1:``)."""
    if not isinstance(d, dict):
        raise BoomerangError(f"The {what} must be a mapping of names to values, not a {type(d).__name__}.")
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        raise BoomerangError(f"The {what} must be named by text, not {bad[0]!r}.")


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

    mode: Mode = setting("boomerang", "boomerang (the paper's loss), an ablation (no-align, ce-only, "
                        "random-init), pretrain (no teacher), or local (block-local: each student layer "
                        "learns its teacher block alone, see boomerang.train.local)", choices=MODES)
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    weights: LossWeights = setting(default_factory=LossWeights)
    freeze: tuple[str, ...] = setting((), f"parts kept at the teacher's weights, comma-separated: {', '.join(FREEZABLE)}")
    precision: Precision = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16", choices=PRECISIONS)
    local_loss: LocalLoss = setting("cosine+mse", "mode local: loss on each student layer's output", choices=LOCAL_LOSSES)
    log_with: tuple[str, ...] = setting((), "experiment trackers through Accelerate, comma-separated: "
                                            "tensorboard, wandb, ... (logs under OUT/trackers)")

    # The batch size and accumulation may change on resume so that a run can move between numbers of
    # processes; the loop checks that the checkpoint's global batch (their product with the
    # number of processes) stays the same.
    RESUME_FREE: ClassVar[frozenset[str]] = RunConfig.RESUME_FREE | {
        "steps", "precision", "log_with", "batch_size", "grad_accum"}
    AT_LEAST: ClassVar[dict[str, int | None]] = {**RunConfig.AT_LEAST, "grad_accum": 1}
    #: Settings only block-local distillation uses, and those it does not (whole-model training's).
    LOCAL_ONLY: ClassVar[tuple[str, ...]] = ("teacher_input_prob", "local_loss", "sink_weight", "updates_per_batch")
    NOT_LOCAL: ClassVar[tuple[str, ...]] = ("grad_accum", "precision", "log_with")
    #: Loss weights each mode does not use (see :meth:`effective_weights`; mode local has no such loss).
    UNUSED_WEIGHTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "local": ("ce", "kl", "tau", "cos"), "no-align": ("cos",), "ce-only": ("kl", "tau", "cos"),
        "pretrain": ("kl", "tau", "cos")}

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        elif not isinstance(self.weights, LossWeights):
            raise BoomerangError(f"weights must be a mapping of loss weights (ce, kl, tau, cos), not {self.weights!r}.")
        self.freeze = _names("freeze", self.freeze)
        self.log_with = _names("log_with", self.log_with)

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
        if self.precision not in PRECISIONS:
            raise BoomerangError(f"Unknown precision {self.precision!r}; choose auto, fp32 or bf16.")
        if self.local_loss not in LOCAL_LOSSES:
            raise BoomerangError(f"Unknown local loss {self.local_loss!r}; choose one of {', '.join(LOCAL_LOSSES)}.")
        w = self.weights
        numbers_ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                         for v in (w.ce, w.kl, w.tau, 0.0 if w.cos is None else w.cos))
        if not numbers_ok or min(w.ce, w.kl, w.cos if w.cos is not None else 0.0) < 0 or w.tau <= 0:
            raise BoomerangError("Loss weights must be numbers >= 0 and the temperature tau > 0, "
                                 f"not {dataclasses.asdict(w)}.")
        unused = self.unused_settings()
        if unused:
            name, value = unused[0]
            raise BoomerangError(f"Mode {self.mode} does not use {name} (set to {value!r}); drop it or choose "
                                 f"a mode that does.")

    def unused_settings(self) -> list[tuple[str, Any]]:
        """The settings, changed from their defaults, that this run's mode would ignore, as
        (name, value): whole-model training's settings in mode local and the other way round,
        and loss weights that the mode zeroes (see :meth:`effective_weights`)."""
        default = type(self)()
        ignored = self.NOT_LOCAL if self.mode == "local" else self.LOCAL_ONLY
        unused = [(n, getattr(self, n)) for n in (*self.LOCAL_ONLY, *self.NOT_LOCAL)
                  if n in ignored and getattr(self, n) != getattr(default, n)]
        unused += [(f"weights.{k}", getattr(self.weights, k)) for k in self.UNUSED_WEIGHTS.get(self.mode, ())
                   if getattr(self.weights, k) != getattr(default.weights, k)]
        return unused

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
        _check_mapping(d, f"{cls.NOUN} settings")
        if isinstance(d.get("weights"), dict):
            _check_mapping(d["weights"], "loss weights")
            wnames = {f.name for f in dataclasses.fields(LossWeights)}
            bad = sorted(set(d["weights"]) - wnames)
            if bad:
                raise BoomerangError(f"Unknown loss weight(s) {', '.join(bad)}; known are {', '.join(sorted(wnames))}.")
            d = {**d, "weights": {k: None if v is None else _number_from_text(f"weights.{k}", v, float)
                                  for k, v in d["weights"].items()}}
        return super().from_dict(d)

    # ---- CLI ------------------------------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add a flag for every setting to ``parser``, generated from the fields (name, type,
        choices, help, default); every flag defaults to None (= config file or default)."""
        parser.add_argument("--config", help="JSON or YAML file with settings; flags given here override it")
        kinds = {**field_kinds(cls), **{f"w.{k}": v for k, v in field_kinds(LossWeights).items()}}
        for f, dest in _cli_fields(cls):
            kind, _ = kinds.get(dest, (str, False))  # tuples of names or numbers are typed as text
            add_flag(parser, f, dest, kind)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> Self:
        """Build from parsed args: defaults < ``--config`` file < flags given on the command line."""
        cfg = cls.from_file(ns.config) if getattr(ns, "config", None) else cls()
        given = {dest: getattr(ns, dest) for _, dest in _cli_fields(cls) if getattr(ns, dest, None) is not None}
        weights = {k[2:]: v for k, v in given.items() if k.startswith("w.")}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if not k.startswith("w.")})
        cfg.weights = dataclasses.replace(cfg.weights, **weights)
        return cfg


def _cli_fields(cls: type) -> list[tuple[dataclasses.Field, str]]:
    """(field, argparse dest) of every setting with a flag; the loss weights' dests are ``w.<name>``."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "weights":
            out += [(wf, f"w.{wf.name}") for wf in dataclasses.fields(LossWeights)]
        elif "help" in f.metadata:
            out.append((f, f.name))
    return out


