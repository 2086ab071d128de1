"""Distillation: the loss terms, the hidden-state alignment, the modes, resume after kill -9,
the CLI, and the paper's headline claim on a tiny scale (a boomerang student interpolates
better than a random-init one). Tiny seeded models; one CPU thread."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import perturb, tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from boomerang import cli, load_pair
from boomerang.core import LayerMapping, init_student
from boomerang.core.arch import find_parts
from boomerang.errors import BoomerangError
from boomerang.train import (
    FREEZABLE,
    DistillConfig,
    LossWeights,
    alignment_pairs,
    distill,
    distill_loss,
    forward_states,
    frozen_parameters,
)
from boomerang.zoo import resolve_teacher

V = 64  # vocabulary of the synthetic language

torch.set_num_threads(1)  # two cores are shared with other work; oversubscription is very slow


# ---- fixtures ------------------------------------------------------------------------------


def _llama(num_layers: int = 6, vocab: int = V, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def _markov_blocks(n: int, seq_len: int, seed: int) -> torch.LongTensor:
    """Samples of a fixed random Markov chain: each token has 3 possible successors."""
    g = torch.Generator().manual_seed(1234)  # the language itself is fixed
    succ = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(V)])  # [V, 3]
    probs = torch.softmax(torch.randn(V, 3, generator=g) * 1.5, dim=-1)  # [V, 3]
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, seq_len, dtype=torch.long)
    x[:, 0] = torch.randint(0, V, (n,), generator=g)
    for t in range(1, seq_len):
        c = torch.multinomial(probs[x[:, t - 1]], 1, generator=g).squeeze(1)
        x[:, t] = succ[x[:, t - 1], c]
    return x


def _shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this session that pytest-xdist workers share (built once, under a lock)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above the per-worker ones
    d = base / name
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict:
    """A tiny teacher trained briefly on the Markov language, saved to disk, plus data."""
    from filelock import FileLock

    root = _shared_dir(tmp_path_factory, "distill-synth")
    train, held = _markov_blocks(512, 32, seed=1), _markov_blocks(64, 32, seed=2)
    with FileLock(str(root / ".lock")):
        if not (root / "teacher" / "config.json").exists():
            teacher = _llama(6).train()
            opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(0)
            for _ in range(60):
                b = train[torch.randint(0, len(train), (16,), generator=g)]
                teacher(input_ids=b, labels=b).loss.backward()
                opt.step()
                opt.zero_grad()
            teacher.eval().save_pretrained(root / "teacher")
    return {"root": root, "teacher": str(root / "teacher"), "train": train, "held": held}


@pytest.fixture(scope="module")
def text_teacher(tmp_path_factory) -> Iterator[dict]:
    """A tiny random teacher with a real (trained BPE) tokenizer, and a text file to train on."""
    from boomerang.recipes.demo import train_tokenizer

    root = tmp_path_factory.mktemp("text")
    words = ("the king and queen of the land went to see a ship on the sea while the lord "
             "spoke of love and war and the night was long and cold").split()
    g = torch.Generator().manual_seed(0)
    paras = []
    for _ in range(400):
        idx = torch.randint(0, len(words), (int(torch.randint(20, 60, (1,), generator=g)),), generator=g)
        paras.append(" ".join(words[i] for i in idx).capitalize() + ".")
    (root / "corpus.txt").write_text("\n\n".join(paras) + "\n")
    tok = train_tokenizer(paras, root / "tok", vocab_size=320)
    model = _llama(4, vocab=len(tok))
    model.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOOMERANG_CACHE", str(root / "cache"))  # token-block cache of these tests
        yield {"root": root, "teacher": str(root / "teacher"), "data": str(root / "corpus.txt")}


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---- hidden states -------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt_neox", "gpt2"])
def test_forward_states_match_hooks(family):
    """Pin transformers' hidden_states layout and our N + 2 states against hooks on the modules.

    ``output_hidden_states`` gives N + 1 entries whose last one is the *final-normed* output
    (not the last layer's output); forward_states returns [emb, out_0 .. out_{N-1}, normed].
    """
    model = tiny_model(family, num_layers=4)
    parts = find_parts(model)
    layers, norm = parts.layer_list(model), parts.norm_module(model)
    seen: dict[str, torch.Tensor] = {}
    hooks = [layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.__setitem__("emb", a[0] if a else kw["hidden_states"]), with_kwargs=True)]
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__(f"out{i}", o[0] if isinstance(o, tuple) else o)))
    hooks.append(norm.register_forward_hook(lambda m, a, o: seen.__setitem__("norm", o)))
    ids = torch.randint(3, 96, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hf = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
        by_hooks = dict(seen)
        st = forward_states(model, ids)
    for h in hooks:
        h.remove()
    n = len(layers)
    assert len(hf) == n + 1
    assert torch.equal(hf[0], by_hooks["emb"])
    for i in range(n - 1):
        assert torch.equal(hf[i + 1], by_hooks[f"out{i}"])
    assert torch.equal(hf[n], by_hooks["norm"])  # replaced by the normed output ...
    assert not torch.allclose(hf[n], by_hooks[f"out{n - 1}"])  # ... so the last layer's is missing
    assert len(st.states) == n + 2
    expected = [seen["emb"]] + [seen[f"out{i}"] for i in range(n)] + [seen["norm"]]
    for a, b in zip(st.states, expected):
        assert torch.equal(a, b)


def test_alignment_pairs_follow_block_ends():
    m = LayerMapping.from_rule(8, keep_first=1, every=3, keep_last=1)  # blocks (0,)(1,2,3)(4,5,6)(7,)
    assert m.blocks == ((0,), (1, 2, 3), (4, 5, 6), (7,))
    assert alignment_pairs(m) == [(0, 0), (1, 1), (2, 4), (3, 7), (4, 8), (5, 9)]


# ---- the loss ------------------------------------------------------------------------------


def _pair(num_layers: int = 6):
    teacher = _llama(num_layers)
    mapping = LayerMapping.from_rule(num_layers)
    student = init_student(teacher, mapping)
    perturb(student, scale=0.05)
    return teacher, student, mapping


def test_loss_terms_match_direct_computation():
    teacher, student, mapping = _pair()
    ids = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        s, t = forward_states(student, ids), forward_states(teacher, ids)
    w = LossWeights(kl=0.3, tau=2.0, cos=0.25)
    terms = distill_loss(s, t, ids, None, mapping, w)

    ce = student(input_ids=ids, labels=ids).loss  # transformers' own shifted CE
    assert torch.allclose(terms["ce"], ce, atol=1e-5)
    V_ = s.logits.shape[-1]
    kl = F.kl_div(F.log_softmax(s.logits.reshape(-1, V_) / 2.0, -1),
                  F.log_softmax(t.logits.reshape(-1, V_) / 2.0, -1),
                  reduction="batchmean", log_target=True) * 4.0
    assert torch.allclose(terms["kl"], kl, atol=1e-6)

    # Cosine: states from hooks, block ends from the mapping, torch's CosineEmbeddingLoss.
    def states(model):
        parts, got = find_parts(model), []
        layers = parts.layer_list(model)
        hs = [layers[0].register_forward_pre_hook(lambda m, a, kw: got.append(a[0] if a else kw["hidden_states"]), with_kwargs=True)]
        hs += [l.register_forward_hook(lambda m, a, o: got.append(o)) for l in layers]
        hs.append(parts.norm_module(model).register_forward_hook(lambda m, a, o: got.append(o)))
        with torch.no_grad():
            model(input_ids=ids)
        for h in hs:
            h.remove()
        return got

    hs_s, hs_t = states(student), states(teacher)
    targets = [0] + [b[-1] + 1 for b in mapping.blocks] + [len(hs_t) - 1]
    one = torch.ones(ids.numel())
    cos = sum(F.cosine_embedding_loss(hs_s[j].reshape(-1, 32), hs_t[k].reshape(-1, 32), one)
              for j, k in enumerate(targets))
    assert len(targets) == mapping.num_student_layers + 2 == len(terms["cos_states"])
    assert torch.allclose(terms["cos"], cos, atol=1e-5)
    assert torch.allclose(terms["loss"], ce + 0.3 * kl + 0.25 * cos, atol=1e-5)


def test_padding_is_masked_in_every_term():
    teacher, student, mapping = _pair()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, 10:] = 0
    w = LossWeights(kl=0.5, cos=0.3)

    def loss(ids_):
        labels = ids_.masked_fill(mask == 0, -100)
        with torch.no_grad():
            s = forward_states(student, ids_, mask)
            t = forward_states(teacher, ids_, mask)
        return s, t, distill_loss(s, t, labels, mask, mapping, w)

    s, t, a = loss(ids)
    ids2 = ids.clone()
    ids2[mask == 0] = torch.randint(0, V, (int((mask == 0).sum()),), generator=g)
    _, _, b = loss(ids2)
    for k in ("loss", "ce", "kl", "cos"):
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # Garbage logits / states at padded positions change nothing either.
    pad = (mask == 0)[..., None]
    s2 = s._replace(logits=s.logits.masked_fill(pad, 30.0),
                    states=[h.masked_fill(pad, -7.0) for h in s.states])
    t2 = t._replace(logits=t.logits.masked_fill(pad, -30.0))
    c = distill_loss(s2, t2, ids.masked_fill(mask == 0, -100), mask, mapping, w)
    for k in ("loss", "ce", "kl", "cos"):
        assert torch.allclose(a[k], c[k], atol=1e-6), k
    # labels == -100 alone marks padding just as well as the attention mask.
    d = distill_loss(s2, t2, ids.masked_fill(mask == 0, -100), None, mapping, w)
    for k in ("loss", "ce", "kl", "cos"):
        assert torch.allclose(a[k], d[k], atol=1e-6), k
    # ... while the same change on a real position does change it.
    s3 = s._replace(logits=s.logits.clone())
    s3.logits[0, 3] += torch.randn(s3.logits.shape[-1], generator=g)
    assert not torch.allclose(distill_loss(s3, t, ids, mask, mapping, w)["kl"], a["kl"])


# ---- training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(synth) -> dict:
    """Boomerang and random-init students of the synthetic teacher, same budget."""
    from filelock import FileLock

    outs = {}
    with FileLock(str(synth["root"] / ".trained.lock")):
        for mode in ("boomerang", "random-init"):
            out = synth["root"] / mode
            if not (out / "student" / "config.json").exists():
                cfg = DistillConfig(teacher=synth["teacher"], out=str(out), steps=40, seq_len=32,
                                    batch_size=8, lr=3e-3, warmup=8, mode=mode, log_every=4,
                                    save_every=1000, seed=0)
                distill(cfg, blocks=synth["train"])
            outs[mode] = out / "student"
    return outs


def test_kl_and_cosine_fall(trained):
    boom, rand = _log(trained["boomerang"].parent), _log(trained["random-init"].parent)
    assert [r["step"] for r in boom] == list(range(4, 41, 4))
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    # The boomerang student starts next to its teacher: KL stays small, the cosine gap closes.
    assert mean(boom[-3:], "cos") < 0.8 * mean(boom[:3], "cos")
    assert mean(boom, "kl") < 0.5 * mean(rand, "kl")
    # A random-init student starts far away: both fall steeply.
    for k in ("kl", "cos"):
        assert mean(rand[-3:], k) < 0.6 * mean(rand[:3], k), k
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in boom + rand)


def test_boomerang_interpolates_better_than_random_init(synth, trained):
    held = synth["held"]

    def curve(student_dir):
        pair = load_pair(teacher=synth["teacher"], student=student_dir, device="cpu")
        n = pair.num_student_layers
        with torch.no_grad():
            return [pair.build(order="last-to-first", k=k)(input_ids=held, labels=held).loss.item()
                    for k in range(n + 1)]

    boom, rand = curve(trained["boomerang"]), curve(trained["random-init"])
    assert boom[-1] == pytest.approx(rand[-1], abs=1e-6)  # all patched = the teacher in both
    mid_b, mid_r = sum(boom[1:-1]) / len(boom[1:-1]), sum(rand[1:-1]) / len(rand[1:-1])
    assert mid_b < mid_r - 0.03, (boom, rand)
    assert max(boom[1:-1]) < min(rand[0], max(rand[1:-1]))


@pytest.mark.parametrize("mode", ["boomerang", "no-align", "ce-only", "random-init"])
def test_each_mode_runs(mode, synth, tmp_path):
    seen = []
    cfg = DistillConfig(teacher=synth["teacher"], out=str(tmp_path / mode), steps=3, seq_len=16,
                        batch_size=2, mode=mode, log_every=1, save_every=2, warmup=1)
    out = distill(cfg, progress=seen.append, blocks=synth["train"])
    assert out == tmp_path / mode / "student" and (out / "model.safetensors").is_file()
    assert [p.step for p in seen if p.event != "done"] == [1, 2, 3] and seen[-1].event == "done"
    assert seen[1].event == "checkpoint" and seen[0].eta_s is not None
    log = _log(tmp_path / mode)
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:  # every mode reports KL and cosine to the teacher, trained on or not
        assert all(r[k] == r[k] for k in ("ce", "kl", "cos"))  # not NaN
        if mode == "ce-only":
            assert r["loss"] == pytest.approx(r["ce"], rel=1e-6)
        elif mode == "no-align":
            assert r["loss"] == pytest.approx(r["ce"] + 0.1 * r["kl"], rel=1e-5)
        else:
            assert r["loss"] == pytest.approx(r["ce"] + 0.1 * r["kl"] + 2 / 6 * r["cos"], rel=1e-5)
    meta = json.loads((out / "student_config.json").read_text())
    assert meta["teacher"] == synth["teacher"] and meta["distill"]["mode"] == mode
    assert meta["distill"]["steps"] == 3 and meta["distill"]["tokens"] == 3 * 2 * 16
    pair = load_pair(teacher=synth["teacher"], student=out, device="cpu")
    teacher_l0 = pair.teacher.model.layers[0].mlp.up_proj.weight
    diff = (pair.student.model.layers[0].mlp.up_proj.weight - teacher_l0).abs().max().item()
    assert (diff > 0.05) if mode == "random-init" else (diff < 0.05)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_frozen_parameters_pick_the_named_parts(family):
    teacher = tiny_model(family, 6)
    mapping = LayerMapping.from_rule(6, 0, 2, 2)  # blocks (0,1) (2,3) (4,) (5,)
    student = init_student(teacher, mapping)
    arch = find_parts(student)
    layers, base = arch.layer_list(student), arch.base_module(student)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    params = lambda *ms: ids(p for m in ms for p in m.parameters())  # noqa: E731
    assert ids(frozen_parameters(student, mapping, ["one-to-one"])) == params(layers[2], layers[3])
    embeds = [getattr(base, n) for n in arch.embeddings]
    assert ids(frozen_parameters(student, mapping, ["embeddings"])) == params(*embeds)
    head = params(arch.norm_module(student), arch.head_module(student))
    assert ids(frozen_parameters(student, mapping, ["head"])) == head
    got = frozen_parameters(student, mapping, list(FREEZABLE))
    assert len(got) == len(ids(got))  # a tied matrix is listed once
    assert frozen_parameters(student, mapping, []) == []


def test_frozen_one_to_one_layers_patch_at_no_cost(synth, tmp_path):
    """Frozen one-to-one layers and head stay the teacher's, so patching them changes nothing."""
    cfg = DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "f"), steps=4, seq_len=16,
                        batch_size=4, warmup=1, lr=3e-3, freeze=("one-to-one", "head"))
    out = distill(cfg, blocks=synth["train"])
    pair = load_pair(teacher=synth["teacher"], student=out, device="cpu")
    s, t = pair.student, pair.teacher
    assert [b for b in pair.mapping.blocks if len(b) == 1] == [(4,), (5,)]
    for si, ti in ((2, 4), (3, 5)):
        for (name, a), b in zip(s.model.layers[si].named_parameters(), t.model.layers[ti].parameters()):
            assert torch.equal(a, b), name
    assert torch.equal(s.lm_head.weight, t.lm_head.weight) and torch.equal(s.model.norm.weight, t.model.norm.weight)
    assert not torch.equal(s.model.layers[0].mlp.up_proj.weight, t.model.layers[0].mlp.up_proj.weight)
    held = synth["held"][:8]
    with torch.no_grad():
        logits = [pair.build(order="last-to-first", k=k)(input_ids=held).logits for k in range(4)]
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[0], logits[2])
    assert not torch.allclose(logits[2], logits[3])
    assert json.loads((out.parent / "config.json").read_text())["freeze"] == ["one-to-one", "head"]


