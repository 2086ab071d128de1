"""Every bad input in tests/data/bad_inputs.json gets one clear sentence and changes nothing.

CLI: exit code 2, exactly one line on stderr that says what is wrong, every file as it was.
API: one BoomerangError with that sentence. The cases file is the list of what was tried.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import boomerang as bm
from boomerang.cli import main
from boomerang.errors import BoomerangError
from boomerang.zoo import demo_dirs

CASES = json.loads((Path(__file__).parent / "data" / "bad_inputs.json").read_text(encoding="utf-8"))
TENSOR = "model.layers.3.mlp.up_proj.weight"


def _student_copy(root: Path, name: str) -> Path:
    dest = root / name
    shutil.copytree(demo_dirs()[1], dest)
    return dest


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """The folders the placeholders stand for (broken students built from the demo student)."""
    root = tmp_path_factory.mktemp("bad")
    teacher, student = demo_dirs()
    out = {"demo_teacher": str(teacher), "demo_student": str(student)}

    def weights(d: Path) -> dict[str, torch.Tensor]:
        return load_file(str(d / "model.safetensors"))

    d = _student_copy(root, "missing")
    w = weights(d)
    del w[TENSOR]
    save_file(w, str(d / "model.safetensors"))
    out["student_missing_tensor"] = str(d)
    d = _student_copy(root, "shape")
    w = weights(d)
    w[TENSOR] = torch.zeros(3, 3)
    save_file(w, str(d / "model.safetensors"))
    out["student_wrong_shape"] = str(d)
    d = _student_copy(root, "extra")
    w = weights(d)
    w["model.layers.99.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(w, str(d / "model.safetensors"))
    out["student_extra_tensor"] = str(d)
    d = _student_copy(root, "badjson")
    (d / "student_config.json").write_text("{not json")
    out["student_bad_json"] = str(d)
    d = _student_copy(root, "list")
    (d / "student_config.json").write_text("[1, 2]")
    out["student_config_list"] = str(d)
    d = _student_copy(root, "nonint")
    meta = json.loads((d / "student_config.json").read_text())
    meta.pop("blocks", None)
    meta["copied_teacher_layers"] = [0, "two", 4]
    (d / "student_config.json").write_text(json.dumps(meta))
    out["student_non_int"] = str(d)
    d = _student_copy(root, "truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["student_truncated"] = str(d)
    d = _student_copy(root, "nan")
    w = weights(d)
    w[TENSOR][0, 0] = float("nan")
    save_file(w, str(d / "model.safetensors"))
    out["student_nan"] = str(d)
    d = _student_copy(root, "int8")
    w = weights(d)
    w[TENSOR] = w[TENSOR].round().to(torch.int8)
    save_file(w, str(d / "model.safetensors"))
    out["student_int8"] = str(d)
    d = _student_copy(root, "rope")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_theta"] = 1e6 if cfg.get("rope_theta") != 1e6 else 1e4
    cfg.pop("rope_parameters", None)
    (d / "config.json").write_text(json.dumps(cfg))
    out["student_other_rope"] = str(d)
    d = _student_copy(root, "teacher5")
    meta = json.loads((d / "student_config.json").read_text())
    meta["teacher"] = 5
    (d / "student_config.json").write_text(json.dumps(meta))
    out["student_teacher_number"] = str(d)
    d = _student_copy(root, "contradiction")
    meta = json.loads((d / "student_config.json").read_text())
    meta["copied_teacher_layers"] = [0, 1] + meta["copied_teacher_layers"][2:]  # its blocks say [0, 2, ...]
    (d / "student_config.json").write_text(json.dumps(meta))
    out["student_contradicting"] = str(d)
    d = _student_copy(root, "deep")
    (d / "student_config.json").write_text('{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    out["student_deep_json"] = str(d)
    out["_root"] = str(root)
    return out


def _snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() if p.is_file() else b"<dir>"
            for r in roots if r.exists() for p in sorted(r.rglob("*"))}


def _fill(value, subs: dict[str, str]):
    if isinstance(value, str):
        for k, v in subs.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


def test_the_cases_file_is_sound():
    ids = [c["id"] for c in CASES["cli"] + CASES["api"]]
    assert len(ids) == len(set(ids)) and len(CASES["cli"]) >= 40 and len(CASES["api"]) >= 15


@pytest.mark.parametrize("case", CASES["cli"], ids=lambda c: c["id"])
def test_cli_bad_input(case, places, tmp_path, monkeypatch, capsys):
    if case.get("needs") == "no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "afile").write_text("keep me\n")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "x.txt").write_text("keep me too\n")
    model = tmp_path / "model"
    shutil.copytree(demo_dirs()[0], model)
    subs = {**places, "tmp": str(work), "tmp_rel": work.name, "file": str(tmp_path / "afile"),
            "nonempty": str(tmp_path / "nonempty"), "model": str(model)}
    argv = _fill(case["argv"], subs)
    watched = [work, tmp_path / "afile", tmp_path / "nonempty", model, Path(places["_root"])]
    before = _snapshot(*watched)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert _fill(case["stderr"], subs) in err[0]
    assert _snapshot(*watched) == before


@pytest.fixture(scope="module")
def demo_pair():
    return bm.load_pair("demo", device="cpu")


@pytest.mark.parametrize("case", CASES["api"], ids=lambda c: c["id"])
def test_api_bad_input(case, places, demo_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    kw = _fill(case["kwargs"], places)
    calls = {
        "build": lambda: demo_pair.build(**kw),
        "orders.build": lambda: bm.orders.build(demo_pair, **kw),
        "sweep": lambda: bm.sweep(demo_pair, **{"max_blocks": 2, "use_cache": False, **kw}),
        "patch_order": lambda: bm.patch_order(demo_pair, **kw),
        "load_pair": lambda: bm.load_pair(**kw),
        "DistillConfig.from_dict": lambda: bm.DistillConfig.from_dict(kw["d"]),
        "DistillConfig.validate": lambda: bm.DistillConfig(**kw).validate(),
        "LayerMapping.from_rule": lambda: bm.LayerMapping.from_rule(**kw),
        "LayerMapping.from_kept": lambda: bm.LayerMapping.from_kept(**kw),
        "LayerMapping": lambda: bm.LayerMapping(**kw),
        "calibration_ids": lambda: bm.orders.calibration_ids(demo_pair, **kw),
        "pruning_order": lambda: bm.orders.pruning_order(demo_pair, **kw),
    }
    with pytest.raises(BoomerangError) as info:
        calls[case["call"]]()
    assert case["error"] in str(info.value)
    assert "\n" not in str(info.value)


def test_integers_of_any_kind_are_accepted(demo_pair):
    import numpy as np

    want = demo_pair.build(patched=[1, 2]).boomerang_patched
    assert demo_pair.build(patched=np.array([1, 2])).boomerang_patched == want
    assert demo_pair.build(patched=[np.int64(1), torch.tensor(2)]).boomerang_patched == want
    assert demo_pair.build(patched=torch.tensor([2, 1])).boomerang_patched == want
    assert demo_pair.build(order="last-to-first", k=np.int32(2)).boomerang_patched == (5, 6)


def test_save_student_never_empties_a_folder_that_is_not_a_student(demo_pair, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(BoomerangError, match="holds files but no student"):
        bm.save_student(demo_pair.student, demo_pair.mapping, keep)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"] and (keep / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BoomerangError, match="is a file"):
        bm.save_student(demo_pair.student, demo_pair.mapping, tmp_path / "afile")
    again = bm.save_student(demo_pair.student, demo_pair.mapping, tmp_path / "s")
    bm.save_student(demo_pair.student, demo_pair.mapping, again)  # a student is replaced
    assert (again / "student_config.json").is_file()


@pytest.mark.parametrize(("call", "ids", "message"), [
    ("sweep", torch.full((2, 16), 10**6), "Evaluation blocks must lie in 0..2047 (this model's vocabulary), but range from 1000000"),
    ("sweep", torch.rand(2, 16), "Evaluation blocks must be whole numbers (torch.long), not torch.float32"),
    ("sweep", torch.arange(16), "Evaluation blocks must be a non-empty [n, seq_len] tensor, not one of shape [16]"),
    ("sweep", [[1, 2, 3]], "data must be a text source (demo, a file, a folder or a dataset id) or a [n, seq_len] "
                           "tensor of token ids, not a list"),
    ("perplexity", [[1, 2, 3]], "Evaluation blocks must be a torch tensor of token ids, not a list"),
    ("perplexity", torch.full((2, 16), -3), "Evaluation blocks must lie in 0..2047 (this model's vocabulary), but range from -3"),
    ("klpatch", torch.full((2, 16), 2048), "Calibration ids must lie in 0..2047"),
    ("sleb", torch.rand(2, 16), "Calibration ids must be whole numbers (torch.long), not torch.float32"),
    ("sleb", torch.zeros(0, 16, dtype=torch.long), "Calibration ids must be a non-empty [n, seq_len] tensor"),
])
def test_token_ids_a_model_cannot_read_are_refused_in_one_sentence(demo_pair, call, ids, message):
    calls = {
        "sweep": lambda: bm.sweep(demo_pair, data=ids, use_cache=False),
        "perplexity": lambda: bm.eval.perplexity(demo_pair.teacher, ids),
        "klpatch": lambda: bm.patch_order(demo_pair, "klpatch", ids),
        "sleb": lambda: bm.orders.pruning_order(demo_pair, "sleb", ids),
    }
    with pytest.raises(BoomerangError) as info:
        calls[call]()
    assert message in str(info.value) and "\n" not in str(info.value)
