"""Boomerang distillation: the loss, and a resumable Accelerate training loop around it.

The student (initialised from a subset of the teacher's layers, see :mod:`boomerang.student`)
is trained with

    L = CE + w_kl * tau^2 * KL(p_teacher || p_student) + w_cos * sum_j (1 - cos(h_s[j], h_t[b(j)]))

over the aligned hidden states ``j``: the embedding output, the output of every student layer
``i`` against the output of the *last* teacher layer of the block it stands for, and the final
normed output. Padding (``attention_mask == 0`` / ``labels == -100``) is masked in every term.
Defaults: ``w_kl = 0.1``, ``tau = 1``, ``w_cos = 2 / number of aligned states``.

Why hooks as well as ``output_hidden_states``: in transformers 5 a Llama-like model returns
``num_hidden_layers + 1`` hidden states, ``[embeddings, out(layer 0), ..., out(layer N-2),
norm(out(layer N-1))]`` -- the last entry is *replaced* by the final-normed output, so the last
layer's own (pre-norm) output is not in the tuple. :func:`forward_states` adds it back with a
forward hook on the last decoder layer, giving ``N + 2`` states (pinned by a test against hooks
on every layer).

The training loop uses Hugging Face Accelerate, so one code path runs on CPU (fp32), one GPU
(bf16 autocast) and many GPUs / FSDP via ``accelerate launch`` (see ``configs/``). Checkpoints
(``accelerator.save_state`` into a temporary directory, then an atomic rename) hold the student
weights, optimizer, scheduler, RNG states and step; the data order is a pure function of
``(seed, step)``, so resuming after ``kill -9`` continues exactly where the last checkpoint left
off and ``log.jsonl`` has no duplicate steps.

Running it::

    python -m boomerang distill --teacher T --data demo --steps 2000 --out runs/x      # CPU / 1 GPU
    accelerate launch --multi_gpu --num_processes 8 -m boomerang distill ...          # DDP
    accelerate launch --config_file configs/accelerate_fsdp.yaml -m boomerang distill ...  # FSDP

``--batch-size`` is per process; add ``--resume`` to continue a run. From code::

    from boomerang.distill import DistillConfig, distill
    student_dir = distill(DistillConfig(teacher=..., data=..., out=...), progress=print)

Output folder: ``config.json``, ``log.jsonl`` (one line per logged step), ``checkpoints/step-N``
(the last ``keep_checkpoints``), and finally ``student/`` (see :func:`boomerang.save_student`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BoomerangError

MODES = ("boomerang", "no-align", "ce-only", "random-init")
#: Student parts that ``DistillConfig.freeze`` can keep at their teacher weights.
FREEZABLE = ("one-to-one", "embeddings", "head")
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last inside a checkpoint: its presence marks it complete


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


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

    teacher: str = ""  # model directory, hub id, or a bundled pair's name ("demo", "smollm2")
    data: str = "demo"  # "demo", a text file/folder, or an HF dataset id (see boomerang.data)
    out: str = "runs/distill"
    keep_first: int = 0
    every: int = 2
    keep_last: int = 2
    mode: str = "boomerang"  # boomerang | no-align | ce-only | random-init
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

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if isinstance(self.freeze, str):
            self.freeze = tuple(p.strip() for p in self.freeze.split(",") if p.strip())
        self.freeze = tuple(self.freeze)
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
        if self.freeze and self.mode == "random-init":
            raise BoomerangError(
                "A random-init student has no teacher weights to keep; drop --freeze."
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BoomerangError(f"Unknown precision {self.precision!r}; choose auto, fp32 or bf16.")
        for name in ("steps", "seq_len", "batch_size", "grad_accum", "save_every", "log_every",
                     "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise BoomerangError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.seq_len < 2:
            raise BoomerangError(f"seq_len must be at least 2, not {self.seq_len}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BoomerangError(f"The learning rate must be a positive number, not {self.lr}.")
        if self.warmup < 0:
            raise BoomerangError(f"warmup must be >= 0, not {self.warmup}.")
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
        elif self.mode == "ce-only":
            w.kl, w.cos = 0.0, 0.0
        return w

    # ---- (de)serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["freeze"] = list(self.freeze)
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
                import yaml

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
        a("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
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


# ---------------------------------------------------------------------------------------------
# Forward with aligned hidden states, and the loss
# ---------------------------------------------------------------------------------------------


class ForwardStates(NamedTuple):
    """Logits and hidden states of one forward pass.

    ``states`` has ``num_layers + 2`` entries, each ``[B, T, H]``: ``states[0]`` the embedding
    output, ``states[i + 1]`` the output of decoder layer ``i``, ``states[-1]`` the final-normed
    output (the input of the head).
    """

    logits: torch.Tensor  # [B, T, V]
    states: list[torch.Tensor]


def _last_layer(model: nn.Module) -> nn.Module:
    from .arch import find_parts

    return find_parts(model).layer_list(model)[-1]


def forward_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    last_layer: nn.Module | None = None,
) -> ForwardStates:
    """Run ``model`` and return its logits and all ``N + 2`` hidden states (see :class:`ForwardStates`).

    ``last_layer`` is the model's last decoder layer; pass it when ``model`` is wrapped (DDP,
    FSDP) and the layer was located on the unwrapped model.
    """
    if last_layer is None:
        last_layer = _last_layer(model)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = last_layer.register_forward_hook(hook)
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hs = out.hidden_states  # N + 1 entries; the last one is the final-normed output
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the last decoder layer, got {len(captured)}")
    return ForwardStates(out.logits, [*hs[:-1], captured[0], hs[-1]])


def frozen_parameters(student: nn.Module, mapping: Any, parts: Sequence[str]) -> list[nn.Parameter]:
    """The student's parameters that ``parts`` (names from :data:`FREEZABLE`) keep fixed.

    A student layer that stands for a single teacher layer ("one-to-one") starts as an exact
    copy of it, so patching it is a no-op only if it stays one: freezing keeps such layers, and
    with "embeddings" and "head" the token embeddings and the final norm + output head,
    swappable with the teacher's at no cost. What distillation can still change is then only
    the student layers that stand for several teacher layers. With tied embeddings, freezing
    either of "embeddings" or "head" freezes the shared matrix.
    """
    from .arch import find_parts

    arch = find_parts(student)
    modules: list[nn.Module] = []
    if "one-to-one" in parts:
        layers = arch.layer_list(student)
        modules += [layers[i] for i, block in enumerate(mapping.blocks) if len(block) == 1]
    if "embeddings" in parts:
        modules += arch.embedding_modules(student)
    if "head" in parts:
        modules += [arch.norm_module(student), arch.head_module(student)]
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def alignment_pairs(mapping: Any) -> list[tuple[int, int]]:
    """``(student state, teacher state)`` index pairs into :attr:`ForwardStates.states`.

    Embeddings to embeddings, student layer ``i``'s output to the output of the last teacher
    layer of ``mapping.blocks[i]``, final-normed output to final-normed output.
    """
    n_s = len(mapping.blocks)
    n_t = mapping.blocks[-1][-1] + 1
    pairs = [(0, 0)]
    pairs += [(i + 1, block[-1] + 1) for i, block in enumerate(mapping.blocks)]
    pairs.append((n_s + 1, n_t + 1))
    return pairs


KL_CHUNK = 4096  # tokens per chunk of the KL term: bounds its [chunk, V] fp32 temporaries


def _kl_chunk(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    t_logp = F.log_softmax(t.float() / tau, dim=-1)  # [n, V]
    s_logp = F.log_softmax(s.float() / tau, dim=-1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [n]


def _kl_per_token(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau))`` per row of ``[N, V]`` logits.

    Computed in chunks of :data:`KL_CHUNK` rows under activation checkpointing, so that with a
    large vocabulary (SmolLM2: 49k) only one chunk's log-probabilities are alive at a time
    instead of several ``[N, V]`` fp32 tensors saved for the backward pass.
    """
    if s.shape[0] <= KL_CHUNK or not torch.is_grad_enabled() or not s.requires_grad:
        return _kl_chunk(s, t, tau)
    from torch.utils.checkpoint import checkpoint

    return torch.cat([
        checkpoint(_kl_chunk, s[i : i + KL_CHUNK], t[i : i + KL_CHUNK], tau, use_reentrant=False)
        for i in range(0, s.shape[0], KL_CHUNK)
    ])