def test_freeze_settings_are_checked():
    ns = cli.build_parser().parse_args(["distill", "--teacher", "t", "--freeze", "one-to-one, head"])
    assert DistillConfig.from_cli_args(ns).freeze == ("one-to-one", "head")
    with pytest.raises(BoomerangError, match="'heads'"):
        DistillConfig(teacher="t", freeze=("heads",)).validate()
    with pytest.raises(BoomerangError, match="random-init"):
        DistillConfig(teacher="t", mode="random-init", freeze=("head",)).validate()


def test_stop_then_resume(synth, tmp_path):
    cfg = DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "run"), steps=6, seq_len=16,
                        batch_size=2, log_every=1, save_every=100, warmup=1)
    seen, stop = [], threading.Event()

    def progress(p):
        seen.append(p)
        if p.step == 2:
            stop.set()  # e.g. the dashboard's Stop button; the loop stops after its next step

    ck = distill(cfg, progress=progress, should_stop=stop, blocks=synth["train"])
    assert ck.name == "step-00000003" and seen[-1].event == "stopped"
    assert seen[-2].event == "checkpoint" and seen[-2].checkpoint == ck
    with pytest.raises(BoomerangError, match="--resume"):
        distill(cfg, blocks=synth["train"])
    cfg.resume = True
    out = distill(cfg, blocks=synth["train"])
    assert out.name == "student"
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


