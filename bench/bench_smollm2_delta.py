"""How small can the SmolLM2 student ship? Delta size against test perplexity.

Takes a student built by ``python -m boomerang smollm2 build`` (full-precision, in its run folder)
and stores its change over the teacher several ways: 8- and 4-bit groups (what ships: 4 bits,
groups of 128), and the best rank-r approximation of each changed matrix (SVD, float16 factors).
Prints, for each, the bytes it takes and the test perplexity of the student it composes and of
the middle model of each order (half the student layers patched), next to the full-precision
student's; and the same for the shipped delta (another build of the same recipe).

    python bench/bench_smollm2_delta.py [--student DIR] [--blocks 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from boomerang.core import BoomerangPair, init_student, load_pair
from boomerang.core.delta import DELTA_WEIGHTS, apply_delta, make_delta
from boomerang.data import load_blocks
from boomerang.eval import perplexity
from boomerang.recipes.smollm2 import _subset
from boomerang.zoo.smollm2 import distilled_smollm2_run, shipped_delta


def svd_student(teacher, student, mapping, rank: int):
    """The student with each changed matrix's delta cut to its best rank-``rank`` approximation
    (float16 factors); returns (model, bytes of the factors and the float16 vector deltas)."""
    base = init_student(teacher, mapping)
    state, b_state = student.state_dict(), base.state_dict()
    size = 0
    with torch.no_grad():
        for name, w in state.items():
            b = b_state[name]
            if torch.equal(w, b):
                continue
            d = w.float() - b.float()
            if d.dim() < 2:
                b.copy_(b.float() + d.half().float())
                size += d.numel() * 2
                continue
            u, s, vh = torch.linalg.svd(d, full_matrices=False)
            left, right = (u[:, :rank] * s[:rank]).half(), vh[:rank].half()
            b.copy_(b.float() + left.float() @ right.float())
            size += (left.numel() + right.numel()) * 2
    return base, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default=str(distilled_smollm2_run() / "student"))
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pair = load_pair(student=args.student, device="cpu", dtype=torch.float32)
    blocks = _subset(load_blocks("demo", pair.tokenizer, 256, split="test"), args.blocks)

    n = pair.num_student_layers
    half = n // 2  # the middle of each order: half of the student layers patched
    sizes = {"last-to-first": pair.sequential("last-to-first", half), "first-to-last": pair.sequential("first-to-last", half)}

    def ppls(student) -> list[float]:
        """Test perplexity of the student and of the middle model of each order built from it."""
        p = BoomerangPair(pair.teacher, student, pair.mapping)
        return [perplexity(student, blocks, 8).perplexity] + [
            perplexity(p.build(patched=s), blocks, 8).perplexity for s in sizes.values()]

    trained = sum(p.numel() * 4 for i in range(n) for p in pair.student.model.layers[i].parameters()
                  if len(pair.mapping.blocks[i]) > 1)
    rows = [("full precision (float32 layers)", trained, ppls(pair.student))]
    with tempfile.TemporaryDirectory() as tmp:
        for bits, group in ((8, 128), (4, 128), (4, 64), (4, 256)):
            d = Path(tmp) / f"d{bits}-{group}"
            make_delta(d, pair.teacher, pair.student, pair.mapping, bits=bits, group=group)
            model, _ = apply_delta(pair.teacher, d)
            rows.append((f"{bits}-bit, groups of {group}", (d / DELTA_WEIGHTS).stat().st_size, ppls(model)))
    shipped = shipped_delta()
    if shipped is not None:  # the shipped student: 4-bit groups of 128 of an earlier build of the same recipe
        model, _ = apply_delta(pair.teacher, shipped)
        rows.append(("shipped delta (its own build)", (shipped / DELTA_WEIGHTS).stat().st_size, ppls(model)))
    for rank in (32, 64, 128, 256):
        model, size = svd_student(pair.teacher, pair.student, pair.mapping, rank)
        rows.append((f"SVD rank {rank}, float16 factors", size, ppls(model)))
    print(f"SmolLM2 student {args.student}: test perplexity on {len(blocks)} x 256 tokens, {args.threads} "
          f"threads; teacher {perplexity(pair.teacher, blocks, 8).perplexity:.2f}; middle of each order: "
          + ", ".join(f"{o} {pair.mapping.patched_layers(s)} layers" for o, s in sizes.items()))
    full = rows[0][2]
    print(f"  {'stored as':<34} {'size':>8}   {'student':>17}   {'last-to-first':>17}   {'first-to-last':>17}")
    for name, size, p in rows:
        cells = "   ".join(f"{v:8.2f} ({100 * (v / f - 1):+6.2f}%)" for v, f in zip(p, full))
        print(f"  {name:<34} {size / 1e6:5.1f} MB   {cells}")


if __name__ == "__main__":
    main()
