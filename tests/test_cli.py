"""The CLI: info and patch on a saved tiny pair, and one clear sentence for every bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import make_pair
from tiny import tiny_model, tokens
from transformers import AutoModelForCausalLM

import boomerang as bm
from boomerang.cli import main


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    pair = make_pair("llama")
    pair.teacher.save_pretrained(root / "teacher")
    bm.save_student(pair.student, pair.mapping, root / "student", teacher=str(root / "teacher"))
    return root, pair


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_prints_the_mapping_table(saved_pair, capsys):
    root, pair = saved_pair
    code, out, _ = run(["info", "--teacher", root / "teacher", "--student", root / "student"], capsys)
    assert code == 0
    assert "8 layers" in out and "5 layers" in out
    assert "1-2" in out and "5-6" in out  # blocks of student layers 2 and 3


def test_student_alone_finds_its_teacher(saved_pair, capsys):
    root, _ = saved_pair
    code, out, _ = run(["info", "--student", root / "student"], capsys)
    assert code == 0 and "student: 5 layers" in out


@pytest.mark.parametrize("how", [["--patched", "1,3"], ["--order", "last-to-first", "--k", "2"]])
def test_patch_writes_a_standalone_checkpoint(saved_pair, tmp_path, capsys, how):
    root, pair = saved_pair
    out_dir = tmp_path / "out"
    code, _, err = run(["patch", "--teacher", root / "teacher", "--student", root / "student",
                        *how, "--out", out_dir], capsys)
    assert code == 0, err
    patched = [1, 3] if how[0] == "--patched" else [3, 4]
    model = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, pair.build(patched=patched)(x).logits,
                                   rtol=0, atol=1e-6)


def _corrupt(root, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(root / "student", bad)
    f = next(bad.glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return bad


def _garbage(root, tmp_path):
    import shutil

    bad = tmp_path / "garbage"
    shutil.copytree(root / "student", bad)
    next(bad.glob("*.safetensors")).write_bytes(b"\xff" * 64)
    return bad


def _other_teacher(root, tmp_path):
    other = tmp_path / "other"
    tiny_model("llama", 6).save_pretrained(other)
    return other


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", "No such"),
        ("truncated", "truncated"),
        ("garbage", "corrupt"),
        ("incompatible", "mapping"),
        ("out_of_range", "out of range"),
        ("not_a_number", "not a layer number"),
    ],
)
def test_bad_input_gives_one_sentence_and_exit_2(saved_pair, tmp_path, capsys, case, pattern):
    root, _ = saved_pair
    teacher, student, extra = root / "teacher", root / "student", ["--patched", "1"]
    if case == "missing":
        student = tmp_path / "nope"
    elif case == "truncated":
        student = _corrupt(root, tmp_path)
    elif case == "garbage":
        student = _garbage(root, tmp_path)
    elif case == "incompatible":
        teacher = _other_teacher(root, tmp_path)
    elif case == "out_of_range":
        extra = ["--patched", "9"]
    elif case == "not_a_number":
        extra = ["--patched", "1,x"]
    code, _, err = run(["patch", "--teacher", teacher, "--student", student, *extra,
                        "--out", tmp_path / "o"], capsys)
    assert code == 2
    assert err.startswith("error: ") and pattern in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_unsupported_architecture_in_the_cli(tmp_path, capsys):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, vocab_size=50, is_decoder=True)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "bert")
    bm.save_student(BertForMaskedLM(cfg), bm.LayerMapping.from_rule(2, 0, 1, 0), tmp_path / "s")
    code, _, err = run(["info", "--teacher", tmp_path / "bert", "--student", tmp_path / "s"], capsys)
    assert code == 2 and "error: " in err and "Traceback" not in err


def test_module_entry_point_runs(saved_pair):
    root, _ = saved_pair
    proc = subprocess.run([sys.executable, "-m", "boomerang", "info", "--student", root / "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: No such") and "Traceback" not in proc.stderr


def test_the_cli_uses_the_dashboards_thread_rule(monkeypatch, capsys):
    from boomerang.threads import default_threads

    before = torch.get_num_threads()
    monkeypatch.delenv("BOOMERANG_THREADS", raising=False)
    assert default_threads() == max(1, (os.cpu_count() or 2) // 2)
    try:
        monkeypatch.setenv("BOOMERANG_THREADS", "3")
        torch.set_num_threads(1)
        assert main(["smollm2", "report", "--blocks", "0"]) == 2
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("BOOMERANG_THREADS", "two")
        capsys.readouterr()
        assert main(["smollm2", "report", "--blocks", "0"]) == 2
        assert capsys.readouterr().err == ("error: BOOMERANG_THREADS must be a whole number of threads of at "
                                           "least 1, not 'two'.\n")
    finally:
        torch.set_num_threads(before)


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
from boomerang.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["patch", "--patched", "1"], ["distill", "--teacher", "demo", "--steps", "2",
                                                                     "--seq-len", "32", "--batch-size", "2"]])
def test_a_write_with_no_room_left_is_one_sentence_and_leaves_no_partial_result(tmp_path, command):
    out = tmp_path / "out"
    env = {**os.environ, "BOOMERANG_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, *command, "--out", str(out)], capture_output=True,
                       text=True, env=env, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:") or "Traceback" in x]
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines == [lines[0]] and "the file would be larger than allowed" in lines[0]
    if command[0] == "patch":
        assert not out.exists()  # an export is written whole or not at all
    else:
        assert not list(out.rglob("*.safetensors"))  # no checkpoint or student half-written


def test_prune_exports_a_baseline_of_one_size(saved_pair, tmp_path, capsys, monkeypatch):
    """`prune` saves the teacher pruned by a baseline: naive pruning keeps the layers the student
    copied (checked against the teacher cut by hand), LaCo the merged model of its cached groups."""
    import copy
    import json
    import re

    root, pair = saved_pair
    n = pair.num_student_layers
    code, out, err = run(["prune", "--teacher", root / "teacher", "--student", root / "student",
                          "--method", "naive-pruning", "--layers", n, "--out", tmp_path / "naive"], capsys)
    assert code == 0, err
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "naive", attn_implementation="eager").eval()
    by_hand = copy.deepcopy(pair.teacher)
    by_hand.model.layers = torch.nn.ModuleList(by_hand.model.layers[t] for t in pair.mapping.kept)
    by_hand.config.num_hidden_layers = n
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, by_hand(x, use_cache=False).logits, rtol=0, atol=1e-6)

    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    code, out, err = run(["prune", "--pair", "demo", "--method", "laco", "--layers", 11,
                          "--out", tmp_path / "laco"], capsys)
    assert code == 0, err
    groups = json.loads(re.search(r"collapsed groups (\[.*\])\) to", out).group(1))
    assert len(groups) == 11 and [t for g in groups for t in g] == list(range(12))
    demo = bm.load_pair("demo")
    want = bm.orders.prune_teacher(demo, groups)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "laco").eval()
    ids = torch.randint(0, 2048, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, want(ids).logits, rtol=0, atol=1e-5)