def _train_slowly(config: dict) -> None:
    """Child process: a run slowed down by its progress callback, so it can be killed mid-way."""
    distill(DistillConfig.from_dict(config), progress=lambda p: time.sleep(0.03))


def test_resume_after_kill_9(text_teacher, tmp_path):
    """A run SIGKILLed after its first checkpoint resumes to the same final student."""
    import multiprocessing

    out = tmp_path / "run"
    cfg = DistillConfig(teacher=text_teacher["teacher"], data=text_teacher["data"], out=str(out),
                        steps=30, seq_len=16, batch_size=2, log_every=1, save_every=10, warmup=2,
                        lr=1e-3, threads=1)
    # A forked child (not a fresh interpreter) skips seconds of imports; SIGKILL is SIGKILL.
    proc = multiprocessing.get_context("fork").Process(target=_train_slowly, args=(cfg.to_dict(),))
    proc.start()
    ckpt = out / "checkpoints" / "step-00000010" / "trainer_state.json"
    deadline = time.time() + 60
    while not ckpt.exists():
        assert proc.is_alive(), f"the training process died (exit code {proc.exitcode})"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.15)  # a few more logged steps that the resume must drop
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    assert not (out / "student").exists(), "the run finished before it could be killed"
    killed_at = max(r["step"] for r in _log(out))
    assert 10 <= killed_at < 30

    cfg.resume = True
    student = distill(cfg)
    steps = [r["step"] for r in _log(out)]
    assert steps == list(range(1, 31))  # continuous, no duplicates

    ref = distill(DistillConfig(**{**cfg.to_dict(), "out": str(tmp_path / "ref"), "resume": False}))
    a = load_pair(teacher=cfg.teacher, student=student, device="cpu").student.state_dict()
    b = load_pair(teacher=cfg.teacher, student=ref, device="cpu").student.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    ref_log = _log(tmp_path / "ref")
    assert [r["loss"] for r in _log(out)] == pytest.approx([r["loss"] for r in ref_log], rel=1e-5)


