"""boomerang.ui.query: what a URL or a typed field may ask for, and the message when it may not."""

from __future__ import annotations

import os

import pytest

from boomerang.ui import query


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    (root / "run1" / "student").mkdir(parents=True)
    monkeypatch.setenv("BOOMERANG_RUNS", str(root))
    return root


def test_numbers_and_choices_name_the_refused_value():
    assert query.parse_int("?seq_len", "256", 128, 16, 4096).value == 256
    assert query.parse_int("?seq_len", "1,024", 128, 16, 4096).value == 1024
    for misplaced in ("1,6", "12,34,567", "1,0245", "1__000"):  # separators only between groups of three
        wrong = query.parse_int("?seq_len", misplaced, 128, 16, 4096)
        assert wrong.value == 128 and wrong.message == f"Ignored ?seq_len='{misplaced}': not a whole number; using 128."
    assert query.parse_int("?seq_len", "1_024", 128, 16, 4096).value == 1024
    bad = query.parse_int("?seq_len", "100000", 128, 16, 4096)
    assert bad.value == 128 and bad.message == ("Ignored ?seq_len='100000': must be between 16 and 4,096; "
                                                "using 128.")
    assert query.parse_int("?k", None, 0, 0, 7).ok
    assert query.parse_choice("?order", "up", ["a", "b"], "a").message == "Ignored ?order='up': not one of a, b; using a."
    picked = query.parse_choices("?orders", "a,zz,b", ["a", "b"], ["a"])
    assert picked.value == ["a", "b"] and "'zz'" in picked.message


def test_patched_layers_are_all_or_nothing():
    assert query.parse_layers("?patched", "1, 3", 4).value == frozenset({1, 3})
    for raw, why in (("1,99", "layers 0 to 3 only (no 99)"), ("abc", "'abc' is not a layer number"),
                     ("-1", "'-1' is not a layer number")):
        p = query.parse_layers("?patched", raw, 4)
        assert p.value == frozenset() and why in p.message and f"?patched='{raw}'" in p.message


def test_paths_only_under_the_runs_folder_or_the_demo(runs, tmp_path):
    inside = runs / "run1" / "student"
    assert query.check_local_ref("?student", str(inside)).value == str(inside)
    assert query.check_local_ref("?student", "Harvard-DCML/boomerang-qwen3").ok  # a hub id
    assert query.check_local_ref("?data", "wikitext:wikitext-2-raw-v1", "demo", hub="dataset").ok
    assert query.check_local_ref("?data", "demo", "demo", hub="dataset").ok
    for raw in ("/etc", "../../etc/passwd", str(runs / ".." / "elsewhere"), "~/.ssh"):
        p = query.check_local_ref("?teacher", raw)
        assert not p.ok and p.value == "" and f"'{raw}'" in p.message, raw
    assert query.check_local_ref("?teacher", "/etc", allow_outside=True).ok
    link = runs / "escape"
    os.symlink(tmp_path, link)  # a link under runs/ that points outside it
    assert not query.check_local_ref("?student", str(link)).ok


def test_exports_stay_under_the_runs_folder_unless_opted_in(runs, tmp_path):
    assert query.check_export_dir("exports/x").value == runs / "exports" / "x"
    refused = query.check_export_dir(str(tmp_path / "out"))
    assert refused.value is None and str(tmp_path / "out") in refused.message
    assert query.check_export_dir(str(tmp_path / "out"), allow_outside=True).value == tmp_path / "out"
    assert query.check_export_dir(str(runs / ".." / "out")).value is None


def test_a_path_too_long_for_the_file_system_is_refused_not_a_traceback():
    from boomerang.ui import query

    for raw in ["/tmp/" + "a" * 300, "runs/" + "b" * 256, "c" * 300, "/x/" + "d/" * 2100]:
        for allow in (False, True):
            p = query.check_local_ref("?student", raw, "", allow_outside=allow)
            assert p.value == "" and "longer than file systems allow" in p.message, (raw[:20], allow)
    assert query.check_local_ref("?student", "runs/" + "e" * 255, "", allow_outside=True).message is None  # 255 is fine
    e = query.check_export_dir("exports/" + "f" * 300, allow_outside=True)
    assert e.value is None and "longer than file systems allow" in e.message


def test_a_teacher_a_student_records_relative_to_itself_is_found_from_the_student_folder(tmp_path):
    """A new run on the Train page starts from the same teacher that loading the pair uses."""
    import json

    from boomerang import ui

    (tmp_path / "teacher").mkdir()
    (tmp_path / "run" / "student").mkdir(parents=True)
    (tmp_path / "run" / "student" / "student_config.json").write_text(json.dumps({"teacher": "../../teacher"}))
    spec = ui.PairSpec("folders", student=str(tmp_path / "run" / "student"))
    assert spec.teacher_ref() == str((tmp_path / "teacher").resolve())
    (tmp_path / "run" / "student" / "student_config.json").write_text(json.dumps({"teacher": "org/model"}))
    assert spec.teacher_ref() == "org/model"  # a hub id stays as written
