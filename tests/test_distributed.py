"""Training in several processes on CPUs: ``torchrun`` and ``accelerate launch`` form one gloo group.

Two processes with a batch of 2 each must train exactly what one process trains with a batch of
4 (same samples, averaged gradient), a checkpoint must resume in the other number of processes,
and only the main process writes and speaks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import saved_tiny_pair

from boomerang import DistillConfig, distill
from boomerang.zoo import load_pair

#: Constant learning rate: a run resumed with more steps follows the schedule of a longer run.
SETTINGS = {"steps": 2, "seq_len": 32, "warmup": 0, "min_lr_ratio": 1.0, "lr": 1e-3, "log_every": 1,
            "save_every": 2, "threads": 1, "seed": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dist")
    teacher, _, text = saved_tiny_pair(root / "pair")
    cfg = root / "settings.json"
    cfg.write_text(json.dumps({**SETTINGS, "teacher": str(teacher), "data": str(text)}))
    return {"root": root, "config": cfg, "teacher": str(teacher), "data": str(text)}


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "BOOMERANG_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}


def _launch(launcher: list[str], tiny: dict, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", *launcher, "-m", "boomerang", "distill", "--config", str(tiny["config"]), *flags]
    return subprocess.run(cmd, env=_env(tiny["root"]), capture_output=True, text=True, timeout=240)


TORCHRUN = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _one_process(tiny: dict, out: Path, **over) -> Path:
    cfg = DistillConfig.from_dict({**SETTINGS, "teacher": tiny["teacher"], "data": tiny["data"], "out": str(out),
                                   "batch_size": 4, **over})
    return distill(cfg)


def _same_losses(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "ce", "kl", "cos"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-5), (ra["step"], k)
        assert ra["tokens"] == rb["tokens"]  # the whole group's tokens


def test_two_processes_train_like_one_with_the_same_global_batch_and_resume_across(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOMERANG_CACHE", str(tiny["root"] / "cache"))
    ref = tmp_path / "ref"
    _one_process(tiny, ref, steps=4)

    # torchrun: 2 processes x 2 sequences, 2 steps, a checkpoint at step 2.
    two = tmp_path / "two"
    r = _launch(TORCHRUN, tiny, "--batch-size", "2", "--out", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote student to") == 1  # only the main process speaks
    log = _log(two)
    assert {x["world_size"] for x in log} == {2} and [x["tokens"] for x in log] == [128, 256]
    _same_losses(log, _log(ref)[:2])
    ckpt = json.loads((two / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert ckpt["world_size"] == 2 and ckpt["global_batch"] == 4

    # ... resumed in one process with a batch of 4: steps 3 and 4 are the 1-process run's.
    student = _one_process(tiny, two, steps=4, resume=True)
    resumed = _log(two)
    assert [x["world_size"] for x in resumed] == [2, 2, 1, 1]
    _same_losses(resumed, _log(ref))
    a = load_pair(teacher=tiny["teacher"], student=student, device="cpu").student.state_dict()
    b = load_pair(teacher=tiny["teacher"], student=ref / "student", device="cpu").student.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5

    # The other way, through accelerate launch: one process for 2 steps, then 2 processes.
    one = tmp_path / "one"
    _one_process(tiny, one, steps=2)
    r = _launch(ACCELERATE, tiny, "--batch-size", "2", "--steps", "4", "--resume", "--out", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = _log(one)
    assert [x["world_size"] for x in resumed] == [1, 1, 2, 2]
    _same_losses(resumed, _log(ref))
    c = load_pair(teacher=tiny["teacher"], student=one / "student", device="cpu").student.state_dict()
    assert max((c[k] - b[k]).abs().max().item() for k in c) < 1e-5
    assert sorted(p.name for p in one.iterdir()) == [".lock", "checkpoints", "config.json", "log.jsonl", "student"]


def test_a_global_batch_that_changes_on_resume_is_refused(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOMERANG_CACHE", str(tiny["root"] / "cache"))
    one = tmp_path / "one"
    _one_process(tiny, one, steps=2)
    before = (one / "log.jsonl").read_bytes()
    r = _launch(TORCHRUN, tiny, "--batch-size", "4", "--steps", "4", "--resume", "--out", str(one))
    assert r.returncode != 0  # torchrun reports its ranks' exit code 2 as a failure
    assert "error: The checkpoint" in r.stderr and "was trained with 4 sequences per step (batch size x gradient accumulation x 1 process(es)), but " \
           "these settings give 8" in r.stderr
    assert (one / "log.jsonl").read_bytes() == before


def test_block_local_distillation_in_two_processes_trains_like_one_and_resumes_across(tiny, tmp_path, monkeypatch):
    """--mode local data-parallel: 2 processes x 2 sequences give a 1-process run's per-layer losses
    at a batch of 4, step by step (the input choices drawn for the whole batch, the sink threshold
    from the whole batch's norms, each process's loss its share), and the same student; a
    1-process checkpoint resumes in 2 processes to that student too."""
    monkeypatch.setenv("BOOMERANG_CACHE", str(tiny["root"] / "cache"))
    local = {"mode": "local", "teacher_input_prob": 0.5, "sink_weight": 4.0, "steps": 4}
    flags = ["--mode", "local", "--teacher-input-prob", "0.5", "--sink-weight", "4", "--steps", "4",
             "--batch-size", "2"]
    ref = tmp_path / "ref"
    _one_process(tiny, ref, **local, eval_every=2, eval_blocks=2)
    want = _log(ref)

    def same(log: list[dict]) -> None:
        assert [x["tokens"] for x in log] == [x["tokens"] for x in want]
        for a, b in zip(log, want, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
            assert a["layer_losses"] == pytest.approx(b["layer_losses"], abs=1e-5)

    def same_student(folder: Path) -> None:
        a = load_pair(teacher=tiny["teacher"], student=folder, device="cpu").student.state_dict()
        b = load_pair(teacher=tiny["teacher"], student=ref / "student", device="cpu").student.state_dict()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5

    # With the interpolation curve measured by the main process while the other waits.
    two = tmp_path / "two"
    r = _launch(TORCHRUN, tiny, *flags, "--eval-every", "2", "--eval-blocks", "2", "--out", str(two))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote student to") == 1  # only the main process speaks
    assert [x["world_size"] for x in _log(two)] == [2] * 4
    same(_log(two))
    same_student(two / "student")
    curves = [json.loads(x) for x in (two / "curves.jsonl").read_text().splitlines()]
    ref_curves = [json.loads(x) for x in (ref / "curves.jsonl").read_text().splitlines()]
    assert [(c["order"], c["step"]) for c in curves] == [("naive-pruning", 0), ("last-to-first", 0),
                                                         ("last-to-first", 2), ("last-to-first", 4)]
    for a, b in zip(curves, ref_curves, strict=True):
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)

    # One process stops after step 2 (its checkpoint), two processes finish the run.
    one = tmp_path / "one"
    steps: list[int] = []
    cfg = DistillConfig.from_dict({**SETTINGS, **local, "teacher": tiny["teacher"], "data": tiny["data"],
                                   "out": str(one), "batch_size": 4})
    # The stop is asked after step 1's report, so the run stops (and saves) at the end of step 2.
    distill(cfg, progress=lambda e: steps.append(e.step), should_stop=lambda: 1 in steps)
    state = json.loads((one / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["world_size"] == 1 and state["global_batch"] == 4
    r = _launch(TORCHRUN, tiny, *flags, "--resume", "--out", str(one))
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["world_size"] for x in _log(one)] == [1, 1, 2, 2]
    same(_log(one))
    same_student(one / "student")


def test_an_fsdp_launch_on_cpus_shards_the_student_and_trains_like_data_parallel(tiny, tmp_path, monkeypatch):
    """The shipped FSDP config's CPU twin: each process holds half of every weight, the checkpoint
    is one shard per process, it resumes sharded, the interpolation curve is measured while it
    trains, and the student (and its curves) equal plain data parallel's
    (compared with one process at the same global batch, which the test above shows 2 data-parallel
    processes equal within the same tolerance: one launch fewer)."""
    from safetensors.torch import load_file

    monkeypatch.setenv("BOOMERANG_CACHE", str(tiny["root"] / "cache"))
    config = Path(__file__).resolve().parent.parent / "configs" / "accelerate_fsdp_cpu.yaml"
    fsdp_launch = ["accelerate.commands.launch", "--config_file", str(config), "--main_process_port", "0"]
    one = tmp_path / "one"
    _one_process(tiny, one, steps=2, eval_every=1, eval_blocks=2)
    # One sharded step with a checkpoint, then resumed sharded to the second (a constant lr). Two
    # micro-batches of one sequence per process: the same 4 sequences per step, one gradient sync.
    # The interpolation curve is measured at every step, on the student gathered whole.
    fsdp = tmp_path / "fsdp"
    sharded = ("--batch-size", "1", "--grad-accum", "2", "--eval-every", "1", "--eval-blocks", "2")
    r = _launch(fsdp_launch, tiny, *sharded, "--steps", "1", "--save-every", "1", "--out", str(fsdp))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = fsdp / "checkpoints" / "step-00000001"
    assert sorted(p.name for p in ck.iterdir()) == ["shard-0.safetensors", "shard-1.safetensors", "trainer_state.json"]
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["sharded"] is True and state["world_size"] == 2
    teacher = load_file(str(Path(tiny["teacher"]) / "model.safetensors"))
    embed = teacher["model.embed_tokens.weight"]
    halves = [load_file(str(ck / f"shard-{r}.safetensors"))["model.model.embed_tokens.weight"] for r in (0, 1)]
    assert [h.shape[0] for h in halves] == [embed.shape[0] // 2] * 2  # each process holds half the rows
    with pytest.raises(Exception, match="written sharded \\(FSDP\\) by 2 processes"):  # not in 1 unsharded process
        _one_process(tiny, fsdp, steps=2, resume=True)
    r = _launch(fsdp_launch, tiny, *sharded, "--steps", "2", "--resume", "--out", str(fsdp))
    assert r.returncode == 0, r.stderr[-3000:]
    _same_losses(_log(fsdp), _log(one))
    a, b = load_file(str(fsdp / "student" / "model.safetensors")), load_file(str(one / "student" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert [x["world_size"] for x in _log(fsdp)] == [2, 2]
    for ra, rb in zip(_log(fsdp), _log(one), strict=True):
        assert ra["val_ppl"] == pytest.approx(rb["val_ppl"], rel=1e-4)
    curves = [json.loads(x) for x in (fsdp / "curves.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (one / "curves.jsonl").read_text().splitlines()]
    assert [(c["order"], c["step"], c["layers"]) for c in curves] == [(c["order"], c["step"], c["layers"]) for c in want]
    assert [c["step"] for c in curves] == [0, 0, 1, 2]  # naive pruning and the student at step 0, then each step
    for a, b in zip(curves, want):
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)
    # A shard of the newest checkpoint that one process cannot read: it would fall back to the one
    # before alone, and train out of step with the other; both stop instead, saying why.
    (fsdp / "checkpoints" / "step-00000002" / "shard-1.safetensors").write_bytes(b"torn")
    r = _launch(fsdp_launch, tiny, *sharded, "--steps", "3", "--resume", "--out", str(fsdp))
    assert r.returncode != 0
    assert "could not read the same checkpoint" in r.stderr and "(steps 2, 1, in process order)" in r.stderr