# ---- config and CLI ------------------------------------------------------------------------


def test_config_from_file_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("teacher: t\nsteps: 7\nlr: 0.001\nweights: {kl: 0.5}\n")
    ns = cli.build_parser().parse_args(
        ["distill", "--config", str(tmp_path / "c.yaml"), "--steps", "9", "--w-cos", "0.2", "--out", "o"])
    cfg = DistillConfig.from_cli_args(ns)
    assert (cfg.teacher, cfg.steps, cfg.lr, cfg.out) == ("t", 9, 0.001, "o")
    assert (cfg.weights.kl, cfg.weights.cos, cfg.resume) == (0.5, 0.2, False)
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"stepz": 3}))
    with pytest.raises(BoomerangError, match="stepz"):
        DistillConfig.from_file(tmp_path / "bad.json")
    assert cfg.effective_weights(8).cos == 0.2
    assert DistillConfig(mode="ce-only").effective_weights(8) == LossWeights(kl=0.0, cos=0.0)
    assert DistillConfig().effective_weights(8).cos == 0.25


@pytest.mark.parametrize("cls", ["DistillConfig", "LocalDistillConfig"])
@pytest.mark.parametrize(("bad", "says"), [
    ({"min_lr_ratio": 5.0}, "min_lr_ratio must lie in [0, 1], not 5.0."),
    ({"grad_clip": -1.0}, "grad_clip must not be negative, not -1.0."),
    ({"weight_decay": -0.1}, "weight_decay must not be negative, not -0.1."),
    ({"steps": True}, "steps must be a whole number, not True."),
    ({"steps": 2.5}, "steps must be a whole number, not 2.5."),
    ({"every": 0}, "every must be at least 1, not 0."),
    ({"keep_first": -1}, "keep_first must be at least 0, not -1."),
    ({"lr": "3e-4"}, "lr must be a finite number, not '3e-4'."),
    ({"lr": float("inf")}, "lr must be a finite number, not inf."),
    ({"resume": "yes"}, "resume must be true or false, not 'yes'."),
    ({"split": ""}, "split must name a data split"),
    ({"threads": 0}, "threads must be at least 1, not 0."),
])
def test_every_run_config_refuses_the_same_bad_settings(cls, bad, says):
    """Both run configs share one set of checks: before, DistillConfig let min_lr_ratio=5 (a
    rising lr), a negative grad_clip and 2.5 steps through, and crashed on lr given as text."""
    from boomerang.train import local

    config_class = {"DistillConfig": DistillConfig, "LocalDistillConfig": local.LocalDistillConfig}[cls]
    with pytest.raises(BoomerangError) as e:
        config_class(**{"teacher": "t", **bad}).validate()
    assert says in str(e.value) and "\n" not in str(e.value)


