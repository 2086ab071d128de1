"""Block-local distillation on tiny seeded models of three families (Llama, GPT-NeoX, Qwen2):
the captured block ends are the teacher's hidden states, the local loss falls, the trained
student patches exactly like a hand-assembled model, a stopped or killed run resumes to the
very same student, and bad settings raise one clear BoomerangError. One CPU thread."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from oracles import assemble_by_hand
from tiny import VOCAB, tiny_model

from boomerang import load_pair
from boomerang.core import LayerMapping, init_student, read_student_config
from boomerang.errors import BoomerangError
from boomerang.train.local import (
    LocalDistillConfig,
    local_distill,
    local_loss,
    local_losses,
    lr_at,
    teacher_block_io,
    trained_layers,
)

torch.set_num_threads(1)

FAMILIES3 = ("llama", "gpt_neox", "qwen2")
RULE = (1, 2, 1)  # 8 teacher layers -> 5 student layers: (0,), (1, 2), (3, 4), (5, 6), (7,)


def _blocks(n: int = 48, seq_len: int = 16, seed: int = 0) -> torch.LongTensor:
    """Token blocks with some structure (a noisy repeating pattern), so there is something to fit."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(seq_len).repeat(n, 1) * 7 % (VOCAB - 3) + 3
    noise = torch.randint(3, VOCAB, (n, seq_len), generator=g)
    keep = torch.rand(n, seq_len, generator=g) < 0.6
    return torch.where(keep, base, noise)


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each family's tiny teacher saved to disk once (local_distill loads teachers by path)."""
    out = {}
    for fam in FAMILIES3:
        d = tmp_path_factory.mktemp(f"teacher-{fam}")
        tiny_model(fam, 8).save_pretrained(d)
        out[fam] = d
    return out


def _config(teacher: Path, out: Path, **kw) -> LocalDistillConfig:
    base = {"teacher": str(teacher), "out": str(out), "keep_first": RULE[0], "every": RULE[1],
                "keep_last": RULE[2], "steps": 24, "seq_len": 16, "batch_size": 4, "lr": 3e-3, "warmup": 2,
                "log_every": 4, "save_every": 8, "seed": 0, "threads": 1}
    base.update(kw)
    return LocalDistillConfig(**base)


# ---- the block ends -----------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES3 + ("gpt2",))
def test_block_io_are_the_teachers_hidden_states(family):
    teacher = tiny_model(family, 8)
    mapping = LayerMapping.from_rule(8, *RULE)
    ids = _blocks(2, 12)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second sequence
    with torch.no_grad():
        hs = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    ios = teacher_block_io(teacher, mapping, ids, mask)
    assert sorted(ios) == [0, 1, 2, 3, 4]
    for i, io in ios.items():
        first, last = mapping.blocks[i][0], mapping.blocks[i][-1]
        assert torch.equal(io.x, hs[first])  # hidden_states[t] is the input of layer t
        if last < 7:  # the last entry of hidden_states is final-normed, not the layer output
            assert torch.allclose(io.y, hs[last + 1], atol=1e-6)
    assert not torch.allclose(ios[4].y, hs[8], atol=1e-3)  # hs[8] = norm(out(layer 7))


@pytest.mark.parametrize("family", FAMILIES3)
def test_initial_student_is_exact_on_one_to_one_layers(family):
    teacher = tiny_model(family, 8)
    mapping = LayerMapping.from_rule(8, *RULE)
    student = init_student(teacher, mapping).eval()
    ids = _blocks(2, 12)
    losses = local_losses(teacher, student, mapping, ids, torch.ones_like(ids))
    # Layers 0 and 4 are copies of their one-layer blocks: called with the captured arguments
    # they reproduce the teacher exactly; two-layer blocks are not reproduced by one layer.
    assert float(losses[0]) < 1e-6 and float(losses[4]) < 1e-6
    assert min(float(losses[i]) for i in (1, 2, 3)) > 1e-3


