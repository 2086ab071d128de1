"""Train: distill a new student from the current teacher, with live loss curves, stop and resume."""

import re
import time

import streamlit as st

from app_pages._context import context
from app_pages._results import show_error
from app_pages._state import allow_outside
from boomerang import plots, ui
from boomerang.core import LayerMapping
from boomerang.errors import BoomerangError
from boomerang.train import FREEZABLE, MODES, DistillConfig

ctx = context()
pair = ctx.pair
on_gpu = not ctx.device.startswith("cpu")

st.title("Train", anchor=False)
st.caption("Distill a student from the sidebar's teacher: copy a subset of its layers, then train "
           "with cross-entropy + KL to the teacher + cosine alignment of hidden states. The finished "
           "student appears in the sidebar's pair list.")

MODE_HELP = {
    "boomerang": "CE + KL + cosine alignment (the method)",
    "no-align": "CE + KL, no hidden-state alignment (ablation)",
    "ce-only": "cross-entropy only (ablation)",
    "random-init": "all terms, but the student starts from random weights (ablation)",
    "local": "block-local: each student layer learns its teacher block alone (no whole-model backward)",
}
#: Modes this page does not offer: pretraining needs an architecture folder, not a teacher.
PAGE_MODES = [m for m in MODES if m != "pretrain"]

try:
    teacher_ref = ctx.spec.teacher_ref()
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()

with st.form("train_config"):
    st.markdown(f"**Teacher:** `{teacher_ref}` ({pair.mapping.num_teacher_layers} layers) · trains on "
                f"**{ctx.device}** (the sidebar's device)")
    c1, c2 = st.columns(2)
    name = c1.text_input("Run name", value=f"{time.strftime('%m%d-%H%M')}-student",
                         help=f"Written to {ui.dashboard_runs_dir()}/<name>")
    mode = c2.selectbox("Mode", PAGE_MODES, format_func=lambda m: f"{m} — {MODE_HELP.get(m, '')}")
    st.markdown("**Layer mapping** — which teacher layers the student keeps")
    m1, m2, m3 = st.columns(3)
    keep_first = m1.number_input("Keep first (1:1)", 0, pair.mapping.num_teacher_layers, 0)
    every = m2.number_input("Then one student layer per", 1, 8, 2, help="teacher layers per block")
    keep_last = m3.number_input("Keep last (1:1)", 0, pair.mapping.num_teacher_layers, 2)
    freeze = st.multiselect(
        "Keep at the teacher's weights", FREEZABLE, default=[],
        help="Frozen one-to-one layers and head stay exact teacher copies, so patching them costs "
             "nothing; the bundled demo student is trained this way.")
    st.markdown("**Data and schedule**")
    d1, d2, d3, d4 = st.columns(4)
    data = d1.text_input("Training text", value=ctx.data, help="'demo', a text file or folder, or an HF dataset id")
    steps = d2.number_input("Steps", 1, 1_000_000, 400 if on_gpu else 60)
    batch = d3.number_input("Batch size", 1, 512, 16 if on_gpu else 8)
    seq_len = d4.number_input("Tokens per sequence", 16, 4096, 128)
    e1, e2, e3, e4 = st.columns(4)
    lr = e1.number_input("Learning rate", 1e-6, 1.0, 1e-3, format="%.0e")
    warmup = e2.number_input("Warmup steps", 0, 100_000, 5 if not on_gpu else 50)
    save_every = e3.number_input("Checkpoint every", 1, 1_000_000, 20 if not on_gpu else 200)
    max_blocks = e4.number_input("Max training blocks", 16, 10_000_000, 512 if not on_gpu else 100_000)
    eval_every = st.number_input(
        "Validation every (steps, 0: never)", 0, 1_000_000, 20 if not on_gpu else 200,
        help="Validation perplexity of the student and of its whole last-to-first curve (every size "
             "from student to teacher, drawn live), on 32 blocks of the training text's validation split.")
    submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")

if submitted:
    run_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "student"
    out = ui.dashboard_runs_dir() / run_name
    source = ui.query.check_local_ref("Training text", data, "", hub="dataset", allow_outside=allow_outside())
    try:
        if source.message:
            raise BoomerangError(source.message)
        LayerMapping.from_rule(pair.mapping.num_teacher_layers, int(keep_first), int(every), int(keep_last))
        cfg = DistillConfig(teacher=teacher_ref, data=source.value or "demo", out=str(out),
                            keep_first=int(keep_first), every=int(every), keep_last=int(keep_last), mode=mode,
                            steps=int(steps), seq_len=int(seq_len), batch_size=int(batch), lr=float(lr),
                            warmup=int(warmup), save_every=int(save_every), log_every=1,
                            max_blocks=int(max_blocks), freeze=tuple(freeze),
                            eval_every=int(eval_every))
        ui.start_training(cfg, device=ctx.device)
        st.session_state["train_out"] = str(out)
    except Exception as e:  # noqa: BLE001
        show_error(e)

runs = [str(p) for p in ui.all_runs()]
for p in ui.dashboard_runs():  # started here but not logged yet
    if str(p) not in runs:
        runs.insert(0, str(p))