def test_config_files_may_write_numbers_as_yaml_reads_them(tmp_path):
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; a config file means the number."""
    (tmp_path / "c.yaml").write_text("teacher: t\nlr: 3e-4\nsteps: 1e3\nweights: {kl: 5e-2}\n")
    cfg = DistillConfig.from_file(tmp_path / "c.yaml")
    cfg.validate()
    assert (cfg.lr, cfg.steps, cfg.weights.kl) == (0.0003, 1000, 0.05)
    assert isinstance(cfg.steps, int)
    (tmp_path / "bad.yaml").write_text("teacher: t\nlr: fast\n")
    with pytest.raises(BoomerangError, match="lr must be a number, not 'fast'"):
        DistillConfig.from_file(tmp_path / "bad.yaml")
    (tmp_path / "half.yaml").write_text("teacher: t\nsteps: 2.5\n")
    with pytest.raises(BoomerangError, match="steps must be a whole number, not 2.5"):
        DistillConfig.from_file(tmp_path / "half.yaml").validate()


def test_mode_local_hands_every_shared_setting_to_the_local_run():
    from boomerang.train.local import from_distill_config

    cfg = DistillConfig(teacher="t", data="d", out="o", keep_first=1, every=3, keep_last=1, steps=17, seq_len=9,
                        batch_size=3, lr=1e-3, min_lr_ratio=0.2, warmup=4, weight_decay=0.01, grad_clip=0.5,
                        save_every=5, log_every=2, resume=True, seed=7, split="validation", max_blocks=11,
                        threads=1, mode="local", local_loss="mse", teacher_input_prob=0.25, freeze=("one-to-one",),
                        betas=(0.8, 0.9), sink_weight=16.0, updates_per_batch=2)
    local = from_distill_config(cfg)
    assert (local.teacher, local.data, local.out, local.keep_first, local.every, local.keep_last) == (
        "t", "d", "o", 1, 3, 1)
    assert (local.steps, local.seq_len, local.batch_size, local.lr, local.min_lr_ratio, local.warmup) == (
        17, 9, 3, 1e-3, 0.2, 4)
    assert (local.weight_decay, local.grad_clip, local.save_every, local.log_every, local.resume) == (
        0.01, 0.5, 5, 2, True)
    assert (local.seed, local.split, local.max_blocks, local.threads) == (7, "validation", 11, 1)
    assert (local.loss, local.teacher_input_prob, local.freeze_one_to_one) == ("mse", 0.25, True)
    assert (local.betas, local.sink_weight, local.updates_per_batch) == ((0.8, 0.9), 16.0, 2)


def test_every_setting_has_a_flag_and_the_cli_defaults_are_pythons():
    parse = lambda *a: DistillConfig.from_cli_args(cli.build_parser().parse_args(["distill", *a]))  # noqa: E731
    assert parse() == DistillConfig()
    # Python and the CLI agree on the block-local input mix (they once said 1.0 and 0.5).
    assert DistillConfig().teacher_input_prob == 0.5
    from boomerang.train.local import LocalDistillConfig
    assert LocalDistillConfig().teacher_input_prob == 0.5
    # Settings that once had no flag.
    cfg = parse("--betas", "0.8,0.99", "--keep-checkpoints", "3", "--min-lr-ratio", "0.2", "--split", "validation",
                "--w-ce", "0.5", "--sink-weight", "4", "--updates-per-batch", "2", "--mode", "local", "--no-resume")
    assert (cfg.betas, cfg.keep_checkpoints, cfg.min_lr_ratio, cfg.split) == ((0.8, 0.99), 3, 0.2, "validation")
    assert (cfg.weights.ce, cfg.sink_weight, cfg.updates_per_batch, cfg.resume) == (0.5, 4.0, 2, False)
    parser = argparse.ArgumentParser()
    DistillConfig.add_cli_arguments(parser)
    flags = set(re.findall(r"--[a-z-]+", parser.format_help()))
    for name in ("teacher", "data", "out", "keep-first", "every", "keep-last", "steps", "seq-len", "batch-size",
                 "lr", "min-lr-ratio", "warmup", "weight-decay", "betas", "grad-clip", "save-every", "log-every",
                 "resume", "seed", "split", "max-blocks", "threads", "teacher-input-prob", "mode", "grad-accum",
                 "w-ce", "w-kl", "tau", "w-cos", "freeze", "keep-checkpoints", "precision", "eval-every",
                 "eval-blocks", "local-loss", "sink-weight", "updates-per-batch", "log-with"):
        assert f"--{name}" in flags, name


@pytest.mark.parametrize(("settings", "message"), [
    ({"mode": "local", "log_with": ("tensorboard",)}, "Mode local does not use log_with (set to ('tensorboard',))"),
    ({"mode": "local", "grad_accum": 2}, "Mode local does not use grad_accum (set to 2)"),
    ({"mode": "local", "precision": "bf16"}, "Mode local does not use precision (set to 'bf16')"),
    ({"mode": "local", "weights": {"kl": 0.5}}, "Mode local does not use weights.kl (set to 0.5)"),
    ({"mode": "boomerang", "teacher_input_prob": 1.0}, "Mode boomerang does not use teacher_input_prob (set to 1.0)"),
    ({"mode": "boomerang", "local_loss": "mse"}, "Mode boomerang does not use local_loss (set to 'mse')"),
    ({"mode": "ce-only", "weights": {"cos": 0.3}}, "Mode ce-only does not use weights.cos (set to 0.3)"),
    ({"mode": "no-align", "weights": {"cos": 0.3}}, "Mode no-align does not use weights.cos (set to 0.3)"),
])
def test_a_setting_the_mode_ignores_is_refused(settings, message):
    with pytest.raises(BoomerangError) as e:
        DistillConfig.from_dict({"teacher": "t", **settings}).validate()
    assert message in str(e.value)
    # What the mode does use passes.
    DistillConfig.from_dict({"teacher": "t", "mode": "local", "teacher_input_prob": 1.0, "sink_weight": 8}).validate()
    DistillConfig.from_dict({"teacher": "t", "mode": "no-align", "weights": {"kl": 0.5}}).validate()


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parent.parent / "configs").glob("*.yaml")
                                         if not p.name.startswith("accelerate")))
def test_shipped_configs_are_valid(name):
    cfg = DistillConfig.from_file(Path(__file__).resolve().parent.parent / "configs" / name)
    cfg.validate()
    assert cfg.steps > 0 and cfg.teacher


def test_cli_distill_and_errors(text_teacher, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["distill", "--teacher", text_teacher["teacher"], "--data", text_teacher["data"],
            "--seq-len", "16", "--batch-size", "2", "--save-every", "2",
            "--log-every", "1", "--out", str(out), "--threads", "1", "--steps"]
    assert cli.main(args + ["4"]) == 0
    assert "wrote student" in capsys.readouterr().out
    pair = load_pair(teacher=text_teacher["teacher"], student=out / "student", device="cpu")
    assert pair.tokenizer is not None and pair.mapping.num_student_layers == 3
    assert cli.main(args + ["4"]) == 2  # checkpoints exist and no --resume
    err = capsys.readouterr().err
    assert "--resume" in err and err.count("\n") == 1
    assert cli.main(args + ["6", "--resume"]) == 0
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4, 5, 6]
    assert cli.main(["distill", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_bundled_pair_name_stands_for_its_teacher(tmp_path):
    from boomerang.zoo import demo_dirs

    teacher_dir = str(demo_dirs()[0])
    assert resolve_teacher("demo") == teacher_dir
    assert resolve_teacher(teacher_dir) == teacher_dir and resolve_teacher("org/model") == "org/model"
    cfg = DistillConfig(teacher="demo", data="demo", out=str(tmp_path / "d"), steps=2, seq_len=16,
                        batch_size=2, warmup=1, max_blocks=8, threads=1)
    out = distill(cfg)
    # The student names the teacher's folder, so it loads without knowing the bundled names.
    assert json.loads((out / "student_config.json").read_text())["teacher"] == teacher_dir
    assert load_pair(student=out).teacher.config.num_hidden_layers == 12


def test_bf16_run_after_fp32_run_in_one_process(synth, tmp_path):
    """Accelerate keeps one precision per process; a later run may pick another (CPU bf16 here)."""
    base = dict(teacher=synth["teacher"], steps=2, seq_len=16, batch_size=2, log_every=1, warmup=1)
    distill(DistillConfig(out=str(tmp_path / "a"), precision="fp32", **base), blocks=synth["train"])
    out = distill(DistillConfig(out=str(tmp_path / "b"), precision="bf16", **base), blocks=synth["train"])
    log = _log(out.parent)
    assert len(log) == 2 and all(r["loss"] == r["loss"] for r in log)
    pair = load_pair(teacher=synth["teacher"], student=out, device="cpu")
    assert next(pair.student.parameters()).dtype == torch.float32  # master weights stay fp32


def test_resume_with_other_mapping_or_freeze_is_refused(synth, tmp_path):
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=2, seq_len=16,
                batch_size=2, save_every=1, warmup=1, log_every=1)
    distill(DistillConfig(**base), blocks=synth["train"])
    (tmp_path / "r" / "checkpoints" / ".tmp-step-00000009").mkdir()  # left by a killed save
    with pytest.raises(BoomerangError, match="different settings: every"):
        distill(DistillConfig(**base, every=3, resume=True), blocks=synth["train"])
    with pytest.raises(BoomerangError, match="freeze"):
        distill(DistillConfig(**base, freeze=("head",), resume=True), blocks=synth["train"])
    distill(DistillConfig(**{**base, "steps": 3}, resume=True), blocks=synth["train"])
    assert not (tmp_path / "r" / "checkpoints" / ".tmp-step-00000009").exists()
    assert [r["step"] for r in _log(tmp_path / "r")] == [1, 2, 3]


def test_grad_accum_matches_a_bigger_batch(synth, tmp_path):
    """2 micro-batches of 2 = 1 batch of 4: same samples, same averaged gradient, same student."""
    base = dict(teacher=synth["teacher"], steps=3, seq_len=16, warmup=1, log_every=1, lr=1e-3)
    a = distill(DistillConfig(out=str(tmp_path / "a"), batch_size=4, **base), blocks=synth["train"])
    b = distill(DistillConfig(out=str(tmp_path / "b"), batch_size=2, grad_accum=2, **base),
                blocks=synth["train"])
    sa = load_pair(teacher=synth["teacher"], student=a, device="cpu").student.state_dict()
    sb = load_pair(teacher=synth["teacher"], student=b, device="cpu").student.state_dict()
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5
    assert [r["tokens"] for r in _log(tmp_path / "b")] == [64, 128, 192]


def test_chunked_kl_matches_and_backprops(monkeypatch):
    """The chunked, checkpointed KL gives the same value and gradient as the one-shot one."""
    import importlib

    D = importlib.import_module("boomerang.train.loss")

    g = torch.Generator().manual_seed(0)
    s0, t = torch.randn(50, 17, generator=g), torch.randn(50, 17, generator=g)
    grads = []
    for chunk in (10**6, 8):
        monkeypatch.setattr(D, "KL_CHUNK", chunk)
        s = s0.clone().requires_grad_(True)
        kl = D._kl_per_token(s, t, 2.0)
        kl.sum().backward()
        grads.append((kl.detach(), s.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


# ---- pretraining through the same loop, and run-folder safety ---------------------------------


def test_pretrain_mode_learns_from_scratch_and_logs_validation(text_teacher, tmp_path):
    """mode=pretrain: a random model of the folder's architecture, CE only, no teacher loaded;
    the validation perplexity logged every eval_every steps falls, and the result is a plain model."""
    from transformers import AutoTokenizer

    arch = tmp_path / "arch"
    tok = AutoTokenizer.from_pretrained(text_teacher["teacher"])
    _llama(2, vocab=len(tok)).config.save_pretrained(arch)
    tok.save_pretrained(arch)
    cfg = DistillConfig(teacher=str(arch), data=text_teacher["data"], out=str(tmp_path / "pre"), mode="pretrain",
                        steps=40, seq_len=32, batch_size=8, lr=3e-3, warmup=4, log_every=10, save_every=20,
                        eval_every=20, eval_blocks=4, weight_decay=0.1)
    out = distill(cfg)
    assert out == tmp_path / "pre" / "model" and (out / "model.safetensors").is_file()
    assert not (out / "student_config.json").exists()
    log = _log(tmp_path / "pre")
    vals = [r["val_ppl"] for r in log if "val_ppl" in r]
    assert [r["step"] for r in log if "val_ppl" in r] == [20, 40]
    assert all(r["kl"] != r["kl"] for r in log)  # no teacher: KL is NaN, not a number
    assert vals[1] < vals[0] < len(tok)  # better than uniform guessing, and improving
    with pytest.raises(BoomerangError, match="no teacher weights"):
        DistillConfig(teacher=str(arch), mode="pretrain", freeze=("head",)).validate()


def test_out_folder_that_is_not_this_run_is_refused_and_left_unchanged(synth, tmp_path):
    """--out at an existing model folder: refused before anything is written (its config.json survives)."""
    victim = Path(synth["teacher"])
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()}
    with pytest.raises(BoomerangError, match="not empty"):
        distill(DistillConfig(teacher=synth["teacher"], out=str(victim), steps=1, seq_len=16, batch_size=2),
                blocks=synth["train"])
    assert {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(BoomerangError, match="is a file"):
        distill(DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "file"), steps=1), blocks=synth["train"])
    with pytest.raises(BoomerangError, match="no run to resume"):
        distill(DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "new"), steps=1, resume=True),
                blocks=synth["train"])


@pytest.mark.parametrize("change", [dict(lr=1e-3), dict(seq_len=8), dict(batch_size=4), dict(data="other"),
                                    dict(mode="no-align"), dict(grad_accum=2)])
def test_resume_with_settings_that_change_training_is_refused(change, synth, tmp_path):
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=2, seq_len=16, batch_size=2,
                save_every=1, warmup=1, log_every=1)
    distill(DistillConfig(**base), blocks=synth["train"])
    saved = (tmp_path / "r" / "config.json").read_bytes()
    name = next(iter(change))
    # The batch may be split differently (across processes), not changed: 2 sequences per step.
    says = ("was trained with 2 sequences per step .* these settings give 4" if name in ("batch_size", "grad_accum")
            else f"different settings: {name} ")
    with pytest.raises(BoomerangError, match=says):
        distill(DistillConfig(**{**base, **change, "steps": 3}, resume=True), blocks=synth["train"])
    assert (tmp_path / "r" / "config.json").read_bytes() == saved  # the run's record is untouched


def test_second_process_on_the_same_out_is_refused(synth, tmp_path):
    import fcntl

    out = tmp_path / "locked"
    out.mkdir()
    with open(out / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # stands for another process's run
        with pytest.raises(BoomerangError, match="Another process is training"):
            distill(DistillConfig(teacher=synth["teacher"], out=str(out), steps=1, seq_len=16, batch_size=2),
                    blocks=synth["train"])


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(synth, tmp_path, caplog):
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=4, seq_len=16, batch_size=2,
                save_every=1, warmup=1, log_every=1, keep_checkpoints=3)
    ref = distill(DistillConfig(**base), blocks=synth["train"])
    ref_w = (ref / "model.safetensors").read_bytes()
    # Redo the run, stopped after step 3, then cut the newest checkpoint's weights short.
    out2 = tmp_path / "r2"
    distill(DistillConfig(**{**base, "out": str(out2)}), blocks=synth["train"],
            should_stop=lambda: len(list((out2 / "checkpoints").glob("step-*"))) >= 3)
    newest = sorted((out2 / "checkpoints").glob("step-*"))[-1]
    weights = next(newest.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level("WARNING"):
        got = distill(DistillConfig(**{**base, "out": str(out2)}, resume=True), blocks=synth["train"])
    assert "cannot be read" in caplog.text and "resuming from" in caplog.text
    assert (got / "model.safetensors").read_bytes() == ref_w  # same final student as the uninterrupted run


def test_a_torn_state_file_falls_back_to_the_checkpoint_before(synth, tmp_path, caplog):
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=4, seq_len=16, batch_size=2,
                save_every=1, warmup=1, log_every=1, keep_checkpoints=3)
    ref = distill(DistillConfig(**base), blocks=synth["train"])
    out2 = tmp_path / "r2"
    distill(DistillConfig(**{**base, "out": str(out2)}), blocks=synth["train"],
            should_stop=lambda: len(list((out2 / "checkpoints").glob("step-*"))) >= 3)
    state = sorted((out2 / "checkpoints").glob("step-*"))[-1] / "trainer_state.json"
    state.write_text(state.read_text()[:9])  # torn JSON
    with caplog.at_level("WARNING"):
        got = distill(DistillConfig(**{**base, "out": str(out2)}, resume=True), blocks=synth["train"])
    assert "trainer_state.json" in caplog.text and "resuming from" in caplog.text
    assert (got / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


class _Payload:
    """Pickles as a call that creates a file: what an attacker would plant in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("planted", ["random_states_0.pkl", "optimizer.bin", "scheduler.bin"])
