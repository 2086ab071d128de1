"""Shared fixtures: tiny teacher/student pairs of every supported family."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from tiny import FAMILIES, perturb, tiny_pair  # noqa: E402

import boomerang as bm  # noqa: E402


def make_pair(family: str = "llama", num_layers: int = 8, rule=(1, 2, 1)) -> bm.BoomerangPair:
    """A tiny teacher and a student initialised from it, then perturbed (stands in for training)."""
    pair = tiny_pair(family, num_layers, rule=rule, perturb=0.0, attn="eager")
    perturb(pair.student)
    return pair


@pytest.fixture(params=sorted(FAMILIES))
def family_pair(request) -> bm.BoomerangPair:
    """One tiny pair per supported family."""
    return make_pair(request.param)


@pytest.fixture
def llama_pair() -> bm.BoomerangPair:
    """A tiny Llama pair: 8 teacher layers, 5 student layers ((0,), (1, 2), (3, 4), (5, 6), (7,))."""
    return make_pair("llama")