def test_local_loss_masks_padding_and_kinds():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 8, generator=g)
    p = t.clone()
    p[0, 0] = -t[0, 0]  # one token exactly opposite: cosine term 2, relative mse 4
    real = torch.ones(2, 5, dtype=torch.bool)
    assert local_loss(p, t, real, "cosine").item() == pytest.approx(2 / 10, abs=1e-6)
    assert local_loss(p, t, real, "mse").item() == pytest.approx(4 / 10, abs=1e-6)
    assert local_loss(p, t, real, "cosine+mse").item() == pytest.approx(6 / 10, abs=1e-6)
    real[0, 0] = False  # masked out: the error no longer counts
    assert local_loss(p, t, real, "cosine+mse").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(BoomerangError):
        local_loss(p, t, real, "l1")


# ---- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES3)
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_local_loss_falls(tmp_path, teacher_dirs, family, p):
    cfg = _config(teacher_dirs[family], tmp_path / "run", teacher_input_prob=p)
    held = _blocks(8, 16, seed=99)
    mapping = LayerMapping.from_rule(8, *RULE)
    pair0_teacher = tiny_model(family, 8)
    before = local_losses(pair0_teacher, init_student(pair0_teacher, mapping).eval(), mapping, held,
                          torch.ones_like(held), teacher_input_prob=1.0)
    sdir = local_distill(cfg, blocks=_blocks())
    pair = load_pair(student=sdir, device="cpu", dtype=torch.float32)
    after = local_losses(pair.teacher, pair.student, pair.mapping, held, torch.ones_like(held),
                         teacher_input_prob=1.0)
    for i in (1, 2, 3):  # the trained layers, on held-out blocks
        assert float(after[i]) < 0.7 * float(before[i]), (i, float(before[i]), float(after[i]))
    for i in (0, 4):  # frozen one-to-one layers stay the teacher's
        assert float(after[i]) < 1e-6
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20, 24]
    assert log[-1]["loss"] < log[0]["loss"]
    meta = read_student_config(sdir)
    assert meta["distilled"] is True
    rec = meta["local_distill"]
    assert rec["method"] == "block-local distillation" and rec["tokens"] == 24 * 4 * 16
    assert rec["trained_layers"] == [1, 2, 3]


@pytest.mark.parametrize("family", FAMILIES3)
def test_patched_student_equals_hand_assembled_model(tmp_path, teacher_dirs, family):
    sdir = local_distill(_config(teacher_dirs[family], tmp_path / "run", steps=8, teacher_input_prob=0.5),
                         blocks=_blocks())
    pair = load_pair(student=sdir, device="cpu", dtype=torch.float32)
    ids = _blocks(2, 12, seed=5)
    n = pair.num_student_layers
    with torch.no_grad():
        student_logits = pair.student(input_ids=ids).logits
        teacher_logits = pair.teacher(input_ids=ids).logits
        assert not torch.allclose(student_logits, teacher_logits, atol=1e-3)  # it was trained
        for patched in ([], [1], [0, 3], [2, 3, 4], list(range(n))):
            built = pair.build(patched=patched)(input_ids=ids).logits
            by_hand = assemble_by_hand(pair, patched)(input_ids=ids).logits
            assert (built - by_hand).abs().max().item() < 1e-5, patched
        assert (pair.build(patched=[])(input_ids=ids).logits - student_logits).abs().max() < 1e-5
        assert (pair.build(patched=range(n))(input_ids=ids).logits - teacher_logits).abs().max() < 1e-5


def _weights(sdir: Path) -> dict[str, torch.Tensor]:
    pair = load_pair(student=sdir, device="cpu", dtype=torch.float32)
    return {k: v.clone() for k, v in pair.student.state_dict().items()}


