"""Patch orders (sequential, custom, similarity, KLPatch, optimal, shortest-path) and pruning baselines."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from tiny import random_ids, tiny_pair

import boomerang as bm
from boomerang import orders as od
from boomerang.core import shares_storage
from boomerang.errors import BoomerangError

torch.set_num_threads(1)

NESTED = ("last-to-first", "first-to-last", "custom", "similarity", "klpatch")


@pytest.fixture(scope="module")
def pair():
    # 10 teacher layers -> 6 student layers; a noisy student so that orders have something to pick.
    return tiny_pair("llama", 10, perturb=0.3, seed=2)


@pytest.fixture(scope="module")
def calib():
    return random_ids(4, 12, seed=11)


def brute_kl(pair, patched, calib) -> float:
    """KL(teacher || model) per token, from two independent full forwards."""
    with torch.no_grad():
        p = torch.log_softmax(pair.teacher(input_ids=calib).logits.double(), -1)
        q = torch.log_softmax(pair.build(patched=patched)(input_ids=calib).logits.double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.fixture(scope="module")
def all_kls(pair, calib):
    n = pair.num_student_layers
    return {frozenset(c): brute_kl(pair, c, calib)
            for k in range(n + 1) for c in itertools.combinations(range(n), k)}


@pytest.mark.parametrize("name", od.ORDER_NAMES)
def test_orders_are_valid(pair, calib, name):
    n = pair.num_student_layers
    custom = [2, 0, 5, 1, 4, 3] if name == "custom" else None
    sets = bm.patch_order(pair, name, calib, custom=custom)
    assert len(sets) == n + 1
    assert all(isinstance(s, frozenset) and len(s) == k for k, s in enumerate(sets))
    assert all(s <= frozenset(range(n)) for s in sets)
    if name in NESTED:
        assert all(a < b for a, b in zip(sets, sets[1:]))
    if name == "custom":
        assert [next(iter(b - a)) for a, b in zip(sets, sets[1:])] == custom


def test_sequential_orders_match_pair(pair):
    n = pair.num_student_layers
    for name in ("last-to-first", "first-to-last"):
        assert od.patch_order(pair, name) == [pair.sequential(name, k) for k in range(n + 1)]


def test_kl_to_teacher_matches_brute_force(pair, calib, all_kls):
    sets = [frozenset(), frozenset({0, 3}), frozenset({5}), frozenset(range(6))]
    got = od.kl_to_teacher(pair, sets, calib, batch_size=3)
    assert got == pytest.approx([all_kls[s] for s in sets], rel=1e-4, abs=1e-8)
    assert got[-1] == pytest.approx(0.0, abs=1e-7)


def test_klpatch_picks_brute_force_argmins(pair, calib, all_kls):
    sets = bm.patch_order(pair, "klpatch", calib)
    n = pair.num_student_layers
    for k in range(1, n + 1):
        prev = sets[k - 1]
        candidates = {i: all_kls[prev | {i}] for i in range(n) if i not in prev}
        best = min(candidates.values())
        chosen = next(iter(sets[k] - prev))
        assert candidates[chosen] == pytest.approx(best, rel=1e-6, abs=1e-10)


def test_optimal_is_never_beaten(pair, calib, all_kls):
    sets = bm.patch_order(pair, "optimal", calib)
    for k, s in enumerate(sets):
        best = min(v for c, v in all_kls.items() if len(c) == k)
        assert all_kls[s] <= best * (1 + 1e-5) + 1e-10, k


def test_optimal_refuses_large_students_and_reports_progress(calib):
    teacher_pair = tiny_pair("llama", 14, keep_last=12)  # 13 student layers
    assert teacher_pair.num_student_layers == 13
    with pytest.raises(BoomerangError, match="shortest-path"):
        bm.patch_order(teacher_pair, "optimal", calib)
    small = tiny_pair("llama", 6, perturb=0.1)
    seen = []
    od.patch_order(small, "optimal", calib, progress=lambda u: seen.append((u.done, u.total)))
    assert seen and seen[-1][0] == seen[-1][1] == 2 ** small.num_student_layers


def test_shortest_path_solves_its_surrogate_exactly(pair, calib, all_kls):
    n = pair.num_student_layers
    costs = od.run_costs(pair, calib)

    def surrogate(s):
        runs, j = [], 0
        while j < n:
            if j in s:
                j += 1
                continue
            b = j
            while b < n and b not in s:
                b += 1
            runs.append((j, b))
            j = b
        return sum(costs[r] for r in runs)

    sets = od.shortest_path_subsets(pair, calib, costs=costs)
    for k, s in enumerate(sets):
        assert len(s) == k
        best = min(surrogate(frozenset(c)) for c in itertools.combinations(range(n), k))
        assert surrogate(s) == pytest.approx(best, rel=1e-9, abs=1e-12)
    # The surrogate is exact for sets with at most one run of student layers. The two numbers come
    # from two walks that share different prefixes, so fp32 sums run in another order and differ
    # by up to ~1e-4 relative on some CPUs; 1e-3 relative is still far below the spread of the
    # costs, which the second check pins (so the tolerance cannot make the check vacuous).
    for (a, b), cost in costs.items():
        assert cost == pytest.approx(all_kls[frozenset(range(n)) - frozenset(range(a, b))], rel=1e-3, abs=1e-7)
    values = sorted(costs.values())
    assert values[-1] - values[0] > 100 * 1e-3 * values[-1]


def test_similarity_order_follows_layer_cosines(pair, calib):
    cos = od.layer_cosines(pair, calib)
    sets = bm.patch_order(pair, "similarity", calib)
    first = next(iter(sets[1]))
    assert cos[first] == min(cos)


def test_bad_orders_give_one_sentence(pair, calib):
    with pytest.raises(BoomerangError, match="Unknown order"):
        bm.patch_order(pair, "random")
    with pytest.raises(BoomerangError, match="every student layer"):
        bm.patch_order(pair, "custom", custom=[0, 1, 1, 2, 3, 4])
    with pytest.raises(BoomerangError, match="out of range"):
        bm.patch_order(pair, "custom", custom=[0, 1, 2, 3, 4, 9])
    with pytest.raises(BoomerangError, match="calibration"):
        bm.patch_order(pair, "klpatch")


def test_prune_teacher_is_zero_copy_and_exact(pair, calib):
    keep = [0, 3, 4, 8, 9]
    model = od.prune_teacher(pair, keep)
    assert shares_storage(model, pair.teacher)
    assert model.config.num_hidden_layers == len(keep)
    # Reference: a deep copy of the teacher with the other layers deleted.
    ref = copy.deepcopy(pair.teacher)
    layers = pair.parts.layer_list(ref)
    pair.parts.base_module(ref).layers = torch.nn.ModuleList([layers[k] for k in keep])
    ref.config.num_hidden_layers = len(keep)
    for p, layer in enumerate(pair.parts.layer_list(ref)):
        layer.self_attn.layer_idx = p
    with torch.no_grad():
        assert torch.allclose(model(input_ids=calib).logits, ref(input_ids=calib).logits, atol=1e-6)
        prompt = calib[:1, :5]
        cached = model.generate(prompt, max_new_tokens=6, do_sample=False)
        uncached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    # The shared teacher is untouched.
    assert pair.teacher.config.num_hidden_layers == 10
    assert len(pair.parts.layer_list(pair.teacher)) == 10
    with pytest.raises(BoomerangError, match="increasing"):
        od.prune_teacher(pair, [3, 1])


def test_pruning_orders(pair, calib):
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    naive = od.pruning_order(pair, "naive")
    assert sorted(naive) == list(range(n, N + 1))
    assert naive[n] == pair.mapping.kept  # the student's initialisation
    assert naive[N] == list(range(N))
    assert all(len(keep) == L for L, keep in naive.items())
    bi = od.block_influence(pair, calib)
    infl = od.pruning_order(pair, "block-influence", calib, sizes=[3, 7])
    assert sorted(infl) == [3, 7]
    dropped = set(range(N)) - set(infl[7])
    assert max(bi[t] for t in dropped) <= min(bi[t] for t in infl[7])
    with pytest.raises(BoomerangError, match="sizes"):
        od.pruning_order(pair, "naive", sizes=[2])


def test_local_run_costs(calib):
    exact = tiny_pair("llama", 8, perturb=0.0)  # student = the teacher's kept layers
    costs = od.local_run_costs(exact, calib)
    n = exact.num_student_layers
    assert set(costs) == {(a, b) for a in range(n) for b in range(a + 1, n + 1)}
    assert all(v >= -1e-9 for v in costs.values())
    # Singleton blocks (layers 3 and 4) are copied verbatim: no mismatch on any input.
    assert costs[(3, 4)] == pytest.approx(0.0, abs=1e-6) and costs[(3, 5)] == pytest.approx(0.0, abs=1e-6)
    assert costs[(0, 1)] > 1e-4  # layer 0 skips teacher layer 1
    sets = od.shortest_path_subsets(exact, calib, costs=costs)
    assert [len(s) for s in sets] == list(range(n + 1))


def test_build_reuses_a_searched_order_for_the_same_calibration_data(pair, calib, monkeypatch):
    from boomerang.orders import registry

    fresh = bm.BoomerangPair(pair.teacher, pair.student, pair.mapping)
    searches = []
    real = registry.patch_order
    monkeypatch.setattr(registry, "patch_order", lambda p, o, c: searches.append(o) or real(p, o, c))
    sets = od.patch_order(fresh, "klpatch", calib)
    for k in range(fresh.num_student_layers + 1):
        built = od.build(fresh, "klpatch", k, calib)
        assert built.config.num_hidden_layers == fresh.mapping.patched_layers(sets[k])
        assert built.boomerang_patched == tuple(sorted(sets[k]))
    assert searches == ["klpatch"]  # one search for every size
    od.build(fresh, "klpatch", 1, calib.clone())  # equal data: no new search
    od.build(fresh, "klpatch", 1, calib[:, :-1])  # other data: a new search
    assert searches == ["klpatch", "klpatch"]
    # The engine builds the rule orders itself and points a search order to boomerang.orders.
    assert od.build(fresh, "last-to-first", 2).boomerang_patched == fresh.build(order="last-to-first", k=2).boomerang_patched
    with pytest.raises(BoomerangError, match=r"for 'klpatch' use boomerang.orders.build\(pair, 'klpatch', k, calib_ids\)"):
        fresh.build(order="klpatch", k=1)
    with pytest.raises(BoomerangError, match="k must be a whole number from 0 to"):
        od.build(fresh, "klpatch", fresh.num_student_layers + 1, calib)


def test_angular_pruning_drops_the_run_a_hand_computation_picks(pair, calib):
    """Gromov et al.: for n layers to drop, the start l (l + n <= N - 1) minimising the mean over
    sequences of arccos(cos(x_l, x_{l+n})) / pi at the last position, x_i the input of layer i."""
    import math

    N = pair.mapping.num_teacher_layers
    with torch.no_grad():
        hs = pair.teacher(calib, output_hidden_states=True).hidden_states  # hs[i]: input of layer i (i < N)
    last = [[h[b, -1].double().tolist() for b in range(calib.shape[0])] for h in hs[:N]]

    def dist(i: int, j: int) -> float:
        total = 0.0
        for u, v in zip(last[i], last[j]):
            dot = sum(a * b for a, b in zip(u, v))
            cos = dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
            total += math.acos(max(-1.0, min(1.0, cos))) / math.pi
        return total / len(last[i])

    got = od.pruning_order(pair, "angular", calib, sizes=range(1, N + 1))
    assert got[N] == list(range(N))
    for L in range(1, N):
        n = N - L
        l_best = min(range(N - n), key=lambda l: (dist(l, l + n), l))  # noqa: E741
        assert got[L] == [t for t in range(N) if not l_best <= t < l_best + n], L
        assert N - 1 in got[L]  # the last layer stays
    with pytest.raises(BoomerangError, match="calibration"):
        od.pruning_order(pair, "angular", None)


def test_sleb_removes_the_layers_a_hand_run_greedy_search_removes(pair, calib):
    """Song et al.: remove one layer at a time, each time the one whose removal leaves the lowest
    calibration perplexity, measured again after every removal."""
    N = pair.mapping.num_teacher_layers

    def nll_without(removed: list[int]) -> float:
        model = copy.deepcopy(pair.teacher)
        model.model.layers = torch.nn.ModuleList(l for i, l in enumerate(model.model.layers) if i not in removed)
        model.config.num_hidden_layers = len(model.model.layers)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=calib, use_cache=False).logits.double(), -1)
        return float(-logp[:, :-1].gather(-1, calib[:, 1:, None]).mean())

    removed: list[int] = []
    for _ in range(N - 1):
        left = [t for t in range(N) if t not in removed]
        removed.append(min(left, key=lambda t: (nll_without(removed + [t]), t)))
    got = od.pruning_order(pair, "sleb", calib, sizes=range(1, N + 1))
    for L in range(1, N + 1):
        assert got[L] == [t for t in range(N) if t not in removed[: N - L]], L
    # The interpolation sizes alone (the default) give the same choice at each of them.
    assert od.pruning_order(pair, "sleb", calib) == {L: got[L] for L in range(pair.num_student_layers, N + 1)}
    with pytest.raises(BoomerangError, match="calibration"):
        od.pruning_order(pair, "sleb", None)


def test_the_dashboard_says_why_the_exhaustive_optimum_is_not_offered():
    from boomerang import ui

    assert ui.missing_orders_note(tiny_pair("llama", 10)) is None  # 6 student layers: every order
    big = tiny_pair("llama", 30, perturb=0.0)  # 16 student layers
    note = ui.missing_orders_note(big)
    assert "optimal" not in ui.available_orders(big)
    assert note.startswith("Not offered here: optimal,") and "at most 12 layers (this one has 16: 2^16" in note


def test_laco_is_a_baseline_whose_models_are_built_from_cached_groups(pair, calib, tmp_path, monkeypatch):
    """pruning_order(..., "laco") gives LaCo's groups per size, searched once and then read from
    the cache; prune_teacher builds each size's merged model from them; a damaged cache entry is
    searched again."""
    from boomerang.orders import laco

    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path))
    N, n = pair.mapping.num_teacher_layers, pair.num_student_layers
    assert od.get_order("laco").is_baseline and od.needs_calibration("laco") and "laco" in od.BASELINES
    got = od.pruning_order(pair, "laco", calib)
    assert got == {L: [list(g) for g in gs] for L, gs in laco.laco_merges(pair, calib).items()}
    assert sorted(got) == list(range(n, N + 1)) and all(len(got[L]) == L for L in got)
    for L, groups in got.items():
        model = od.prune_teacher(pair, groups)
        assert model.config.num_hidden_layers == L and model.boomerang_groups == tuple(map(tuple, groups))
        with torch.no_grad():
            want = od.build_laco(pair, groups)(input_ids=calib).logits
            assert torch.equal(model(input_ids=calib).logits, want)

    (entry,) = (tmp_path / "laco").glob("*.json")

    def no_search(*a, **k):
        raise AssertionError("searched again")

    monkeypatch.setattr(laco, "laco_merges", no_search)
    assert od.pruning_order(pair, "laco", calib) == got  # from the cache
    entry.write_text('{"7": [[0, 1, 2]]}')  # damaged: groups that do not cover the teacher
    monkeypatch.undo()
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path))
    assert od.pruning_order(pair, "laco", calib) == got
    with pytest.raises(BoomerangError, match="calibration"):
        od.pruning_order(pair, "laco", None)


def test_a_sweep_draws_laco_at_every_size_with_its_groups(pair, calib, tmp_path):
    df = bm.sweep(pair, ["laco"], data=random_ids(3, 12, seed=4), calib_ids=calib, cache_dir=tmp_path)
    N, n = pair.mapping.num_teacher_layers, pair.num_student_layers
    assert list(df.layers) == list(range(n, N + 1))
    import json

    groups = [json.loads(k) for k in df.kept]
    assert all(len(g) == L for g, L in zip(groups, df.layers))
    assert df.perplexity.iloc[-1] == pytest.approx(
        bm.sweep(pair, ["naive-pruning"], data=random_ids(3, 12, seed=4), cache_dir=tmp_path).perplexity.iloc[-1])