def distill_loss(
    student_out: ForwardStates,
    teacher_out: ForwardStates | None,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None,
    mapping: Any,
    weights: LossWeights,
) -> dict[str, torch.Tensor]:
    """The boomerang loss and its terms, all scalars (fp32).

    Returns ``loss = ce_w * ce + w_kl * kl + w_cos * cos`` with ``ce`` the next-token cross
    entropy, ``kl = tau^2 * KL(p_t || p_s)`` averaged over real tokens,
    ``cos = sum_j mean_tokens (1 - cos(h_s[j], h_t[b(j)]))`` over the aligned states, and
    ``cos_states`` (``[num_states]``) the per-state terms. ``teacher_out`` may be None when
    ``w_kl == w_cos == 0``; ``kl``/``cos`` are then NaN. ``weights.cos`` must be resolved.
    Padding -- positions with ``attention_mask == 0`` or ``labels == -100`` -- is left out of
    every term (``attention_mask=None``: labels alone decide).
    """
    logits = student_out.logits.float()  # [B, T, V]
    V = logits.shape[-1]
    # A position is padding when its attention_mask is 0 or its label is -100.
    real = labels != -100  # [B, T]
    if attention_mask is not None:
        real = real & attention_mask.bool()
    labels = labels.masked_fill(~real, -100)

    # Cross entropy: real position t predicts real labels[t + 1].
    tgt = labels[:, 1:].masked_fill(~real[:, :-1], -100)  # [B, T-1]
    n_tgt = (tgt != -100).sum().clamp(min=1)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), tgt.reshape(-1), ignore_index=-100,
                         reduction="sum") / n_tgt

    n_real = real.sum().clamp(min=1)
    nan = torch.full((), float("nan"), device=logits.device)
    need_teacher = weights.kl > 0 or (weights.cos or 0.0) > 0
    if teacher_out is None:
        if need_teacher:
            raise ValueError("teacher_out is required when the KL or cosine weight is non-zero")
        loss = weights.ce * ce
        return {"loss": loss, "ce": ce.detach(), "kl": nan, "cos": nan,
                "cos_states": torch.full((len(alignment_pairs(mapping)),), float("nan"))}

    # KL(p_t || p_s) per token, summed over the vocabulary, averaged over real tokens.
    kl_tok = _kl_per_token(logits.reshape(-1, V), teacher_out.logits.reshape(-1, V), weights.tau)
    kl = weights.tau**2 * (kl_tok.view_as(real) * real).sum() / n_real

    # Cosine alignment, one mean over real tokens per aligned state.
    terms = []
    for s_idx, t_idx in alignment_pairs(mapping):
        h_s = student_out.states[s_idx].float()  # [B, T, H]
        h_t = teacher_out.states[t_idx].float()
        c = F.cosine_similarity(h_s, h_t, dim=-1, eps=1e-8)  # [B, T]
        terms.append(((1.0 - c) * real).sum() / n_real)
    cos_states = torch.stack(terms)  # [num_states]
    cos = cos_states.sum()

    loss = weights.ce * ce + weights.kl * kl + float(weights.cos or 0.0) * cos
    return {"loss": loss, "ce": ce.detach(), "kl": kl.detach(), "cos": cos.detach(),
            "cos_states": cos_states.detach()}


