"""LayerMapping: the paper's rule, the reference student_config.json format, validation."""

import pytest

import boomerang as bm
from boomerang.errors import BoomerangError


def test_rule_reproduces_published_students():
    qwen3 = bm.LayerMapping.from_rule(36, keep_first=0, every=2, keep_last=2)
    assert qwen3.num_student_layers == 19
    assert qwen3.kept == list(range(0, 34, 2)) + [34, 35]
    pythia = bm.LayerMapping.from_rule(32, 0, 2, 2)
    assert pythia.num_student_layers == 17
    llama = bm.LayerMapping.from_rule(28, keep_first=1, every=2, keep_last=1)
    assert llama.num_student_layers == 15
    assert llama.kept == [0] + list(range(1, 27, 2)) + [27]


def test_blocks_cover_the_teacher_in_order():
    m = bm.LayerMapping.from_rule(12, 0, 2, 2)
    assert m.kept == [0, 2, 4, 6, 8, 10, 11]
    assert m.blocks == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10,), (11,))
    assert [t for b in m.blocks for t in b] == list(range(12))
    assert m.pruned == [1, 3, 5, 7, 9]
    assert m.block_end(0) == 1 and m.block_end(6) == 11
    # An uneven middle gets a shorter last group.
    m3 = bm.LayerMapping.from_rule(10, 1, 3, 1)
    assert m3.blocks == ((0,), (1, 2, 3), (4, 5, 6), (7, 8), (9,))


def test_from_kept_and_student_config_round_trip():
    m = bm.LayerMapping.from_kept([0, 1, 3, 5, 6], 8)
    assert m.blocks == ((0,), (1, 2), (3, 4), (5,), (6, 7))
    d = m.to_student_config()
    assert d["copied_teacher_layers"] == [0, 1, 3, 5, 6]
    assert d["pruned_teacher_layers"] == [2, 4, 7]
    assert bm.LayerMapping.from_student_config(d) == m
    # The reference format alone (no extra fields) is enough.
    ref = {"copied_teacher_layers": [0, 1, 3, 5, 6], "pruned_teacher_layers": [2, 4, 7]}
    assert bm.LayerMapping.from_student_config(ref) == m


def test_patched_layer_count():
    m = bm.LayerMapping.from_rule(12, 0, 2, 2)
    assert m.patched_layers([]) == 7
    assert m.patched_layers(range(7)) == 12
    assert m.patched_layers([0, 6]) == 8


@pytest.mark.parametrize(
    "make",
    [
        lambda: bm.LayerMapping.from_rule(4, 3, 2, 2),
        lambda: bm.LayerMapping.from_rule(4, 0, 0, 1),
        lambda: bm.LayerMapping.from_kept([1, 2], 4),
        lambda: bm.LayerMapping.from_kept([0, 2, 2], 4),
        lambda: bm.LayerMapping.from_kept([0, 5], 4),
        lambda: bm.LayerMapping(((0, 1), (3,))),
        lambda: bm.LayerMapping.from_student_config({"foo": 1}),
    ],
)
def test_invalid_mappings_raise_clear_errors(make):
    with pytest.raises(BoomerangError):
        make()


def test_check_patched():
    m = bm.LayerMapping.from_rule(8, 0, 2, 2)
    assert m.check_patched(["1", 2]) == {1, 2}
    with pytest.raises(BoomerangError, match="out of range"):
        m.check_patched([5])
    with pytest.raises(BoomerangError, match="not a whole number"):
        m.check_patched(["x"])
