"""The patched set's one home: every spelling (CLI, URL, table, API) reads and writes through Patched."""

import numpy as np
import pandas as pd
import pytest
import torch

import boomerang as bm
from boomerang.core import Patched


def test_a_patched_set_is_the_plain_frozenset_it_names():
    p = Patched([3, 1])
    assert p == frozenset({1, 3}) and hash(p) == hash(frozenset({1, 3}))
    assert {frozenset({1, 3}): "x"}[p] == "x"
    assert Patched() == frozenset()


@pytest.mark.parametrize("layers, text, as_json", [
    ((), "", "[]"),
    ((2,), "2", "[2]"),
    ((5, 0, 3), "0,3,5", "[0, 3, 5]"),
])
def test_every_spelling_round_trips(layers, text, as_json):
    p = Patched(layers)
    assert p.text() == text and p.to_json() == as_json
    assert Patched.parse(text) == p and Patched.from_json(as_json) == p and Patched.coerce(as_json) == p
    assert p.as_tuple() == tuple(sorted(layers))


def test_table_cells_of_every_kind_read_as_sets():
    assert Patched.coerce(float("nan")) == frozenset() and Patched.coerce(None) == frozenset()
    assert Patched.coerce("") == frozenset() and Patched.coerce((4, 2)) == {2, 4}
    frame = pd.DataFrame({"patched": ["[1, 2]", "[]"]})
    assert [Patched.coerce(c) for c in frame["patched"]] == [{1, 2}, set()]


def test_text_that_names_no_set_is_refused_naming_the_bad_part():
    assert Patched.problem("1, 3", 4) is None
    assert Patched.problem("abc", 4) == "'abc' is not a layer number"
    assert Patched.problem("-1", 4) == "'-1' is not a layer number"
    assert Patched.problem("1,9,12", 4) == "the student has layers 0 to 3 only (no 9, 12)"
    with pytest.raises(bm.BoomerangError, match=r"^'x' is not a layer number; write e\.g\. --patched 1,2\.$"):
        Patched.parse("1,x", example="--patched 1,2")


def test_check_accepts_any_integer_kind_and_refuses_the_rest():
    assert Patched.check([np.int64(1), torch.tensor(2), "0"], 3) == {0, 1, 2}
    for bad, msg in ((5, "collection"), ("12", "collection"), ([True], "not a number"),
                     (["1.5"], "not a whole number"), ([3], "out of range: this student has layers 0..2")):
        with pytest.raises(bm.BoomerangError, match=msg):
            Patched.check(bad, 3)


def test_the_engine_hands_out_patched_sets(llama_pair):
    pair = llama_pair
    n = pair.num_student_layers
    s = pair.sequential("last-to-first", 2)
    assert isinstance(s, Patched) and s == set(range(n - 2, n))
    assert isinstance(pair.mapping.check_patched([0]), Patched)