def _log_lines(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    for r in lines:  # timings differ between runs
        for k in ("tokens_per_s", "elapsed_s", "eta_s"):
            r.pop(k)
    return lines


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_stopped_and_killed_runs_resume_to_the_same_student(tmp_path, teacher_dirs, family):
    blocks = _blocks()
    kw = {"steps": 20, "save_every": 4, "log_every": 2, "teacher_input_prob": 0.5}
    ref_dir = local_distill(_config(teacher_dirs[family], tmp_path / "ref", **kw), blocks=blocks)
    ref = _weights(ref_dir)

    # Stopped by a signal after step 6: a checkpoint is written there, then resumed.
    out = tmp_path / "stopped"
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 6

    ck = local_distill(_config(teacher_dirs[family], out, **kw), should_stop=stop, blocks=blocks)
    assert ck == out / "checkpoints" / "step-00000006"
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 6
    assert not (out / "student").exists()
    with pytest.raises(BoomerangError):  # the folder holds a run: resume must be asked for
        local_distill(_config(teacher_dirs[family], out, **kw), blocks=blocks)
    sdir = local_distill(_config(teacher_dirs[family], out, resume=True, **kw), blocks=blocks)
    got = _weights(sdir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert _log_lines(out) == _log_lines(tmp_path / "ref")

    # Killed (an exception out of the progress callback) at step 11: the checkpoint of step 8
    # survives, the log lines after it are dropped on resume.
    out = tmp_path / "killed"

    def die(p) -> None:
        if p.step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        local_distill(_config(teacher_dirs[family], out, **kw), progress=die, blocks=blocks)
    assert json.loads((out / "checkpoints" / "step-00000008" / "trainer_state.json").read_text())["step"] == 8
    events = []
    sdir = local_distill(_config(teacher_dirs[family], out, resume=True, **kw), blocks=blocks,
                         progress=lambda p: events.append((p.step, p.total, p.event)))
    assert events[0] == (9, 20, "step") and events[-1] == (20, 20, "done")
    got = _weights(sdir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert _log_lines(out) == _log_lines(tmp_path / "ref")


def test_time_limit_stops_early_and_still_saves(tmp_path, teacher_dirs):
    cfg = _config(teacher_dirs["qwen2"], tmp_path / "run", steps=10_000, time_limit_s=0.5)
    sdir = local_distill(cfg, blocks=_blocks())
    rec = read_student_config(sdir)["local_distill"]
    assert rec["stopped_early"] is True and 0 < rec["steps"] < 10_000


# ---- settings ------------------------------------------------------------------------------


def test_schedule_and_trained_layers():
    cfg = LocalDistillConfig(teacher="t", steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-3 / 11)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4, rel=0.01)
    m = LayerMapping.from_rule(30, 0, 2, 2)
    assert trained_layers(m, cfg) == list(range(14))
    assert trained_layers(m, LocalDistillConfig(teacher="t", freeze_one_to_one=False)) == list(range(16))
    assert trained_layers(m, LocalDistillConfig(teacher="t", layers=(3, 1, 15))) == [1, 3]
    assert cfg.total_tokens == 100 * 8 * 256


@pytest.mark.parametrize("bad", [
    {"teacher": ""}, {"loss": "l1"}, {"steps": 0}, {"batch_size": 0}, {"seq_len": 1},
    {"lr": 0.0}, {"lr": float("nan")}, {"teacher_input_prob": 1.5}, {"teacher_input_prob": -0.1},
    {"min_lr_ratio": 2.0}, {"warmup": -1}, {"threads": 0}, {"time_limit_s": 0},
    {"max_blocks": 0},
])
def test_bad_settings_raise_one_sentence(bad):
    cfg = LocalDistillConfig(**{"teacher": "t", **bad})
    with pytest.raises(BoomerangError) as e:
        cfg.validate()
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg


def test_bad_layers_unknown_keys_and_changed_resume(tmp_path, teacher_dirs):
    m = LayerMapping.from_rule(8, *RULE)
    with pytest.raises(BoomerangError, match="out of range"):
        trained_layers(m, LocalDistillConfig(teacher="t", layers=(7,)))
    with pytest.raises(BoomerangError, match="No student layer is left"):
        trained_layers(m, LocalDistillConfig(teacher="t", layers=(0, 4)))
    with pytest.raises(BoomerangError, match="Unknown local-distillation setting"):
        LocalDistillConfig.from_dict({"teacher": "t", "stpes": 3})
    with pytest.raises(BoomerangError, match="vocabulary"):
        local_distill(_config(teacher_dirs["llama"], tmp_path / "v"), blocks=_blocks() + VOCAB)
    out = tmp_path / "run"
    local_distill(_config(teacher_dirs["llama"], out, steps=8), should_stop=lambda: True,
                  blocks=_blocks())  # stops after step 1 with a checkpoint
    with pytest.raises(BoomerangError, match="with different settings: lr"):
        local_distill(_config(teacher_dirs["llama"], out, steps=8, lr=1e-2, resume=True),
                      blocks=_blocks())


def test_reused_teacher_batches_resume_mid_batch(tmp_path, teacher_dirs):
    # Two updates per teacher batch; the stop lands between the two updates of batch 2.
    blocks = _blocks()
    kw = {"steps": 10, "save_every": 5, "log_every": 1, "teacher_input_prob": 0.5, "updates_per_batch": 2}
    ref_dir = local_distill(_config(teacher_dirs["qwen2"], tmp_path / "ref", **kw), blocks=blocks)
    ref = _weights(ref_dir)
    assert read_student_config(ref_dir)["local_distill"]["tokens"] == 5 * 4 * 16
    out = tmp_path / "stopped"
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == 5

    local_distill(_config(teacher_dirs["qwen2"], out, **kw), should_stop=stop, blocks=blocks)
    got = _weights(local_distill(_config(teacher_dirs["qwen2"], out, resume=True, **kw), blocks=blocks))
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    tokens = [r["tokens"] for r in _log_lines(out)]
    assert tokens == [64, 64, 128, 128, 192, 192, 256, 256, 320, 320]


def test_time_limit_anneals_the_learning_rate():
    cfg = LocalDistillConfig(teacher="t", steps=1000, warmup=0, lr=1e-3, min_lr_ratio=0.1,
                             time_limit_s=100.0)
    assert lr_at(10, cfg, elapsed_s=0.0) == pytest.approx(lr_at(10, dataclasses.replace(cfg, time_limit_s=None)))
    assert lr_at(10, cfg, elapsed_s=50.0) == pytest.approx(0.55e-3)  # half the time: half decayed
    assert lr_at(10, cfg, elapsed_s=100.0) == pytest.approx(1e-4)


def test_distill_mode_local_runs_through_the_same_entry_point(tmp_path, teacher_dirs):
    """`distill --mode local`: a DistillConfig runs block-local distillation, records its own
    settings, reports the same events as every loop, and resumes with the same settings only."""
    from boomerang import DistillConfig, distill

    cfg = DistillConfig(teacher=str(teacher_dirs["llama"]), out=str(tmp_path / "run"), mode="local",
                        keep_first=RULE[0], every=RULE[1], keep_last=RULE[2], steps=12, seq_len=16,
                        batch_size=4, lr=3e-3, warmup=2, log_every=4, save_every=4, threads=1,
                        freeze=("one-to-one",), teacher_input_prob=0.5)
    seen = []
    sdir = distill(cfg, progress=seen.append, blocks=_blocks())
    assert sdir == tmp_path / "run" / "student"
    assert [p.step for p in seen if p.event != "done"] == list(range(1, 13)) and seen[-1].event == "done"
    assert seen[3].event == "checkpoint" and "layer 1" in seen[0].losses
    meta = read_student_config(sdir)["local_distill"]
    assert meta["teacher_input_prob"] == 0.5 and meta["trained_layers"] == [1, 2, 3]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["mode"] == "local" and saved["teacher_input_prob"] == 0.5
    ck = tmp_path / "run" / "checkpoints" / "step-00000012"
    assert sorted(p.name for p in ck.iterdir()) == ["state.safetensors", "trainer_state.json"]
    with pytest.raises(BoomerangError, match="different settings: lr"):
        distill(dataclasses.replace(cfg, lr=1e-3, resume=True), blocks=_blocks())
    with pytest.raises(BoomerangError, match="teacher_input_prob is a probability"):
        dataclasses.replace(cfg, teacher_input_prob=2.0).validate()


def test_sink_weight_weighs_the_massive_activation_token():
    from boomerang.train.local import local_loss, sink_tokens
    target = torch.tensor([[[100.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # token 0: a sink
    pred = target.clone()
    pred[0, 0] = torch.tensor([0.0, 100.0])  # orthogonal: cosine loss 1, relative squared error 2
    assert sink_tokens(target).tolist() == [[True, False, False, False]]
    assert local_loss(pred, target, None, "cosine+mse").item() == pytest.approx(3 / 4)
    assert local_loss(pred, target, None, "cosine+mse", sink_weight=5.0).item() == pytest.approx(15 / 8)
    real = torch.tensor([[1, 1, 1, 0]])  # padding keeps weight 0 whatever its norm
    assert local_loss(pred, target, real, "cosine+mse", sink_weight=5.0).item() == pytest.approx(15 / 7)


def test_sink_weight_must_be_positive():
    with pytest.raises(BoomerangError, match="sink_weight must be positive"):
        LocalDistillConfig(teacher="t", sink_weight=0.0).validate()
