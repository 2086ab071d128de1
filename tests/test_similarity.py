"""Student x teacher cosine-similarity matrices and the per-layer table."""

from __future__ import annotations

import pytest
import torch
from tiny import random_ids, tiny_pair

import boomerang as bm
from boomerang.eval.similarity import block_similarity, similarity_matrix

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def calib():
    return random_ids(4, 12, seed=21)


def test_matrix_shape_labels_and_range(calib):
    pair = tiny_pair("qwen2", 8, perturb=0.2)
    sim = similarity_matrix(pair, calib, batch_size=3)
    n, N = pair.num_student_layers, pair.mapping.num_teacher_layers
    assert sim.shape == (n + 1, N + 1)
    assert list(sim.index) == ["emb"] + [f"s{i}" for i in range(n)]
    assert list(sim.columns) == ["emb"] + [f"t{j}" for j in range(N)]
    assert ((sim.values <= 1 + 1e-6) & (sim.values >= -1 - 1e-6)).all()


def test_student_equal_to_teacher_gives_the_identity_diagonal(calib):
    # every=1: the student copies every teacher layer, so it IS the teacher.
    teacher = tiny_pair("llama", 6).teacher
    mapping = bm.LayerMapping.from_rule(6, keep_first=0, every=1, keep_last=0)
    pair = bm.BoomerangPair(teacher, bm.init_student(teacher, mapping), mapping)
    sim = similarity_matrix(pair, calib).values
    assert sim.diagonal() == pytest.approx(1.0, abs=1e-5)
    assert (sim.argmax(axis=1) == range(len(sim))).all()


def test_kept_layer_student_tracks_its_blocks(calib):
    # A student that is exactly its teacher's kept layers [0, 2, 4, 6, 7] (no distillation).
    pair = tiny_pair("llama", 8, perturb=0.0)
    sim = similarity_matrix(pair, calib)
    assert sim.loc["emb", "emb"] == pytest.approx(1.0, abs=1e-6)
    assert sim.loc["s0", "t0"] == pytest.approx(1.0, abs=1e-5)  # same layer, same input
    # Along the mapping, each student state is closer to its block-end teacher state than the
    # student's embedding is (the staircase), and similarity decays away from the diagonal.
    for i, block in enumerate(pair.mapping.blocks):
        assert sim.loc[f"s{i}", f"t{block[-1]}"] > sim.loc["emb", f"t{block[-1]}"] - 1e-6


def test_block_similarity_table(calib):
    pair = tiny_pair("llama", 8, perturb=0.0)
    table = block_similarity(pair, calib)
    sim = similarity_matrix(pair, calib)
    assert list(table.columns) == ["layer", "block", "block_end", "cos_global", "cos_local",
                                   "kl_alone", "kl_gain", "ppl_alone", "ppl_gain"]
    assert table.block.tolist() == ["0-1", "2-3", "4-5", "6", "7"]
    for _, row in table.iterrows():
        assert row.cos_global == pytest.approx(sim.loc[f"s{row.layer}", f"t{row.block_end}"])
    # Singleton blocks are copied verbatim: the student layer IS the block on the same input,
    # and patching it alone changes nothing.
    single = table[table.block.isin(["6", "7"])]
    assert single.cos_local.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert single.kl_gain.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert single.ppl_gain.tolist() == pytest.approx([0.0, 0.0], abs=1e-4)
    # Two-layer blocks are not: their student layer skips a teacher layer.
    assert (table[table.block.str.contains("-")].cos_local < 1 - 1e-4).all()


def test_cli_similarity(tmp_path, monkeypatch):
    import pandas as pd
    from tiny import saved_tiny_pair

    from boomerang.cli import main

    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))
    t_dir, s_dir, text = saved_tiny_pair(tmp_path, text="sentences", perturb=0.05)
    out, blocks_out = tmp_path / "sim.csv", tmp_path / "blocks.csv"
    assert main(["similarity", "--teacher", str(t_dir), "--student", str(s_dir), "--device", "cpu",
                 "--calib-data", str(text), "--calib-n", "2", "--calib-len", "16", "--out", str(out),
                 "--blocks-out", str(blocks_out)]) == 0
    sim = pd.read_csv(out, index_col=0)
    assert sim.shape == (5, 7) and sim.loc["s0", "t0"] == pytest.approx(1.0, abs=1e-2)
    assert len(pd.read_csv(blocks_out)) == 4
