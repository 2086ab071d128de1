"""Text corpora, deterministic held-out splits, tokenization and packing into blocks.

Every consumer (distillation, perplexity sweeps, the dashboard, the CLI) asks for text the same
two ways: :func:`load_documents` returns documents of one split, :func:`load_blocks` returns
them tokenized and packed into ``[n_blocks, seq_len]`` token blocks (cached on disk, because the
dashboard and the CLI ask again and again).

A *source* is ``"demo"`` (the bundled corpus of :mod:`boomerang.demo`), a local ``.txt`` file, a
folder of text files, or a Hugging Face dataset id ``"name"`` / ``"name:config"``. The split is
by document and deterministic: documents are ranked by a hash of their key, so the same text
always splits the same way on every machine, and documents that must stay together (parallel
translations of one Bible chapter) share a group key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import DataError

__all__ = [
    "SPLITS",
    "Document",
    "assign_splits",
    "cache_dir",
    "chunk_text",
    "load_blocks",
    "load_documents",
    "read_text_file",
    "select_split",
]

#: Valid values of ``split``; ``"all"`` means every document.
SPLITS: tuple[str, ...] = ("train", "validation", "test", "all")
#: Fractions of documents (groups) in validation and test; the rest is train.
HELD_OUT_FRACTIONS: dict[str, float] = {"validation": 0.05, "test": 0.05}
#: File suffixes read from a folder source.
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".text", ".md", ".rst")
#: A file longer than this is cut into several documents (so a held-out part exists).
MAX_DOCUMENT_CHARS = 8_000
#: Rough number of documents a single-file source is cut into.
SINGLE_FILE_CHUNKS = 100


@dataclass(frozen=True)
class Document:
    """One document of a corpus.

    ``key`` identifies it; ``group`` (defaults to ``key``) decides its split, so documents with
    the same group always land in the same split; ``label`` is an optional category (e.g. the
    BBC News topic).
    """

    key: str
    text: str
    group: str | None = None
    label: str | None = None

    @property
    def split_key(self) -> str:
        """The string whose hash decides the split of this document."""
        return self.group if self.group is not None else self.key


# --------------------------------------------------------------------------------------------
# Splits


def _hash_unit(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (same on every machine and run)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")


def assign_splits(split_keys: Sequence[str]) -> list[str]:
    """Assign each key to ``"train"``, ``"validation"`` or ``"test"`` deterministically.

    Distinct keys are ranked by their hash; the first 5% go to test, the next 5% to
    validation, the rest to train (equal keys share a split). Ranking rather than thresholding
    guarantees non-empty held-out splits as soon as there are three distinct keys.
    """
    unique = sorted(set(split_keys), key=lambda k: (_hash_unit(k), k))
    n = len(unique)
    n_test = max(1, round(n * HELD_OUT_FRACTIONS["test"])) if n >= 3 else 0
    n_val = max(1, round(n * HELD_OUT_FRACTIONS["validation"])) if n >= 3 else 0
    where: dict[str, str] = {}
    for rank, key in enumerate(unique):
        where[key] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return [where[k] for k in split_keys]


def select_split(documents: Sequence[Document], split: str = "train") -> list[Document]:
    """The documents of ``split``, in a fixed pseudo-random order (by key hash).

    The order interleaves the parts of a mixed corpus, so any prefix (e.g. the first blocks
    used for a quick evaluation) is a representative sample.
    """
    _check_split(split)
    splits = assign_splits([d.split_key for d in documents])
    chosen = [d for d, s in zip(documents, splits) if split == "all" or s == split]
    return sorted(chosen, key=lambda d: (_hash_unit(d.key), d.key))


# --------------------------------------------------------------------------------------------
# Reading local text


def read_text_file(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file (BOM tolerated), with one-sentence errors for bad files."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"Text file {str(path)!r} does not exist.") from None
    except OSError as exc:
        raise DataError(f"Cannot read {str(path)!r}: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{str(path)!r} is not UTF-8 text: invalid byte 0x{raw[exc.start]:02x} at byte offset "
            f"{exc.start}; convert it to UTF-8 (e.g. `iconv -t UTF-8`)."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def chunk_text(text: str, target_chars: int) -> list[str]:
    """Cut ``text`` into chunks of about ``target_chars`` characters at paragraph boundaries.

    Paragraphs (blank-line separated) are grouped until a chunk reaches the target; text
    without blank lines falls back to lines, and a single huge line to whitespace.
    """
    text = text.strip()
    if not text:
        return []
    pieces = [p.strip() for p in text.split("\n\n") if p.strip()]
    sep = "\n\n"
    if len(pieces) < 3:
        pieces, sep = [p for p in text.split("\n") if p.strip()], "\n"
    if len(pieces) < 3:
        words, pieces, sep = text.split(), [], " "
        step = max(1, len(words) // max(1, len(text) // max(1, target_chars)))
        pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        current.append(piece)
        size += len(piece) + len(sep)
        if size >= target_chars:
            chunks.append(sep.join(current))
            current, size = [], 0
    if current:
        chunks.append(sep.join(current))
    return chunks


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


def _iter_hub_texts(source: str, split: str) -> Iterator[str]:
    """Texts of a hub dataset's ``split``: its own split if it has one, else a hash split."""
    import datasets

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
                u = _hash_unit(f"{source}/{base}/{i}")
                if not any(lo <= u < hi for lo, hi in keep):
                    continue
            text = _text_of(ex)
            if text and text.strip():
                yield text


