"""Shared sidebar and helpers of the dashboard pages: pair, data, device; URL state; caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import torch

from boomerang import ui
from boomerang.core import BoomerangPair
from boomerang.errors import BoomerangError
from boomerang.progress import Progress, Update

FOLDERS = "folders"
DEFAULT_DATA = "demo"
SPLITS = ["validation", "test", "train"]
SEQ_LEN_RANGE = (16, 4096)
BLOCKS_RANGE = (1, 1024)


def sidebar_eval(data: str = DEFAULT_DATA, split: str = "validation", seq_len: int = 128,
                 blocks: int = 16) -> ui.EvalConfig:
    """The evaluation config the sidebar's fields make: the CLI's dataclass, with fewer blocks
    (the pages stay quick) and calibration on the train split of the same text, in blocks as
    long as the evaluation's."""
    return ui.EvalConfig(data=data, split=split, seq_len=seq_len, blocks=blocks, calib_data=data, calib_len=seq_len)


@dataclass
class Context:
    """What every page gets: the loaded pair, what it is measured on (``eval``) and the cache keys."""

    spec: ui.PairSpec | None = None
    pair: BoomerangPair | None = None
    device: str = "cpu"
    eval: ui.EvalConfig = field(default_factory=sidebar_eval)
    pair_key: str = ""
    error: str | None = None

    @property
    def data(self) -> str:
        return self.eval.data

    @property
    def split(self) -> str:
        return self.eval.split

    @property
    def seq_len(self) -> int:
        return self.eval.seq_len

    @property
    def data_key(self) -> str:
        return self.eval.key

    def key(self, kind: str, *parts: object, pair_key: str | None = None) -> tuple:
        """The results cache's key of ``kind`` ("curve", "point", "same-size" ...) of this pair
        (or the pair of ``pair_key``) on this evaluation text, with ``parts`` (order, metric ...):
        every page spells a result's key this way, so pages share what they computed."""
        return (kind, pair_key or self.pair_key, self.data_key, *parts)


# ---- URL <-> session state -------------------------------------------------------------------


Parse = Callable[[str | None], ui.Parsed]


def warn(message: str) -> None:
    """Show a refused input (its message quotes the value) above the page, as literal text."""
    st.warning(ui.present.literal(message), icon=":material/warning:")


def url_default(key: str, default: Any, parse: Parse | None = None) -> Any:
    """The value of ``key`` for this session: kept value, else the URL's, else ``default``.

    ``parse`` checks the URL's text (see :mod:`boomerang.ui.query`); a refused value is named in
    a warning and ``default`` (or what ``parse`` chose) is used instead.
    """
    keep = f"_keep_{key}"
    if keep in st.session_state:
        return st.session_state[keep]
    raw = st.query_params.get(key)
    if parse is None:
        return default if raw is None else raw
    parsed = parse(raw)
    if parsed.message:
        warn(parsed.message)
    return parsed.value


def bind(key: str, default: Any, parse: Parse | None = None) -> None:
    """Give widget ``key`` its value from the URL/kept state before the widget is drawn.

    Streamlit forgets a widget's value when its page is left; the kept copy brings it back.
    """
    if key not in st.session_state:
        st.session_state[key] = url_default(key, default, parse)


def keep(key: str, value: Any, url: bool = True) -> None:
    """Remember a widget value across pages and (``url``) write it to the URL (shareable state)."""
    st.session_state[f"_keep_{key}"] = value
    if url and st.query_params.get(key) != str(value):
        st.query_params[key] = str(value)
    elif not url and key in st.query_params:
        del st.query_params[key]


def allow_outside() -> bool:
    """Whether the user opted in to paths outside the runs folder (this session only, never in a URL)."""
    return bool(st.session_state.get("allow_outside", False))


def fmt_layers(patched) -> str:
    return ",".join(str(i) for i in sorted(patched))


# ---- cached resources ------------------------------------------------------------------------


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_pair(key: str, _spec: ui.PairSpec, device: str) -> BoomerangPair:
    pair = _spec.load(device)
    for m in (pair.teacher, pair.student):
        m.eval().requires_grad_(False)
    return pair


@st.cache_resource(max_entries=16, show_spinner=False)
def _eval_blocks(pair_key: str, data_key: str, _pair: BoomerangPair, _cfg: ui.EvalConfig) -> torch.Tensor:
    return _cfg.eval_blocks(_pair)