def test_a_checkpoint_holds_no_pickle_and_a_planted_one_never_runs(synth, tmp_path, planted):
    """A checkpoint is safetensors and JSON only; a pickle planted beside them (where Accelerate
    would keep its optimizer, scheduler and RNG states) is never read, and the run resumes to the
    very student of an uninterrupted one."""
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=3, seq_len=16, batch_size=2,
                save_every=1, warmup=1, log_every=1, keep_checkpoints=3)
    ref = distill(DistillConfig(**{**base, "out": str(tmp_path / "ref")}), blocks=synth["train"])
    out = tmp_path / "r"
    distill(DistillConfig(**base), blocks=synth["train"],
            should_stop=lambda: len(list((out / "checkpoints").glob("step-*"))) >= 2)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert sorted(p.name for p in newest.iterdir()) == ["state.safetensors", "trainer_state.json"]
    marker = tmp_path / "payload-ran"
    torch.save(_Payload(marker), newest / planted)
    got = distill(DistillConfig(**base, resume=True), blocks=synth["train"])
    assert not marker.exists()
    assert (got / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()


def test_validation_during_distillation_watches_the_student_and_patched_sizes(synth, tmp_path):
    """--eval-every logs the student's validation perplexity and that of a few last-to-first sizes,
    equal to measuring the saved student's patched models afterwards."""
    from boomerang.eval import perplexity as ppl
    from boomerang.train.curves import patched_sizes

    cfg = DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=4, seq_len=16, batch_size=2,
                        warmup=1, log_every=2, eval_every=4)
    val = synth["held"][:4, :16]
    out = distill(cfg, blocks=synth["train"], val_blocks=val)
    rec = [r for r in _log(tmp_path / "r") if "val_ppl" in r]
    assert [r["step"] for r in rec] == [4]
    mapping = LayerMapping.from_rule(6, 0, 2, 2)
    ks = patched_sizes(mapping)
    assert ks == [1, 3] and sorted(k for k in rec[0] if k.startswith("val_ppl_k")) == ["val_ppl_k1", "val_ppl_k3"]
    pair = load_pair(teacher=synth["teacher"], student=out, device="cpu")
    assert rec[0]["val_ppl"] == pytest.approx(ppl(pair.student, val).perplexity, rel=1e-4)
    for k in ks:
        want = ppl(pair.build(order="last-to-first", k=k), val).perplexity
        assert rec[0][f"val_ppl_k{k}"] == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("mode", ["boomerang", "local"])
