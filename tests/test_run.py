"""One life for every training objective: the same folder checks, lock, log and checkpoint format."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny import random_ids, saved_tiny_pair

from boomerang import BoomerangError, DistillConfig, distill

MODES = ("boomerang", "local")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    t_dir, _, _ = saved_tiny_pair(tmp_path_factory.mktemp("pair"), text="sentences")
    return str(t_dir)


def _cfg(teacher, out, mode, **kw):
    base = dict(teacher=teacher, out=str(out), mode=mode, steps=3, seq_len=16, batch_size=2, warmup=1,
                save_every=1, log_every=1, keep_checkpoints=2, threads=1)
    return DistillConfig(**{**base, **kw})


def _blocks():
    return random_ids(32, 16, seed=3, vocab=300)


@pytest.mark.parametrize("mode", MODES)
def test_every_objective_writes_the_same_checkpoints(teacher, tmp_path, mode):
    out = tmp_path / mode
    distill(_cfg(teacher, out, mode), blocks=_blocks(), should_stop=lambda: False)
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-00000002", "step-00000003"]  # the newest keep_checkpoints
    ck = out / "checkpoints" / "step-00000003"
    assert sorted(p.name for p in ck.iterdir()) == ["state.safetensors", "trainer_state.json"]
    state = json.loads((ck / "trainer_state.json").read_text())
    assert {"step", "tokens", "elapsed_s", "world_size", "global_batch", "mapping", "param_groups",
            "optimizer_scalars"} <= set(state)
    assert state["step"] == 3 and state["world_size"] == 1 and state["global_batch"] == 2
    assert state["tokens"] == 3 * 2 * 16
    tensors = load_file(str(ck / "state.safetensors"))
    weights = [k for k in tensors if k.startswith("model.")]
    moments = [k for k in tensors if k.startswith("opt.")]
    assert weights and moments and all(k.split(".")[-1] in ("exp_avg", "exp_avg_sq") for k in moments)
    # The saved weights are the student's own: the finished student holds them (last step = step 3).
    student = load_file(str(out / "student" / "model.safetensors"))
    for k in weights:
        name = k[len("model."):]
        if name in student:
            assert torch.equal(tensors[k], student[name]), name
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("mode", MODES)
def test_every_objective_refuses_a_folder_that_is_not_its_run(teacher, tmp_path, mode):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(BoomerangError, match="is not empty and is not a run of these settings"):
        distill(_cfg(teacher, busy, mode), blocks=_blocks())
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]  # untouched
    out = tmp_path / "run"
    distill(_cfg(teacher, out, mode), blocks=_blocks())
    with pytest.raises(BoomerangError, match="already holds a run"):
        distill(_cfg(teacher, out, mode), blocks=_blocks())
    with pytest.raises(BoomerangError, match="with different settings: lr"):
        distill(_cfg(teacher, out, mode, lr=1e-2, resume=True), blocks=_blocks())


@pytest.mark.parametrize("mode", MODES)
def test_a_stopped_run_of_every_objective_resumes_to_the_uninterrupted_student(teacher, tmp_path, mode):
    ref = distill(_cfg(teacher, tmp_path / "ref", mode), blocks=_blocks())
    out = tmp_path / "cut"
    seen = []
    ck = distill(_cfg(teacher, out, mode), blocks=_blocks(), progress=seen.append, should_stop=lambda: len(seen) >= 1)
    assert ck.name == "step-00000002" and seen[-1].event == "stopped"  # asked after step 1 is reported
    got = distill(_cfg(teacher, out, mode, resume=True), blocks=_blocks())
    assert (got / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