# ---------------------------------------------------------------------------------------------
# Data order, schedule, checkpoints
# ---------------------------------------------------------------------------------------------


class _BlockOrder:
    """Sample ``k`` of the run is ``blocks[perm(epoch)[k % n]]`` with ``epoch = k // n``.

    The order depends only on ``seed`` and the sample index, so the data position after a resume
    is just the step number (no sampler state to save).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._perms: dict[int, torch.Tensor] = {}

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep only one epoch
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> torch.Tensor:
        ks = range(start, start + count)
        return torch.stack([self.perm(k // self.n)[k % self.n] for k in ks])


def _lr_lambda(warmup: int, steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup then cosine decay to ``min_ratio`` (a multiplier of the peak lr)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out``, oldest first."""
    root = out / CHECKPOINT_DIR
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("step-") and (p / STATE_FILE).is_file():
                try:
                    found.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(found)


def last_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    cks = _checkpoints(Path(out))
    return cks[-1][1] if cks else None


def _trim_log(log_path: Path, max_step: int) -> None:
    """Drop log lines after ``max_step`` (and a torn last line) so a resumed log stays continuous."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by kill -9
        if int(rec.get("step", 0)) <= max_step:
            keep.append(line)
    tmp = log_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, log_path)


# ---------------------------------------------------------------------------------------------
# Progress and stop
# ---------------------------------------------------------------------------------------------


@dataclass
class DistillProgress:
    """What a progress callback receives, after every step and at the end."""

    step: int
    total: int
    losses: dict[str, float]  # loss, ce, kl, cos of the last logged step
    lr: float
    tokens_per_s: float
    eta_s: float | None
    elapsed_s: float
    event: str = "step"  # step | checkpoint | done | stopped
    checkpoint: Path | None = None


StopSignal = Callable[[], bool] | threading.Event | None


def _stop_requested(stop: StopSignal) -> bool:
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def resolve_teacher(name: str) -> str:
    """The model directory or hub id behind ``--teacher``: a bundled pair's name ("demo",
    "smollm2") stands for its teacher, so ``distill --teacher smollm2`` needs no path."""
    from .loading import NAMED_PAIRS, named_pair_dirs

    if name in NAMED_PAIRS and not Path(name).exists():
        return str(named_pair_dirs(name, None)[0])
    return name


def _load_teacher(name: str) -> tuple[nn.Module, Any]:
    """Teacher model (fp32, CPU; Accelerate moves it) and tokenizer (or None)."""
    from .loading import load_model

    return load_model(name, device="cpu", dtype=torch.float32)


class _DropTiedWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


def _quiet_tied_weight_warning() -> None:
    # accelerate warns at every checkpoint that tied embeddings are saved once; that is expected.
    lg = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, _DropTiedWarning) for f in lg.filters):
        lg.addFilter(_DropTiedWarning())


_ACTIVE_RUNS = 0  # distill() calls running in this process (threads of the dashboard)
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _active_run() -> Iterator[None]:
    global _ACTIVE_RUNS
    with _ACTIVE_LOCK:
        _ACTIVE_RUNS += 1
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_RUNS -= 1


def _make_accelerator(config: DistillConfig):
    from accelerate import Accelerator

    if config.precision == "bf16":
        mp = "bf16"
    elif config.precision == "fp32":
        mp = "no"
    elif os.environ.get("ACCELERATE_MIXED_PRECISION"):
        mp = None  # `accelerate launch` decided
    else:
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    from accelerate.state import AcceleratorState, PartialState

    shared = AcceleratorState._shared_state
    if shared and mp is not None and shared.get("_mixed_precision") != mp:
        # Accelerate keeps one precision per process. An earlier run in this process (a
        # dashboard session, a test) may have set another: reset it, unless a run is active.
        if _ACTIVE_RUNS > 1 or PartialState().num_processes > 1:
            raise BoomerangError(
                f"Another run in this process trains with precision {shared.get('_mixed_precision')!r}; "
                f"wait for it to finish or use the same precision."
            )
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=mp,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,  # we step the scheduler once per optimizer step
    )


def distill(
    config: DistillConfig,
    progress: Callable[[DistillProgress], None] | None = None,
    should_stop: StopSignal = None,
    *,
    blocks: torch.Tensor | None = None,
    show_progress_bar: bool = False,
) -> Path:
    """Train a boomerang student as ``config`` says; return ``OUT/student`` (or, if stopped, the checkpoint).

    ``progress`` is called after every optimizer step with a :class:`DistillProgress`.
    ``should_stop`` (a callable or a ``threading.Event``) is polled after every step; when it
    fires, a checkpoint is written and its directory returned, and ``config.resume=True`` later
    continues from it. ``blocks`` (``[n, seq_len]`` token ids) replaces ``config.data`` for
    callers that already tokenized their corpus.
    """
    with _active_run():
        return _distill(config, progress, should_stop, blocks, show_progress_bar)


def _distill(
    config: DistillConfig,
    progress: Callable[[DistillProgress], None] | None,
    should_stop: StopSignal,
    blocks: torch.Tensor | None,
    show_progress_bar: bool,
) -> Path:
    from accelerate.utils import DistributedType, set_seed
    from tqdm.auto import tqdm

    from . import mapping as mapping_mod
    from .student import init_student, save_student

    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    _quiet_tied_weight_warning()
    out = Path(config.out)
    log_path = out / "log.jsonl"
    ckpt = last_checkpoint(out) if config.resume else None
    if not config.resume and (_checkpoints(out) or (out / "student").exists()):
        raise BoomerangError(
            f"{str(out)!r} already holds a run (checkpoints or a student); pass --resume to "
            "continue it or choose another --out."
        )

    acc = _make_accelerator(config)
    set_seed(config.seed)

    # ---- models -------------------------------------------------------------------------
    teacher_ref = resolve_teacher(config.teacher)
    teacher, tokenizer = _load_teacher(teacher_ref)
    mapping = mapping_mod.LayerMapping.from_rule(
        teacher.config.num_hidden_layers, config.keep_first, config.every, config.keep_last
    )
    student = init_student(teacher, mapping, random_init=config.mode == "random-init")
    student.float().train()
    student.requires_grad_(True)
    for p in frozen_parameters(student, mapping, config.freeze):
        p.requires_grad_(False)
    teacher.eval().requires_grad_(False)
    if hasattr(student.config, "use_cache"):
        student.config.use_cache = False
    s_last, t_last = _last_layer(student), _last_layer(teacher)
    pairs = alignment_pairs(mapping)
    weights = config.effective_weights(len(pairs))
    need_teacher = weights.kl > 0 or weights.cos > 0

    # ---- data ---------------------------------------------------------------------------
    if blocks is None:
        from .data import load_blocks

        if tokenizer is None:
            raise BoomerangError(
                f"The teacher {config.teacher!r} has no tokenizer to tokenize {config.data!r} with; "
                "save one in its folder (tokenizer.save_pretrained)."
            )
        blocks = load_blocks(config.data, tokenizer, config.seq_len, split=config.split,
                             max_blocks=config.max_blocks)
    if blocks.ndim != 2 or blocks.shape[1] < config.seq_len:
        raise BoomerangError(
            f"Training blocks have shape {tuple(blocks.shape)}; expected [n, {config.seq_len}]."
        )
    blocks = blocks[:, : config.seq_len].long()
    vocab = teacher.get_output_embeddings().weight.shape[0]
    if int(blocks.max()) >= vocab or int(blocks.min()) < 0:
        raise BoomerangError(
            f"The data has token ids outside the teacher's vocabulary of {vocab}; was it tokenized "
            "with another tokenizer?"
        )
    order = _BlockOrder(len(blocks), config.seed)

    # ---- optimizer, schedule, accelerate ------------------------------------------------
    trainable = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=config.betas,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(config.warmup, config.steps, config.min_lr_ratio)
    )
    model, opt, sched = acc.prepare(student, opt, sched)
    fsdp = acc.distributed_type == DistributedType.FSDP
    # The frozen teacher is replicated on every device (bf16 under mixed precision: no master
    # weights needed), not wrapped: it has no gradients to sync, and FSDP2 in Accelerate takes
    # one model per run. So the teacher must fit on one device; the student may be sharded.
    if acc.mixed_precision == "bf16":
        teacher = teacher.to(torch.bfloat16)
    teacher = teacher.to(acc.device)

    # ---- resume -------------------------------------------------------------------------
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        saved = [tuple(b) for b in state.get("mapping", mapping.blocks)]
        if saved != list(mapping.blocks):
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} is of a student with layer blocks {saved}, but these "
                f"settings give {list(mapping.blocks)}; resume with the run's own teacher and "
                "keep-first/every/keep-last, or choose another --out."
            )
        saved_freeze = tuple(state.get("freeze", ()))
        if saved_freeze != config.freeze:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was trained with freeze={list(saved_freeze)}, but "
                f"these settings say {list(config.freeze)}; resume with the run's own --freeze."
            )
        acc.load_state(str(ckpt))
        step, tokens_seen = int(state["step"]), int(state["tokens"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        if acc.is_main_process:
            _trim_log(log_path, step)
    elif acc.is_main_process:
        # A fresh run: a log left by a run killed before its first checkpoint starts over.
        out.mkdir(parents=True, exist_ok=True)
        if log_path.exists():
            log_path.unlink()
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / CHECKPOINT_DIR).glob(".tmp-step-*"):  # saves cut short by a kill
            shutil.rmtree(stale, ignore_errors=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    acc.wait_for_everyone()

    world = acc.num_processes
    per_step = config.batch_size * config.grad_accum * world  # sequences per optimizer step
    tokens_per_step = per_step * config.seq_len

    def save_checkpoint(at_step: int, elapsed: float) -> Path:
        root = out / CHECKPOINT_DIR
        final = root / f"step-{at_step:08d}"
        tmp = root / f".tmp-step-{at_step:08d}"
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(
                {"step": at_step, "tokens": tokens_seen, "elapsed_s": elapsed,
                 "mapping": [list(b) for b in mapping.blocks], "freeze": list(config.freeze)}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # atomic: a checkpoint is complete or absent
            for _, old in _checkpoints(out)[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    # ---- loop ---------------------------------------------------------------------------
    bar = tqdm(total=config.steps, initial=step, disable=not (show_progress_bar and acc.is_main_process),
               dynamic_ncols=True)
    last_losses: dict[str, float] = {}
    t0 = time.perf_counter()
    start_step = step
    log_f = open(log_path, "a", encoding="utf-8") if acc.is_main_process else None
    try:
        while step < config.steps:
            logged = {k: 0.0 for k in ("loss", "ce", "kl", "cos")}  # means over micro-batches
            for micro in range(config.grad_accum):
                # Global sample index of this process's micro-batch (data position = step).
                first = step * per_step + (micro * world + acc.process_index) * config.batch_size
                ids = blocks[order.indices(first, config.batch_size)].to(acc.device)  # [B, T]
                mask = torch.ones_like(ids)
                with acc.accumulate(model):
                    s_out = forward_states(model, ids, mask, last_layer=s_last)
                    t_out = None
                    if need_teacher or (step + 1) % config.log_every == 0 or step + 1 == config.steps:
                        with torch.no_grad(), acc.autocast():
                            t_out = forward_states(teacher, ids, mask, last_layer=t_last)
                    terms = distill_loss(s_out, t_out if need_teacher else None, ids, mask,
                                         mapping, weights)
                    if not need_teacher and t_out is not None:
                        # ce-only: report KL/cosine to the teacher for comparison, not trained on.
                        with torch.no_grad():
                            full = distill_loss(s_out, t_out, ids, mask, mapping,
                                                dataclasses.replace(weights, kl=1.0, cos=1.0))
                        terms["kl"], terms["cos"] = full["kl"], full["cos"]
                    acc.backward(terms["loss"])
                    for k in logged:
                        logged[k] = logged[k] + terms[k].detach().float() / config.grad_accum
                    if acc.sync_gradients and config.grad_clip > 0:
                        acc.clip_grad_norm_(model.parameters(), config.grad_clip)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            tokens_seen += tokens_per_step
            elapsed = time.perf_counter() - t0
            tok_s = (step - start_step) * tokens_per_step / max(elapsed, 1e-9)
            lr = sched.get_last_lr()[0]

            if step % config.log_every == 0 or step == config.steps:
                vals = {k: acc.reduce(v.reshape(1), "mean").item() for k, v in logged.items()}
                last_losses = vals
                if log_f is not None:
                    rec = {"step": step, **vals, "lr": lr, "tokens_per_s": round(tok_s, 1),
                           "tokens": tokens_seen, "elapsed_s": round(elapsed_before + elapsed, 2)}
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                bar.set_postfix(loss=f"{vals['loss']:.4g}", kl=f"{vals['kl']:.3g}",
                                cos=f"{vals['cos']:.3g}", refresh=False)
            bar.update(1)

            stop = _stop_requested(should_stop)
            if world > 1:  # every rank must stop at the same step (the checkpoint is collective)
                flag = torch.tensor([float(stop)], device=acc.device)
                stop = bool(acc.reduce(flag, "sum").item() > 0)
            event, ck = "step", None
            if step % config.save_every == 0 or (stop and step < config.steps):
                ck = save_checkpoint(step, elapsed_before + elapsed)
                event = "checkpoint"
            eta = (config.steps - step) * elapsed / max(1, step - start_step)
            if progress is not None and acc.is_main_process:
                progress(DistillProgress(step, config.steps, dict(last_losses), lr, tok_s, eta,
                                         elapsed_before + elapsed, event, ck))
            if stop and step < config.steps:
                if progress is not None and acc.is_main_process:
                    progress(DistillProgress(step, config.steps, dict(last_losses), lr, tok_s, None,
                                             elapsed_before + elapsed, "stopped", ck))
                return ck  # type: ignore[return-value]
    finally:
        bar.close()
        if log_f is not None:
            log_f.close()

    # ---- final student ------------------------------------------------------------------
    student_dir = out / "student"
    acc.wait_for_everyone()
    if fsdp:
        state = acc.get_state_dict(model)
        final_model = None
        if acc.is_main_process:
            from transformers import AutoModelForCausalLM

            final_model = AutoModelForCausalLM.from_config(acc.unwrap_model(model).config)
            res = final_model.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if final_model.config.tie_word_embeddings else set()
            if res.unexpected_keys or set(res.missing_keys) - tied:
                raise RuntimeError(f"gathered student state does not fit its config: {res}")
    else:
        final_model = acc.unwrap_model(model)
    if acc.is_main_process:
        tmp = out / ".tmp-student"
        if tmp.exists():
            shutil.rmtree(tmp)
        final_model = final_model.to("cpu")
        if hasattr(final_model.config, "use_cache"):
            final_model.config.use_cache = True
        provenance = {"mode": config.mode, "steps": step, "tokens": tokens_seen,
                      "data": config.data, "seq_len": config.seq_len, "lr": config.lr,
                      "loss_weights": dataclasses.asdict(weights), "seed": config.seed}
        save_student(final_model, mapping, tmp, tokenizer=tokenizer, teacher=teacher_ref,
                     extra={"distill": provenance})
        if student_dir.exists():
            shutil.rmtree(student_dir)
        os.replace(tmp, student_dir)
        if progress is not None:
            progress(DistillProgress(step, config.steps, dict(last_losses), sched.get_last_lr()[0],
                                     0.0, 0.0, time.perf_counter() - t0 + elapsed_before, "done"))
    acc.wait_for_everyone()
    return student_dir
