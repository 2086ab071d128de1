"""The shared sidebar: which pair (the registry's named pairs, trained runs, any folders), on which
device, measured on which text; it loads the pair and hands the pages a :class:`Context`."""

from __future__ import annotations

import streamlit as st

from app_pages._context import BLOCKS_RANGE, DEFAULT_DATA, FOLDERS, SEQ_LEN_RANGE, SPLITS, Context, sidebar_eval
from app_pages._results import load_pair, pair_summary
from app_pages._state import Parse, allow_outside, bind, checked_ref, in_url, keep, url_default, warn
from app_pages._student_box import student_box
from boomerang import ui
from boomerang.errors import BoomerangError


def _spec_from_choice(choice: str, teacher: str, student: str) -> ui.PairSpec | None:
    if choice == FOLDERS:
        student = checked_ref("student", student)
        teacher = checked_ref("teacher", teacher)
        if not student:
            return None
        return ui.PairSpec.from_query({"pair": FOLDERS, "teacher": teacher, "student": student})
    if choice.startswith(f"{FOLDERS}:"):  # a trained student found under the runs folder
        return ui.PairSpec.from_query({"pair": FOLDERS, "student": choice.split(":", 1)[1]})
    return ui.PairSpec.from_query({"pair": choice})


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
    ctx.eval = sidebar_eval(checked_ref("data", typed, DEFAULT_DATA, hub="dataset") or DEFAULT_DATA,
                            split, seq_len, n_blocks)

    spec = _spec_from_choice(choice, st.session_state.get("teacher_ref", ""),
                             st.session_state.get("student_ref", ""))
    keep("pair_choice", choice, url=False)
    if spec is not None:
        for k, v in spec.to_query().items():
            if k in ("student", "teacher") and not in_url(k, v):
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
    keep("data", st.session_state["data"], url=in_url("data", st.session_state["data"], hub="dataset"))
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
    cost = spec.first_use()
    slow = f" ({cost})" if cost else ""
    try:
        with st.spinner(f"Loading {spec.title} on {ctx.device}…{slow}"):  # shown only when slow
            ctx.pair = load_pair(ctx.pair_key, spec, ctx.device)
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
        student_box(spec)
    return ctx