if st.session_state.get("train_out") and st.session_state["train_out"] not in runs:
    runs.insert(0, st.session_state["train_out"])
if not runs:
    st.info("No runs yet: configure one above and press **Start training**.", icon=":material/info:")
    st.stop()
if st.session_state.get("train_out") in runs:
    st.session_state["train_view"] = st.session_state.pop("train_out")
own_root = str(ui.dashboard_runs_dir())
out = st.selectbox("Run", runs, key="train_view",
                   format_func=lambda p: p.rsplit("/", 1)[-1] if p.startswith(own_root)
                   else f"{p.replace(str(ui.runs_dir()) + '/', '')} (started elsewhere)")


def live(out: str) -> None:
    """Progress of one run, refreshed every second while it trains."""
    job = ui.training_job(out)
    status = ui.run_status(out)
    log = ui.read_log(out)
    if job is not None and job.running:
        total = job.config.steps
        step = job.step
        last = job.history[-1] if job.history else {}
        eta = last.get("eta_s")
        st.progress(min(1.0, step / total),
                    text=f"step {step}/{total} · loss {last.get('loss', float('nan')):.3f} · "
                         f"{last.get('tokens_per_s', 0):,.0f} tok/s"
                         + (f" · about {eta:.0f} s left" if eta else ""))
        if st.button("Stop (saves a checkpoint)", icon=":material/stop:", key=f"stop_{out}"):
            job.stop()
            st.toast("Stopping after this step…")
    elif job is not None and job.state == "failed":
        st.error(ui.present.literal(job.message), icon=":material/error:")
    elif status["student"] is not None:
        st.success(f"Finished: student saved to `{status['student']}`. Pick it in the sidebar.",
                   icon=":material/check_circle:")
        if job is not None and not st.session_state.get(f"_announced_{out}"):
            st.session_state[f"_announced_{out}"] = True
            st.rerun(scope="app")  # the sidebar lists the new student
    elif not out.startswith(own_root):
        live_now = ui.log_is_live(out)
        steps = (status["config"] or {}).get("steps", "?")
        done = int(log["step"].iloc[-1]) if not log.empty else 0
        st.info(f"A run started outside the dashboard (step {done} of {steps}"
                f"{', training now' if live_now else ''}). Watch it here; resume it with "
                f"`python -m boomerang distill --resume --out {out}`.", icon=":material/visibility:")
    elif status["checkpoint"] is not None:
        cfg = status["config"] or {}
        st.warning(f"Stopped at step {status['checkpoint_step']} of {cfg.get('steps', '?')}.",
                   icon=":material/pause_circle:")
        if st.button("Resume", icon=":material/play_arrow:", type="primary", key=f"resume_{out}"):
            try:
                ui.start_training(DistillConfig.from_dict({**cfg, "resume": True}), device=ctx.device)
                st.rerun()
            except Exception as e:  # noqa: BLE001
                show_error(e)
    elif job is not None:
        st.info("Loading the teacher and tokenizing the training text…", icon=":material/hourglass_top:")
    else:
        st.info("This run has no checkpoint yet.", icon=":material/info:")
    curves = ui.read_curves(out)
    if curves:
        interpolation_curves(out, curves)
    if not log.empty:
        st.plotly_chart(plots.loss_figure(log), width="stretch", key=f"loss_{out}")
        if "val_ppl" in log and log["val_ppl"].notna().any():
            st.plotly_chart(plots.validation_figure(log), width="stretch", key=f"val_{out}")
            st.caption("Validation perplexity of the student and of the student patched last-to-first at "
                       "k layers (`val_ppl_k<k>`), on the validation split of the training text.")
        st.caption(f"{len(log)} logged steps · last: "
                   + ", ".join(f"{k} {log[k].iloc[-1]:.3f}" for k in ("loss", "ce", "kl", "cos") if k in log))


def interpolation_curves(out: str, curves: list[dict]) -> None:
    """The last-to-first curve at every evaluation so far, with a slider that replays them."""
    steps = sorted({c["step"] for c in curves if c["order"] != "naive-pruning"})
    if not steps:
        return
    key, seen = f"curve_step_{out}", f"_curve_newest_{out}"
    # Follow the newest curve until the user picks an older one.
    if st.session_state.get(key) not in steps or st.session_state.get(key) == st.session_state.get(seen):
        st.session_state[key] = steps[-1]
    st.session_state[seen] = steps[-1]
    upto = st.select_slider("Replay: curves up to step", steps, key=key) if len(steps) > 1 else steps[-1]
    st.plotly_chart(plots.training_curves_figure(curves, upto), width="stretch", key=f"curves_{out}")
    first = next(c for c in curves if c["order"] != "naive-pruning")
    st.caption(f"Every size from the student ({first['layers'][0]} layers) to the teacher "
               f"({first['layers'][-1]}), patched last-to-first, on validation text at each evaluation; the "
               "newest curve is bold, older ones fade. Dotted: the teacher pruned naively to each size, "
               "the reference a distilled student must beat.")


job = ui.training_job(out)
watching = (job is not None and job.running) or ui.log_is_live(out)
st.fragment(live, run_every=(1.0 if job is not None else 3.0) if watching else None)(out)
