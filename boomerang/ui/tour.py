"""The Learn page's claims, computed from the curves its plots show (so each sentence is true of its plot).

Each function picks the numbers a step of the tour quotes: the size half-way between student
and teacher, two orders at the same *size* (not the same number of patched layers), which single
patches help. ``tests/test_app.py`` checks the sentences against the demo's numbers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..eval.curve import Curve
from ..recipes.smollm2 import PRUNING_LABELS


def at_equal_sizes(curves: dict[str, Curve]) -> pd.DataFrame:
    """Perplexity of each named curve at every layer count strictly between student and teacher
    that all of them reach: index ``layers``, one column per name (plus ``k_<name>``, and
    ``<name>_lo``, ``<name>_hi`` when the curve has 95% intervals)."""
    parts = []
    for name, curve in curves.items():
        first = curve.to_frame_by_size()
        cols = {"perplexity": name, "k": f"k_{name}", "perplexity_lo": f"{name}_lo", "perplexity_hi": f"{name}_hi"}
        parts.append(first[[c for c in cols if c in first]].rename(columns=cols))
    table = pd.concat(parts, axis=1, join="inner").sort_index()
    lo, hi = next(iter(curves.values())).ends
    return table[(table.index > lo) & (table.index < hi)]


def largest_gap(table: pd.DataFrame, a: str, b: str) -> tuple[int, float, float] | None:
    """(layers, perplexity of ``a``, of ``b``) at the size where they differ most (relative); None if no size."""
    if table.empty:
        return None
    ratio = (table[a] / table[b]).map(lambda r: max(r, 1 / r))
    layers = int(ratio.idxmax())
    return layers, float(table.loc[layers, a]), float(table.loc[layers, b])


def clear_wins(table: pd.DataFrame, a: str, b: str) -> tuple[int, int, int]:
    """Of the sizes in an :func:`at_equal_sizes` table: where ``a`` is lower with the two 95%
    intervals apart, where ``b`` is, and where the intervals overlap (within noise). Without
    intervals every difference counts."""
    def bounds(name: str) -> tuple[pd.Series, pd.Series]:
        if f"{name}_lo" in table and f"{name}_hi" in table:
            return table[f"{name}_lo"], table[f"{name}_hi"]
        return table[name], table[name]

    a_lo, a_hi = bounds(a)
    b_lo, b_hi = bounds(b)
    a_wins = int((a_hi < b_lo).sum())
    b_wins = int((b_hi < a_lo).sum())
    return a_wins, b_wins, len(table) - a_wins - b_wins


def single_patch_summary(gains: pd.DataFrame) -> dict[str, object]:
    """From :func:`boomerang.ui.single_layer_gains`: which layers help alone, the best, the worst.

    ``helps``/``hurts``/``neutral`` are student layer lists (gain > 0, < 0, == 0 within 1e-9).
    """
    helps = [int(r.student_layer) for r in gains.itertuples() if r.gain > 1e-9]
    hurts = [int(r.student_layer) for r in gains.itertuples() if r.gain < -1e-9]
    neutral = [int(r.student_layer) for r in gains.itertuples() if abs(r.gain) <= 1e-9]
    best = gains.loc[gains["gain"].idxmax()]
    worst = gains.loc[gains["gain"].idxmin()]
    return {"helps": helps, "hurts": hurts, "neutral": neutral, "best": int(best.student_layer),
            "worst": int(worst.student_layer)}


def _rises(values: list[float]) -> list[tuple[int, float]]:
    """(index, relative rise) of every step of ``values`` that goes up by more than 1%."""
    return [(i, b / a - 1) for i, (a, b) in enumerate(zip(values, values[1:])) if b > a * 1.01]


def _acc(a: dict[str, float]) -> str:
    return f"{100 * a['accuracy']:.1f}% [{100 * a['lo']:.1f}, {100 * a['hi']:.1f}]"


#: The pruning baselines a report's rows may hold, and how the tour names them.
PRUNING_NAMES = tuple(PRUNING_LABELS.items())


def real_model_lesson(rep: dict[str, Any]) -> list[str]:
    """The tour's real-model step, as Markdown paragraphs computed from a SmolLM2 report
    (:func:`boomerang.recipes.smollm2.smollm2_report`): the student, the curve against pruning
    half-way in size and at every size, the two orders, and accuracy with its intervals."""
    rows = rep["rows"]
    n, N = rows[0]["layers"], rows[-1]["layers"]
    sc = rep.get("student_config", {})
    trained = sc.get("local_distill", {})
    T, S = rep["teacher"], rep["student"]
    out = [
        f"The same lesson on a real pretrained model: **SmolLM2-135M-Instruct**, {N} Llama layers. Its "
        f"boomerang student keeps **{n}** of them (teacher layers {sc.get('copied_teacher_layers')}) and was "
        f"distilled block-locally on {trained.get('tokens', 0):,} tokens, on a CPU. On {rep['blocks']} held-out "
        f"test blocks of {rep['seq_len']} tokens the teacher's perplexity is **{T:,.2f}** and the student's "
        f"**{S:,.2f}** ({S / T:.2f}× the teacher's)."]
    middle = [r for r in rows if n < r["layers"] < N]
    if not middle:
        return out
    mid = min(middle, key=lambda r: (abs(r["layers"] - (n + N) / 2), r["layers"]))
    best = min(mid["last_to_first"], mid["first_to_last"])
    baselines = [(key, name) for key, name in PRUNING_NAMES if mid.get(key) is not None]
    prune = min(mid[key] for key, _ in baselines)
    quoted = [f"**{mid[key]:,.2f}** ({name})" for key, name in baselines]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]

    def beaten(r: dict[str, Any], key: str) -> bool:
        return r[key] < min(r[b] for b, _ in baselines if r.get(b) is not None)

    def clearly_beaten(r: dict[str, Any], key: str) -> bool:
        # Won beyond noise: its 95% interval lies below every baseline's.
        return all(r[f"{key}_hi"] < r[f"{b}_lo"] for b, _ in baselines if r.get(b) is not None)

    with_intervals = all(r.get(f"{k}_hi") is not None for r in middle for k in ("last_to_first", "first_to_last")) \
        and all(r.get(f"{b}_lo") is not None for r in middle for b, _ in baselines if r.get(b) is not None)

    def tally(name: str, key: str) -> str:
        won = sum(beaten(r, key) for r in middle)
        text = f"{name} beats every pruning baseline at " + (
            f"every one of the {len(middle)} intermediate sizes" if won == len(middle) else
            f"{won} of the {len(middle)} intermediate sizes")
        if with_intervals:
            clear = sum(clearly_beaten(r, key) for r in middle)
            text += f", with the 95% intervals apart at {clear} of them (the rest within noise)" if clear < won \
                else ", every time with the 95% intervals apart"
        return text + "."

    out.append(
        f"Half-way in size, at **{mid['layers']} layers**, patching last-to-first gives **{mid['last_to_first']:,.2f}** "
        f"and first-to-last **{mid['first_to_last']:,.2f}**, with no training. Dropping teacher layers to reach "
        f"the same {mid['layers']} layers gives {listed}: the best of them is "
        f"{prune / best:,.1f}× the better patched model's perplexity. " + " ".join(
            tally(name, key) for name, key in (("Last-to-first", "last_to_first"), ("First-to-last", "first_to_last"))))
    wins = sum(r["last_to_first"] < r["first_to_last"] for r in middle)
    losses = sum(r["last_to_first"] > r["first_to_last"] for r in middle)
    shape = []
    for name, key in (("last-to-first", "last_to_first"), ("first-to-last", "first_to_last")):
        ups = _rises([r[key] for r in rows])
        shape.append(f"{name} never gets more than 1% worse as a teacher block is added" if not ups else
                     f"{name} gets worse " + ", ".join(
                         f"from {rows[i]['layers']} to {rows[i + 1]['layers']} layers (+{100 * x:.1f}%)" for i, x in ups))
    out.append(f"The two orders: last-to-first is better at {wins} of the {len(middle)} intermediate sizes and "
               f"first-to-last at {losses}; {shape[0]}, and {shape[1]}.")
    acc = [(t, rows[0]["accuracy"]["last_to_first"].get(t), rows[-1]["accuracy"]["last_to_first"].get(t),
            mid["accuracy"]) for t in sorted((rows[0].get("accuracy") or {}).get("last_to_first") or {})]
    parts = []
    for task, s_acc, t_acc, m_acc in acc:
        if not (s_acc and t_acc):
            continue
        noise = "within noise of each other" if s_acc["hi"] >= t_acc["lo"] and t_acc["hi"] >= s_acc["lo"] else \
            "apart beyond noise"
        m = m_acc["last_to_first"].get(task), m_acc["first_to_last"].get(task)
        parts.append(f"on {task} the student scores {_acc(s_acc)} and the teacher {_acc(t_acc)} ({noise}); at "
                     f"{mid['layers']} layers, last-to-first scores {_acc(m[0])} and first-to-last {_acc(m[1])}")
    if parts:
        out.append("Zero-shot accuracy, with 95% intervals over items: " + "; ".join(parts) + ".")
    return out
