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


# ---- the step loop drives any objective ----------------------------------------------------------


class LeastSquares:
    """A made-up objective, to show the step loop is a plug-in point: ``w`` descends on
    ``mean((w - target)^2)`` with a fixed learning rate, one process, 5 "tokens" a step."""

    LR = 0.3

    @classmethod
    def objective(cls, out):
        from boomerang.train.run import Objective, StepDone

        class _LeastSquares(Objective):
            def __init__(self):
                self.w = torch.zeros(3, dtype=torch.float64)
                self.target = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
                self.began_at, self.ended = None, None

            def check(self, ckpt, state):
                if state.get("kind") != "least-squares":
                    raise BoomerangError("not a least-squares checkpoint")

            def load(self, ckpt, state, tensors):
                self.w = tensors["model.w"].clone()

            def begin(self, step):
                self.began_at = step

            def tokens_after(self, step):
                return 5 * step

            def step(self, step, elapsed_s, reported):
                loss = ((self.w - self.target) ** 2).mean()
                self.w = self.w - cls.LR * 2 * (self.w - self.target) / 3
                return StepDone(cls.LR, {"loss": loss})

            def reduce(self, terms):
                return {"loss": float(terms["loss"])}

            def checkpoint(self, folder, step, record):
                return folder.checkpoint(step, lambda: ({**record, "kind": "least-squares"}, {"model.w": self.w}))

            def finish(self, end):
                self.ended = end
                from safetensors.torch import save_file
                save_file({"w": self.w}, str(out / "w.safetensors"))
                return out / "w.safetensors"

        return _LeastSquares()

    @classmethod
    def loss_before(cls, step):
        """The loss at 0-based ``step``, by hand: each update shrinks w - target by (1 - 2 lr / 3)."""
        shrink = (1 - 2 * cls.LR / 3) ** step
        return sum((shrink * t) ** 2 for t in (1.0, -2.0, 4.0)) / 3


def _loop_cfg(out, **kw):
    from boomerang.train.config import RunConfig

    return RunConfig(**{"teacher": "none", "out": str(out), "steps": 7, "log_every": 3, "save_every": 4,
                        "keep_checkpoints": 5, **kw})


def test_the_step_loop_runs_any_objective_logs_checkpoints_and_reports(tmp_path):
    from boomerang.train.run import train

    out = tmp_path / "ls"
    obj = LeastSquares.objective(out)
    seen = []
    result = train(obj, _loop_cfg(out), out, {"what": "least squares"}, progress=seen.append)
    assert result == out / "w.safetensors" and obj.began_at == 0
    assert obj.ended.step == 7 and obj.ended.tokens == 35 and not obj.ended.stopped_early
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [3, 6, 7]  # every log_every steps, and the last
    for r in lines:
        assert r["loss"] == pytest.approx(LeastSquares.loss_before(r["step"] - 1), rel=1e-12)
        assert r["tokens"] == 5 * r["step"] and r["world_size"] == 1 and r["lr"] == LeastSquares.LR
    assert json.loads((out / "config.json").read_text()) == {"what": "least squares"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004"]
    # One event per step, then done; each carries the losses of the last logged step (the first
    # step's until the first log line).
    assert [(p.step, p.event) for p in seen] == [(1, "step"), (2, "step"), (3, "step"), (4, "checkpoint"),
                                                 (5, "step"), (6, "step"), (7, "step"), (7, "done")]
    assert seen[1].losses["loss"] == pytest.approx(LeastSquares.loss_before(0))
    assert seen[4].losses["loss"] == pytest.approx(LeastSquares.loss_before(2))
    assert seen[-1].losses["loss"] == pytest.approx(LeastSquares.loss_before(6))


def test_the_step_loop_stops_resumes_and_keeps_a_time_limit(tmp_path):
    from safetensors.torch import load_file

    from boomerang.train.run import train

    ref = tmp_path / "ref"
    train(LeastSquares.objective(ref), _loop_cfg(ref), ref, {})
    cut = tmp_path / "cut"
    seen = []
    ck = train(LeastSquares.objective(cut), _loop_cfg(cut), cut, {}, progress=seen.append,
               should_stop=lambda: len(seen) >= 1)
    assert ck == cut / "checkpoints" / "step-00000002" and seen[-1].event == "stopped"
    again = LeastSquares.objective(cut)
    train(again, _loop_cfg(cut, resume=True), cut, {})
    assert again.began_at == 2
    assert torch.equal(load_file(str(cut / "w.safetensors"))["w"], load_file(str(ref / "w.safetensors"))["w"])
    assert [json.loads(x)["step"] for x in (cut / "log.jsonl").read_text().splitlines()] == [3, 6, 7]

    # A checkpoint the objective refuses is never read: a foreign run does not resume.
    with pytest.raises(BoomerangError, match="not a least-squares checkpoint"):
        class Other(type(again)):
            def check(self, ckpt, state):
                raise BoomerangError("not a least-squares checkpoint")
        train(Other(), _loop_cfg(cut, resume=True), cut, {})

    # Any time limit is spent after the first step: the run ends there, logs it and still saves its result.
    short = tmp_path / "short"
    obj = LeastSquares.objective(short)
    assert train(obj, _loop_cfg(short), short, {}, time_limit_s=1e-12) == short / "w.safetensors"
    assert obj.ended.step == 1 and obj.ended.stopped_early
    assert [json.loads(x)["step"] for x in (short / "log.jsonl").read_text().splitlines()] == [1]  # its last step