def test_the_whole_curve_is_measured_while_training_and_again_after_a_resume(synth, tmp_path, mode):
    """curves.jsonl: naive pruning and the initial student at step 0, then every size of
    last-to-first at each evaluation, equal to measuring the models afterwards; for whole-model
    and block-local distillation alike."""
    from boomerang.eval import perplexity as ppl
    from boomerang.train.curves import read_curves

    val = synth["held"][:4, :16]
    base = dict(teacher=synth["teacher"], out=str(tmp_path / "r"), steps=4, seq_len=16, batch_size=2,
                warmup=1, log_every=2, eval_every=2, save_every=2, mode=mode)
    stop_at_2 = lambda: (tmp_path / "r" / "checkpoints" / "step-00000002").exists()  # noqa: E731
    distill(DistillConfig(**base), blocks=synth["train"], val_blocks=val, should_stop=stop_at_2)
    assert [(c["order"], c["step"]) for c in read_curves(tmp_path / "r")] == [
        ("naive-pruning", 0), ("last-to-first", 0), ("last-to-first", 2)]
    out = distill(DistillConfig(**base, resume=True), blocks=synth["train"], val_blocks=val)
    curves = read_curves(tmp_path / "r")
    assert [(c["order"], c["step"]) for c in curves] == [
        ("naive-pruning", 0), ("last-to-first", 0), ("last-to-first", 2), ("last-to-first", 4)]
    assert [c["tokens"] for c in curves] == [0, 0, 64, 128]
    pair = load_pair(teacher=synth["teacher"], student=out, device="cpu")
    mapping = pair.mapping
    naive, start, last = curves[0], curves[1], curves[-1]
    assert last["layers"] == naive["layers"] == list(range(4, 7))  # 4 student layers (2 blocks of 2), 6 teacher
    teacher_ppl = ppl(pair.teacher, val).perplexity
    assert naive["perplexity"][-1] == start["perplexity"][-1] == last["perplexity"][-1] == pytest.approx(teacher_ppl, rel=1e-4)
    undistilled = init_student(pair.teacher, mapping)  # the naively pruned teacher at the student's size
    assert naive["perplexity"][0] == start["perplexity"][0] == pytest.approx(ppl(undistilled, val).perplexity, rel=1e-4)
    for L, p in zip(last["layers"], last["perplexity"]):  # the final student's models, size by size
        k = next(k for k in range(5) if mapping.patched_layers(pair.sequential("last-to-first", k)) == L)
        assert p == pytest.approx(ppl(pair.build(order="last-to-first", k=k), val).perplexity, rel=1e-4)
    log = [r for r in _log(tmp_path / "r") if "val_ppl" in r]
    assert [r["step"] for r in log] == [2, 4] and log[-1]["val_ppl"] == pytest.approx(last["perplexity"][0], rel=1e-4)


