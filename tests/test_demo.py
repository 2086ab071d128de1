"""Tests of the bundled demo family: corpus, loader, model card, and the phenomenon itself.

The phenomenon tests evaluate the shipped models on a small fixed slice of the held-out test
split (the first blocks of its fixed pseudo-random document order), so they are fast and
deterministic; the model card reports the same measurements on a larger slice.
"""

from __future__ import annotations

import json

import pytest
import torch

import boomerang as bm
from boomerang.data.demo_corpus import strip_gutenberg
from boomerang.errors import BoomerangError
from boomerang.paths import demo_assets_dir
from boomerang.recipes.demo import phenomenon_checks, render_model_card
from boomerang.zoo import DEMO_STUDENTS, demo_dirs

EVAL_BLOCKS = 32


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((demo_assets_dir() / "card.json").read_text())


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    from transformers import AutoTokenizer

    from boomerang.data import load_blocks

    teacher_dir, _ = demo_dirs()
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    return load_blocks("demo", tokenizer, 128, split="test", max_blocks=EVAL_BLOCKS)


@pytest.fixture(scope="module")
def rows(held_out) -> list[dict]:
    """Last-to-first interpolation of the boomerang and random-init students vs naive pruning."""
    from boomerang.recipes.demo import interpolation_report

    teacher_dir, _ = demo_dirs()
    students = {m: demo_dirs(m)[1] for m in ("boomerang", "random-init")}
    return interpolation_report(teacher_dir, students, held_out)["rows"]


def test_strip_gutenberg_removes_header_and_licence():
    text = ("The Project Gutenberg EBook of Hamlet\n*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
            "HAMLET\n\nTo be, or not to be.\n*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nLicence text")
    assert strip_gutenberg(text) == "HAMLET\n\nTo be, or not to be."
    assert strip_gutenberg("No header here.") == "No header here."


def test_demo_dirs_and_loader():
    for student in DEMO_STUDENTS:
        teacher_dir, student_dir = demo_dirs(student)
        assert (teacher_dir / "model.safetensors").is_file()
        assert (student_dir / "model.safetensors").is_file()
        assert (student_dir / "student_config.json").is_file()
    assert not list(demo_assets_dir().rglob("*.bin")) and not list(demo_assets_dir().rglob("*.pt"))
    pair = bm.load_pair("demo")
    assert pair.teacher.config.num_hidden_layers >= 12
    assert pair.mapping.kept == bm.LayerMapping.from_rule(pair.teacher.config.num_hidden_layers, 0, 2, 2).kept
    assert pair.tokenizer.eos_token is not None and pair.tokenizer.pad_token is not None
    # A shipped student names its teacher relative to its own folder, so it loads on its own.
    alone = bm.load_pair(student=demo_dirs("no-align")[1])
    assert alone.teacher.config.to_dict() == pair.teacher.config.to_dict()


def test_demo_dirs_unknown_student_lists_the_valid_ones():
    with pytest.raises(BoomerangError) as info:
        demo_dirs("distilled")
    assert all(name in str(info.value) for name in DEMO_STUDENTS)


def test_assets_fit_the_size_budget():
    total = sum(p.stat().st_size for p in demo_assets_dir().rglob("*") if p.is_file())
    assert total <= 40 * 2**20


def test_model_card_fields(card):
    for split in ("train", "validation", "test"):
        s = card["corpus"]["splits"][split]
        assert s["documents"] > 0 and s["characters"] > 0 and s["tokens"] > 0
    splits = card["corpus"]["splits"]
    assert splits["train"]["documents"] > 10 * splits["test"]["documents"]
    assert card["teacher"]["steps"] > 0 and card["teacher"]["tokens"] > 0 and card["teacher"]["wall_time_s"] > 0
    assert set(card["students"]) == set(DEMO_STUDENTS)
    for s in card["students"].values():
        assert s["steps"] > 0 and s["tokens"] > 0 and s["wall_time_s"] > 0
    assert card["hardware"]["cpu_cores"] >= 1
    res = card["results"]
    assert res["teacher"] > 1 and set(res["students"]) == set(DEMO_STUDENTS)
    assert [r["k"] for r in res["rows"]] == list(range(len(card["mapping"]["kept"]) + 1))
    # The shipped Markdown card is rendered from card.json and up to date with it.
    assert (demo_assets_dir() / "MODEL_CARD.md").read_text() == render_model_card(card)


def test_student_is_clearly_worse_than_teacher(rows):
    assert phenomenon_checks(rows)["student_gap"], [(r["k"], r["boomerang"]) for r in rows]


def test_teacher_beats_every_interpolation_which_beats_the_student(rows):
    assert phenomenon_checks(rows)["between"], [(r["k"], r["boomerang"]) for r in rows]


def test_last_to_first_curve_falls_steadily(rows):
    assert phenomenon_checks(rows)["monotone"], [(r["k"], r["boomerang"]) for r in rows]


def test_interpolation_beats_naive_pruning(rows):
    assert phenomenon_checks(rows)["beats_pruning"], [(r["k"], r["boomerang"], r["naive_pruning"]) for r in rows]


