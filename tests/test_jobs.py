"""Dashboard training jobs: they train in a child process that reports over pipes, stop with a
checkpoint when asked or when the server goes away, and report failures as one sentence."""

import os
import time
from pathlib import Path

import pytest
from tiny import saved_tiny_pair


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(teacher_dir, text_file, runs folder) of a tiny pair."""
    root = tmp_path_factory.mktemp("jobs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOOMERANG_RUNS", str(root / "runs"))
        teacher, _, text = saved_tiny_pair(root / "runs" / "pair")
        yield str(teacher), str(text), root / "runs"


def _config(tiny, name, **kw):
    from boomerang.train import DistillConfig

    teacher, text, runs = tiny
    settings = dict(teacher=teacher, data=text, out=str(runs / "dashboard" / name), steps=400, seq_len=32,
                    batch_size=2, save_every=1000, log_every=1, max_blocks=32, warmup=0)
    return DistillConfig(**{**settings, **kw})


def _wait_for_steps(job, n, timeout=120):
    deadline = time.time() + timeout
    while job.step < n and job.running and time.time() < deadline:
        time.sleep(0.05)
    assert job.step >= n, (job.state, job.message)


def test_a_job_trains_in_another_process_and_reports_every_step(tiny):
    from boomerang import ui

    job = ui.start_training(_config(tiny, "child", steps=3))
    assert job._proc.pid != os.getpid()
    job.wait(240)
    assert job.state == "done", job.message
    assert [h["step"] for h in job.history if h["event"] == "step"] == [1, 2, 3]
    assert all(h["loss"] > 0 and h["total"] == 3 for h in job.history)
    assert job.result == Path(job.config.out) / "student" and (job.result / "config.json").is_file()
    assert job.message == f"Student saved to {job.result}"


def test_when_the_server_goes_away_the_run_ends_with_a_checkpoint(tiny):
    from boomerang import ui

    job = ui.start_training(_config(tiny, "orphan"))
    _wait_for_steps(job, 2)
    job._proc.stdin.close()  # what the server's death does to the child's pipe
    job.wait(120)
    assert job.state == "stopped", job.message
    status = ui.run_status(job.out)
    assert status["student"] is None and 2 <= status["checkpoint_step"] < 400
    assert job.message == f"Stopped at step {job.step}; checkpoint {job.result}"


def test_a_failing_run_reports_one_sentence(tiny, tmp_path):
    from boomerang import ui

    missing = tmp_path / "no-such-teacher"
    job = ui.start_training(_config(tiny, "fails", teacher=str(missing)))
    job.wait(120)
    assert job.state == "failed"
    assert str(missing) in job.message and "\n" not in job.message


def test_one_job_per_output_folder(tiny):
    from boomerang import ui
    from boomerang.errors import BoomerangError

    job = ui.start_training(_config(tiny, "once"))
    try:
        _wait_for_steps(job, 1)
        with pytest.raises(BoomerangError, match="already training into"):
            ui.start_training(_config(tiny, "once"))
    finally:
        job.stop()
        job.wait(120)
    assert job.state == "stopped"


def test_a_training_child_sees_only_the_chosen_device():
    from boomerang.errors import BoomerangError
    from boomerang.ui.worker import device_env

    assert device_env("cpu") == {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
    assert device_env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert device_env("cuda") == device_env(None) == {}
    with pytest.raises(BoomerangError, match="Unknown training device 'mps:x'"):
        device_env("mps:x")