def _is_hub_id(source: str) -> bool:
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
        from .demo import demo_documents  # lazy: demo builds on this module

        return demo_documents()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"Text source {str(source)!r} does not exist; give a .txt file, a folder, 'demo' or a dataset id.")
    return _local_documents(path)


def load_documents(source: str | os.PathLike, split: str = "train") -> list[str]:
    """The texts of one split of ``source`` (``"demo"``, a file, a folder or a hub dataset id).

    Splits are by document, ~90/5/5 and deterministic; see :func:`select_split`.
    """
    _check_split(split)
    if isinstance(source, str) and source != "demo" and _is_hub_id(source):
        texts = list(_iter_hub_texts(source, split))
        if not texts:
            raise DataError(f"Dataset {source!r} has no text in split {split!r}.")
        return texts
    docs = select_split(_source_documents(source), split)
    if not docs:
        raise DataError(f"{str(source)!r} has no documents in split {split!r}; give more text or use split='all'.")
    return [d.text for d in docs]


def cache_dir() -> Path:
    """Root of boomerang's on-disk caches (``$BOOMERANG_CACHE`` or ``~/.cache/boomerang``)."""
    return Path(os.environ.get("BOOMERANG_CACHE", Path.home() / ".cache" / "boomerang")).expanduser()


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        desc = backend.to_str()
    else:
        desc = json.dumps([type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer)])
    desc += f"|eos={tokenizer.eos_token_id}"
    return hashlib.sha256(desc.encode("utf-8")).hexdigest()


def _eos_id(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.pad_token_id
    if eos is None:
        raise DataError("The tokenizer has no EOS token to separate documents; set tokenizer.eos_token.")
    return int(eos)


def _pack(texts: Iterable[str], tokenizer: Any, seq_len: int, max_tokens: int | None,
          batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Tokenize in batches, end each document with EOS, concatenate; stop at ``max_tokens``."""
    eos = _eos_id(tokenizer)
    parts: list[torch.Tensor] = []
    total = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal total
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        flat = [t for doc in ids for t in (*doc, eos)]
        parts.append(torch.tensor(flat, dtype=torch.long))
        total += len(flat)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
            if max_tokens is not None and total >= max_tokens:
                break
    if batch and (max_tokens is None or total < max_tokens):
        flush()
    stream = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    return stream, total


def load_blocks(
    source: str | os.PathLike,
    tokenizer: Any,
    seq_len: int,
    split: str = "train",
    max_blocks: int | None = None,
) -> torch.LongTensor:
    """Tokenized text of ``source``/``split`` packed into a ``[n_blocks, seq_len]`` tensor.

    Documents are tokenized without special tokens, each followed by the EOS token,
    concatenated in the order of :func:`load_documents`, and cut into consecutive blocks (the
    incomplete tail is dropped). Deterministic; the full result is cached under
    ``cache_dir()/blocks`` keyed by a fingerprint of the texts, the tokenizer and ``seq_len``,
    and ``max_blocks`` takes the first blocks.
    """
    from safetensors.torch import load_file, save_file

    _check_split(split)
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2, got {seq_len}.")
    if max_blocks is not None and max_blocks < 1:
        raise DataError(f"max_blocks must be at least 1, got {max_blocks}.")
    hub = isinstance(source, str) and source != "demo" and _is_hub_id(source)
    h = hashlib.sha256()
    h.update(_tokenizer_fingerprint(tokenizer).encode())
    h.update(f"|{seq_len}|{split}|".encode())
    if hub:
        # A stream cannot be fingerprinted without reading it: key by id, and stop early.
        h.update(f"hub:{source}|{max_blocks}".encode())
        texts: Iterable[str] = _iter_hub_texts(str(source), split)
        max_tokens = None if max_blocks is None else max_blocks * seq_len
    else:
        texts = load_documents(source, split)
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        max_tokens = None
    path = cache_dir() / "blocks" / f"{h.hexdigest()[:32]}.safetensors"
    if path.exists():
        try:
            blocks = load_file(str(path))["blocks"]
        except Exception:  # a corrupt cache entry is rebuilt, not fatal
            blocks = None
        if blocks is not None:
            return blocks[:max_blocks] if max_blocks is not None else blocks

    stream, n_tokens = _pack(texts, tokenizer, seq_len, max_tokens)
    if n_tokens < seq_len:
        raise DataError(
            f"{str(source)!r} ({split}) has only {n_tokens} tokens, fewer than one sequence of "
            f"{seq_len}; give more text or a smaller seq_len."
        )
    n_blocks = n_tokens // seq_len
    blocks = stream[: n_blocks * seq_len].view(n_blocks, seq_len).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"blocks": blocks}, str(tmp))
    os.replace(tmp, path)
    return blocks[:max_blocks] if max_blocks is not None else blocks
