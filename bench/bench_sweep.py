"""Benchmark: incremental sweeps vs evaluating every size from scratch; shortest-path vs optimal.

Prints figures, asserts nothing. Run: ``python bench/bench_sweep.py [--blocks 64] [--synthetic]
[--threads 1]``. Times are CPU seconds of this process (best of ``--repeats``), which on a
shared machine are far steadier than wall time; use ``--threads 1`` there.

1. Perplexity of every size of last-to-first, first-to-last and klpatch on ``--blocks`` blocks
   of 128 tokens: (a) from scratch, ``perplexity(pair.build(patched=s), blocks)`` per size,
   (b) one :class:`~boomerang.core.PatchRunner` walk per order, (c) one walk for all orders
   together (what :func:`boomerang.sweep` does). Same numbers, less time: the ratio (b)/(a)
   is the target (<= 0.75).
2. Mean token KL(teacher || model) of each size for optimal (exhaustive), shortest-path (run-KL
   costs), KLPatch, last-to-first and shortest-path with the cheap hidden-state costs
   (``sp-local``, :func:`boomerang.orders.local_run_costs`) on calibration text, and the time
   each order takes to choose.

Uses the bundled demo pair when it is installed (or ``--teacher T --student S``), else (or with
``--synthetic``) a random pair of a demo-like shape (12-layer Llama, hidden 160, vocab 4096;
student = kept layers + noise).
"""

from __future__ import annotations

import argparse
import time

import torch

import boomerang as bm
from boomerang import eval as ev
from boomerang import orders as od


def synthetic_pair(seed: int = 0) -> bm.BoomerangPair:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=4096, hidden_size=160, intermediate_size=480, num_hidden_layers=12,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=True)
    teacher = LlamaForCausalLM(cfg).eval()
    mapping = bm.LayerMapping.from_rule(12, keep_first=0, every=2, keep_last=2)
    student = bm.init_student(teacher, mapping).eval()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.2 * p.std())
    return bm.BoomerangPair(teacher, student, mapping, name="synthetic demo-shaped")


def load(args):
    if not args.synthetic:
        try:
            if args.student:
                pair = bm.load_pair(teacher=args.teacher, student=args.student, device="cpu")
            else:
                pair = bm.load_pair("demo", device="cpu")
            from boomerang.data import load_blocks

            ids = load_blocks("demo", pair.tokenizer, 128, split="validation", max_blocks=args.blocks)
            calib = od.calibration_ids(pair, n=8, seq_len=128)
            return pair, ids, calib
        except bm.BoomerangError as e:  # e.g. the demo weights are not built yet
            print(f"(pair unavailable: {e} Using a synthetic pair.)")
    pair = synthetic_pair()
    g = torch.Generator().manual_seed(0)
    return pair, torch.randint(0, 4096, (args.blocks, 128), generator=g), torch.randint(0, 4096, (8, 128), generator=g)


def best_of(fn, repeats: int):
    """Best CPU time of this process over ``repeats`` runs (steadier than wall time on a shared
    machine; with one torch thread it is the compute time), and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--teacher", help="with --student: a pair to benchmark instead of the demo")
    ap.add_argument("--student")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pair, ids, calib = load(args)
    n = pair.num_student_layers
    print(f"pair: {pair.name}, {pair.mapping}; data {list(ids.shape)}, calib {list(calib.shape)}, "
          f"torch threads {torch.get_num_threads()}")

    print("\n== 1. perplexity sweeps: incremental vs from scratch ==")
    t_kl, kl_order = best_of(lambda: od.patch_order(pair, "klpatch", calib), 1)
    orders = {o: od.patch_order(pair, o) for o in ("last-to-first", "first-to-last")}
    orders["klpatch"] = kl_order
    scratch_total = inc_total = 0.0
    all_sets = []
    for name, sets in orders.items():
        t_s = t_i = float("inf")
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared
            ts, ref = best_of(lambda: [ev.perplexity(pair.build(patched=s), ids) for s in sets], 1)
            ti, (fast, _) = best_of(lambda: ev.perplexity_many(pair, sets, ids), 1)
            t_s, t_i = min(t_s, ts), min(t_i, ti)
        diff = max(abs(a.nll - b.nll) for a, b in zip(ref, fast))
        print(f"{name:>14}: from scratch {t_s:7.2f} s   incremental {t_i:7.2f} s   ratio {t_i / t_s:5.2f}"
              f"   max |dNLL| {diff:.2e}")
        scratch_total += t_s
        inc_total += t_i
        all_sets += sets
    t_all, _ = best_of(lambda: ev.perplexity_many(pair, list(dict.fromkeys(all_sets)), ids), args.repeats)
    print(f"{'all 3 orders':>14}: from scratch {scratch_total:7.2f} s   one walk    {t_all:7.2f} s   "
          f"ratio {t_all / scratch_total:5.2f}   (per-order walks: ratio {inc_total / scratch_total:5.2f})")
    print(f"(klpatch chose its order in {t_kl:.2f} s)")

    print("\n== 2. KL(teacher || model) per size on calibration text ==")
    timings = {}
    chosen = {}
    for name in ("optimal", "shortest-path", "klpatch", "last-to-first"):
        if name == "optimal" and n > od.MAX_EXHAUSTIVE_LAYERS:
            continue
        timings[name], chosen[name] = best_of(lambda: od.patch_order(pair, name, calib), 1)
    timings["sp-local"], chosen["sp-local"] = best_of(
        lambda: od.shortest_path_subsets(pair, calib, costs=od.local_run_costs(pair, calib)), 1)
    kl = dict(zip(
        [s for sets in chosen.values() for s in sets],
        od.kl_to_teacher(pair, [s for sets in chosen.values() for s in sets], calib),
    ))
    names = list(chosen)
    print(f"{'k':>3} " + " ".join(f"{nm:>14}" for nm in names))
    for k in range(n + 1):
        print(f"{k:>3} " + " ".join(f"{kl[chosen[nm][k]]:14.5f}" for nm in names))
    if "optimal" in chosen:
        for nm in names[1:]:
            gaps = [kl[chosen[nm][k]] - kl[chosen["optimal"][k]] for k in range(n + 1)]
            rel = [g / kl[chosen["optimal"][k]] for k, g in enumerate(gaps) if kl[chosen["optimal"][k]] > 1e-9]
            same = sum(chosen[nm][k] == chosen["optimal"][k] for k in range(n + 1))
            print(f"{nm:>14} vs optimal: same subset at {same}/{n + 1} sizes, max gap {max(gaps):.5f} nats, "
                  f"mean gap {sum(gaps) / len(gaps):.5f}, max relative gap {max(rel, default=0):.1%}")
    print("time to choose: " + ", ".join(f"{nm} {t:.2f} s" for nm, t in timings.items()))


if __name__ == "__main__":
    main()
