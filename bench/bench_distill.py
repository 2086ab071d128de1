"""Benchmark: distillation throughput (tokens/s) and, on a GPU, model-FLOPs utilisation.

CPU: a randomly initialised teacher of the demo teacher's shape (Llama, 12 layers, hidden 96,
vocab 2048; student 7 layers), ``seq_len`` 128, batch 16, fp32, through :func:`boomerang.train.distill`
exactly as the CLI runs it (teacher forward + student forward/backward + AdamW).

GPU (when CUDA is present): a teacher of SmolLM2-135M's shape (30 layers, hidden 576, 9/3
heads, vocab 49,152, tied embeddings; random weights: throughput does not depend on them),
student 16 layers, bf16 autocast, ``seq_len`` 1024. MFU counts the student's training FLOPs
(6 N + 12 L d T per token) plus the teacher's forward FLOPs (2 N + 4 L d T), with N the
non-embedding parameters plus the head, against the GPU's dense bf16 peak.

Prints figures, asserts nothing. Run: ``.venv/bin/python bench/bench_distill.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from boomerang.core import LayerMapping
from boomerang.train import DistillConfig, DistillProgress, distill

# Dense bf16 peak FLOP/s (no sparsity) by device-name substring.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
             "RTX 4090": 165e12}


def make_teacher(root: Path, **shape) -> str:
    """Save a random Llama teacher of the given shape under ``root``; returns its folder."""
    torch.manual_seed(0)
    cfg = LlamaConfig(tie_word_embeddings=True, max_position_embeddings=2048, **shape)
    LlamaForCausalLM(cfg).save_pretrained(root / "teacher")
    return str(root / "teacher")


def train_flops_per_token(cfg: LlamaConfig, num_layers: int, seq_len: int, train: bool) -> float:
    """Matmul FLOPs per token of a forward (x1) or forward+backward (x3) pass, PaLM-style."""
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f  # q,o + k,v + gate,up,down
    n = num_layers * per_layer + v * d  # + the head matmul (tied, but still computed)
    attn = 2 * num_layers * d * seq_len  # QK^T and AV, multiply-adds counted as 2 below
    fwd = 2 * n + 2 * attn
    return 3 * fwd if train else fwd


def run(teacher: str, steps: int, seq_len: int, batch: int, precision: str, skip: int) -> dict[str, float]:
    """Distill for ``steps`` steps; returns steady-state tokens/s (after ``skip`` steps)."""
    marks: list[tuple[int, float]] = []

    def progress(p: DistillProgress) -> None:
        if p.event != "done":
            marks.append((p.step, time.perf_counter()))

    vocab = LlamaConfig.from_pretrained(teacher).vocab_size
    blocks = torch.randint(0, vocab, (max(64, batch * 4), seq_len),
                           generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as out:
        cfg = DistillConfig(teacher=teacher, out=out, steps=steps, seq_len=seq_len,
                            batch_size=batch, warmup=2, save_every=10**9, log_every=5,
                            precision=precision)
        t0 = time.perf_counter()
        distill(cfg, progress=progress, blocks=blocks)
        total = time.perf_counter() - t0
    (s0, t_a), (s1, t_b) = marks[skip - 1], marks[-1]
    tok_s = (s1 - s0) * batch * seq_len / (t_b - t_a)
    return {"tokens_per_s": tok_s, "step_s": (t_b - t_a) / (s1 - s0), "wall_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--gpu-steps", type=int, default=40)
    ap.add_argument("--gpu-batch", type=int, default=16)
    ap.add_argument("--gpu-seq-len", type=int, default=1024)
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: on a shared machine more threads can be far slower)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.no_cpu:
            shape = dict(vocab_size=2048, hidden_size=96, intermediate_size=256,
                         num_hidden_layers=12, num_attention_heads=4, num_key_value_heads=4)
            teacher = make_teacher(root / "cpu", **shape)
            r = run(teacher, args.steps, seq_len=128, batch=16, precision="fp32", skip=5)
            print(f"CPU  demo-shaped teacher (12x96) -> 7-layer student, 16x128 tokens/step, "
                  f"{torch.get_num_threads()} threads: {r['tokens_per_s']:,.0f} tokens/s "
                  f"({r['step_s'] * 1000:.0f} ms/step; {args.steps} steps in {r['wall_s']:.1f} s "
                  f"incl. load and save)")

        if not torch.cuda.is_available():
            print("GPU  not measured: CUDA is not available on this machine.")
            return
        shape = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                     num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
        teacher = make_teacher(root / "gpu", **shape)
        seq, batch = args.gpu_seq_len, args.gpu_batch
        r = run(teacher, args.gpu_steps, seq_len=seq, batch=batch, precision="bf16", skip=10)
        cfg = LlamaConfig(**shape)
        n_s = LayerMapping.from_rule(30).num_student_layers
        flops_tok = train_flops_per_token(cfg, n_s, seq, True) + train_flops_per_token(cfg, 30, seq, False)
        achieved = flops_tok * r["tokens_per_s"]
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        mfu = f", MFU {achieved / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else ""
        print(f"GPU  {name}: SmolLM2-135M-shaped teacher (30 layers) -> {n_s}-layer student, bf16, "
              f"{batch}x{seq} tokens/step: {r['tokens_per_s']:,.0f} tokens/s "
              f"({r['step_s'] * 1000:.0f} ms/step), {achieved / 1e12:.1f} TFLOP/s{mfu}; "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