def eval_blocks(ctx: Context, pair: BoomerangPair | None = None, pair_key: str | None = None) -> torch.Tensor:
    """The evaluation blocks of the sidebar's data for ``pair`` (default: the sidebar's), cached."""
    with st.spinner(f"Tokenizing {ctx.data} ({ctx.split})…"):
        return _eval_blocks(pair_key or ctx.pair_key, ctx.data_key, pair or ctx.pair, ctx.eval)


def calib_ids(ctx: Context) -> torch.Tensor:
    """Training blocks to choose data-driven orders on (cached)."""
    cfg = ctx.eval
    key = ("calib", ctx.pair_key, cfg.calib_data, cfg.calib_n, cfg.calib_len)
    return ui.RESULTS.get_or_compute(key, lambda: cfg.calibration(ctx.pair))


def computed(key: tuple, label: str, fn: Callable[[Progress], Any]) -> Any:
    """``fn(progress)`` cached under ``key``; on a miss, shows an expanding status with a bar."""
    hit = ui.RESULTS.get(key)
    if hit is not None:
        return hit
    holder = st.empty()  # the status disappears once the result is there
    with holder.status(label + "…", expanded=True):
        bar = st.progress(0.0, text="starting")

        def progress(u: Update) -> None:
            bar.progress(min(1.0, u.done / max(u.total, 1)), text=u.note or f"{u.done}/{u.total}")

        value = fn(progress)
    holder.empty()
    return ui.RESULTS.put(key, value)


def show_error(e: Exception) -> None:
    """One sentence the user can act on."""
    # Messages quote user input (paths, URL values): shown as literal text, never as Markdown.
    if isinstance(e, BoomerangError):
        st.error(ui.present.literal(str(e)), icon=":material/error:")
    else:
        first = str(e).splitlines()[0] if str(e) else ""
        st.error(ui.present.literal(f"Something went wrong: {type(e).__name__}: {first}. Try another pair or "
                                    "smaller settings; if it persists, report it with this message."),
                 icon=":material/error:")


# ---- the sidebar -----------------------------------------------------------------------------


def _checked_ref(name: str, ref: str, default: str = "", *, hub: str = "repo") -> str:
    """``ref`` when it may be used (a hub id, or a path the session may read), else ``default`` with a warning."""
    parsed = ui.query.check_local_ref(name, ref, default, hub=hub, allow_outside=allow_outside())
    if parsed.message:
        warn(parsed.message)
    return parsed.value


def _spec_from_choice(choice: str, teacher: str, student: str) -> ui.PairSpec | None:
    if choice == FOLDERS:
        student = _checked_ref("student", student)
        teacher = _checked_ref("teacher", teacher)
        if not student:
            return None
        return ui.PairSpec.from_query({"pair": FOLDERS, "teacher": teacher, "student": student})
    if choice.startswith(f"{FOLDERS}:"):  # a trained student found under the runs folder
        return ui.PairSpec.from_query({"pair": FOLDERS, "student": choice.split(":", 1)[1]})
    return ui.PairSpec.from_query({"pair": choice})


def _in_url(name: str, ref: str, hub: str = "repo") -> bool:
    """Whether ``ref`` may go into a shareable URL (never a path outside the runs folder)."""
    return ui.query.check_local_ref(name, ref, hub=hub).ok


