"""Interpolate: drag from the student to the teacher and watch quality, size and speed."""

import streamlit as st

from app_pages._accuracy import accuracy_choice, accuracy_metric, in_background
from app_pages._axes import latency_timings, latency_title, x_axis_choice
from app_pages._live_chart import live_plotly_chart
from app_pages._context import context
from app_pages._results import calib_ids, computed, eval_blocks, pair_summary, show_error
from app_pages._state import bind, keep
from app_pages._timing import timed
from boomerang import plots, ui

ctx = context()
pair = ctx.pair
n = pair.mapping.num_student_layers
summary = pair_summary(ctx)

st.title("Interpolate", anchor=False)
st.caption(f"{summary['name']}: no training between the ends — each size is the student with some "
           "layers swapped for the teacher blocks they were distilled to imitate." if ctx.spec.distilled else
           f"{summary['name']}: this student is only initialised from teacher layers, **not distilled**; "
           "each size swaps some of its layers for the teacher blocks they were copied from.")

orders = ui.available_orders(pair)
bind("order", orders[0], lambda raw: ui.query.parse_choice("?order", raw, orders, orders[0]))
if st.session_state["order"] not in orders:
    st.session_state["order"] = orders[0]
order = st.segmented_control("Patch order", orders, key="order", wrap=True, help=(
    "Which student layers are replaced first as the model grows. last-to-first patches from the "
    "output end, first-to-last from the input end; the others are chosen from data."))
order = order or orders[0]
c1, c2 = st.columns([1, 1], vertical_alignment="top")
with c1:
    x_axis, lat_batch = x_axis_choice("x")
with c2:
    task = accuracy_choice("interpolate_acc")
keep("order", order)

try:
    blocks = eval_blocks(ctx)
    calib = calib_ids(ctx) if order not in ui.SEQUENTIAL_ORDERS else None
    curve = computed(ctx.key("curve", order), f"Evaluating the {order} curve",
                     lambda progress: ui.curve(pair, order, blocks, calib, progress))
    sets = [ui.Patched(p) for p in curve.values("patched")]
    timed_sizes = latency_timings(ctx, lat_batch)
    lat = computed(ctx.key("latency curve", order, lat_batch, on_text=False), "Timing generation at every size",
                   lambda progress: ui.latency_profile(pair, sets, timed_sizes, lat_batch))
    same_size = ui.same_size_students(ctx.spec)
    points = computed(ctx.key("same-size", "perplexity", None),
                      "Evaluating the students distilled at each size",
                      lambda progress: ui.same_size_points(pair, same_size, blocks)) if same_size else None
    if x_axis == "latency":
        curve = curve.with_values("latency", lat)
        if points is not None:
            points = computed(ctx.key("same-size latency", lat_batch), "Timing the same-size students",
                              lambda progress: ui.with_latency(pair, points, timed_sizes, lat_batch, progress))
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()
acc = None
acc_what = ui.present.accuracy_label(task, ui.ACCURACY_EXAMPLES) if task else ""
if task is not None:
    acc = in_background(ctx.key("curve", order, task, ui.ACCURACY_EXAMPLES),
                        f"Accuracy on {task} at every size of {order}",
                        lambda progress: ui.accuracy_curve(pair, order, task, blocks, calib, progress))
    if acc is not None and x_axis == "latency":
        acc = acc.with_values("latency", lat)
# The plots' tables, made once per run of the page (the slider's fragment redraws with them).
frame = curve.to_frame()
acc_frame = acc.to_frame() if acc is not None else None

ppl_what = ui.present.ppl_label(ctx.split, blocks.shape)
st.caption(f"**{order}** optimises {ui.order_caption(order)}"
           + (f" — chosen on {calib.shape[0]} × {calib.shape[1]} tokens of the *{ctx.data}* train split; "
              f"every perplexity here is measured on the {ppl_what}." if calib is not None else
              f". Perplexities: {ppl_what}."))

bind("k", 0, lambda raw: ui.query.parse_int("?k", raw, 0, 0, n))


def _label(k: int) -> str:
    layers = int(curve[k]["layers"])
    return f"student · {layers} layers" if k == 0 else f"teacher · {layers} layers" if k == n \
        else f"{layers} layers ({k} patched)"


