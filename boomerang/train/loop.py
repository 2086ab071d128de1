"""Whole-model distillation: the boomerang student trained end to end through Accelerate.

The student (initialised from a subset of the teacher's layers, see
:func:`boomerang.core.init_student`) is trained with the loss of :mod:`.loss`. The objective
(:class:`WholeModel`) uses Hugging Face Accelerate, so one code path runs on CPU (fp32), one GPU
(bf16 autocast) and many GPUs / FSDP via ``accelerate launch`` (see ``configs/``). Its steps run
in the one step loop every objective shares (:mod:`.run`: the folder's checks and lock, resume,
the log, checkpoints, stopping, progress), and its checkpoints (:mod:`.checkpoints`: safetensors
and JSON, written atomically) hold the student's weights, the optimizer and schedule, the RNG
state and the step; the data order is a pure function of ``(seed, step)``, so resuming after
``kill -9`` continues exactly where the last checkpoint left off and ``log.jsonl`` has no
duplicate steps.

Running it::

    python -m boomerang distill --teacher T --data demo --steps 2000 --out runs/x      # CPU / 1 GPU
    accelerate launch --multi_gpu --num_processes 8 -m boomerang distill ...          # DDP
    accelerate launch --config_file configs/accelerate_fsdp.yaml -m boomerang distill ...  # FSDP

``--batch-size`` is per process; add ``--resume`` to continue a run. From code::

    from boomerang import DistillConfig, distill
    student_dir = distill(DistillConfig(teacher=..., data=..., out=...), progress=print)

Output folder: ``config.json``, ``log.jsonl`` (one line per logged step), ``checkpoints/step-N``
(the last ``keep_checkpoints``), and finally ``student/`` (see :func:`boomerang.save_student`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..core import LayerMapping, init_student, load_model, save_student
from ..errors import BoomerangError
from ..eval import check_batch_fits
from ..io import atomic_dir
from ..progress import StopSignal
from ..threads import configure_threads
from ..zoo import resolve_teacher
from . import trackers
from .batches import BlockOrder, training_blocks
from .checkpoints import (
    check_global_batch,
    load_optimizer_state,
    load_rng_state,
    optimizer_state,
    rng_state,
)
from .config import DistillConfig
from .curves import starting_curves, validate, validation_blocks
from .events import DistillProgress
from .local import from_distill_config, local_distill
from .loss import (
    alignment_pairs,
    distill_loss,
    forward_states,
    frozen_parameters,
    last_decoder_layer,
)
from .processes import process_state, use_cpu
from .run import Objective, RunEnd, RunFolder, StepDone, check_out, run_lock, train
from .sharding import full_state, load_shard, save_shard, shard, sharding_requested
from .schedule import lr_multiplier

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


def _load_teacher(name: str) -> tuple[nn.Module, Any]:
    """Teacher model (fp32, CPU; Accelerate moves it) and tokenizer (or None)."""
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


def _make_accelerator(config: DistillConfig) -> Accelerator:
    if config.precision == "bf16":
        mp = "bf16"
    elif config.precision == "fp32":
        mp = "no"
    elif os.environ.get("ACCELERATE_MIXED_PRECISION"):
        mp = None  # `accelerate launch` decided
    else:
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    shared = AcceleratorState._shared_state
    if shared and mp is not None and shared.get("_mixed_precision") != mp:
        # Accelerate keeps one precision per process. An earlier run in this process (a
        # dashboard session, a test) may have set another: reset it, unless a run is active.
        if _ACTIVE_RUNS > 1 or process_state().num_processes > 1:
            raise BoomerangError(
                f"Another run in this process trains with precision {shared.get('_mixed_precision')!r}; "
                f"wait for it to finish or use the same precision."
            )
        AcceleratorState._reset_state()
    acc = Accelerator(
        cpu=use_cpu(),
        mixed_precision=mp,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,  # we step the scheduler once per optimizer step
        **trackers.accelerator_kwargs(config),
    )
    return acc


def distill(
    config: DistillConfig,
    progress: Callable[[DistillProgress], None] | None = None,
    should_stop: StopSignal = None,
    *,
    blocks: torch.Tensor | None = None,
    val_blocks: torch.Tensor | None = None,
    show_progress_bar: bool = False,
) -> Path:
    """Train a boomerang student as ``config`` says; return ``OUT/student`` (or, if stopped, the checkpoint).

    With ``mode="pretrain"`` there is no teacher: a model of the architecture in ``config.teacher``
    starts from random weights and learns by cross-entropy alone (how the demo teacher is made);
    the result is ``OUT/model``.

    ``progress`` is called after every optimizer step with a :class:`DistillProgress`.
    ``should_stop`` (a callable or a ``threading.Event``) is polled after every step; when it
    fires, a checkpoint is written and its directory returned, and ``config.resume=True`` later
    continues from it. ``blocks`` (``[n, seq_len]`` token ids) replaces ``config.data`` for
    callers that already tokenized their corpus, and ``val_blocks`` its validation split.
    """
    with _active_run():
        return _distill(config, progress, should_stop, blocks, val_blocks, show_progress_bar)


def _distill(
    config: DistillConfig,
    progress: Callable[[DistillProgress], None] | None,
    should_stop: StopSignal,
    blocks: torch.Tensor | None,
    val_blocks: torch.Tensor | None,
    show_progress_bar: bool,
) -> Path:
    config.validate()
    configure_threads(config.threads)  # None: the same default as the dashboard and the CLI
    _quiet_tied_weight_warning()
    out = Path(config.out)
    result_dir = out / ("model" if config.mode == "pretrain" else "student")
    if config.mode == "local":  # another objective of the same step loop
        return local_distill(from_distill_config(config), progress, should_stop, blocks=blocks,
                             val_blocks=val_blocks, run_config=config.to_dict(),
                             show_progress_bar=show_progress_bar)
    check_out(config, out, result_dir)
    with run_lock(out):
        objective = WholeModel(config, out, result_dir, blocks, val_blocks)
        return train(objective, config, out, config.to_dict(), progress, should_stop,
                     show_progress_bar=show_progress_bar)


def _load_architecture(ref: str) -> tuple[nn.Module, Any]:
    """A randomly initialised model of the architecture in folder ``ref`` and its tokenizer."""
    path = Path(ref)
    if not (path / "config.json").is_file():
        raise BoomerangError(f"Pretraining needs a folder with config.json and a tokenizer; {ref!r} has no config.json.")
    try:
        model_config = AutoConfig.from_pretrained(ref)
        tokenizer = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise BoomerangError(f"Could not read the architecture or tokenizer in {ref!r}: {e}".split("\n")[0]) from None
    return AutoModelForCausalLM.from_config(model_config, dtype=torch.float32), tokenizer


class WholeModel(Objective):
    """Whole-model distillation, its ablations and pretraining, as an :class:`~.run.Objective`.

    The student (a subset of the teacher's layers, or for pretraining a randomly initialised
    model) trains end to end on the loss of :mod:`.loss`, through Accelerate: one process on
    CPU or GPU, data-parallel in several, or sharded by FSDP (:mod:`.sharding`). A step is one
    optimizer update on ``batch_size x grad_accum x processes`` sequences; this process takes
    the micro-batches at its rank's positions of that global batch.
    """

    bar_fields = ("loss", "kl", "cos")

    def __init__(self, config: DistillConfig, out: Path, result_dir: Path,
                 blocks: torch.Tensor | None, val_blocks: torch.Tensor | None) -> None:
        self.config, self.out, self.result_dir = config, out, result_dir
        self.acc = acc = _make_accelerator(config)
        set_seed(config.seed)

        # ---- models -------------------------------------------------------------------------
        self.teacher_ref = resolve_teacher(config.teacher)
        teacher: nn.Module | None
        if config.mode == "pretrain":
            teacher, mapping = None, None
            student, self.tokenizer = _load_architecture(self.teacher_ref)
        else:
            teacher, self.tokenizer = _load_teacher(self.teacher_ref)
            mapping = LayerMapping.from_rule(
                teacher.config.num_hidden_layers, config.keep_first, config.every, config.keep_last
            )
            student = init_student(teacher, mapping, random_init=config.mode == "random-init")
            teacher.eval().requires_grad_(False)
        self.mapping = mapping
        student.float().train()
        student.requires_grad_(True)
        if mapping is not None:
            for p in frozen_parameters(student, mapping, config.freeze):
                p.requires_grad_(False)
        if hasattr(student.config, "use_cache"):
            student.config.use_cache = False
        self.s_last = last_decoder_layer(student)
        self.t_last = last_decoder_layer(teacher) if teacher is not None else None
        check_batch_fits(student, config.batch_size, config.seq_len, training=True)
        self.weights = config.effective_weights(len(alignment_pairs(mapping)) if mapping is not None else 1)
        self.need_teacher = self.weights.kl > 0 or self.weights.cos > 0
        self.blocks_of = [list(b) for b in mapping.blocks] if mapping is not None else []

        # ---- data ---------------------------------------------------------------------------
        self.blocks = training_blocks(config.data, self.tokenizer, config.seq_len, config.split, config.max_blocks,
                                      student.get_output_embeddings().weight.shape[0], blocks, config.teacher)
        self.order = BlockOrder(len(self.blocks), config.seed)
        self.val_blocks = validation_blocks(config, self.tokenizer, val_blocks)

        # ---- sharding, optimizer, schedule, accelerate ---------------------------------------
        # An FSDP launch shards the student here (see .sharding), on CPUs as on GPUs, before the
        # optimizer is made: its parameters become this process's slices.
        self.sharded = sharding_requested()
        if self.sharded:
            student.to(acc.device)
            if acc.num_processes > 1:
                shard(student, acc.device, acc.num_processes)
        trainable = [p for p in student.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=config.betas,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_multiplier(s, config.warmup, config.steps, config.min_lr_ratio)
        )
        if self.sharded:  # FSDP averages the gradients itself: nothing for Accelerate to wrap
            self.model, self.opt, self.sched = student, opt, sched
        else:
            self.model, self.opt, self.sched = acc.prepare(student, opt, sched)
        # The frozen teacher is replicated on every device (bf16 under mixed precision: no master
        # weights needed), neither wrapped nor sharded: it has no gradients to sync. So the teacher
        # must fit on one device; the student may be sharded.
        if teacher is not None:
            if acc.mixed_precision == "bf16":
                teacher = teacher.to(torch.bfloat16)
            teacher = teacher.to(acc.device)
        self.teacher = teacher
        self.world = acc.num_processes
        self.per_step = config.batch_size * config.grad_accum * self.world  # sequences per optimizer step

    # ---- resume ---------------------------------------------------------------------------

    def check(self, ckpt: Path, state: dict[str, Any]) -> None:
        """A checkpoint resumes in any number of processes that keeps its global batch (sequences
        per optimizer step: batch size x gradient accumulation x processes): the data order and the
        averaged gradient depend on that product alone; a sharded one resumes sharded, in as many
        processes as wrote it."""
        config, sharded, world = self.config, self.sharded, self.world
        check_global_batch(ckpt, state, self.per_step, "batch size x gradient accumulation")
        if bool(state.get("sharded")) != sharded or (sharded and state.get("world_size") != world):
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was written "
                + (f"sharded (FSDP) by {state.get('world_size')} processes" if state.get("sharded") else "unsharded")
                + f", but this launch is {'sharded (FSDP)' if sharded else 'unsharded'} with {world}; "
                "resume it as it was launched.")
        saved = [list(b) for b in state.get("mapping", self.blocks_of)]
        if saved != self.blocks_of:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} is of a student with layer blocks {saved}, but these "
                f"settings give {self.blocks_of}; resume with the run's own teacher and "
                "keep-first/every/keep-last, or choose another --out."
            )
        saved_freeze = tuple(state.get("freeze", ()))
        if saved_freeze != config.freeze:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was trained with freeze={list(saved_freeze)}, but "
                f"these settings say {list(config.freeze)}; resume with the run's own --freeze."
            )

    def load(self, ckpt: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> None:
        """Restore weights, optimizer, schedule and RNG (a sharded checkpoint: this process's shard)."""
        if state.get("sharded"):
            load_shard(ckpt, self.acc.process_index, self.model, self.opt, state)
            self.sched.load_state_dict(state["scheduler"])
            return
        if tensors is None:  # written by an earlier version: Accelerate's own state
            self.acc.load_state(str(ckpt))
            return
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        res = self.acc.unwrap_model(self.model).load_state_dict(weights, strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise ValueError(f"its weights do not fit this student (missing {res.missing_keys[:3]}, "
                             f"unexpected {res.unexpected_keys[:3]})")
        load_optimizer_state(self.opt, tensors, state)
        self.sched.load_state_dict(state["scheduler"])
        load_rng_state(tensors)

    def begin(self, step: int) -> None:
        """Open the trackers; on a fresh run with validation, record where the boomerang starts:
        the student as initialised and the pruned teacher (``curves.jsonl``)."""
        trackers.start(self.acc, self.config)
        if self.val_blocks is not None and step == 0 and self.teacher is not None and self.mapping is not None:
            student = self._whole_student()
            if student is not None:
                starting_curves(self.out, self.teacher, student, self.mapping, self.val_blocks, self.config.batch_size)
        self.acc.wait_for_everyone()

    def _whole_student(self) -> nn.Module | None:
        """The student as one module, on the main process (None on the others): the prepared model
        unwrapped, or a sharded one gathered whole from every process's slices (collective), on
        this process's device. So the curve and the final save see the same student however it trains."""
        acc = self.acc
        if not self.sharded:
            return acc.unwrap_model(self.model) if acc.is_main_process else None
        whole = full_state(self.model)  # collective: every process gathers
        if not acc.is_main_process:
            return None
        student = AutoModelForCausalLM.from_config(self.model.config)
        res = student.load_state_dict(whole, strict=False)
        tied = {"lm_head.weight"} if student.config.tie_word_embeddings else set()
        if res.unexpected_keys or set(res.missing_keys) - tied:
            raise RuntimeError(f"gathered student state does not fit its config: {res}")
        return student.to(acc.device)

    # ---- one step -------------------------------------------------------------------------

    def tokens_after(self, step: int) -> int:
        return step * self.per_step * self.config.seq_len

    def step(self, step: int, elapsed_s: float, reported: bool) -> StepDone:
        config, acc, model, teacher, mapping = self.config, self.acc, self.model, self.teacher, self.mapping
        mean: dict[str, Any] = {}  # the loss terms' means over the micro-batches
        for micro in range(config.grad_accum):
            # Global sample index of this process's micro-batch (data position = step).
            first = step * self.per_step + (micro * self.world + acc.process_index) * config.batch_size
            ids = self.blocks[self.order.indices(first, config.batch_size)].to(acc.device)  # [B, T]
            mask = torch.ones_like(ids)
            if self.sharded:  # reduce-scatter the gradients once, after the last micro-batch
                model.set_requires_gradient_sync(micro == config.grad_accum - 1)
            with acc.accumulate(model):
                s_out = forward_states(model, ids, mask, last_layer=self.s_last)
                t_out = None
                if teacher is not None and (self.need_teacher or reported):
                    with torch.no_grad(), acc.autocast():
                        t_out = forward_states(teacher, ids, mask, last_layer=self.t_last)
                terms = distill_loss(s_out, t_out if self.need_teacher else None, ids, mask, mapping, self.weights)
                if not self.need_teacher and t_out is not None and mapping is not None:
                    # ce-only: report KL/cosine to the teacher for comparison, not trained on.
                    with torch.no_grad():
                        full = distill_loss(s_out, t_out, ids, mask, mapping,
                                            dataclasses.replace(self.weights, kl=1.0, cos=1.0))
                    terms["kl"], terms["cos"] = full["kl"], full["cos"]
                acc.backward(terms["loss"])
                for k in ("loss", "ce", "kl", "cos"):
                    mean[k] = mean.get(k, 0.0) + terms[k].detach().float() / config.grad_accum
                if acc.sync_gradients:
                    if config.grad_clip > 0:  # torch's clip knows sharded gradients (the norm of the whole)
                        clip = torch.nn.utils.clip_grad_norm_ if self.sharded else acc.clip_grad_norm_
                        clip(model.parameters(), config.grad_clip)
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return StepDone(self.sched.get_last_lr()[0], mean)

    def reduce(self, terms: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: self.acc.reduce(v.reshape(1), "mean").item() for k, v in terms.items()}

    def evaluate(self, step: int, tokens: int) -> dict[str, float]:
        """The validation perplexities of the student and, with a teacher, its whole last-to-first
        curve, appended to ``curves.jsonl``: measured by the main process on the whole student.
        (Only a run with ``eval_every`` is asked, so it has its validation blocks.)"""
        student = self._whole_student()
        if student is None:
            return {}
        return validate(self.out, student, self.teacher, self.mapping, self.val_blocks, self.config.batch_size,
                        step, tokens, self.acc.autocast)

    def logged(self, record: dict[str, Any]) -> None:
        trackers.log(self.acc, self.config, record, record["step"])

    def checkpoint(self, folder: RunFolder, step: int, record: dict[str, Any]) -> Path:
        opt, sched = self.opt, self.sched
        record = {**record, "mapping": self.blocks_of, "freeze": list(self.config.freeze),
                  "global_batch": self.per_step}
        if self.sharded:  # each process writes its slices; the state file says how many there are
            return folder.checkpoint(
                step, lambda: ({**record, **optimizer_state(opt)[1], "scheduler": sched.state_dict(), "sharded": True},
                               None),
                write_more=lambda d: save_shard(d, self.acc.process_index, self.model, opt))

        def contents() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            opt_tensors, opt_record = optimizer_state(opt)
            weights = {f"model.{k}": v for k, v in self.acc.unwrap_model(self.model).state_dict().items()}
            return {**record, **opt_record, "scheduler": sched.state_dict()}, {**weights, **opt_tensors, **rng_state()}

        return folder.checkpoint(step, contents)

    # ---- the result -----------------------------------------------------------------------

    def finish(self, end: RunEnd) -> Path:
        """Save the student (``OUT/student``, :func:`boomerang.save_student`) or the pretrained
        model (``OUT/model``), gathered whole from a sharded run."""
        acc, config = self.acc, self.config
        acc.wait_for_everyone()
        final_model = self._whole_student()
        if acc.is_main_process:
            final_model = final_model.to("cpu")
            if hasattr(final_model.config, "use_cache"):
                final_model.config.use_cache = True
            provenance = {"mode": config.mode, "steps": end.step, "tokens": end.tokens,
                          "data": config.data, "seq_len": config.seq_len, "lr": config.lr,
                          "loss_weights": dataclasses.asdict(self.weights), "seed": config.seed}
            if self.mapping is None:  # pretrained from scratch: an ordinary model folder
                with atomic_dir(self.result_dir) as tmp:
                    final_model.save_pretrained(tmp, safe_serialization=True)
                    if self.tokenizer is not None:
                        self.tokenizer.save_pretrained(tmp)
                    (tmp / "training.json").write_text(json.dumps({"pretrain": provenance}, indent=2) + "\n")
            else:
                save_student(final_model, self.mapping, self.result_dir, tokenizer=self.tokenizer,
                             teacher=self.teacher_ref, extra={"distill": provenance})
        acc.wait_for_everyone()
        return self.result_dir

    def close(self) -> None:
        trackers.finish(self.acc)