def test_validation_curves_are_measured_under_bf16_too(synth, tmp_path):
    from boomerang.train.curves import read_curves

    cfg = DistillConfig(teacher=synth["teacher"], out=str(tmp_path / "b"), steps=2, seq_len=16, batch_size=2,
                        warmup=1, log_every=1, eval_every=2, precision="bf16")
    distill(cfg, blocks=synth["train"], val_blocks=synth["held"][:4, :16])
    rec = [r for r in _log(tmp_path / "b") if "val_ppl" in r]
    assert {"val_ppl_k1", "val_ppl_k3"} <= rec[-1].keys()  # the patched sizes no longer vanish under bf16
    curves = read_curves(tmp_path / "b")
    assert [(c["order"], c["step"]) for c in curves][-1] == ("last-to-first", 2)
    assert all(p > 1 for c in curves for p in c["perplexity"])


def test_settings_named_by_anything_but_text_are_refused(tmp_path):
    with pytest.raises(BoomerangError, match="The distillation settings must be named by text, not 1"):
        DistillConfig.from_dict({1: 2})
    (tmp_path / "c.yaml").write_text("teacher: t\n1: 2\n")
    with pytest.raises(BoomerangError, match="must be named by text, not 1"):
        DistillConfig.from_file(tmp_path / "c.yaml")
    with pytest.raises(BoomerangError, match="The loss weights must be named by text, not 3"):
        DistillConfig.from_dict({"teacher": "t", "weights": {3: 0.1}})
