"""Training you can watch: experiment trackers through Accelerate's ``log_with`` (TensorBoard),
and the reference's hyperparameter recipes shipped as configs."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from boomerang import cli
from boomerang.errors import BoomerangError
from boomerang.train import DistillConfig, distill
from boomerang.train import trackers

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("tracked") / "teacher"
    LlamaForCausalLM(cfg).eval().save_pretrained(d)
    return str(d)


def test_log_with_is_a_config_field_and_a_flag():
    p = argparse.ArgumentParser()
    DistillConfig.add_cli_arguments(p)
    cfg = DistillConfig.from_cli_args(p.parse_args(["--teacher", "t", "--log-with", "tensorboard, wandb"]))
    assert cfg.log_with == ("tensorboard", "wandb")
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["log_with"] == ["tensorboard", "wandb"]
    assert cfg.resume_conflict({**cfg.to_dict(), "log_with": []}) is None  # output only: resumable
    with pytest.raises(BoomerangError, match=r"^Unknown tracker 'tensorbord' in log_with; choose from tensorboard,"):
        DistillConfig(teacher="t", log_with="tensorbord").validate()


def test_hyperparameters_are_flat_scalars():
    hp = trackers.hyperparameters(DistillConfig(teacher="t", freeze=("head",)))
    assert hp["weights.kl"] == 0.1 and hp["weights.cos"] == "None" and hp["freeze"] == "['head']"
    assert all(isinstance(v, (int, float, str, bool)) for v in hp.values())


def test_a_missing_tracker_package_is_one_sentence(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(BoomerangError, match=r"^The tracker 'tensorboard' needs the tensorboard package, "
                                             r"which is not installed; pip install tensorboard"):
        trackers.check_trackers(("tensorboard",))


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard (requirements.txt) is not installed")
def test_tensorboard_gets_every_logged_step(teacher_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 64, (64, 16), generator=g)
    out = tmp_path / "run"
    cfg = DistillConfig(teacher=teacher_dir, out=str(out), steps=4, seq_len=16, batch_size=2,
                        log_every=1, save_every=2, warmup=1, log_with=("tensorboard",))
    distill(cfg, blocks=blocks)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    runs = list((out / "trackers" / "boomerang").rglob("events.out.tfevents.*"))
    assert runs
    ev = EventAccumulator(str(out / "trackers" / "boomerang"))
    ev.Reload()
    for key in ("loss", "ce", "kl", "cos", "lr", "tokens_per_s"):
        scalars = ev.Scalars(key)
        assert [s.step for s in scalars] == [1, 2, 3, 4]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in log], rel=1e-5)
    # Resuming appends to the same tracker folder: steps 5-6 join 1-4.
    more = DistillConfig(**{**cfg.to_dict(), "steps": 6, "resume": True})
    distill(more, blocks=blocks)
    ev = EventAccumulator(str(out / "trackers" / "boomerang"))
    ev.Reload()
    assert sorted({s.step for s in ev.Scalars("loss")}) == [1, 2, 3, 4, 5, 6]


# ---- the reference's recipes -----------------------------------------------------------------

RECIPES = {
    "paper_qwen3_4b.yaml": ("Qwen/Qwen3-4B-Base", 0, 2, 2, 0.1),
    "paper_pythia_2.8b.yaml": ("EleutherAI/pythia-2.8b", 0, 2, 2, 0.11),
    "paper_llama_3.2_3b.yaml": ("meta-llama/Llama-3.2-3B", 1, 2, 1, 0.125),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_reference_recipes(name):
    cfg = DistillConfig.from_file(CONFIGS / name)
    cfg.validate()
    teacher, keep_first, every, keep_last, cos = RECIPES[name]
    assert (cfg.teacher, cfg.keep_first, cfg.every, cfg.keep_last) == (teacher, keep_first, every, keep_last)
    # The model cards: 500 steps of 2048 x 2048 tokens (2.1 B), lr 3e-4 cosine with 1% warmup,
    # AdamW (0.9, 0.95), weight decay 0.1, clip 1.0, bf16, KL 0.1 (tau 1), cosine per layer.
    assert cfg.steps * cfg.batch_size * cfg.grad_accum * 4 * cfg.seq_len == 500 * 2048 * 2048
    assert (cfg.lr, cfg.warmup, cfg.min_lr_ratio, cfg.betas) == (3e-4, 5, 0.0, (0.9, 0.95))
    assert (cfg.weight_decay, cfg.grad_clip, cfg.precision) == (0.1, 1.0, "bf16")
    assert (cfg.weights.ce, cfg.weights.kl, cfg.weights.tau, cfg.weights.cos) == (1.0, 0.1, 1.0, cos)
    assert cfg.data == "EleutherAI/the_pile_deduplicated" and cfg.log_with == ("tensorboard",)
    assert cfg.max_blocks == 500 * 2048


def test_cli_flag_is_checked_before_anything_runs(teacher_dir, tmp_path, capsys):
    code = cli.main(["distill", "--teacher", teacher_dir, "--out", str(tmp_path / "o"),
                     "--log-with", "nope", "--steps", "1"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: Unknown tracker 'nope' in log_with;")
    assert not (tmp_path / "o").exists()
