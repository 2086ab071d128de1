"""Tests of boomerang.data: sources, deterministic document splits, packing, caching, errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from boomerang.data import (
    Document,
    assign_splits,
    chunk_text,
    load_blocks,
    load_documents,
    select_split,
)
from boomerang.errors import BoomerangError, DataError


def _prose(n_paragraphs: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "the king speaks of war and peace while the queen walks in the garden at night".split()
    paras = []
    for i in range(n_paragraphs):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        paras.append(f"Paragraph {i}. {sentence.capitalize()}.")
    return "\n\n".join(paras) + "\n"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from boomerang.recipes.demo import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer([_prose(50, seed=s) for s in range(4)], out, vocab_size=300)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "book.txt"
    path.write_text(_prose(400), encoding="utf-8")
    return path


def test_single_file_splits_are_disjoint_complete_and_deterministic(text_file):
    parts = {s: load_documents(text_file, s) for s in ("train", "validation", "test")}
    every = load_documents(text_file, "all")
    assert all(parts.values()), "every split of a long file is non-empty"
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == sorted(every)
    assert not set(parts["test"]) & set(parts["train"])
    assert len(parts["train"]) > 10 * len(parts["test"])
    assert load_documents(str(text_file), "test") == parts["test"]


def test_folder_is_read_recursively_and_ignores_other_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i in range(6):
        (tmp_path / "a" / ("b" if i % 2 else "") / f"doc{i}.txt").write_text(f"Document number {i}.\n")
    (tmp_path / "a" / "weights.bin").write_bytes(b"\xff\x00")
    docs = load_documents(tmp_path, "all")
    assert sorted(docs) == sorted(f"Document number {i}." for i in range(6))


def test_groups_share_a_split():
    keys = [f"doc{i}" for i in range(200)] + ["same"] * 5
    splits = assign_splits(keys)
    assert len({s for k, s in zip(keys, splits) if k == "same"}) == 1
    assert {"train", "validation", "test"} <= set(splits)
    docs = [Document(key=f"v{v}/{c}", text=f"{v}{c}", group=f"c{c}") for v in range(2) for c in range(50)]
    for split in ("validation", "test"):
        chosen = select_split(docs, split)
        assert chosen and {d.group for d in chosen if d.key.startswith("v0")} == {
            d.group for d in chosen if d.key.startswith("v1")}


def test_chunk_text_keeps_all_words():
    text = _prose(30)
    chunks = chunk_text(text, 500)
    assert len(chunks) > 3
    assert " ".join(chunks).split() == text.split()
    one_line = "word " * 1000
    assert len(chunk_text(one_line, 500)) > 3


def test_load_blocks_packs_with_eos_and_caches(text_file, tokenizer, tmp_path):
    blocks = load_blocks(text_file, tokenizer, seq_len=32)
    assert blocks.dtype == torch.long and blocks.dim() == 2 and blocks.shape[1] == 32
    ids = blocks.flatten()
    # One EOS after every training document, so packed blocks contain document boundaries.
    n_train_docs = len(load_documents(text_file, "train"))
    assert (ids == tokenizer.eos_token_id).sum() >= n_train_docs - 2
    cached = list((tmp_path / "cache" / "blocks").glob("*.safetensors"))
    assert len(cached) == 1
    again = load_blocks(text_file, tokenizer, seq_len=32)
    assert torch.equal(blocks, again)
    assert torch.equal(load_blocks(text_file, tokenizer, seq_len=32, max_blocks=3), blocks[:3])
    first_doc = load_documents(text_file, "train")[0]
    assert tokenizer.decode(blocks[0, :10]) in first_doc


@pytest.mark.parametrize("planted", ["beyond the vocabulary", "negative", "other length", "float", "not safetensors"])
def test_a_damaged_or_planted_block_cache_entry_is_rebuilt(text_file, tokenizer, tmp_path, planted):
    from safetensors.torch import save_file

    blocks = load_blocks(text_file, tokenizer, seq_len=32)
    (entry,) = (tmp_path / "cache" / "blocks").glob("*.safetensors")
    bad = {"beyond the vocabulary": blocks + len(tokenizer), "negative": blocks - 10**6,
           "other length": blocks[:, :16].contiguous(), "float": blocks.float()}.get(planted)
    if bad is None:
        entry.write_bytes(b"not a safetensors file")
    else:
        save_file({"blocks": bad}, str(entry))
    assert torch.equal(load_blocks(text_file, tokenizer, seq_len=32), blocks)
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(entry))["blocks"], blocks)  # the entry is rewritten, healed


def test_error_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_documents(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="does not exist"):
        load_documents("no/such/file.txt")


def test_error_not_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("Caf".encode() + b"\xe9 au lait\n")
    with pytest.raises(DataError) as info:
        load_documents(bad, "all")
    assert "latin.txt" in str(info.value) and "offset 3" in str(info.value)


def test_error_empty_file_and_folder(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(DataError, match="no text"):
        load_documents(tmp_path / "empty.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match="no text files"):
        load_documents(tmp_path / "dir")


def test_error_text_shorter_than_one_sequence(tmp_path, tokenizer):
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be.\n\nThat is the question.\n\nWhether tis nobler.\n")
    with pytest.raises(DataError, match=r"only \d+ tokens, fewer than one sequence of 4096"):
        load_blocks(short, tokenizer, seq_len=4096, split="all")


def test_error_unknown_split(text_file, tokenizer):
    with pytest.raises(DataError, match="Unknown split 'dev'"):
        load_documents(text_file, "dev")
    with pytest.raises(BoomerangError):
        load_blocks(text_file, tokenizer, 16, split="eval")


def test_demo_corpus_has_all_parts_in_every_split():
    test_docs = load_documents("demo", "test")
    assert 100 < len(test_docs) < 1000
    from boomerang.data import demo_documents

    docs = demo_documents()
    held = select_split(docs, "test")
    parts = {d.key.split("/")[0] for d in held}
    assert parts == {"shakespeare", "bible", "bbc"}
    # Parallel translations of a Bible chapter never straddle splits.
    train_groups = {d.group for d in select_split(docs, "train") if d.group}
    assert not train_groups & {d.group for d in held if d.group}


def test_first_blocks_without_the_whole_split_are_the_same_blocks(tokenizer, tmp_path, monkeypatch):
    """A few blocks from a fresh cache tokenize only what they need, and equal the first blocks
    of the whole split packed (computed here in another cache folder)."""
    from safetensors.torch import load_file

    book = tmp_path / "long.txt"
    book.write_text(_prose(4000), encoding="utf-8")
    assert len(load_documents(book, "train")) > 64  # more than one tokenizer batch of documents
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "only-first"))
    first = load_blocks(book, tokenizer, seq_len=32, max_blocks=2)
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "whole"))
    whole = load_blocks(book, tokenizer, seq_len=32)
    assert first.shape == (2, 32) and torch.equal(first, whole[:2])
    (entry,) = (tmp_path / "only-first" / "blocks").glob("*.safetensors")
    assert load_file(str(entry))["blocks"].shape[0] < whole.shape[0] / 2  # a prefix, not the split
    monkeypatch.setenv("BOOMERANG_CACHE", str(tmp_path / "only-first"))
    assert torch.equal(load_blocks(book, tokenizer, seq_len=32, max_blocks=2), first)  # from its cache
