"""Published students offline: a local folder laid out exactly like a ``Harvard-DCML/boomerang-*``
repo (config.json, safetensors shards + model.safetensors.index.json, the reference's two-key
student_config.json with no teacher recorded) loads, patches and finds its teacher's name."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_reference import save_tiny_pair, tiny_teacher, tiny_tokenizer
from tiny import perturb, tokens

import boomerang as bm
from boomerang.zoo import PUBLISHED_STUDENTS, published_student

QWEN3_FULL = dict(use_sliding_window=False, sliding_window=None, layer_types=["full_attention"] * 8)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(teacher_dir, student_dir, in-memory teacher, in-memory student, mapping)."""
    root = tmp_path_factory.mktemp("published")
    teacher = tiny_teacher("qwen3", 8, **QWEN3_FULL)
    t_dir = root / "Qwen3-4B-Base"
    teacher.save_pretrained(t_dir)
    tiny_tokenizer().save_pretrained(t_dir)
    mapping = bm.LayerMapping.from_reference_rule(8, first_layers_to_keep=1, every=2, last_layers_to_keep=2)
    student = bm.init_student(teacher, mapping).eval()
    perturb(student, scale=0.05)
    s_dir = root / "boomerang-qwen3-2.3B"  # named like the hub repo
    student.save_pretrained(s_dir, max_shard_size="20KB")
    tiny_tokenizer().save_pretrained(s_dir)
    # The reference writes exactly these two keys, with json.dump's default spacing.
    (s_dir / "student_config.json").write_text(json.dumps(
        {"pruned_teacher_layers": mapping.pruned, "copied_teacher_layers": mapping.kept}))
    # Trainer.save_model also leaves a pickled training_args.bin, and the repo has a model card:
    # neither is read (a pickle here would be a security hole; this one would not even load).
    (s_dir / "training_args.bin").write_bytes(b"not a pickle")
    (s_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    return t_dir, s_dir, teacher, student, mapping


def test_the_folder_has_the_published_layout(published):
    _, s_dir, *_ = published
    shards = sorted(p.name for p in s_dir.glob("*.safetensors"))
    index = json.loads((s_dir / "model.safetensors.index.json").read_text())
    assert len(shards) >= 3
    assert sorted(set(index["weight_map"].values())) == shards
    assert not (s_dir / "model.safetensors").exists()
    assert {"config.json", "generation_config.json", "tokenizer.json", "training_args.bin"} <= {
        p.name for p in s_dir.iterdir()}
    assert json.loads((s_dir / "student_config.json").read_text()) == {
        "pruned_teacher_layers": [1, 3, 5], "copied_teacher_layers": [0, 2, 4, 6, 7]}


def test_load_pair_reads_the_sharded_student_and_the_reference_student_config(published):
    t_dir, s_dir, teacher, student, mapping = published
    pair = bm.load_pair(teacher=t_dir, student=s_dir, device="cpu", dtype=torch.float32)
    assert pair.mapping == mapping
    assert pair.mapping.blocks == ((0, 1), (2, 3), (4, 5), (6,), (7,))
    ids = tokens(2, 10)
    with torch.no_grad():
        # (the in-memory models run eager attention, the loaded ones sdpa: equal to float noise)
        assert (pair.student(ids).logits - student(ids).logits).abs().max().item() <= 1e-5
        assert (pair.build(patched=range(5))(ids).logits - teacher(ids).logits).abs().max().item() <= 1e-5
        assert (pair.student(ids).logits - teacher(ids).logits).abs().max().item() > 1e-2
        # the reference's r = 1, last-to-first: the two tail layers and the last block
        model, _ = bm.build_intermediate_model(t_dir, s_dir, 1, False, torch.float32, device="cpu")
        want = pair.build(order="last-to-first", k=3)(ids).logits
        assert model.config.num_hidden_layers == 6  # S0 S1 T4 T5 T6 T7
        assert torch.equal(model(ids).logits, want)


def test_a_published_student_alone_names_its_teacher(published):
    _, s_dir, *_ = published
    assert published_student(s_dir).teacher == "Qwen/Qwen3-4B-Base"
    # Offline and not in the local cache: one sentence naming the teacher it looked for.
    with pytest.raises(bm.BoomerangError, match=r"^Could not load a causal LM from 'Qwen/Qwen3-4B-Base'"):
        bm.load_pair(student=s_dir, device="cpu")


def test_another_student_without_a_teacher_is_refused(tmp_path):
    t_dir, s_dir, _ = save_tiny_pair(tmp_path, "llama", 6, (0, 2, 2))
    meta = json.loads((s_dir / "student_config.json").read_text())
    assert "teacher" not in meta
    with pytest.raises(bm.BoomerangError, match=re.escape("does not name its teacher; pass teacher=...")):
        bm.load_pair(student=s_dir, device="cpu")


def test_a_truncated_shard_is_one_sentence(published, tmp_path):
    import shutil

    _, s_dir, *_ = published
    copy = tmp_path / "boomerang-qwen3-2.3B"
    shutil.copytree(s_dir, copy)
    shard = sorted(copy.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(bm.BoomerangError, match=rf"{re.escape(shard.name)} is corrupt or truncated \("):
        bm.load_pair(teacher=published[0], student=copy, device="cpu")


def test_published_table_matches_the_reference_readme():
    ranges = {p.student: p.max_r for p in PUBLISHED_STUDENTS}
    assert ranges == {
        "Harvard-DCML/boomerang-qwen3-2.3B": 17, "Harvard-DCML/boomerang-qwen3-4.9B": 17,
        "Harvard-DCML/boomerang-pythia-1.6B": 15, "Harvard-DCML/boomerang-pythia-3.8B": 15,
        "Harvard-DCML/boomerang-llama-3.2-1.9B": 13,
    }
    layers = {"Qwen": 36, "EleutherAI": 32, "meta-llama": 28}
    for p in PUBLISHED_STUDENTS:
        n = layers[p.teacher.split("/")[0]]
        m = bm.LayerMapping.from_reference_rule(n, *p.rule)
        # r = max_r is the teacher: exactly max_r multi-layer blocks
        assert sum(len(b) > 1 for b in m.blocks) == p.max_r, p.student
