"""LaCo layer collapse: RDSC merges against hand-computed weights, the scan against a hand-run one."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import VOCAB, random_ids, tiny_pair
from transformers import AutoModelForCausalLM

from boomerang.errors import BoomerangError
from boomerang.orders.laco import LACO_LAYERS_PER_MERGE, build_laco, laco_merges

torch.set_num_threads(1)

N = 8


@pytest.fixture(scope="module")
def pair():
    return tiny_pair("llama", N, seed=3)  # student: 5 layers


@pytest.fixture(scope="module")
def calib():
    return random_ids(6, 16, seed=5)


def rdsc_by_hand(sd: dict, prefix: str, group, name: str) -> torch.Tensor:
    """theta_a + sum_{t != a} (theta_t - theta_a), left to right, from a state dict."""
    a = sd[f"{prefix}{group[0]}.{name}"]
    out = a
    for t in group[1:]:
        out = out + (sd[f"{prefix}{t}.{name}"] - a)
    return out


def hand_state_dict(teacher, groups, prefix: str) -> dict:
    sd = teacher.state_dict()
    out = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    names = {k[len(prefix):].split(".", 1)[1] for k in sd if k.startswith(prefix)}
    for p, g in enumerate(groups):
        for name in names:
            out[f"{prefix}{p}.{name}"] = rdsc_by_hand(sd, prefix, g, name)
    return out


def final_states(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]


def similarity_by_hand(pair, groups, calib) -> float:
    """Mean over sequences of the cosine between flattened final hidden states and the teacher's."""
    got = final_states(build_laco(pair, groups), calib).double()
    want = final_states(pair.teacher, calib).double()
    cos = [float(g.flatten() @ w.flatten() / (g.norm() * w.norm())) for g, w in zip(got, want)]
    return sum(cos) / len(cos)


def test_rdsc_weights_sharing_and_an_untouched_teacher(pair):
    teacher = pair.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    groups = [(0,), (1,), (2, 3, 4), (5,), (6,), (7,)]
    model = build_laco(pair, groups)

    merged = model.model.layers[2]
    names = dict(merged.named_parameters())
    assert names, "a decoder layer has parameters"
    for name, param in names.items():
        hand = before[f"model.layers.2.{name}"] + (before[f"model.layers.3.{name}"] - before[f"model.layers.2.{name}"]) \
            + (before[f"model.layers.4.{name}"] - before[f"model.layers.2.{name}"])
        assert torch.equal(param, hand), name
        assert param.data_ptr() != dict(teacher.model.layers[2].named_parameters())[name].data_ptr()
    for p, g in enumerate(groups):
        if len(g) == 1:
            own = [q.data_ptr() for q in model.model.layers[p].parameters()]
            assert own == [q.data_ptr() for q in teacher.model.layers[g[0]].parameters()]
        assert model.model.layers[p].self_attn.layer_idx == p
    assert model.model.embed_tokens.weight.data_ptr() == teacher.model.embed_tokens.weight.data_ptr()
    assert model.config.num_hidden_layers == len(groups) and len(model.model.layers) == len(groups)
    assert model.boomerang_groups == tuple(groups)
    # The teacher is untouched: weights, layers, config and layer indices.
    after = teacher.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert teacher.config.num_hidden_layers == N and len(teacher.model.layers) == N
    assert [layer.self_attn.layer_idx for layer in teacher.model.layers] == list(range(N))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_forward_equals_a_model_loaded_with_hand_merged_weights(family, calib):
    pair = tiny_pair(family, N, seed=4)
    teacher = pair.teacher
    groups = [(0,), (1, 2), (3, 4, 5, 6), (7,)]
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(groups)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [teacher.config.layer_types[g[0]] for g in groups]
        assert len(set(config.layer_types)) > 1  # qwen2: sliding and full layers both present
    prefix = "transformer.h." if family == "gpt2" else "model.layers."
    ref = AutoModelForCausalLM.from_config(config)
    ref.load_state_dict(hand_state_dict(teacher, groups, prefix))
    ref.eval()
    model = build_laco(pair, groups)
    if hasattr(config, "layer_types"):
        assert list(model.config.layer_types) == list(config.layer_types)
    with torch.no_grad():
        got = model(input_ids=calib, use_cache=False).logits
        want = ref(input_ids=calib, use_cache=False).logits
    assert torch.allclose(got, want, atol=1e-5)


def hand_laco(pair, calib, target: int, threshold: float, interval: int = 2, C: int = LACO_LAYERS_PER_MERGE):
    """The scan of the module docstring, run for one size from scratch, every similarity measured
    with a plain forward of build_laco's model."""
    groups = [(t,) for t in range(N)]
    pos, kept, best = None, False, None
    while len(groups) > target:
        S = len(groups)
        k = min(C - 1, S - target)
        lo, hi = 1, S - 2  # never the first layer nor the last ...
        if hi - lo + 1 < k + 1:
            lo = 0  # ... unless the run does not fit
        if hi - lo + 1 < k + 1:
            hi = S - 1
        top = hi - k
        pos = top if pos is None else min(pos, top)
        if pos < lo:
            if not kept:
                groups = best[1]
            pos, kept, best = None, False, None
            continue
        cand = groups[:pos] + [sum(groups[pos : pos + k + 1], ())] + groups[pos + k + 1 :]
        sim = similarity_by_hand(pair, cand, calib)
        if sim >= threshold:
            groups, pos, kept, best = cand, pos - interval, True, None
        else:
            if best is None or sim > best[0]:
                best = (sim, cand)
            pos -= 1
    return groups


