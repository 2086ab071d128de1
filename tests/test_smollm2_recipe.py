"""The SmolLM2 recipe's report and the smollm2 pair's students, on a tiny pair (no SmolLM2 run)."""

from __future__ import annotations

import json

import pytest
from tiny import saved_tiny_pair

from boomerang.cli import main
from boomerang.errors import BoomerangError
from boomerang.recipes.smollm2 import interpolation_checks
from boomerang.zoo import load_pair, smollm2_dirs


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    return saved_tiny_pair(tmp_path_factory.mktemp("recipe") / "pair")[1]


def test_report_measures_every_size_of_both_orders_and_pruning(tiny_student, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    card = tmp_path / "card.md"
    assert main(["smollm2", "report", "--student", str(tiny_student), "--out", str(out), "--blocks", "2",
                 "--threads", "1", "--card", str(card), "--acc-items", "3"]) == 0
    rep = json.loads(out.read_text())
    pair = load_pair(student=str(tiny_student), device="cpu")
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    assert [r["layers"] for r in rep["rows"]] == list(range(n, N + 1))
    assert len(rep["last_to_first"]) == len(rep["first_to_last"]) == n + 1
    assert rep["rows"][0]["last_to_first"] == rep["student"] and rep["rows"][-1]["first_to_last"] == rep["teacher"]
    assert rep["rows"][-1]["naive_pruning"] == pytest.approx(rep["teacher"], rel=1e-6)  # nothing pruned
    assert rep["blocks"] == 2 and rep["split"] == "test" and set(rep["checks"]) >= {"student_within_2.5x"}
    assert [r["layers"] for r in rep["block_influence"]] == [r["layers"] for r in rep["angular"]] == list(range(n, N + 1))
    assert rep["rows"][-1]["angular"] == pytest.approx(rep["teacher"], rel=1e-6)  # nothing dropped
    assert all(r["angular"] > 0 for r in rep["rows"])
    for r in rep["rows"]:  # every size of both orders, 3 items of each task, with its interval
        for order in ("last_to_first", "first_to_last"):
            for task in ("demo_cloze", "bbc_news"):
                a = r["accuracy"][order][task]
                assert a["n"] == 3 and a["lo"] <= a["accuracy"] <= a["hi"] and a["accuracy"] in (0, 1 / 3, 2 / 3, 1)
    same = rep["rows"][0]["accuracy"]  # the student is one model, whichever order reaches it
    assert same["last_to_first"] == same["first_to_last"]
    text = card.read_text()
    # Two tables (perplexity, accuracy), each a header and one line per size.
    assert f"**{rep['teacher']:,.2f}**" in text and text.count("\n| ") == 2 * (len(rep["rows"]) + 1)
    a = rep["rows"][-1]["accuracy"]["last_to_first"]["bbc_news"]
    assert f"| {N} | " in text and f"{100 * a['accuracy']:.1f} [{100 * a['lo']:.1f}-{100 * a['hi']:.1f}]" in text
    printed = capsys.readouterr().out
    assert f"teacher {rep['teacher']:,.2f}" in printed and "first-to-last" in printed and "95% interval" in printed
    # Every baseline at every size, every perplexity with its interval (in the card too).
    for r in rep["rows"]:
        for key in ("last_to_first", "first_to_last", "naive_pruning", "block_influence", "angular", "sleb", "laco"):
            assert r[f"{key}_lo"] <= r[key] <= r[f"{key}_hi"], (r["layers"], key)
    assert rep["rows"][-1]["laco"] == pytest.approx(rep["teacher"], rel=1e-6)  # nothing merged
    r0 = rep["rows"][0]
    assert "SLEB pruning | LaCo merging |" in text
    assert f"{r0['sleb']:,.2f} [{r0['sleb_lo']:,.2f}-{r0['sleb_hi']:,.2f}]" in text

    # A second report of the same student takes the accuracies from the first instead of scoring again.
    from boomerang.recipes import smollm2 as recipe

    def no_scoring(*a, **k):
        raise AssertionError("scored again")

    monkeypatch.setattr(recipe, "size_accuracy", no_scoring)
    again = tmp_path / "again.json"
    assert main(["smollm2", "report", "--student", str(tiny_student), "--out", str(again), "--blocks", "2",
                 "--threads", "1", "--acc-items", "3", "--reuse-accuracy", str(out)]) == 0
    assert [r["accuracy"] for r in json.loads(again.read_text())["rows"]] == [r["accuracy"] for r in rep["rows"]]
    # Another number of items cannot be lent: it is scored (and here refused by the stand-in).
    with pytest.raises(AssertionError, match="scored again"):
        main(["smollm2", "report", "--student", str(tiny_student), "--out", str(again), "--blocks", "2",
              "--threads", "1", "--acc-items", "4", "--reuse-accuracy", str(out)])


def test_interpolation_checks_read_the_rows():
    rows = [{"layers": 7, "last_to_first": 40.0, "first_to_last": 40.0, "naive_pruning": 70.0},
            {"layers": 8, "last_to_first": 35.0, "first_to_last": 41.0, "naive_pruning": 50.0},
            {"layers": 9, "last_to_first": 30.0, "first_to_last": 32.0, "naive_pruning": 31.0},
            {"layers": 10, "last_to_first": 20.0, "first_to_last": 20.0, "naive_pruning": 20.0}]
    c = interpolation_checks(rows, teacher=20.0, student=40.0)
    assert c["student_within_2.5x"] and c["monotone_last_to_first"] and c["beats_pruning_last_to_first"]
    assert not c["between_first_to_last"] and not c["monotone_first_to_last"]
    assert c["sizes_losing_to_pruning_first_to_last"] == [9]
    assert c["worst_rise_first_to_last"] == pytest.approx(0.025)
    rows[1]["first_to_last"] = 40.3  # a rise of 0.75%: within the 1% allowed
    assert interpolation_checks(rows, teacher=20.0, student=40.0)["monotone_first_to_last"]
    rows[1]["block_influence"] = 34.0  # block influence beats last-to-first at 8 layers
    assert interpolation_checks(rows, teacher=20.0, student=40.0)["sizes_losing_to_pruning_last_to_first"] == [8]


def test_smollm2_students_that_are_missing_are_named(tmp_path, monkeypatch):
    import boomerang.zoo.smollm2 as z
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(z, "SHIPPED_DELTA", tmp_path / "no-delta")
    with pytest.raises(BoomerangError, match="lacks the shipped one"):
        smollm2_dirs("distilled")
    with pytest.raises(BoomerangError, match="No SmolLM2 student was built on this machine"):
        smollm2_dirs("built")
    with pytest.raises(BoomerangError, match="Unknown SmolLM2 student 'best'"):
        smollm2_dirs("best")
