"""Layer picker: hand-pick which student layers run as their teacher blocks."""

from pathlib import Path

import streamlit as st

from app_pages._accuracy import accuracy_choice, accuracy_metric, in_background
from app_pages._axes import latency_timings, latency_title, x_axis_choice
from app_pages._live_chart import live_plotly_chart
from app_pages._context import context
from app_pages._results import calib_ids, computed, eval_blocks, show_error
from app_pages._state import keep, url_default, warn
from boomerang import plots, ui

ctx = context()
pair = ctx.pair
n = pair.mapping.num_student_layers
labels = ui.layer_labels(pair)

st.title("Layer picker", anchor=False)
st.caption("Toggle a student layer to replace it by the teacher block it stands for. Every "
           "combination is a valid model; the plot shows where yours lands.")

# Toggle state: one checkbox per student layer, seeded from the URL (?patched=1,3) or, back from
# another page, from the kept value.
if "_picked_init" not in st.session_state or st.session_state.get("_picked_pair") != ctx.pair_key:
    start = url_default("patched", ui.Patched(), lambda raw: ui.query.parse_layers("?patched", raw, n))
    if not isinstance(start, frozenset):  # kept text of another pair: check it again
        parsed = ui.query.parse_layers("patched", start, n)
        if parsed.message:
            warn(parsed.message)
        start = parsed.value
    for i in range(n):
        st.session_state[f"pick_{i}"] = i in start
    st.session_state["_picked_init"] = True
    st.session_state["_picked_pair"] = ctx.pair_key
if any(f"pick_{i}" not in st.session_state for i in range(n)):  # restore after visiting another page
    kept = ui.query.parse_layers("patched", st.session_state.get("_keep_patched", ""), n).value
    for i in range(n):
        st.session_state.setdefault(f"pick_{i}", i in kept)


def _set_all(value: bool) -> None:
    for i in range(n):
        st.session_state[f"pick_{i}"] = value


def _invert() -> None:
    for i in range(n):
        st.session_state[f"pick_{i}"] = not st.session_state[f"pick_{i}"]


with st.container(horizontal=True):  # buttons as wide as their labels, whatever the window
    st.button("Student", on_click=_set_all, args=(False,), width="content", help="patch nothing")
    st.button("Teacher", on_click=_set_all, args=(True,), width="content", help="patch everything")
    st.button("Invert", on_click=_invert, width="content")

per_row = min(n, 4)  # wide enough that "S12" stays on one line in a 1024 px window
for r0 in range(0, n, per_row):
    cols = st.columns(per_row)
    for j, i in enumerate(range(r0, min(n, r0 + per_row))):
        with cols[j].container(border=True):
            st.toggle(f"**S{i}**", key=f"pick_{i}")
            st.caption(labels[i].split(" → ")[1], help=f"student layer {i} stands for teacher layers "
                       f"{list(pair.mapping.blocks[i])}")

patched = ui.Patched(i for i in range(n) if st.session_state[f"pick_{i}"])
keep("patched", patched.text())

live_plotly_chart(plots.strip_figure(ui.strip_cells(pair, patched), labels), key="strip")

try:
    blocks = eval_blocks(ctx)
    with st.spinner("Evaluating your model…"):
        point = ui.RESULTS.get_or_compute(
            ctx.key("point", patched.as_tuple()),
            lambda: ui.evaluate_point(pair, patched, blocks))
    curves = [computed(ctx.key("curve", o), f"Evaluating the {o} curve",
                       lambda progress, o=o: ui.curve(pair, o, blocks, None, progress))
              for o in ui.SEQUENTIAL_ORDERS]
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()

c1, c2 = st.columns([1, 1], vertical_alignment="top")
with c1:
    x_axis, lat_batch = x_axis_choice("layers_x")
with c2:
    task = accuracy_choice("layers_acc")
acc_point, acc_curves = None, []
if task is not None:
    acc_point = in_background(ctx.key("accuracy point", task, patched.as_tuple(), ui.ACCURACY_EXAMPLES, on_text=False),
                              f"Accuracy of your pick on {task}",
                              lambda progress: ui.accuracy_point(pair, patched, task, progress))
    for o in ui.SEQUENTIAL_ORDERS:
        got = in_background(ctx.key("curve", o, task, ui.ACCURACY_EXAMPLES),
                            f"Accuracy on {task} at every size of {o}",
                            lambda progress, o=o: ui.accuracy_curve(pair, o, task, blocks, None, progress))
        if got is not None:
            acc_curves.append(got)