def test_laco_merges_gives_every_size_as_a_partition(pair, calib):
    updates = []
    got = laco_merges(pair, calib, progress=updates.append)
    assert sorted(got) == list(range(pair.num_student_layers, N + 1)) == [5, 6, 7, 8]
    assert updates and updates[-1].done == updates[-1].total == 4
    every = laco_merges(pair, calib, sizes=range(1, N + 1))
    assert {L: every[L] for L in got} == got  # the same choice whichever sizes are asked for
    assert every[N] == [(t,) for t in range(N)]
    for L, groups in every.items():
        assert len(groups) == L
        assert [t for g in groups for t in g] == list(range(N))  # a partition, in order
        assert all(list(g) == list(range(g[0], g[-1] + 1)) for g in groups)  # consecutive runs
        if L >= 2:
            assert groups[-1] == (N - 1,)  # the last layer is never collapsed into a layer below
        if L >= 3:
            assert groups[0] == (0,)  # nor is the first layer merged
        assert laco_merges(pair, calib, sizes=[L])[L] == groups, L


@pytest.mark.parametrize("threshold", [0.65, 0.5])
def test_laco_merges_match_a_hand_run_scan(pair, calib, threshold):
    got = laco_merges(pair, calib, sizes=range(1, N + 1), threshold=threshold)
    for L in range(1, N + 1):
        assert got[L] == hand_laco(pair, calib, L, threshold), L


def test_plain_forwards_give_the_same_choice_as_re_running_the_layers_above_a_merge(pair, calib, monkeypatch):
    from boomerang.orders import laco

    fast = laco_merges(pair, calib, sizes=range(1, N + 1))
    monkeypatch.setattr(laco._Search, "_check_exact", lambda self, model, rec: False)
    assert laco_merges(pair, calib, sizes=range(1, N + 1)) == fast


def test_accepting_everything_merges_the_top_most_runs(pair, calib):
    got = laco_merges(pair, calib, sizes=range(1, N + 1), threshold=-1.0)
    # One merge of k + 1 layers ending just below the last layer (8 - 2 = 6) ...
    assert got[7] == [(0,), (1,), (2,), (3,), (4,), (5, 6), (7,)]
    assert got[6] == [(0,), (1,), (2,), (3,), (4, 5, 6), (7,)]
    assert got[5] == [(0,), (1,), (2,), (3, 4, 5, 6), (7,)]
    # ... then interval = 2 layers down, from layer 3 to layer 1.
    assert got[4] == [(0,), (1, 2), (3, 4, 5, 6), (7,)]
    assert got[3] == [(0,), (1, 2, 3, 4, 5, 6), (7,)]
    assert got[2] == [(0, 1, 2, 3, 4, 5, 6), (7,)]  # layer 0 only once nothing else fits
    assert got[1] == [tuple(range(N))]
    one = laco_merges(pair, calib, sizes=[4], threshold=-1.0, interval=1)
    assert one[4] == [(0,), (1,), (2, 3, 4, 5, 6), (7,)]  # one layer down from 3 is 2


def test_when_nothing_clears_the_threshold_the_most_similar_merge_is_kept(pair, calib):
    got = laco_merges(pair, calib, sizes=[5, 6, 7], threshold=1.01)
    singles = [(t,) for t in range(N)]
    for L in (5, 6, 7):
        k = N - L  # one merge of k + 1 layers, starting at 1 .. 6 - k
        sims = {}
        for start in range(6 - k, 0, -1):  # top first, so a tie keeps the top-most
            cand = singles[:start] + [tuple(range(start, start + k + 1))] + singles[start + k + 1 :]
            sims[tuple(cand)] = similarity_by_hand(pair, cand, calib)
        best = max(sims, key=sims.get)
        assert len(set(sims.values())) == len(sims)  # a clear winner
        assert got[L] == list(best), (L, sims)


def test_bad_input_gives_one_sentence(pair, calib):
    with pytest.raises(BoomerangError, match="calibration"):
        laco_merges(pair, None)
    for bad in (0, N + 1):
        with pytest.raises(BoomerangError, match=rf"1\.\.{N} layers, not \[{bad}\]"):
            laco_merges(pair, calib, sizes=[bad, 5])
    with pytest.raises(BoomerangError, match="vocabulary"):
        laco_merges(pair, calib + VOCAB)
    with pytest.raises(BoomerangError, match="at least 2 layers"):
        laco_merges(pair, calib, layers_per_merge=1)
    with pytest.raises(BoomerangError, match="interval"):
        laco_merges(pair, calib, interval=0)
    with pytest.raises(BoomerangError, match="at least one size"):
        laco_merges(pair, calib, sizes=[])
    for groups in ([(0, 1), (3,)], [(0, 2), (1,), (3, 4, 5, 6, 7)], [(1,), (0,), (2, 3, 4, 5, 6, 7)], []):
        with pytest.raises(BoomerangError, match="consecutive"):
            build_laco(pair, groups)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generation_with_a_kv_cache_matches_without(family, calib):
    pair = tiny_pair(family, N, seed=6)
    model = build_laco(pair, [(0,), (1, 2, 3, 4), (5,), (6,), (7,)])
    prompt = calib[:2, :5]
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
        uncached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert cached.shape == (2, 9)
    assert torch.equal(cached, uncached)