def sidebar() -> Context:
    """Draw the shared sidebar (pair, data, device), load the pair, and return the context."""
    ctx = Context()
    pairs = ui.discover_pairs()
    options = [p.key if p.kind != FOLDERS else f"{FOLDERS}:{p.student}" for p in pairs]
    labels = {o: p.title for o, p in zip(options, pairs)}
    labels[FOLDERS] = "Other folders or hub ids…"
    options.append(FOLDERS)

    # The URL may name a pair that is not in the list (folders, hub ids, a pair built later).
    url_pair = st.query_params.get("pair")
    url_student = st.query_params.get("student", "")
    first = url_default("pair_choice", None)
    if first is None:
        if url_pair == FOLDERS and f"{FOLDERS}:{url_student}" in options and not st.query_params.get("teacher"):
            first = f"{FOLDERS}:{url_student}"
        elif url_pair in options:
            first = url_pair
        elif url_pair in (FOLDERS, "local", "hub") or (url_pair is None and url_student):
            first = FOLDERS
        else:
            first = options[0]
            if url_pair is not None:
                warn(ui.query.refused("?pair", url_pair, "no such pair here (choose one of "
                                      + ", ".join(labels[o] for o in options[:-1]) + ")",
                                      labels.get(first, first)).message)
    if st.session_state.get("pair_choice") not in options:
        st.session_state["pair_choice"] = first if first in options else options[0]
    def url_ref(name: str) -> Parse:  # the URL's ?teacher= / ?student= (the widget keys differ)
        return lambda _raw: ui.query.check_local_ref(f"?{name}", st.query_params.get(name), "")

    bind("teacher_ref", "", url_ref("teacher"))
    bind("student_ref", "", url_ref("student") if first == FOLDERS else (lambda raw: ui.Parsed("")))

    with st.sidebar:
        st.markdown("### :material/family_restroom: Model pair")
        choice = st.selectbox("Teacher + student", options, key="pair_choice",
                              format_func=lambda o: labels.get(o, o), label_visibility="collapsed")
        if choice == FOLDERS:
            st.text_input("Student folder or hub id", key="student_ref",
                          placeholder="runs/my-run/student or org/name")
            st.text_input("Teacher folder or hub id (optional)", key="teacher_ref",
                          help="Leave empty when the student's student_config.json names its teacher.")
        if not pairs and choice == FOLDERS and not st.session_state.get("student_ref"):
            st.caption("No bundled demo found. Point at a student folder, or train one on the Train page.")
        devs = ui.devices()
        bind("device", devs[0], lambda raw: ui.query.parse_choice("?device", raw, devs, devs[0]))
        if st.session_state["device"] not in devs:
            st.session_state["device"] = devs[0]
        ctx.device = st.selectbox("Device", devs, key="device")

        # Bound before the (collapsed) expander, so that a refused URL value is warned about where
        # it can be seen without a click.
        bind("data", DEFAULT_DATA, lambda raw: ui.query.check_local_ref("?data", raw, DEFAULT_DATA, hub="dataset"))
        bind("split", "validation", lambda raw: ui.query.parse_choice("?split", raw, SPLITS, "validation"))
        bind("seq_len", 128, lambda raw: ui.query.parse_int("?seq_len", raw, 128, *SEQ_LEN_RANGE))
        bind("blocks", 16, lambda raw: ui.query.parse_int("?blocks", raw, 16, *BLOCKS_RANGE))
        with st.expander(":material/dataset: Evaluation data", expanded=False):
            typed = st.text_input("Text source", key="data",
                                  help="'demo' (the bundled corpus), a .txt file or folder under the runs "
                                       "folder, or a Hugging Face dataset id ('name' or 'name:config').")
            split = st.selectbox("Split", SPLITS, key="split")
            c1, c2 = st.columns(2)
            seq_len = int(c1.number_input("Tokens per block", *SEQ_LEN_RANGE, step=16, key="seq_len"))
            n_blocks = int(c2.number_input("Blocks", *BLOCKS_RANGE, key="blocks"))
        st.checkbox("Allow paths outside the runs folder", key="allow_outside",
                    help=f"Off: typed folders and text files must lie under the runs folder ({ui.runs_dir()}) "
                         "or the bundled demo. On (this session only): any path this server can read; "
                         "such paths are kept out of the page's URL, so a shared link never names them.")
    ctx.eval = sidebar_eval(_checked_ref("data", typed, DEFAULT_DATA, hub="dataset") or DEFAULT_DATA,
                            split, seq_len, n_blocks)

    spec = _spec_from_choice(choice, st.session_state.get("teacher_ref", ""),
                             st.session_state.get("student_ref", ""))
    keep("pair_choice", choice, url=False)
    if spec is not None:
        for k, v in spec.to_query().items():
            if k in ("student", "teacher") and not _in_url(k, v):
                if k in st.query_params:
                    del st.query_params[k]
            elif st.query_params.get(k) != v:
                st.query_params[k] = v
        if spec.kind != FOLDERS:
            for k in ("student", "teacher"):
                if k in st.query_params:
                    del st.query_params[k]
    for k in ("device", "split", "seq_len", "blocks"):
        keep(k, st.session_state[k])
    keep("data", st.session_state["data"], url=_in_url("data", st.session_state["data"], hub="dataset"))
    st.session_state["_keep_teacher_ref"] = st.session_state.get("teacher_ref", "")
    st.session_state["_keep_student_ref"] = st.session_state.get("student_ref", "")

    ctx.spec = spec
    if spec is None:
        ctx.error = "Choose a model pair in the sidebar (a student folder, or a demo student)."
        return ctx
    refusal = ui.recorded_teacher_refusal(spec, allow_outside())
    if refusal:
        ctx.error = refusal
        return ctx
    ctx.pair_key = ui.spec_fingerprint(spec, ctx.device)
    slow = (" (the first load converts the GGUF weights and makes the student: about a minute)"
            if spec.kind == "smollm2" and not ui.smollm2_converted() else "")
    try:
        with st.spinner(f"Loading {spec.title} on {ctx.device}…{slow}"):  # shown only when slow
            ctx.pair = _load_pair(ctx.pair_key, spec, ctx.device)
    except BoomerangError as e:
        ctx.error = str(e)
    except (OSError, ValueError, RuntimeError) as e:
        ctx.error = f"Could not load {spec.title}: {str(e).splitlines()[0]}"
    previous = st.session_state.get("_pair_key")
    if previous is not None and previous != ctx.pair_key:
        ui.release_memory()  # the old pair's last reference may just have gone
    st.session_state["_pair_key"] = ctx.pair_key

    with st.sidebar:
        if ctx.pair is not None:
            s = pair_summary(ctx)
            st.caption(f"**{s['architecture']}** · student {s['student_layers']} layers "
                       f"({s['student_params'] / 1e6:.2f} M) → teacher {s['teacher_layers']} layers "
                       f"({s['teacher_params'] / 1e6:.2f} M)")
        elif ctx.error:
            st.error(ui.present.literal(ctx.error), icon=":material/error:")
        if spec.kind == "smollm2":
            _smollm2_box(ctx)
    return ctx


