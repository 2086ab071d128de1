"""Perplexity, incremental sweeps, the sweep cache, generation and the offline lm-eval tasks."""

from __future__ import annotations

import json
import math
import os
import threading

import pandas as pd
import pytest
import torch
from tiny import random_ids, tiny_pair, tiny_tokenizer

import boomerang as bm
from boomerang import eval as ev
from boomerang.cache import pair_fingerprint
from boomerang.errors import BoomerangError
from boomerang.eval.perplexity import _POINTS
from boomerang.orders import patch_order, prune_teacher

torch.set_num_threads(1)


def direct_nll(model, ids: torch.Tensor) -> tuple[float, int]:
    """Sum of -log p(x_t | x_<t) over t >= 1 of every row, one row at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in ids:
            logp = torch.log_softmax(model(input_ids=row[None]).logits[0].double(), -1)
            total += -logp[:-1].gather(1, row[1:, None]).sum().item()
            count += row.numel() - 1
    return total, count


def direct_sliding_nll(model, blocks: torch.Tensor, stride: int) -> tuple[float, int]:
    """The Hugging Face perplexity guide's loop: windows of L, each scoring its new tokens."""
    stream = blocks.reshape(-1)
    L = blocks.size(1)
    total, count, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, stream.numel(), stride):
            end = min(begin + L, stream.numel())
            if end - begin < L:  # our windows are all full-length: shift the last one back
                begin = end - L
            window = stream[begin:end]
            new = end - max(prev_end, begin + 1)  # the first token of the stream is never scored
            logp = torch.log_softmax(model(input_ids=window[None]).logits[0].double(), -1)
            scored = range(L - new, L)
            total += -sum(logp[t - 1, window[t]].item() for t in scored)
            count += new
            prev_end = end
            if end == stream.numel():
                break
    return total, count


@pytest.fixture(scope="module")
def pair():
    return tiny_pair("llama", 8, perturb=0.1)


