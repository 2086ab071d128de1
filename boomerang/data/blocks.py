"""Tokenized text packed into ``[n_blocks, seq_len]`` token blocks, cached on disk.

:func:`load_blocks` is what models are trained and evaluated on. Documents are tokenized without
special tokens, each followed by EOS, concatenated in split order and cut into blocks. The result
is cached under ``cache_dir()/blocks`` (the dashboard and the CLI ask again and again), keyed by
a fingerprint of the texts, the tokenizer and ``seq_len``; an unwritable cache only disables
caching.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from ..errors import DataError
from ..io import atomic_write
from ..paths import cache_dir
from .documents import check_split
from .sources import is_hub_id, iter_hub_texts, load_documents


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of a tokenizer's vocabulary and rules: equal hashes tokenize text equally."""
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


def _cached(path: Path, seq_len: int, vocab: int) -> torch.Tensor | None:
    """The blocks cached at ``path``; None when absent, unreadable or not what this tokenizer
    could have written (not ``[n, seq_len]`` whole numbers in ``0..vocab - 1``: a damaged or
    planted entry), so that they are rebuilt rather than fed to a model."""
    if not path.exists():
        return None
    try:
        blocks = load_file(str(path))["blocks"]
    except Exception:  # noqa: BLE001 - a corrupt cache entry is rebuilt, not fatal
        return None
    if (blocks.dtype != torch.long or blocks.dim() != 2 or blocks.shape[0] < 1 or blocks.shape[1] != seq_len
            or int(blocks.min()) < 0 or int(blocks.max()) >= vocab):
        return None
    return blocks


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
    incomplete tail is dropped). Deterministic; results are cached under ``cache_dir()/blocks``
    keyed by a fingerprint of the texts, the tokenizer and ``seq_len``. ``max_blocks`` takes the
    first blocks: from the whole split's cache when there is one, otherwise by tokenizing only
    as much text as they need (the same blocks, cached on their own), so a few calibration
    blocks do not cost a pass over a large split.
    """

    check_split(split)
    if seq_len < 2:
        raise DataError(f"seq_len must be at least 2, got {seq_len}.")
    if max_blocks is not None and max_blocks < 1:
        raise DataError(f"max_blocks must be at least 1, got {max_blocks}.")
    hub = isinstance(source, str) and source != "demo" and is_hub_id(source)
    h = hashlib.sha256()
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(f"|{seq_len}|{split}|".encode())
    if hub:
        # A stream cannot be fingerprinted without reading it: key by id, and stop early.
        h.update(f"hub:{source}|{max_blocks}".encode())
        texts: Iterable[str] = iter_hub_texts(str(source), split)
        max_tokens = None if max_blocks is None else max_blocks * seq_len
    else:
        texts = load_documents(source, split)
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        max_tokens = None
    path = cache_dir() / "blocks" / f"{h.hexdigest()[:32]}.safetensors"
    vocab = len(tokenizer)
    blocks = _cached(path, seq_len, vocab)
    if blocks is not None:
        return blocks[:max_blocks] if max_blocks is not None else blocks
    if max_blocks is not None and not hub:
        h.update(f"|first {max_blocks}".encode())
        path = cache_dir() / "blocks" / f"{h.hexdigest()[:32]}.safetensors"
        blocks = _cached(path, seq_len, vocab)
        if blocks is not None:
            return blocks[:max_blocks]
        max_tokens = max_blocks * seq_len

    stream, n_tokens = _pack(texts, tokenizer, seq_len, max_tokens,
                             batch_size=256 if max_tokens is None else 32)
    if n_tokens < seq_len:
        raise DataError(
            f"{str(source)!r} ({split}) has only {n_tokens} tokens, fewer than one sequence of "
            f"{seq_len}; give more text or a smaller seq_len."
        )
    n_blocks = n_tokens // seq_len
    blocks = stream[: n_blocks * seq_len].view(n_blocks, seq_len).contiguous()
    try:
        atomic_write(path, save({"blocks": blocks}))
    except OSError:  # an unwritable cache only costs the next call a re-tokenization
        pass
    return blocks[:max_blocks] if max_blocks is not None else blocks
