"""Documents and their deterministic train / validation / test split.

A corpus is a list of :class:`Document`. The split is by document and deterministic: documents
are ranked by a hash of their key, so the same text always splits the same way on every machine,
and documents that must stay together (parallel translations of one Bible chapter) share a group
key. :func:`read_text_file` and :func:`chunk_text` turn local files into documents.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

#: Valid values of ``split``; ``"all"`` means every document.
SPLITS: tuple[str, ...] = ("train", "validation", "test", "all")
#: Fractions of documents (groups) in validation and test; the rest is train.
HELD_OUT_FRACTIONS: dict[str, float] = {"validation": 0.05, "test": 0.05}


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


def hash_unit(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for ``key`` (same on every machine and run)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")


def assign_splits(split_keys: Sequence[str]) -> list[str]:
    """Assign each key to ``"train"``, ``"validation"`` or ``"test"`` deterministically.

    Distinct keys are ranked by their hash; the first 5% go to test, the next 5% to
    validation, the rest to train (equal keys share a split). Ranking rather than thresholding
    guarantees non-empty held-out splits as soon as there are three distinct keys.
    """
    unique = sorted(set(split_keys), key=lambda k: (hash_unit(k), k))
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
    check_split(split)
    splits = assign_splits([d.split_key for d in documents])
    chosen = [d for d, s in zip(documents, splits) if split == "all" or s == split]
    return sorted(chosen, key=lambda d: (hash_unit(d.key), d.key))


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


