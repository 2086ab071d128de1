"""How the pages word their numbers: what a perplexity was measured on, repeated sizes, correlations.

A number on screen should say what it is: a perplexity names its split and how many tokens it
averages; sizes that repeat (patching a one-to-one layer swaps equal-size layers) are explained
instead of drawn on top of each other; a correlation over a handful of layers comes with its
uncertainty.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import BoomerangPair


def fmt_num(x: float, digits: int = 2) -> str:
    """``12797.017`` -> ``"12,797.02"`` (thousands separators)."""
    return f"{float(x):,.{digits}f}"


def ppl_label(split: str, shape: Any) -> str:
    """"validation perplexity, 64 × 128 tokens" for evaluation blocks of ``shape`` (blocks, tokens)."""
    rows, cols = int(shape[0]), int(shape[1])
    return f"{split} perplexity, {rows:,} × {cols:,} tokens"


def accuracy_label(task: str, examples: int) -> str:
    """"zero-shot accuracy on demo_cloze (100 examples, 95% interval)" for an axis or a tooltip."""
    return f"zero-shot accuracy on {task} ({examples:,} examples, 95% interval)"


def ppl_source(split: str, shape: Any) -> str:
    """"64 × 128 tokens of validation text": what a perplexity in a sentence was measured on."""
    rows, cols = int(shape[0]), int(shape[1])
    return f"{rows:,} × {cols:,} tokens of {split} text"


def repeated_sizes(df: pd.DataFrame, col: str = "layers") -> dict[int, list[int]]:
    """Sizes that several ``k`` of one curve share: ``{layers: [k, ...]}`` (only sizes seen twice or more)."""
    out: dict[int, list[int]] = {}
    for k, v in zip(df["k"], df[col]):
        out.setdefault(int(v), []).append(int(k))
    return {v: ks for v, ks in out.items() if len(ks) > 1}


def repeated_size_note(pair: BoomerangPair, df: pd.DataFrame) -> str | None:
    """Why some sizes of a curve repeat (one-to-one student layers), or None when none do."""
    rep = repeated_sizes(df)
    if not rep:
        return None
    one_to_one = [i for i, b in enumerate(pair.mapping.blocks) if len(b) == 1]
    parts = []
    for layers, ks in sorted(rep.items()):
        ppl = df[df["k"].isin(ks)]["perplexity"] if "perplexity" in df else pd.Series(dtype=float)
        same = len(ppl) > 1 and float(ppl.max() - ppl.min()) <= 1e-6 * float(ppl.abs().max() or 1)
        parts.append(f"k = {', '.join(map(str, ks))} all have {layers} layers"
                     + (" and the same perplexity" if same else ""))
    if one_to_one:
        many = len(one_to_one) > 1
        which = (f"student layer{'s' if many else ''} {', '.join(map(str, one_to_one))} "
                 f"{'stand' if many else 'stands'} for one teacher layer{' each' if many else ''} "
                 f"(one-to-one), so patching {'them' if many else 'it'} swaps a layer for one of the same size")
    else:
        which = "patching some layers does not change the layer count"
    note = f"{'; '.join(parts)}: {which}."
    if any("same perplexity" in p for p in parts):
        note += (" The same perplexity means the swapped layers are identical: they were kept at the "
                 "teacher's weights during distillation (frozen), so these are the same model.")
    return note + " The plot labels these points with their k instead of stacking them unseen."


def spearman_ci(x: Any, y: Any, level: float = 0.95) -> dict[str, float] | None:
    """Spearman's rho of ``x`` and ``y`` with a Fisher-z interval (Bonett-Wright standard error
    ``sqrt(1.06 / (n - 3))``); None with fewer than 4 points (no interval can be given).

    Returns ``{"rho", "low", "high", "n"}``; with few points the interval is wide, which is the point.
    """
    xs, ys = pd.Series(np.asarray(x, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    n = len(xs)
    if n < 4 or xs.nunique() < 2 or ys.nunique() < 2:
        return None
    rho = float(xs.corr(ys, method="spearman"))
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    se = math.sqrt(1.06 / (n - 3))
    q = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}.get(level, 1.96)
    return {"rho": rho, "low": math.tanh(z - q * se), "high": math.tanh(z + q * se), "n": float(n)}


def student_is_distilled(student_dir: str | None) -> bool:
    """False when the student's ``student_config.json`` says it was only initialised (e.g. SmolLM2's)."""
    if not student_dir:
        return True
    meta = Path(student_dir) / "student_config.json"
    try:
        return bool(json.loads(meta.read_text()).get("distilled", True))
    except (OSError, ValueError):
        return True


#: Characters that Markdown (CommonMark, GFM, Streamlit's math and emoji shortcodes) gives a meaning.
_MARKDOWN = set("\\`*_{}[]()#+-.!|<>~:$&")
#: Whitespace-free runs that GFM would turn into a link even with every character escaped (its
#: autolinks are found in the text after escapes are undone): URLs, www. names, e-mail addresses.
_LINKISH = re.compile(r"(\S*(?:://|www\.|@)\S*)")


def _code_span(token: str) -> str:
    """``token`` as a Markdown code span, which shows it verbatim (no escapes, links or images)."""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", token)), default=0) + 1)
    pad = " " if token.startswith("`") or token.endswith("`") else ""
    return f"{fence}{pad}{token}{pad}{fence}"


def literal(text: str) -> str:
    """``text`` written so that Streamlit's Markdown shows it as it is: a user-supplied value in a
    message (``[x](https://...)``, ``![img](...)``, a bare URL or address) is never a link, an
    image or formatting, whoever wrote the link that put it there. Markdown characters are
    escaped; runs that GFM would link anyway are shown as code."""
    parts = _LINKISH.split(str(text))
    return "".join(_code_span(p) if i % 2 else "".join("\\" + c if c in _MARKDOWN else c for c in p)
                   for i, p in enumerate(parts))