# The slider's labels name each size's layer count, which depends on the order. When they change,
# Chromium's slider falls back to its default (the student) unless the value is sent again, while
# the page keeps showing the old size: assign it, so Streamlit sends it with the new labels.
size_labels = tuple(_label(k) for k in range(n + 1))
if st.session_state.get("_k_labels") != size_labels:
    st.session_state["k"] = st.session_state["k"]
    st.session_state["_k_labels"] = size_labels

x_title = latency_title(lat_batch) if x_axis == "latency" else None
traces = ui.RESULTS.get_or_compute(
    ctx.key("traces", order, x_axis, lat_batch, points is not None),
    lambda: plots.curve_traces(frame, x_axis)
    + (plots.curve_traces(points, x_axis) if points is not None else []))


@st.fragment
def size_view() -> None:
    """The slider and everything that depends on it: reruns alone when the slider moves."""
    with timed("interpolate.size_view"):
        _size_view()


def _size_view() -> None:
    k = st.select_slider("Model size (student → teacher)", options=list(range(n + 1)), key="k",
                         format_func=_label)
    keep("k", k)
    row = curve[k]
    base, top = curve[0], curve[-1]
    m1, m2, m3, m4, *m5 = st.columns(5 if acc is not None else 4)
    change = row["perplexity"] - base["perplexity"]
    m1.metric("Perplexity", ui.present.fmt_num(row["perplexity"]), help=ppl_what,
              delta=None if k == 0 else f"{change:+,.2f} vs student",
              delta_color="inverse" if abs(change) >= 0.005 else "off",
              delta_arrow="off" if abs(change) < 0.005 else "auto")
    m2.metric("Parameters", f"{row['params'] / 1e6:,.2f} M",
              delta=f"{100 * row['params'] / top['params']:.0f}% of teacher", delta_color="off", delta_arrow="off")
    m3.metric("Decoder layers", f"{int(row['layers'])}",
              delta=f"{k} of {n} patched", delta_color="off", delta_arrow="off")
    m4.metric("Latency", f"{lat[k]:,.1f} ms", delta="per token" + (f", batch {lat_batch}" if lat_batch > 1 else ""),
              delta_color="off", delta_arrow="off")
    if acc is not None:
        a = acc[k]
        accuracy_metric(m5[0], task, a[task], a[f"{task}_lo"], a[f"{task}_hi"])
    st.caption(f"Perplexity: {ppl_what}. " + (f"Accuracy: {acc_what}. " if acc is not None else "")
               + (f"Orange diamonds: students distilled directly at {', '.join(map(str, same_size))} "
                  "layers with the student's recipe and token budget, for comparison. " if same_size else "")
               + f"Latency: median of 3 runs, greedy decoding, batch {lat_batch}, "
               f"on {ctx.device}, timed once per layer count (every layer has the teacher's shapes, "
               "so models with as many layers do the same work); noisy on a busy machine.")
    st.html(plots.strip_html(ui.strip_cells(pair, row["patched"])))
    live_plotly_chart(plots.curve_figure(frame, x=x_axis, current=row, height=400, traces=traces,
                                         y_title=f"{ppl_what} (lower is better)", x_title=x_title), key="curve")
    if acc is not None:
        live_plotly_chart(plots.curve_figure(acc_frame, x=x_axis, y=task, current=acc[k], height=300,
                                             log_y=False, y_title=f"{task} accuracy", x_title=x_title),
                          key="acc_curve")


size_view()
repeat_note = ui.present.repeated_size_note(pair, frame)
if repeat_note:
    st.caption(repeat_note)
row = curve[st.session_state["k"]]

st.subheader("Talk to this model", anchor=False)
with st.form("generate", border=False):
    prompt = st.text_input("Prompt", value="The king said")
    c2, c3, c4 = st.columns(3, vertical_alignment="bottom")
    max_new = c2.number_input("New tokens", 8, 512, 60, step=8)
    temperature = c3.number_input("Temperature", 0.0, 2.0, 0.8, step=0.1, help="0 = greedy")
    go = c4.form_submit_button("Generate", type="primary", width="stretch")
if go:
    try:
        model = pair.build(patched=row["patched"])
        st.write_stream(ui.stream_generate(model, pair.tokenizer, prompt, int(max_new), float(temperature)))
    except Exception as e:  # noqa: BLE001
        show_error(e)
