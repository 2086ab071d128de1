"""Screenshot every dashboard page in Debian's Chromium into assets/screenshots/.

    python bench/screenshots.py [--pair demo|tiny] [--out assets/screenshots] [--width 1024]

Uses the demo family when it is on disk (else a tiny random pair). Each page is opened by URL
with a state worth showing (a mid-size model, a hand-picked layer set, several orders).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import browser_util as bu  # noqa: E402
from pairs_on_disk import build_tiny_pair  # noqa: E402


def wait_drawn(page, plots: int = 0, timeout_s: float = 900) -> None:
    """Wait for the script to finish and ``plots`` plotly charts to be drawn (unlike
    ``browser_util.settle`` it does not wait for a quiet page: the Train shot never is)."""
    page.wait_for_timeout(500)
    bu.wait_idle(page, timeout_s)
    if plots:
        bu.wait_plots(page, plots, timeout_s)
    page.wait_for_timeout(800)  # let plotly finish its transitions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default=None)
    ap.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    ap.add_argument("--only", default=None, help="comma-separated page names")
    ap.add_argument("--student", default=None, help="a local student folder instead of the demo")
    ap.add_argument("--width", type=int, default=1400,
                    help="window width in px; other than 1400, files are named <page>-<width>.png")
    args = ap.parse_args()
    from boomerang import ui as dash

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    if args.student:
        base = {"pair": "folders", "student": args.student}
        # links may only name folders under the runs folder: serve with the student's run folder's parent
        env["BOOMERANG_RUNS"] = str(Path(args.student).resolve().parent.parent)
    elif args.pair == "demo" or (args.pair is None and dash.demo_available()):
        base = {"pair": "demo"}
        # a runs folder of its own for the Train shot's run (named "runs", as a user's would be)
        env["BOOMERANG_RUNS"] = str(Path(tempfile.mkdtemp(prefix="bm-shots-")) / "runs")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bm-shots-"))
        _, student, text = build_tiny_pair(tmp / "runs" / "pair")
        base = {"pair": "folders", "student": str(student), "data": str(text)}
        env["BOOMERANG_RUNS"] = str(tmp / "runs")

    shots = [
        ("interpolate", "", {"k": "3", "order": "last-to-first", "acc": "demo_cloze"}, 2),
        ("layers", "layers", {"patched": "1,4", "acc": "demo_cloze"}, 3),
        ("compare", "compare", {"orders": "last-to-first,first-to-last,klpatch,optimal,naive-pruning,block-influence,"
                                          "sleb,laco"}, 1),
        ("similarity", "similarity", {}, 3),
        ("learn", "learn", {}, 1),
        ("train", "train", {}, 0),
    ]
    only = set(args.only.split(",")) if args.only else None
    suffix = "" if args.width == 1400 else f"-{args.width}"
    with bu.serve(env) as url, bu.browser(width=args.width, height=1800) as page:
        for name, path, params, plots in shots:
            if only and name not in only:
                continue
            t = time.perf_counter()
            page.goto(bu.url_for(url, path, **base, **params))
            wait_drawn(page, plots)
            if name == "learn":  # show the step with the curve
                page.locator('[data-testid="stButtonGroup"] button', has_text="The curve").first.click()
                wait_drawn(page, 1)
            if name == "train":  # a run in progress, with its loss curves
                bu.start_training(page, "demo-student", 400)
                page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stProgress\"]')]"
                                       ".some(p => /step (2[5-9]|[3-9][0-9])\\//.test(p.innerText))",
                                       timeout=600_000)
                wait_drawn(page, 2)
            path = out / f"{name}{suffix}.png"
            page.screenshot(path=str(path), full_page=True)
            print(f"{name:12s} {time.perf_counter() - t:6.1f} s -> {path}", flush=True)


if __name__ == "__main__":
    main()