def _smollm2_box(ctx: Context) -> None:
    """How the SmolLM2 student was made, and a button that builds the distilled one when absent."""
    info = ui.smollm2_student_info()
    if info is not None:
        st.caption(info)
        return
    job = ui.smollm2_build_job()
    if job is not None and job.running:
        h = job.history[-1] if job.history else {}
        st.progress(min(1.0, job.step / max(1, job.config.steps)),
                    text=f"Building the distilled student: step {job.step:,} of at most {job.config.steps:,}"
                         + (f", local loss {h['loss']:.3f}" if "loss" in h else ""))
        if st.button("Stop (resumes from its checkpoint)", key="smollm2_stop"):
            job.stop()
        return
    if job is not None and job.state in ("failed", "done", "stopped"):
        (st.error if job.state == "failed" else st.success)(ui.present.literal(job.message))
    st.caption("This installation has no distilled SmolLM2 student (the shipped one is missing): "
               "block-local distillation builds one, 1,000 steps, about an hour on 2 idle CPU cores "
               "(`python -m boomerang smollm2 build` does the same).")
    if st.button("Build the distilled student", key="smollm2_build", icon=":material/model_training:"):
        try:
            ui.start_smollm2_build()
        except BoomerangError as e:
            st.error(ui.present.literal(str(e)))
        st.rerun()


def load_spec(spec: ui.PairSpec, device: str) -> BoomerangPair:
    """Load another pair (e.g. a demo ablation) through the same cache as the sidebar's."""
    key = ui.spec_fingerprint(spec, device)
    with st.spinner(f"Loading {spec.title}…"):
        return _load_pair(key, spec, device)


def pair_summary(ctx: Context) -> dict[str, Any]:
    return ui.RESULTS.get_or_compute(("summary", ctx.pair_key), lambda: ui.pair_summary(ctx.pair))


def context() -> Context:
    """The context the sidebar built for this run; stops the page with a message if no pair."""
    ctx: Context = st.session_state.get("_ctx") or Context(error="No pair loaded.")
    if ctx.pair is None:
        st.info(ctx.error or "Choose a model pair in the sidebar.", icon=":material/info:")
        st.stop()
    return ctx
