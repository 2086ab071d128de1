"""Drive the real dashboard in Debian's Chromium with Playwright (tests, benchmark, screenshots).

``serve()`` starts ``streamlit run app.py`` on a free localhost port and stops it afterwards;
``browser()`` launches the system Chromium (Playwright's own browser download is not used).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name) if not name.startswith("/") else (name if os.path.exists(name) else None)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[str]:
    """Run the dashboard on a free port; yields its base URL; kills the server on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--server.runOnSave", "false"]
    log = open(os.environ.get("BOOMERANG_SERVER_LOG", os.devnull), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError("the dashboard did not start")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000):
    """A Playwright page in the system Chromium (``page.context.new_page()`` opens another tab)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no chromium on PATH; install Debian's `chromium` package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            page = b.new_context(viewport={"width": width, "height": height}).new_page()
            page.set_default_timeout(180_000)
            yield page
        finally:
            b.close()


def url_for(base: str, path: str = "", **params: str) -> str:
    return f"{base}/{path}" + (f"?{urlencode(params)}" if params else "")


# ---- page helpers ------------------------------------------------------------------------------

def wait_idle(page, timeout: float = 180) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator)."""
    page.wait_for_timeout(150)
    page.wait_for_function(
        "() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=timeout * 1000)


SETTLE_JS = """([quiet, cap]) => new Promise(resolve => {
    let last = performance.now();
    const start = last;
    const seen = new MutationObserver(() => { last = performance.now(); });
    seen.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    const tick = () => {
        const now = performance.now();
        if (now - last >= quiet || now - start >= cap) { seen.disconnect(); resolve(now - last >= quiet); }
        else setTimeout(tick, 50);
    };
    setTimeout(tick, 50);
})"""


def settle(page, quiet_ms: int = 700, timeout: float = 30) -> bool:
    """Wait for the script to finish and the page to stop changing for ``quiet_ms``.

    Streamlit draws some elements from lazily loaded code: on a busy machine the script can be
    done while a widget is still a placeholder. False when the page kept changing until ``timeout``.
    """
    wait_idle(page)
    quiet = page.evaluate(SETTLE_JS, [quiet_ms, timeout * 1000])
    wait_idle(page)
    return quiet


def metric(page, label: str) -> str:
    """Text of the st.metric whose label is ``label``."""
    box = page.locator('[data-testid="stMetric"]', has=page.locator(
        '[data-testid="stMetricLabel"]', has_text=label)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def wait_metric_change(page, label: str, old: str, timeout: float = 60) -> str:
    """Wait until metric ``label`` shows something other than ``old``; returns the new text."""
    page.wait_for_function(
        """([label, old]) => {
            for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
                const l = m.querySelector('[data-testid="stMetricLabel"]');
                const v = m.querySelector('[data-testid="stMetricValue"]');
                if (l && v && l.innerText.trim() === label) return v.innerText.trim() !== old;
            }
            return false;
        }""", arg=[label, old], timeout=timeout * 1000, polling="raf")
    return metric(page, label)


#: Every Plotly graph on the page, also those drawn inside (same-origin) component iframes.
PLOTS_JS = """() => [document, ...[...document.querySelectorAll('iframe')].map(f => {
        try { return f.contentDocument; } catch (e) { return null; } }).filter(d => d)]
    .flatMap(d => [...d.querySelectorAll('.js-plotly-plot')])"""

CURRENT_X_JS = f"""() => {{
    for (const gd of ({PLOTS_JS})()) {{
        const t = (gd.data || []).find(t => t.name === 'current');
        if (t) return String(t.x[0]);
    }}
    return null;
}}"""


def mark_plots(page, label: str) -> None:
    """Tag every Plotly graph now on the page, to tell later whether a graph is still the same one."""
    page.evaluate(f"(label) => ({PLOTS_JS})().forEach(g => {{ g.dataset.seen = label; }})", label)


def plot_marks(page) -> list[str | None]:
    """Each Plotly graph's tag from :func:`mark_plots` (None: a graph drawn since)."""
    return page.evaluate(f"() => ({PLOTS_JS})().map(g => g.dataset.seen || null)")


def wait_plots(page, count: int = 1, timeout: float = 180) -> None:
    """Wait until ``count`` Plotly graphs are drawn (Streamlit loads plotly lazily)."""
    page.wait_for_function(f"() => ({PLOTS_JS})().filter(g => g.querySelector('.main-svg')).length >= {count}",
                           timeout=timeout * 1000)


def current_point(page) -> str | None:
    """x of the 'current' marker of the first plot that has one."""
    return page.evaluate(CURRENT_X_JS)


def wait_point_change(page, old: str | None, timeout: float = 60) -> str:
    page.wait_for_function(f"(old) => {{ const x = ({CURRENT_X_JS})(); return x !== null && x !== old; }}",
                           arg=old, timeout=timeout * 1000, polling="raf")
    return current_point(page)


def slider_input(page):
    """The first slider's (visually hidden) range input: focus it and press arrow keys."""
    return page.locator('[data-testid="stSlider"] input[type="range"]').first


def slider_thumb(page):
    """The first slider's visible thumb."""
    return slider_input(page).locator("xpath=../..")


def drag_slider_to(page, fraction: float) -> None:
    """Drag the first slider's thumb to ``fraction`` (0..1) of its track with the mouse."""
    thumb = slider_thumb(page)
    track = page.locator('[data-testid="stSlider"] [data-orientation="horizontal"][style*="relative"]').first
    tb, kb = track.bounding_box(), thumb.bounding_box()
    x0, y0 = kb["x"] + kb["width"] / 2, kb["y"] + kb["height"] / 2
    x1 = tb["x"] + fraction * tb["width"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y0, steps=8)
    page.mouse.up()


def start_training(page, run_name: str, steps: int) -> None:
    """On an open Train page: name a run, set its steps and press Start training."""
    field = page.get_by_label("Steps", exact=True)
    field.wait_for(timeout=300_000)
    field.fill(str(steps))
    page.get_by_label("Run name", exact=True).fill(run_name)
    page.get_by_role("button", name="Start training").click()


def goto_page(page, title: str) -> None:
    """Click the sidebar navigation link ``title``."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    wait_idle(page)


# ---- layout checks -------------------------------------------------------------------------------

CLIPPED_JS = """() => {
    // Elements whose text does not fit: wider/taller content than box (ellipsis, letter-by-letter
    // wrapping shows as height), or cut off by an ancestor that hides or scrolls its overflow.
    const out = [];
    const clippedBy = (el) => {
        const r = el.getBoundingClientRect();
        for (let a = el.parentElement; a; a = a.parentElement) {
            const cs = getComputedStyle(a);
            if (cs.overflowX !== 'visible' || cs.overflowY !== 'visible') {
                const ar = a.getBoundingClientRect();
                if (r.right > ar.right + 1 || r.left < ar.left - 1) return a;
            }
        }
        return null;
    };
    const visible = (el) => el.offsetParent !== null && el.getBoundingClientRect().width > 0;
    const main = document.querySelector('[data-testid="stMain"]') || document.body;
    for (const b of main.querySelectorAll('button')) {
        if (!visible(b) || !b.innerText.trim()) continue;
        const inner = [b, ...b.querySelectorAll('*')].some(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1);
        if (inner) out.push(['button label cut (ellipsis)', b.innerText.trim()]);
        else if (clippedBy(b)) out.push(['button cut off', b.innerText.trim()]);
        const lines = b.innerText.trim().split(/\\s+/).length;
        const lh = parseFloat(getComputedStyle(b).lineHeight) || 20;
        if (b.getBoundingClientRect().height > (lines + 0.5) * lh + 24)
            out.push(['button label wrapped', b.innerText.trim()]);
    }
    for (const sel of ['[data-testid="stMetricLabel"] p', '[data-testid="stMetricValue"] div',
                       '[data-testid="stMetricDelta"] div']) {
        for (const e of main.querySelectorAll(sel)) {
            if (visible(e) && e.scrollWidth > e.clientWidth + 1) out.push(['metric text cut', e.innerText.trim()]);
        }
    }
    for (const ms of main.querySelectorAll('[data-testid="stMultiSelect"]')) {
        for (const tag of ms.querySelectorAll('[data-tag]')) {
            if (!visible(tag) || clippedBy(tag)) out.push(['chip hidden', tag.innerText.trim()]);
        }
    }
    return out;
}"""


def clipped(page) -> list[list[str]]:
    """[(what, text)] of buttons, metric texts and multiselect chips that are cut off or squeezed."""
    return page.evaluate(CLIPPED_JS)


CHIPS_JS = """() => [...document.querySelectorAll('[data-testid="stMultiSelect"] [data-tag]')]
    .filter(t => t.offsetParent !== null).map(t => t.innerText.trim())"""


def chips(page, at_least: int = 0, timeout: float = 30) -> list[str]:
    """Texts of the visible multiselect chips, once ``at_least`` of them are drawn (or ``timeout``)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if at_least:
        with contextlib.suppress(PlaywrightTimeout):  # the caller judges what is there
            page.wait_for_function(f"() => ({CHIPS_JS})().length >= {at_least}", timeout=timeout * 1000)
    return page.evaluate(CHIPS_JS)
