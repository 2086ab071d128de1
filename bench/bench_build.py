"""Benchmark: building an intermediate model is pure bookkeeping.

Prints, for a 24-layer Llama-shaped teacher (hidden 256) and its 13-layer boomerang student:
the time of ``pair.build`` for several patch sets, the time of ``copy.deepcopy(teacher)`` and of
the reference implementation's approach (deep-copy the student, splice deep copies of the
teacher blocks in), and the bytes each allocates. Targets: <= 2 ms per build, and <= 5% of the
time to deep-copy the teacher, with 0 bytes copied.

Run: ``.venv/bin/python bench/bench_build.py``
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import boomerang as bm  # noqa: E402
from oracles import assemble_by_hand  # noqa: E402  (the reference's deep copy + splice, from tests/)


def timed(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def new_bytes(model, *sources) -> int:
    """Bytes of ``model``'s parameters that are not storage of ``sources``."""
    ptrs = {p.untyped_storage().data_ptr() for s in sources for p in s.parameters()}
    return sum(p.numel() * p.element_size() for p in model.parameters()
               if p.untyped_storage().data_ptr() not in ptrs)


def main() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=24,
                      num_attention_heads=8, num_key_value_heads=4, vocab_size=8192)
    teacher = LlamaForCausalLM(cfg).eval()
    mapping = bm.LayerMapping.from_rule(24, 0, 2, 2)
    student = bm.init_student(teacher, mapping).eval()
    pair = bm.BoomerangPair(teacher, student, mapping)
    n = mapping.num_student_layers
    size = sum(p.numel() * p.element_size() for p in teacher.parameters())
    print(f"teacher: 24 layers, {teacher.num_parameters():,} params ({size / 2**20:.1f} MiB); "
          f"student: {n} layers")

    t_deepcopy = timed(lambda: copy.deepcopy(teacher), 5)
    print(f"copy.deepcopy(teacher):            {t_deepcopy * 1e3:8.2f} ms   {size / 2**20:8.1f} MiB copied")
    for patched in ([], [n - 1], list(range(n // 2)), list(range(n))):
        t_build = timed(lambda: pair.build(patched=patched), 50)
        t_ref = timed(lambda: assemble_by_hand(pair, patched), 3)
        built = pair.build(patched=patched)
        ref = assemble_by_hand(pair, patched)
        copied_ref = new_bytes(ref, teacher, student)
        layers = built.config.num_hidden_layers
        print(f"patched {len(patched):2d}/{n} ({layers:2d} layers): build {t_build * 1e3:6.3f} ms "
              f"= {100 * t_build / t_deepcopy:5.2f}% of deepcopy, {new_bytes(built, teacher, student)} B "
              f"copied | reference (deepcopy + splice) {t_ref * 1e3:7.1f} ms, "
              f"{copied_ref / 2**20:6.1f} MiB copied")


if __name__ == "__main__":
    main()