def test_interpolation_beats_naive_pruning_by_far_where_two_or_more_layers_are_missing(rows):
    n_teacher = rows[-1]["layers"]
    some = [r for r in rows[1:-1] if r["layers"] <= n_teacher - 2]
    assert some and all(r["boomerang"] < r["naive_pruning"] for r in some)
    assert max(r["naive_pruning"] / r["boomerang"] for r in some) > 1.25


def test_random_init_student_interpolates_worse(rows):
    assert phenomenon_checks(rows)["ablation_worse"], [(r["k"], r["boomerang"], r["random-init"]) for r in rows]
    middle = rows[1:-1]
    assert sum(r["random-init"] for r in middle) > 1.2 * sum(r["boomerang"] for r in middle)


def test_frozen_parts_of_the_shipped_students_are_the_teacher_s():
    """The one-to-one layers and head stayed the teacher's, so patching them is a no-op."""
    from boomerang.recipes.demo import DEMO_FREEZE
    from boomerang.train import frozen_parameters

    for mode in ("boomerang", "no-align"):
        pair = bm.load_pair("demo", student=mode)
        assert pair.mapping.blocks[-2:] == ((10,), (11,))
        s_params = frozen_parameters(pair.student, pair.mapping, DEMO_FREEZE)
        assert len(s_params) == 2 * 9 + 2  # two Llama layers (9 tensors each), final norm, tied head
        full = pair.build(patched={5, 6})
        patched = dict(full.named_parameters())
        for name, p in pair.student.named_parameters():
            if any(p is q for q in s_params):
                assert torch.equal(p, patched[name]), (mode, name)


def test_curve_figure_names_an_off_scale_ablation_instead_of_drawing_it(card):
    from boomerang.recipes.demo import interpolation_curve_figure

    fig = interpolation_curve_figure(card["results"])
    names = {t.name for t in fig.data}
    assert {"naive pruning", "boomerang student, last-to-first"} <= names
    assert not any("random-init" in n for n in names)
    (note,) = fig.layout.annotations
    assert note.text.startswith("random-init student: ") and "off this scale" in note.text
    close = {"rows": [{k: v for k, v in r.items() if k != "random-init"} for r in card["results"]["rows"]]}
    assert not interpolation_curve_figure(close).layout.annotations


def test_phenomenon_checks_on_synthetic_rows():
    def row(k, layers, b, r, naive):
        return {"k": k, "layers": layers, "boomerang": b, "random-init": r, "naive_pruning": naive}

    good = [row(0, 3, 40, 90, 60), row(1, 4, 37, 80, 55), row(2, 5, 34, 70, 45), row(3, 6, 30, 30, 30)]
    assert all(phenomenon_checks(good).values())
    bumpy = [row(0, 3, 40, 90, 60), row(1, 4, 41, 80, 55), row(2, 5, 34, 70, 33), row(3, 6, 30, 30, 30)]
    checks = phenomenon_checks(bumpy)
    assert not checks["between"] and not checks["monotone"] and not checks["beats_pruning"]
    assert checks["student_gap"] and checks["ablation_worse"]
    # A patch that keeps the size (a one-to-one layer) is not an intermediate size: equal to the
    # student is fine, but worse still breaks the steady fall.
    same = [row(0, 3, 40, 90, 60), row(1, 3, 40, 85, 60), *good[1:]]
    assert all(phenomenon_checks(same).values())
    worse = [row(0, 3, 40, 90, 60), row(1, 3, 41, 85, 60), *good[1:]]
    assert not phenomenon_checks(worse)["monotone"] and phenomenon_checks(worse)["between"]


def test_the_shipped_same_size_students_have_their_interpolated_models_shape_and_the_cards_numbers(card):
    """Students distilled directly at 8..11 layers: each composed from the demo teacher has the
    layer sources of the last-to-first interpolated model of its depth, they ship in under 10 MB,
    and their test perplexity (a direct forward, 256 blocks) is the one the card reports."""
    import math

    from transformers import AutoTokenizer

    from boomerang.core.delta import apply_delta
    from boomerang.data import load_blocks
    from boomerang.zoo import same_size_deltas

    deltas = same_size_deltas()
    assert list(deltas) == [8, 9, 10, 11]
    assert sum(p.stat().st_size for d in deltas.values() for p in d.iterdir()) <= 10 * 2**20
    pair = bm.load_pair("demo")
    interpolated = {pair.mapping.patched_layers(s): s for s in bm.patch_order(pair, "last-to-first")}
    teacher_dir, _ = demo_dirs()
    blocks = load_blocks("demo", AutoTokenizer.from_pretrained(str(teacher_dir)), 128, split="test",
                         max_blocks=card["same_size"]["evaluation"]["blocks"])
    reported = {r["layers"]: r["distilled"] for r in card["same_size"]["results"]["rows"]}
    for layers, d in deltas.items():
        student, mapping = apply_delta(pair.teacher, d)
        assert mapping.num_student_layers == layers
        # Teacher layer each position copies: the interpolated model's student slots and teacher blocks.
        patched = interpolated[layers]
        want = [t for i, b in enumerate(pair.mapping.blocks) for t in (b if i in patched else b[:1])]
        assert list(mapping.kept) == want, layers
        with torch.inference_mode():
            logits = student(blocks).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                blocks[:, 1:].reshape(-1))
        assert math.exp(nll.item()) == pytest.approx(reported[layers], abs=2e-3), layers