student = curves[0][0]
ppl_what = ui.present.ppl_label(ctx.split, blocks.shape)
m1, m2, m3, *m4 = st.columns(4 if acc_point is not None else 3)
change = point["perplexity"] - student["perplexity"]
m1.metric("Perplexity", ui.present.fmt_num(point["perplexity"]), help=ppl_what,
          delta=f"{change:+,.2f} vs student" if patched else None,
          delta_color="inverse" if abs(change) >= 0.005 else "off",
          delta_arrow="off" if abs(change) < 0.005 else "auto")
m2.metric("Parameters", f"{point['params'] / 1e6:,.2f} M")
m3.metric("Decoder layers", f"{point['layers']}", delta=f"{len(patched)} of {n} patched",
          delta_color="off", delta_arrow="off")
acc_what = ui.present.accuracy_label(task, ui.ACCURACY_EXAMPLES) if task else ""
if acc_point is not None:
    accuracy_metric(m4[0], task, acc_point["accuracy"], acc_point["lo"], acc_point["hi"])
st.caption(f"Perplexity: {ppl_what}." + (f" Accuracy: {acc_what}." if task else ""))

import pandas as pd  # noqa: E402

frames = [c.to_frame() for c in curves]
show_opt = "optimal" in ui.available_orders() and st.toggle(
    "Show the optimal curve (best subset at every size; computed once, may take a while)",
    key="show_optimal")
if show_opt:
    try:
        frames.append(computed(ctx.key("curve", "optimal"), "Searching the optimal subsets",
                               lambda progress: ui.curve(pair, "optimal", blocks, calib_ids(ctx), progress)).to_frame())
    except Exception as e:  # noqa: BLE001
        show_error(e)
all_curves = pd.concat(frames, ignore_index=True)
x_title = None
pick = {**point, "name": "your pick"}
if x_axis == "latency":
    timed = latency_timings(ctx, lat_batch)
    all_curves = computed(ctx.key("latency x", show_opt, lat_batch), "Timing every size",
                          lambda progress: ui.with_latency(pair, all_curves, timed, lat_batch, progress))
    pick["latency"] = timed[int(point["layers"])]
    x_title = latency_title(lat_batch)
live_plotly_chart(plots.curve_figure(all_curves, x=x_axis, extra=[pick], x_title=x_title,
                                     y_title=f"{ppl_what} (lower is better)"), key="curve")
if acc_curves:
    acc_frame = pd.concat([c.to_frame() for c in acc_curves], ignore_index=True)
    if x_axis == "latency":
        acc_frame = acc_frame.assign(latency=[timed[int(v)] for v in acc_frame["layers"]])
    extra = [] if acc_point is None else [{**pick, task: acc_point["accuracy"]}]
    live_plotly_chart(plots.curve_figure(acc_frame, x=x_axis, y=task, extra=extra, height=300, log_y=False,
                                         y_title=f"{task} accuracy", x_title=x_title), key="acc_curve")
st.caption(" · ".join(f"**{o}** optimises {ui.order_caption(o)}" for o in all_curves["order"].unique()))
repeat_note = ui.present.repeated_size_note(pair, curves[0].to_frame())
if repeat_note:
    st.caption(f"last-to-first: {repeat_note}")

st.subheader("Export this model", anchor=False)
default_dir = ui.runs_dir() / "exports" / (
    f"{(ctx.spec.key.split('|')[-1] if ctx.spec else 'pair').replace('/', '_').replace(':', '-')}"
    f"-patched-{'_'.join(map(str, sorted(patched))) or 'none'}")
c1, c2 = st.columns([4, 1])
out_dir = c1.text_input("Folder", value=str(default_dir), label_visibility="collapsed",
                        key=f"export_dir_{patched.text()}",
                        help=f"Relative folders are taken under the runs folder ({ui.runs_dir()}).")
outside = st.checkbox("Write outside the runs folder", key="export_outside",
                      help="Off: exports can only go under the runs folder. On: any folder this "
                           "server may write to (this session only).")
export_sig = (ctx.pair_key, patched.as_tuple())
if c2.button("Export", type="primary", width="stretch"):
    target = ui.query.check_export_dir(out_dir, allow_outside=outside)
    if target.message:
        st.error(ui.present.literal(target.message), icon=":material/block:")
    else:
        try:
            with st.spinner("Writing safetensors…"):
                path = ui.export_patched(pair, patched, target.value)
                st.session_state["_export"] = (export_sig, str(path), ui.zip_folder(path))
        except Exception as e:  # noqa: BLE001
            show_error(e)
exp = st.session_state.get("_export")
if exp is not None and exp[0] == export_sig:  # only the export of the model on screen
    st.success(f"Saved to `{exp[1]}` — reload it with `AutoModelForCausalLM.from_pretrained(...)`.",
               icon=":material/check_circle:")
    st.download_button("Download as zip", exp[2], file_name=f"{Path(exp[1]).name}.zip",
                       mime="application/zip", icon=":material/download:")