def test_perplexity_equals_direct_computation(pair):
    model = pair.build(patched=[1, 4])
    ids = random_ids(7, 12)
    res = ev.perplexity(model, ids, batch_size=3)
    total, count = direct_nll(model, ids)
    assert res.tokens == count == 7 * 11
    assert res.nll == pytest.approx(total / count, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


@pytest.mark.parametrize("stride", [1, 5, 8, 11])
def test_sliding_window_perplexity_equals_direct_loop(pair, stride):
    model = pair.build(patched=[0])
    blocks = random_ids(3, 12, seed=1)
    res = ev.perplexity(model, blocks, batch_size=4, stride=stride)
    total, count = direct_sliding_nll(model, blocks, stride)
    assert res.tokens == count == blocks.numel() - 1  # every token but the first, once
    assert res.nll == pytest.approx(total / count, rel=1e-5)


def test_windows_score_every_token_once():
    blocks = torch.arange(50).view(5, 10)
    for stride in (None, 3, 7, 10):
        ids, mask = ev.windows(blocks, stride)
        scored = ids[mask].tolist()
        sliding = stride is not None and stride < 10
        expected = list(range(1, 50)) if sliding else [t for t in range(50) if t % 10]
        assert sorted(scored) == expected


def test_perplexity_is_deterministic_and_batch_independent(pair):
    model = pair.build(patched=[2])
    ids = random_ids(9, 10, seed=2)
    a = ev.perplexity(model, ids, batch_size=2)
    b = ev.perplexity(model, ids, batch_size=9)
    assert a.nll == pytest.approx(b.nll, rel=1e-6) and a.tokens == b.tokens
    assert ev.perplexity(model, ids, batch_size=2) == a


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gemma3_text"])
def test_incremental_sweep_equals_from_scratch(family):
    pair = tiny_pair(family, 6, perturb=0.1)
    ids = random_ids(5, 12, seed=3)
    sets = [s for o in ("last-to-first", "first-to-last") for s in patch_order(pair, o)]
    sets += [frozenset({0, 2}), frozenset({1, 3})]
    fast, seconds = ev.perplexity_many(pair, sets, ids, batch_size=2)
    assert len(seconds) == len(sets) and all(s >= 0 for s in seconds)
    for s, r in zip(sets, fast):
        ref = ev.perplexity(pair.build(patched=s), ids, batch_size=2)
        assert r.tokens == ref.tokens
        assert r.nll == pytest.approx(ref.nll, rel=1e-5, abs=1e-6), (family, sorted(s))


def test_sweep_rows_columns_and_baselines(pair, tmp_path):
    ids = random_ids(4, 12, seed=4)
    calib = random_ids(4, 12, seed=5)
    df = bm.sweep(pair, ["last-to-first", "naive-pruning", "block-influence"], data=ids,
                  calib_ids=calib, cache_dir=tmp_path)
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    assert list(df.columns) == ["order", "k", "patched", "layers", "params", "kept", "perplexity",
                                "perplexity_lo", "perplexity_hi", "nll", "seconds"]
    assert ((df.perplexity_lo <= df.perplexity) & (df.perplexity <= df.perplexity_hi)).all()
    assert (df.perplexity_lo < df.perplexity_hi).all()  # 4 different blocks: a real spread
    l2f = df[df.order == "last-to-first"]
    assert l2f.k.tolist() == list(range(n + 1))
    for _, row in l2f.iterrows():
        s = bm.Patched.from_json(row.patched)
        assert s == pair.sequential("last-to-first", int(row.k))
        assert row.layers == pair.mapping.patched_layers(s)
        assert row.params == pair.build(patched=s).num_parameters()
        assert row.nll == pytest.approx(ev.perplexity(pair.build(patched=s), ids).nll, rel=1e-5)
    for name in ("naive-pruning", "block-influence"):
        rows = df[df.order == name]
        assert rows.layers.tolist() == list(range(n, N + 1))
        for _, row in rows.iterrows():
            model = prune_teacher(pair, json.loads(row.kept))
            assert row.params == model.num_parameters()
            assert row.nll == pytest.approx(ev.perplexity(model, ids).nll, rel=1e-6)
    # The teacher-sized rows are the teacher.
    teacher_nll = ev.perplexity(pair.teacher, ids).nll
    assert df[df.layers == N].nll.tolist() == pytest.approx([teacher_nll] * 3, rel=1e-5)


def test_sweep_cache_returns_identical_frame(pair, tmp_path):
    ids = random_ids(4, 12, seed=6)
    calib = random_ids(2, 12, seed=7)
    orders = ["last-to-first", "klpatch"]
    a = bm.sweep(pair, orders, data=ids, calib_ids=calib, cache_dir=tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2
    b = bm.sweep(pair, orders, data=ids, calib_ids=calib, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(a, b)
    assert a.equals(b) and sorted(os.listdir(tmp_path)) == files
    # A subset of the orders is served from the same entries.
    c = bm.sweep(pair, ["klpatch"], data=ids, calib_ids=calib, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(c, a[a.order == "klpatch"].reset_index(drop=True))
    # Other data, or other weights, miss the cache.
    d = bm.sweep(pair, ["last-to-first"], data=random_ids(4, 12, seed=8), cache_dir=tmp_path)
    assert not d.nll.equals(a[a.order == "last-to-first"].nll.reset_index(drop=True))
    fp = pair_fingerprint(pair)
    changed = tiny_pair("llama", 8, perturb=0.1, seed=1)
    assert pair_fingerprint(changed) != fp
    assert pair_fingerprint(tiny_pair("llama", 8, perturb=0.1)) == fp  # stable across objects


def test_sweep_rejects_bad_input(pair):
    ids = random_ids(2, 8)
    with pytest.raises(BoomerangError, match="Unknown order"):
        bm.sweep(pair, ["sideways"], data=ids, use_cache=False)
    with pytest.raises(BoomerangError, match="custom order"):
        bm.sweep(pair, ["custom"], data=ids, use_cache=False)


def test_evaluate_patched_is_memoised(pair):
    ev.clear_point_cache()
    ids = random_ids(3, 10, seed=9)
    a = ev.evaluate_patched(pair, [3, 4], ids)
    assert a == ev.perplexity(pair.build(patched=[3, 4]), ids)
    assert len(_POINTS) == 1
    assert ev.evaluate_patched(pair, {4, 3}, ids) is a
    ev.evaluate_patched(pair, [3], ids)
    assert len(_POINTS) == 2


def test_generate_text_greedy_and_streamed():
    from transformers import TextIteratorStreamer

    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    model = pair.build(patched=[1])
    text = ev.generate_text(model, tok, "The quick", max_new_tokens=6)
    ids = tok("The quick", return_tensors="pt")["input_ids"]
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)
    assert text == tok.decode(ref[0, ids.size(1):], skip_special_tokens=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("t", ev.generate_text(
        model, tok, "The quick", max_new_tokens=6, streamer=streamer)))
    th.start()
    streamed = "".join(streamer)
    th.join()
    assert streamed == out["t"] == text


def test_offline_lm_eval_tasks_run(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    seen = []
    acc = ev.accuracy(pair.build(patched=[0]), tok, ["bbc_news", "demo_cloze"], limit=3, batch_size=8,
                      progress=lambda u: seen.append((u.done, u.total)))
    assert set(acc) == {"bbc_news", "demo_cloze"} and seen == [(1, 2), (2, 2)]
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    with pytest.raises(BoomerangError, match="at least one"):
        ev.accuracy(pair.student, tok, [], limit=2)


def test_offline_task_items_are_well_formed():
    from boomerang.eval.task_items import task_dataset

    bbc = task_dataset("bbc_news")["test"]
    assert len(bbc) > 200
    assert set(bbc["label"]) == {"business", "entertainment", "politics", "sports", "tech"}
    assert all(it["choices"][it["gold"]] == it["label"] for it in bbc)
    cloze = task_dataset("demo_cloze")["test"]
    assert len(cloze) > 200
    assert all(len(set(it["choices"])) == 4 and 0 <= it["gold"] < 4 for it in cloze)


@pytest.mark.skipif(not os.environ.get("BOOMERANG_SLOW"), reason="reads the whole demo corpus (set BOOMERANG_SLOW=1)")
def test_shipped_task_items_match_a_fresh_build(tmp_path):
    from boomerang.eval.task_items import SHIPPED_DIR, build_task_files

    for path in build_task_files(tmp_path):
        assert path.read_text() == (SHIPPED_DIR / path.name).read_text()


def test_cli_sweep_writes_csv_and_reuses_cache(tmp_path, monkeypatch, capsys):
    from tiny import saved_tiny_pair

    from boomerang.cli import main

    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    t_dir, s_dir, text = saved_tiny_pair(tmp_path, text="sentences", perturb=0.05)
    out = tmp_path / "results.csv"
    argv = ["sweep", "--teacher", str(t_dir), "--student", str(s_dir), "--device", "cpu",
            "--orders", "last-to-first,klpatch,naive-pruning", "--data", str(text), "--seq-len", "16",
            "--max-blocks", "4", "--calib-data", str(text), "--calib-n", "2", "--calib-len", "16",
            "--out", str(out)]
    assert main(argv) == 0
    first = pd.read_csv(out)
    assert set(first.order) == {"last-to-first", "klpatch", "naive-pruning"}
    assert len(list((tmp_path / "cache" / "sweeps").iterdir())) == 3
    assert main(argv) == 0
    pd.testing.assert_frame_equal(first, pd.read_csv(out))
    capsys.readouterr()
    assert main(argv[:-1] + [str(out)] + ["--orders", "sideways"]) == 2
    assert "Unknown order" in capsys.readouterr().err


def test_sweep_with_an_accuracy_metric(tmp_path):
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    pair.tokenizer = tok
    ids = random_ids(2, 12, seed=12, vocab=len(tok))
    df = bm.sweep(pair, ["first-to-last"], data=ids, metrics=["perplexity", "demo_cloze"], limit=2,
                  cache_dir=tmp_path)
    assert list(df.columns)[-8:] == ["perplexity", "perplexity_lo", "perplexity_hi", "nll", "demo_cloze",
                                     "demo_cloze_lo", "demo_cloze_hi", "seconds"]
    assert len(df) == pair.num_student_layers + 1
    assert df.demo_cloze.between(0, 1).all()
    k1 = bm.Patched.from_json(df.patched[1])
    assert df.demo_cloze[1] == ev.accuracy(pair.build(patched=k1), tok, ["demo_cloze"], limit=2)["demo_cloze"]
    # The Wilson interval of that accuracy over its 2 items, by the formula.
    z, n, p = 1.959963984540054, 2, df.demo_cloze[1]
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (df.demo_cloze_lo[1], df.demo_cloze_hi[1]) == pytest.approx(
        (0.0 if p == 0 else centre - half, 1.0 if p == 1 else centre + half), abs=1e-12)
    again = bm.sweep(pair, ["first-to-last"], data=ids, metrics=["perplexity", "demo_cloze"], limit=2,
                     cache_dir=tmp_path)
    pd.testing.assert_frame_equal(df, again)


def test_latency_is_timed_once_per_layer_count():
    from boomerang.ui import latency_profile

    pair = tiny_pair("llama", 8, keep_last=2)  # teacher blocks of student layers 0..4: 2, 2, 2, 1, 1
    # Patching student layer 3 or 4 keeps 5 layers; patching 0, 1 or 2 gives 6.
    sets = [frozenset(), frozenset({3}), frozenset({4}), frozenset({0}), frozenset({2})]
    measured = {6: 123.0}  # as if an earlier order had timed the 6-layer size
    lat = latency_profile(pair, sets, measured)
    assert sorted(measured) == [5, 6] and measured[6] == 123.0
    assert lat[0] == lat[1] == lat[2] == measured[5] > 0
    assert lat[3] == lat[4] == 123.0


def test_wilson_interval_matches_published_values():
    from boomerang.eval.intervals import wilson_interval
    # Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; and the textbook 8 of 10 -> 0.490-0.943.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    for bad in ((3, 2), (-1, 5), (1, 0), (1.5, 4), (True, 3)):
        with pytest.raises(BoomerangError, match="correct <= n"):
            wilson_interval(*bad)


def test_accuracy_intervals_count_the_items_the_harness_scored(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from boomerang.eval.intervals import wilson_interval
    tok = tiny_tokenizer()
    model = tiny_pair("llama", 4, vocab=len(tok)).build(patched=[0])
    plain = ev.accuracy(model, tok, ["bbc_news", "demo_cloze"], limit=7)
    detail = ev.accuracy_intervals(model, tok, ["bbc_news", "demo_cloze"], limit=7)
    for task, d in detail.items():
        assert d["n"] == 7 and d["accuracy"] == pytest.approx(plain[task])  # the harness's own mean
        assert (d["lo"], d["hi"]) == wilson_interval(round(d["accuracy"] * 7), 7)
        assert d["lo"] <= d["accuracy"] <= d["hi"] and d["hi"] - d["lo"] > 0.3  # 7 items: a wide interval
    chosen = ev.accuracy_intervals(model, tok, ["bbc_news"], items={"bbc_news": list(range(7))})
    assert chosen["bbc_news"] == detail["bbc_news"]  # the first 7 items, chosen by index
    spread = ev.accuracy_intervals(model, tok, ["bbc_news"], items={"bbc_news": [0, 60, 120, 180]})
    assert spread["bbc_news"]["n"] == 4


def test_perplexity_interval_is_the_block_bootstrap_computed_by_hand(pair):
    """Each block's summed NLL comes from its own forward, and the 95% interval is the percentile
    bootstrap over blocks: 2,000 draws of n blocks with replacement (numpy's default_rng(0)),
    exp(sum NLL / sum tokens) each, the 2.5% and 97.5% quantiles (linear interpolation)."""
    import numpy as np

    ids = random_ids(6, 10, seed=21)
    model = pair.build(patched=[0])
    res = ev.perplexity(model, ids, batch_size=4)
    per_block = [direct_nll(model, ids[i : i + 1]) for i in range(len(ids))]
    assert res.window_tokens == tuple(c for _, c in per_block) == (9,) * 6
    assert res.window_nll == pytest.approx([t for t, _ in per_block], rel=1e-6)

    draws = np.random.default_rng(0).integers(0, 6, size=(2000, 6))
    ppl = sorted(math.exp(sum(per_block[j][0] for j in d) / sum(per_block[j][1] for j in d)) for d in draws)

    def quantile(q: float) -> float:
        pos = q * (len(ppl) - 1)
        lo = math.floor(pos)
        return ppl[lo] + (ppl[min(lo + 1, len(ppl) - 1)] - ppl[lo]) * (pos - lo)

    lo, hi = res.interval()
    assert (lo, hi) == pytest.approx((quantile(0.025), quantile(0.975)), rel=1e-6)
    assert lo < res.perplexity < hi
    # The shared-prefix path keeps the same per-block numbers, and the same interval.
    fast = ev.perplexity_many(pair, [frozenset([0])], ids, batch_size=4)[0][0]
    assert fast.window_nll == pytest.approx(res.window_nll, rel=1e-5)
    assert fast.interval() == pytest.approx((lo, hi), rel=1e-5)
    # Six copies of one block have no spread.
    same = ev.perplexity(model, ids[:1].repeat(6, 1), batch_size=4)
    assert same.interval() == pytest.approx((same.perplexity, same.perplexity), rel=1e-9)


def test_sweep_puts_other_models_of_the_same_tokenizer_beside_the_curve(tmp_path):
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    pair.tokenizer = tok
    ids = random_ids(3, 12, seed=31, vocab=len(tok))
    for name, model in (("student", pair.student), ("teacher-copy", pair.teacher)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    df = bm.sweep(pair, ["last-to-first"], data=ids, compare=[tmp_path / "student", tmp_path / "teacher-copy"],
                  cache_dir=tmp_path / "cache")
    rows = df.set_index("order")
    assert list(df.order[-2:]) == ["model: student", "model: teacher-copy"]
    total, count = direct_nll(pair.student, ids)
    assert rows.loc["model: student", "perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert rows.loc["model: student", "layers"] == pair.num_student_layers
    assert rows.loc["model: teacher-copy", "layers"] == pair.mapping.num_teacher_layers
    full = df[(df.order == "last-to-first") & (df.k == pair.num_student_layers)].perplexity.item()
    assert rows.loc["model: teacher-copy", "perplexity"] == pytest.approx(full, rel=1e-5)
    lo, hi = rows.loc["model: student", ["perplexity_lo", "perplexity_hi"]]
    assert lo <= rows.loc["model: student", "perplexity"] <= hi

    other = tiny_tokenizer(vocab_size=280)  # another vocabulary: numbers not comparable
    pair.student.save_pretrained(tmp_path / "other")
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(BoomerangError, match="uses another tokenizer than this pair"):
        bm.sweep(pair, ["last-to-first"], data=ids, compare=[tmp_path / "other"], cache_dir=tmp_path / "cache")
    pair.student.save_pretrained(tmp_path / "bare")
    with pytest.raises(BoomerangError, match="has no tokenizer"):
        bm.sweep(pair, ["last-to-first"], data=ids, compare=[tmp_path / "bare"], cache_dir=tmp_path / "cache")


def test_a_student_delta_is_composed_from_the_pairs_teacher_and_drawn_at_its_own_size(tmp_path):
    """A student stored as a delta over the teacher (the demo's same-size students) is compared
    like any other model: composed from the pair's own teacher, measured on the same blocks."""
    from boomerang.core.delta import make_delta

    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 6, keep_last=2, vocab=len(tok))  # a 4-layer student
    pair.tokenizer = tok
    five = tiny_pair("llama", 6, keep_last=4, vocab=len(tok), seed=0)  # same teacher, a 5-layer student
    assert torch.equal(five.teacher.lm_head.weight, pair.teacher.lm_head.weight)
    composed = make_delta(tmp_path / "five", five.teacher, five.student, five.mapping, bits=8)
    ids = random_ids(3, 12, seed=5, vocab=len(tok))

    df = bm.sweep(pair, ["last-to-first"], data=ids, compare=[tmp_path / "five"], cache_dir=tmp_path / "cache")
    row = df[df.order == "model: five"].iloc[0]
    total, count = direct_nll(composed, ids)
    assert row["layers"] == 5 and row["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # Composed, not the teacher's layers alone: the stored change is there.
    plain, plain_count = direct_nll(bm.init_student(pair.teacher, five.mapping), ids)
    assert abs(plain / plain_count - total / count) > 1e-4

    points = ev.same_size_rows(pair, {5: tmp_path / "five"}, ids)
    assert list(points.order) == ["distilled at this size"] and list(points.layers) == [5]
    assert points.perplexity.item() == pytest.approx(row["perplexity"], rel=1e-6)
    with pytest.raises(BoomerangError, match="filed as distilled at 6 layers has 5 layers"):
        ev.same_size_rows(pair, {6: tmp_path / "five"}, ids)

    other = tiny_pair("llama", 6, keep_last=4, vocab=len(tok), seed=7)  # another teacher
    make_delta(tmp_path / "other", other.teacher, other.student, other.mapping, bits=8)
    with pytest.raises(BoomerangError, match="made from other teacher weights"):
        bm.sweep(pair, ["last-to-first"], data=ids, compare=[tmp_path / "other"], cache_dir=tmp_path / "cache")


def test_a_student_delta_is_composed_from_its_recorded_teacher_when_the_pair_holds_other_bits(tmp_path):
    """A pair loaded in bfloat16 (a GPU session) does not hold the float32 teacher a delta was made
    from: the delta is composed from the teacher folder it records instead, then cast."""
    import os

    from boomerang.core.delta import make_delta

    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 6, keep_last=2, vocab=len(tok))
    pair.tokenizer = tok
    five = tiny_pair("llama", 6, keep_last=4, vocab=len(tok), seed=0)
    five.teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    delta = tmp_path / "same_size" / "5-layers"
    composed = make_delta(delta, five.teacher, five.student, five.mapping, bits=8,
                          teacher_name=os.path.relpath(tmp_path / "teacher", delta))
    half = bm.BoomerangPair(pair.teacher.to(torch.bfloat16), pair.student.to(torch.bfloat16), pair.mapping)
    half.tokenizer = tok
    ids = random_ids(3, 12, seed=5, vocab=len(tok))
    row = ev.same_size_rows(half, {5: delta}, ids).iloc[0]
    total, count = direct_nll(composed.to(torch.bfloat16), ids)
    assert row["layers"] == 5 and row["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-3)
    # A recorded teacher that reads text otherwise is refused.
    tiny_tokenizer(vocab_size=280).save_pretrained(tmp_path / "teacher")
    with pytest.raises(BoomerangError, match="reads text otherwise than this pair"):
        ev.same_size_rows(half, {5: delta}, ids)
