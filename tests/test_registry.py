"""The registry of named pairs: what the dashboard, its worker and the CLI ask instead of naming a pair."""

import re
from pathlib import Path

import pytest

import boomerang as bm
from boomerang import ui
from boomerang.zoo import registry

ROOT = Path(__file__).resolve().parents[1]


def test_every_named_pair_round_trips_through_a_link():
    for pair in registry.PAIRS:
        spec = ui.PairSpec.named(pair)
        assert spec.to_query() == {"pair": pair.key}
        again = ui.PairSpec.from_query(spec.to_query())
        assert again == spec and again.entry is pair and again.title == pair.label
    assert ui.PairSpec.from_query({"pair": "demo:nope"}) is None


def test_keys_are_the_family_name_for_its_default_student():
    keys = [p.key for p in registry.PAIRS]
    assert keys == ["demo", "demo:no-align", "demo:random-init", "smollm2", "smollm2:undistilled"]
    assert len(set(keys)) == len(keys)
    assert {f.name for f in registry.FAMILIES} == set(bm.zoo.NAMED_PAIRS)


def test_an_unknown_family_is_refused_naming_the_choices():
    with pytest.raises(bm.BoomerangError, match=r"^Unknown named pair 'llama'; choose one of demo, smollm2\.$"):
        bm.load_pair("llama")


def test_the_picker_offers_the_installed_named_pairs_first_then_the_runs(tmp_path):
    run = tmp_path / "r1" / "student"
    run.mkdir(parents=True)
    (run / "student_config.json").write_text("{}")
    specs = ui.discover_pairs(tmp_path)
    named = [p.key for p in registry.offered()]
    assert [s.key for s in specs[:len(named)]] == named
    assert [s.student for s in specs[len(named):]] == [str(run)]


@pytest.mark.skipif("not __import__('boomerang.zoo').zoo.demo_student_dirs()", reason="no demo on disk")
def test_the_lesson_is_the_demo_and_its_ablations():
    main, ablations = registry.lesson()
    assert main.key == "demo" and [a.key for a in ablations] == ["demo:no-align", "demo:random-init"]
    assert ui.same_size_students(ui.PairSpec.named(main)) == bm.zoo.same_size_deltas()
    assert ui.same_size_students(ui.PairSpec.named(registry.find("smollm2"))) == {}


def test_first_use_costs_are_said_only_while_unpaid(monkeypatch):
    smol = ui.PairSpec.from_query({"pair": "smollm2:undistilled"})
    unpaid = registry.Family(**{**registry.SMOLLM2.__dict__, "ready": lambda: False})
    paid = registry.Family(**{**registry.SMOLLM2.__dict__, "ready": lambda: True})
    for family, said in ((unpaid, "converts the GGUF weights"), (paid, "")):
        entry = registry.NamedPair(family, "undistilled", smol.label, False)
        monkeypatch.setattr(registry, "PAIRS", (entry,))
        got = ui.PairSpec.from_query({"pair": "smollm2:undistilled"}).first_use()
        assert (said in got) if said else got == ""
    assert ui.PairSpec.from_query({"pair": "demo"}) is None  # only the patched registry is asked


def test_no_page_or_worker_names_a_pair():
    """Pages, the training worker and the pair specs ask the registry; only it and the recipes
    (and the CLI's recipe command) know SmolLM2 or the demo's students by name."""
    files = [*sorted((ROOT / "app_pages").glob("*.py")),
             *(ROOT / "boomerang" / "ui" / name for name in ("worker.py", "jobs.py", "specs.py"))]
    named = re.compile(r"smollm2|\"demo:|PairSpec\(\"demo\"|== \"demo\"", re.IGNORECASE)
    found = [f"{f.relative_to(ROOT)}:{i}" for f in files
             for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if named.search(line)]
    assert found == []


def test_every_source_of_pairs_says_how_it_is_found_and_what_it_costs():
    assert [s.name for s in registry.SOURCES] == ["runs", "published", "folders"]
    for f in registry.FAMILIES:
        assert f.how and f.title and (f.first_use or f.ready())
    for s in registry.SOURCES:
        assert s.how and s.first_use


def test_published_students_are_offered_only_when_the_hub_cache_holds_both_repos(tmp_path, monkeypatch):
    """A fake hub cache (the layout huggingface_hub reads) with one student and its teacher."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    want = bm.zoo.PUBLISHED_STUDENTS[0]

    def cache(repo: str) -> None:
        d = tmp_path / f"models--{repo.replace('/', '--')}"
        (d / "refs").mkdir(parents=True)
        (d / "refs" / "main").write_text("abc")
        (d / "snapshots" / "abc").mkdir(parents=True)
        (d / "snapshots" / "abc" / "config.json").write_text("{}")

    assert registry.cached_published() == []
    cache(want.student)
    assert registry.cached_published() == []  # its teacher is missing: it would not load offline
    cache(want.teacher)
    assert registry.cached_published() == [want]
    spec = next(s for s in ui.discover_pairs(tmp_path / "no-runs") if s.student == want.student)
    assert spec.teacher == want.teacher and spec.title == f"{want.student} (published)"
