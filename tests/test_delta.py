"""A student shipped as its delta over the teacher: round trip, quantisation, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import perturb, tiny_model

import boomerang as bm
from boomerang.core import find_parts
from boomerang.core.delta import (
    DELTA_META,
    DELTA_WEIGHTS,
    apply_delta,
    dequantize,
    make_delta,
    quantize,
    weights_checksum,
)
from boomerang.errors import BoomerangError


def _trained_pair(family: str, seed: int = 0):
    """A tiny teacher and a student whose two-layer blocks moved away from their copies."""
    teacher = tiny_model(family, num_layers=6, seed=seed)
    mapping = bm.LayerMapping.from_rule(6, keep_first=0, every=2, keep_last=2)  # blocks of 2, 2, then 1, 1
    student = bm.init_student(teacher, mapping)
    layers = find_parts(student).layer_list(student)
    for i in (0, 1):
        perturb(layers[i], scale=0.01, seed=10 + i)
    return teacher, student, mapping


def test_quantize_matches_a_hand_computed_example():
    d = torch.tensor([0.7, -0.35, 0.0, 0.1, 7.0, -7.0, 3.5, 1.0])  # two groups of 4
    q, scale = quantize(d, bits=4, group=4)
    # group 1: scale 0.7 / 7 = 0.1 -> integers 7, -4 (round(-3.5) is -4: half to even), 0, 1
    # group 2: scale 1 -> integers 7, -7, 4 (3.5 to even), 1; stored + 8, low nibble first
    assert scale.tolist() == pytest.approx([0.1, 1.0], rel=1e-3)
    assert q.tolist() == [(15 | 4 << 4), (8 | 9 << 4), (15 | 1 << 4), (12 | 9 << 4)]
    back = dequantize(q, scale, 4, d.shape)
    assert back.tolist() == pytest.approx([0.7, -0.4, 0.0, 0.1, 7.0, -7.0, 4.0, 1.0], abs=1e-3)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantisation_error_is_at_most_half_a_step(bits):
    g = torch.Generator().manual_seed(0)
    d = torch.randn(64, 96, generator=g) * 0.01
    q, scale = quantize(d, bits=bits, group=32)
    back = dequantize(q, scale, bits, d.shape)
    step = scale.float().repeat_interleave(32).view(64, 96)
    assert (back - d).abs().le(step / 2 + 1e-7).all()
    assert q.numel() == d.numel() // (2 if bits == 4 else 1)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gpt_neox", "gpt2", "gemma3_text"])
def test_the_delta_composes_the_trained_student(family, tmp_path):
    teacher, student, mapping = _trained_pair(family)
    composed = make_delta(tmp_path / "delta", teacher, student, mapping, bits=8, group=32)
    again, m2 = apply_delta(teacher, tmp_path / "delta")
    assert m2.kept == mapping.kept
    a, b, s = again.state_dict(), composed.state_dict(), student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # composing is deterministic, bit for bit
    untouched = bm.init_student(teacher, mapping).state_dict()
    assert all(torch.equal(a[k], untouched[k]) for k in a if ".2." in k or "embed" in k)
    worst = max((a[k] - s[k]).abs().max().item() for k in a)
    assert 0 < worst < 2e-4  # 8-bit steps of a 0.01-sized change
    ids = torch.randint(3, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, student(ids).logits, atol=5e-3)


def test_a_4_bit_delta_is_an_eighth_of_float32_and_only_of_trained_layers(tmp_path):
    teacher, student, mapping = _trained_pair("llama")
    make_delta(tmp_path / "d", teacher, student, mapping)
    from safetensors.torch import load_file
    stored = load_file(str(tmp_path / "d" / DELTA_WEIGHTS))
    names = {k.rsplit(".", 1)[0] for k in stored}
    assert names and all(k.startswith(("model.layers.0.", "model.layers.1.")) for k in names)
    trained = sum(p.numel() for i in (0, 1) for p in find_parts(student).layer_list(student)[i].parameters())
    assert sum(t.numel() * t.element_size() for t in stored.values()) < trained * 4 / 6


def test_a_delta_refuses_another_teacher(tmp_path):
    teacher, student, mapping = _trained_pair("llama")
    make_delta(tmp_path / "d", teacher, student, mapping)
    other = tiny_model("llama", num_layers=6, seed=1)
    with pytest.raises(BoomerangError, match="other teacher weights"):
        apply_delta(other, tmp_path / "d")
    with pytest.raises(BoomerangError, match="other teacher weights"):
        apply_delta(teacher.to(torch.bfloat16), tmp_path / "d")
    with pytest.raises(BoomerangError, match="num_hidden_layers = 6"):
        apply_delta(tiny_model("llama", num_layers=8), tmp_path / "d")
    with pytest.raises(BoomerangError, match="model_type = 'llama'"):
        apply_delta(tiny_model("qwen2", num_layers=6), tmp_path / "d")


def test_a_damaged_or_truncated_delta_is_refused(tmp_path):
    teacher, student, mapping = _trained_pair("llama")
    make_delta(tmp_path / "d", teacher, student, mapping)
    f = tmp_path / "d" / DELTA_WEIGHTS
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BoomerangError, match="damaged or was changed"):
        apply_delta(teacher, tmp_path / "d")
    f.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(BoomerangError, match="damaged or was changed"):
        apply_delta(teacher, tmp_path / "d")
    (tmp_path / "d" / DELTA_META).write_text("{not json")
    with pytest.raises(BoomerangError, match="not valid JSON"):
        apply_delta(teacher, tmp_path / "d")
    with pytest.raises(BoomerangError, match="is not a student delta"):
        apply_delta(teacher, tmp_path)


def test_weights_checksum_sees_one_changed_value():
    a = tiny_model("llama", num_layers=2)
    before = weights_checksum(a)
    assert weights_checksum(tiny_model("llama", num_layers=2)) == before
    with torch.no_grad():
        a.model.layers[1].mlp.down_proj.weight[3, 4] += 1e-6
    assert weights_checksum(a) != before


def test_the_shipped_smollm2_delta_fits_its_budget_and_records_its_teacher():
    from boomerang.core.delta import file_sha256
    from boomerang.zoo.smollm2 import SHIPPED_DELTA
    meta = json.loads((SHIPPED_DELTA / DELTA_META).read_text())
    size = (SHIPPED_DELTA / DELTA_WEIGHTS).stat().st_size
    assert size <= 25_000_000
    assert file_sha256(SHIPPED_DELTA / DELTA_WEIGHTS) == meta["delta_sha256"]
    assert len(meta["teacher_checksum"]) == 64 and meta["teacher_config"]["num_hidden_layers"] == 30
    assert meta["local_distill"]["steps"] == meta["local_distill"]["planned_steps"]  # not cut short
    from boomerang.ui import PairSpec
    rec = meta["local_distill"]
    assert PairSpec.from_query({"pair": "smollm2"}).student_record() == (
        f"Distilled block-locally: {rec['tokens']:,} tokens of the demo corpus's train split, "
        f"{rec['steps']:,} steps; each student layer learned its teacher block alone.")
