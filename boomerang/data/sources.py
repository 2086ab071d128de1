"""Text sources: the bundled demo corpus, a local file or folder, or a Hugging Face dataset id.

Every consumer (distillation, perplexity sweeps, the dashboard, the CLI) asks for the texts of
one split of a *source* through :func:`load_documents`. A source is ``"demo"`` (the bundled
corpus of :mod:`boomerang.data.demo_corpus`), a local ``.txt`` file, a folder of text files, or a
hub dataset id ``"name"`` / ``"name:config"`` (streamed; needs a network).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from .demo_corpus import demo_documents
from .documents import (
    HELD_OUT_FRACTIONS,
    Document,
    check_split,
    chunk_text,
    hash_unit,
    read_text_file,
    select_split,
)

#: File suffixes read from a folder source.
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".text", ".md", ".rst")
#: A file longer than this is cut into several documents (so a held-out part exists).
MAX_DOCUMENT_CHARS = 8_000
#: Rough number of documents a single-file source is cut into.
SINGLE_FILE_CHUNKS = 100

def _file_documents(path: Path, key_prefix: str, target_chars: int) -> list[Document]:
    text = read_text_file(path)
    if len(text) <= target_chars:
        chunks = [text.strip()] if text.strip() else []
    else:
        chunks = chunk_text(text, target_chars)
    return [Document(key=f"{key_prefix}#{i}", text=c) for i, c in enumerate(chunks)]


def _local_documents(path: Path) -> list[Document]:
    if path.is_file():
        text_len = path.stat().st_size
        # Aim at ~100 documents so validation and test each get a few, but not tiny ones.
        target = max(200, min(MAX_DOCUMENT_CHARS, text_len // SINGLE_FILE_CHUNKS))
        docs = _file_documents(path, path.name, target)
        if not docs:
            raise DataError(f"{str(path)!r} contains no text.")
        return docs
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(
            f"Folder {str(path)!r} has no text files ({', '.join(TEXT_SUFFIXES)}) in it or below it."
        )
    docs = []
    for f in files:
        docs.extend(_file_documents(f, f.relative_to(path).as_posix(), MAX_DOCUMENT_CHARS))
    if not docs:
        raise DataError(f"The text files in {str(path)!r} are all empty.")
    return docs


# --------------------------------------------------------------------------------------------
# Hugging Face datasets (needs a network; streamed so that big corpora are not downloaded)


def _parse_hub_id(source: str) -> tuple[str, str | None]:
    name, _, config = source.partition(":")
    return name, (config or None)


def _text_of(example: dict[str, Any]) -> str | None:
    if isinstance(example.get("text"), str):
        return example["text"]
    for value in example.values():
        if isinstance(value, str):
            return value
    return None


def _hash_bounds() -> dict[str, tuple[float, float]]:
    """``split -> [lo, hi)`` intervals of :func:`_hash_unit` for streams (test, validation, train)."""
    t, v = HELD_OUT_FRACTIONS["test"], HELD_OUT_FRACTIONS["validation"]
    return {"test": (0.0, t), "validation": (t, t + v), "train": (t + v, 1.0)}


def iter_hub_texts(source: str, split: str) -> Iterator[str]:
    """Texts of a hub dataset's ``split``: its own split if it has one, else a hash split."""
    import datasets  # heavy, and only needed for hub sources


    name, config = _parse_hub_id(source)
    try:
        available = datasets.get_dataset_split_names(name, config)
    except Exception as exc:  # network errors, unknown ids, gated datasets...
        raise DataError(
            f"{source!r} is neither a local file or folder nor a dataset reachable on the Hugging "
            f"Face Hub ({type(exc).__name__}); check the path, the dataset id or your network."
        ) from None
    aliases = {"validation": ("validation", "valid", "dev"), "test": ("test",), "train": ("train",)}
    native = {part: next((s for s in names if s in available), None) for part, names in aliases.items()}
    # Held-out parts the dataset lacks are carved out of its train split by a hash of the row
    # index (thresholding, since a stream cannot be ranked), and removed from train.
    carved = [p for p in ("validation", "test") if native[p] is None]
    base = native["train"] or available[0]
    bounds = _hash_bounds()
    for part in (["train", "validation", "test"] if split == "all" else [split]):
        if native[part] is not None and not (part == "train" and carved):
            keep = None
        elif part == "train":
            keep = [(lo, hi) for p, (lo, hi) in bounds.items() if p == "train" or p not in carved]
        else:
            keep = [bounds[part]]
        stream = datasets.load_dataset(name, config, split=native[part] or base, streaming=True)
        for i, ex in enumerate(stream):
            if keep is not None:
                u = hash_unit(f"{source}/{base}/{i}")
                if not any(lo <= u < hi for lo, hi in keep):
                    continue
            text = _text_of(ex)
            if text and text.strip():
                yield text


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a hub id (``name``, ``org/name``, ``org/name:config``)."""
    if Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or "\\" in source:
        return False
    name = source.partition(":")[0]
    return bool(name) and name.count("/") <= 1 and not name.lower().endswith(TEXT_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Public entry points


def _source_documents(source: str | os.PathLike) -> list[Document]:
    """Every document of a local or bundled source (not hub datasets)."""
    if isinstance(source, str) and source == "demo":
        return demo_documents()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"Text source {str(source)!r} does not exist; give a .txt file, a folder, 'demo' or a dataset id.")
    return _local_documents(path)


def load_documents(source: str | os.PathLike, split: str = "train") -> list[str]:
    """The texts of one split of ``source`` (``"demo"``, a file, a folder or a hub dataset id).

    Splits are by document, ~90/5/5 and deterministic; see :func:`select_split`.
    """
    check_split(split)
    if isinstance(source, str) and source != "demo" and is_hub_id(source):
        texts = list(iter_hub_texts(source, split))
        if not texts:
            raise DataError(f"Dataset {source!r} has no text in split {split!r}.")
        return texts
    docs = select_split(_source_documents(source), split)
    if not docs:
        raise DataError(f"{str(source)!r} has no documents in split {split!r}; give more text or use split='all'.")
    return [d.text for d in docs]

