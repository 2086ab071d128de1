"""The training loop: a resumable Accelerate loop around the boomerang loss.

The student (initialised from a subset of the teacher's layers, see
:func:`boomerang.core.init_student`) is trained with the loss of :mod:`.loss`. The loop uses
Hugging Face Accelerate, so one code path runs on CPU (fp32), one GPU (bf16 autocast) and many
GPUs / FSDP via ``accelerate launch`` (see ``configs/``). Around the steps the run lives the life
every objective shares (:mod:`.run`: the folder's checks and lock, the log, stopping), and its
checkpoints (:mod:`.checkpoints`: safetensors and JSON, written atomically) hold the student's
weights, the optimizer and schedule, the RNG state and the step; the data order is a pure
function of ``(seed, step)``, so resuming after ``kill -9`` continues exactly where the last
checkpoint left off and ``log.jsonl`` has no duplicate steps.

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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..core import LayerMapping, init_student, load_model, save_student
from ..data import load_blocks
from ..errors import BoomerangError
from ..eval import check_batch_fits, perplexity
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
    read_checkpoint,
    rng_state,
)
from .config import DistillConfig
from .curves import (
    append_curve,
    curve_record,
    eval_pair,
    pruning_record,
    sequential_perplexities,
)
from .events import DistillProgress, progress_event
from .local import from_distill_config, local_distill
from .loss import (
    alignment_pairs,
    distill_loss,
    forward_states,
    frozen_parameters,
    last_decoder_layer,
)
from .processes import Peers, process_state, use_cpu
from .run import RunFolder, check_out, run_lock
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
    if config.mode == "local":  # its own run of the same life (lock, checks, checkpoints)
        return local_distill(from_distill_config(config), progress, should_stop, blocks=blocks,
                             run_config=config.to_dict())
    check_out(config, out, result_dir)
    with run_lock(out):
        return _train(config, progress, should_stop, blocks, val_blocks, show_progress_bar, out, result_dir)


def patched_sizes(mapping: LayerMapping) -> list[int]:
    """The few sizes watched during training: ``k`` student layers patched last-to-first at about
    a third and two thirds of the way from student to teacher (distinct, strictly between)."""
    n = mapping.num_student_layers
    return sorted({k for k in (round(n / 3), round(2 * n / 3)) if 0 < k < n})


def _validate(acc: Accelerator, model: nn.Module, teacher: nn.Module | None, mapping: LayerMapping | None,
              val_blocks: torch.Tensor, batch_size: int, sharded: bool, step: int, tokens: int,
              ) -> tuple[dict[str, float], dict[str, Any] | None]:
    """Validation of the student in training: ``({"val_ppl": ..., "val_ppl_k<k>": ...}, curve)``.

    ``val_ppl`` is the student's perplexity; with a teacher, the whole last-to-first curve is
    measured too (see :mod:`.curves`: its line of ``curves.jsonl``, and the patched sizes of
    :func:`patched_sizes` as ``val_ppl_k<k>``). Not with a sharded student (no whole copy)."""
    with acc.autocast():
        out = {"val_ppl": perplexity(model, val_blocks, batch_size=batch_size).perplexity}
    if teacher is None or mapping is None or sharded:
        return out, None
    pair = eval_pair(teacher, acc.unwrap_model(model), mapping)
    per_k = sequential_perplexities(pair, val_blocks, "last-to-first", batch_size)
    out.update({f"val_ppl_k{k}": per_k[k] for k in patched_sizes(mapping)})
    return out, curve_record(pair, per_k, step, tokens)


def _resume(acc: Accelerator, model: nn.Module, opt: Any, sched: Any, out: Path, blocks_of: list[list[int]],
            config: DistillConfig, global_batch: int, sharded: bool) -> dict[str, Any] | None:
    """Restore the newest checkpoint that reads back into the prepared model, optimizer and
    schedule; its state, or None when the run has none.

    A checkpoint resumes in any number of processes that keeps its global batch (sequences per
    optimizer step: batch size x gradient accumulation x processes): the data order and the
    averaged gradient depend on that product alone; a sharded one resumes sharded, in as many
    processes as wrote it."""

    def check(ckpt: Path, state: dict[str, Any]) -> None:
        check_global_batch(ckpt, state, global_batch, "batch size x gradient accumulation")
        if bool(state.get("sharded")) != sharded or (sharded and state.get("world_size") != acc.num_processes):
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was written "
                + (f"sharded (FSDP) by {state.get('world_size')} processes" if state.get("sharded") else "unsharded")
                + f", but this launch is {'sharded (FSDP)' if sharded else 'unsharded'} with {acc.num_processes}; "
                "resume it as it was launched.")
        saved = [list(b) for b in state.get("mapping", blocks_of)]
        if saved != blocks_of:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} is of a student with layer blocks {saved}, but these "
                f"settings give {blocks_of}; resume with the run's own teacher and "
                "keep-first/every/keep-last, or choose another --out."
            )
        saved_freeze = tuple(state.get("freeze", ()))
        if saved_freeze != config.freeze:
            raise BoomerangError(
                f"The checkpoint {str(ckpt)!r} was trained with freeze={list(saved_freeze)}, but "
                f"these settings say {list(config.freeze)}; resume with the run's own --freeze."
            )

    def load(ckpt: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor] | None) -> None:
        if state.get("sharded"):
            load_shard(ckpt, acc.process_index, model, opt, state)
            sched.load_state_dict(state["scheduler"])
            return
        if tensors is None:  # written by an earlier version: Accelerate's own state
            acc.load_state(str(ckpt))
            return
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        res = acc.unwrap_model(model).load_state_dict(weights, strict=False)
        if res.missing_keys or res.unexpected_keys:
            raise ValueError(f"its weights do not fit this student (missing {res.missing_keys[:3]}, "
                             f"unexpected {res.unexpected_keys[:3]})")
        load_optimizer_state(opt, tensors, state)
        sched.load_state_dict(state["scheduler"])
        load_rng_state(tensors)

    found = read_checkpoint(out, check, load, Peers())
    return None if found is None else found[1]


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


def _train(
    config: DistillConfig,
    progress: Callable[[DistillProgress], None] | None,
    should_stop: StopSignal,
    blocks: torch.Tensor | None,
    val_blocks: torch.Tensor | None,
    show_progress_bar: bool,
    out: Path,
    result_dir: Path,
) -> Path:
    pretrain = config.mode == "pretrain"
    acc = _make_accelerator(config)
    set_seed(config.seed)

    # ---- models -------------------------------------------------------------------------
    teacher_ref = resolve_teacher(config.teacher)
    if pretrain:
        teacher = None
        student, tokenizer = _load_architecture(teacher_ref)
        mapping = None
    else:
        teacher, tokenizer = _load_teacher(teacher_ref)
        mapping = LayerMapping.from_rule(
            teacher.config.num_hidden_layers, config.keep_first, config.every, config.keep_last
        )
        student = init_student(teacher, mapping, random_init=config.mode == "random-init")
        teacher.eval().requires_grad_(False)
    student.float().train()
    student.requires_grad_(True)
    if mapping is not None:
        for p in frozen_parameters(student, mapping, config.freeze):
            p.requires_grad_(False)
    if hasattr(student.config, "use_cache"):
        student.config.use_cache = False
    s_last = last_decoder_layer(student)
    t_last = last_decoder_layer(teacher) if teacher is not None else None
    check_batch_fits(student, config.batch_size, config.seq_len, training=True)
    weights = config.effective_weights(len(alignment_pairs(mapping)) if mapping is not None else 1)
    need_teacher = weights.kl > 0 or weights.cos > 0
    blocks_of = [list(b) for b in mapping.blocks] if mapping is not None else []

    # ---- data ---------------------------------------------------------------------------
    blocks = training_blocks(config.data, tokenizer, config.seq_len, config.split, config.max_blocks,
                             student.get_output_embeddings().weight.shape[0], blocks, config.teacher)
    order = BlockOrder(len(blocks), config.seed)
    if not config.eval_every:
        val_blocks = None
    elif val_blocks is not None:
        val_blocks = val_blocks[:, : config.seq_len].long()
    else:
        if tokenizer is None:
            raise BoomerangError("--eval-every needs a tokenizer to read the validation text with.")
        val_blocks = load_blocks(config.data, tokenizer, config.seq_len, split="validation",
                                 max_blocks=config.eval_blocks)

    # ---- sharding, optimizer, schedule, accelerate ---------------------------------------
    # An FSDP launch shards the student here (see .sharding), on CPUs as on GPUs, before the
    # optimizer is made: its parameters become this process's slices.
    sharded = sharding_requested()
    if sharded:
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
    if sharded:  # FSDP averages the gradients itself: nothing for Accelerate to wrap
        model = student
    else:
        model, opt, sched = acc.prepare(student, opt, sched)
    # The frozen teacher is replicated on every device (bf16 under mixed precision: no master
    # weights needed), neither wrapped nor sharded: it has no gradients to sync. So the teacher
    # must fit on one device; the student may be sharded.
    if teacher is not None:
        if acc.mixed_precision == "bf16":
            teacher = teacher.to(torch.bfloat16)
        teacher = teacher.to(acc.device)

    # ---- resume -------------------------------------------------------------------------
    world = acc.num_processes
    peers = Peers()  # the same process group as the Accelerator's
    per_step = config.batch_size * config.grad_accum * world  # sequences per optimizer step
    tokens_per_step = per_step * config.seq_len
    step, tokens_seen, elapsed_before = 0, 0, 0.0
    state = _resume(acc, model, opt, sched, out, blocks_of, config, per_step, sharded) if config.resume else None
    if state is not None:
        step, tokens_seen = int(state["step"]), int(state["tokens"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
    folder = RunFolder(out, peers, config.keep_checkpoints)
    folder.begin(step if state is not None else None, config.to_dict())
    trackers.start(acc, config)
    if val_blocks is not None and step == 0 and teacher is not None and mapping is not None and not sharded \
            and acc.is_main_process:
        # Where the boomerang starts: the student as initialised, and the pruned teacher.
        pair = eval_pair(teacher, acc.unwrap_model(model), mapping)
        append_curve(out, pruning_record(pair, val_blocks, config.batch_size))
        append_curve(out, curve_record(pair, sequential_perplexities(pair, val_blocks, "last-to-first",
                                                                     config.batch_size), 0, 0))
    acc.wait_for_everyone()

    def save_checkpoint(at_step: int, elapsed: float) -> Path:
        record = {"tokens": tokens_seen, "elapsed_s": elapsed, "mapping": blocks_of, "freeze": list(config.freeze),
                  "global_batch": per_step}
        if sharded:  # each process writes its slices; the state file says how many there are
            return folder.checkpoint(
                at_step, lambda: ({**record, **optimizer_state(opt)[1], "scheduler": sched.state_dict(), "sharded": True},
                                  None),
                write_more=lambda d: save_shard(d, acc.process_index, model, opt))

        def contents() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
            opt_tensors, opt_record = optimizer_state(opt)
            weights = {f"model.{k}": v for k, v in acc.unwrap_model(model).state_dict().items()}
            return {**record, **opt_record, "scheduler": sched.state_dict()}, {**weights, **opt_tensors, **rng_state()}

        return folder.checkpoint(at_step, contents)

    # ---- loop ---------------------------------------------------------------------------
    bar = tqdm(total=config.steps, initial=step, disable=not (show_progress_bar and acc.is_main_process),
               dynamic_ncols=True)
    last_losses: dict[str, float] = {}
    t0 = time.perf_counter()
    start_step = step
    try:
        while step < config.steps:
            logged = {k: 0.0 for k in ("loss", "ce", "kl", "cos")}  # means over micro-batches
            for micro in range(config.grad_accum):
                # Global sample index of this process's micro-batch (data position = step).
                first = step * per_step + (micro * world + acc.process_index) * config.batch_size
                ids = blocks[order.indices(first, config.batch_size)].to(acc.device)  # [B, T]
                mask = torch.ones_like(ids)
                if sharded:  # reduce-scatter the gradients once, after the last micro-batch
                    model.set_requires_gradient_sync(micro == config.grad_accum - 1)
                with acc.accumulate(model):
                    s_out = forward_states(model, ids, mask, last_layer=s_last)
                    t_out = None
                    report_teacher = (step + 1) % config.log_every == 0 or step + 1 == config.steps
                    if teacher is not None and (need_teacher or report_teacher):
                        with torch.no_grad(), acc.autocast():
                            t_out = forward_states(teacher, ids, mask, last_layer=t_last)
                    terms = distill_loss(s_out, t_out if need_teacher else None, ids, mask,
                                         mapping, weights)
                    if not need_teacher and t_out is not None and mapping is not None:
                        # ce-only: report KL/cosine to the teacher for comparison, not trained on.
                        with torch.no_grad():
                            full = distill_loss(s_out, t_out, ids, mask, mapping,
                                                dataclasses.replace(weights, kl=1.0, cos=1.0))
                        terms["kl"], terms["cos"] = full["kl"], full["cos"]
                    acc.backward(terms["loss"])
                    for k in logged:
                        logged[k] = logged[k] + terms[k].detach().float() / config.grad_accum
                    if acc.sync_gradients:
                        if config.grad_clip > 0:  # torch's clip knows sharded gradients (the norm of the whole)
                            clip = torch.nn.utils.clip_grad_norm_ if sharded else acc.clip_grad_norm_
                            clip(model.parameters(), config.grad_clip)
                        opt.step()
                        opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            tokens_seen += tokens_per_step
            elapsed = time.perf_counter() - t0
            tok_s = (step - start_step) * tokens_per_step / max(elapsed, 1e-9)
            lr = sched.get_last_lr()[0]

            val_ppl: dict[str, float] = {}
            if val_blocks is not None and (step % config.eval_every == 0 or step == config.steps):
                val_ppl, curve = _validate(acc, model, teacher, mapping, val_blocks, config.batch_size, sharded,
                                           step, tokens_seen)
                if curve is not None and acc.is_main_process:
                    append_curve(out, curve)
            if step % config.log_every == 0 or step == config.steps or val_ppl:
                vals = {k: acc.reduce(v.reshape(1), "mean").item() for k, v in logged.items()}
                last_losses = vals
                rec = {"step": step, **vals, "lr": lr, "tokens_per_s": round(tok_s, 1),
                       "tokens": tokens_seen, "world_size": world, "elapsed_s": round(elapsed_before + elapsed, 2)}
                rec.update({k: round(v, 4) for k, v in val_ppl.items()})
                folder.log(rec)
                if acc.is_main_process:
                    trackers.log(acc, config, rec, step)
                bar.set_postfix(loss=f"{vals['loss']:.4g}", kl=f"{vals['kl']:.3g}",
                                cos=f"{vals['cos']:.3g}", refresh=False)
            bar.update(1)

            stop = folder.stop_now(should_stop)
            event, ck = "step", None
            if step % config.save_every == 0 or (stop and step < config.steps):
                ck = save_checkpoint(step, elapsed_before + elapsed)
                event = "checkpoint"
            eta = (config.steps - step) * elapsed / max(1, step - start_step)
            if progress is not None and acc.is_main_process:
                progress(progress_event(step, config.steps, last_losses, lr, tok_s, eta,
                                   elapsed_before + elapsed, event, ck))
            if stop and step < config.steps:
                if progress is not None and acc.is_main_process:
                    progress(progress_event(step, config.steps, last_losses, lr, tok_s, None,
                                       elapsed_before + elapsed, "stopped", ck))
                return ck  # type: ignore[return-value]
    finally:
        bar.close()
        folder.close()
        trackers.finish(acc)

    # ---- final model --------------------------------------------------------------------
    acc.wait_for_everyone()
    if sharded:
        whole = full_state(model)  # collective: every process gathers
        final_model = None
        if acc.is_main_process:
            final_model = AutoModelForCausalLM.from_config(model.config)
            res = final_model.load_state_dict(whole, strict=False)
            tied = {"lm_head.weight"} if final_model.config.tie_word_embeddings else set()
            if res.unexpected_keys or set(res.missing_keys) - tied:
                raise RuntimeError(f"gathered student state does not fit its config: {res}")
    else:
        final_model = acc.unwrap_model(model)
    if acc.is_main_process:
        final_model = final_model.to("cpu")
        if hasattr(final_model.config, "use_cache"):
            final_model.config.use_cache = True
        provenance = {"mode": config.mode, "steps": step, "tokens": tokens_seen,
                      "data": config.data, "seq_len": config.seq_len, "lr": config.lr,
                      "loss_weights": dataclasses.asdict(weights), "seed": config.seed}
        if mapping is None:  # pretrained from scratch: an ordinary model folder
            with atomic_dir(result_dir) as tmp:
                final_model.save_pretrained(tmp, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
                (tmp / "training.json").write_text(json.dumps({"pretrain": provenance}, indent=2) + "\n")
        else:
            save_student(final_model, mapping, result_dir, tokenizer=tokenizer, teacher=teacher_ref,
                         extra={"distill": provenance})
        if progress is not None:
            progress(progress_event(step, config.steps, last_losses, sched.get_last_lr()[0],
                               0.0, 0.0, time.perf_counter() - t0 + elapsed_before, "done"))
    acc.wait_for_everyone()
    return result_dir
