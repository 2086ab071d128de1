"""Compare orders: which layers to patch first, against pruning baselines and the optimum."""

import streamlit as st

from app_pages._axes import latency_timings, latency_title, x_axis_choice
from app_pages._context import context
from app_pages._results import calib_ids, computed, eval_blocks, show_error
from app_pages._state import bind, keep, url_default
from boomerang import plots, ui

ctx = context()
pair = ctx.pair

st.title("Compare orders", anchor=False)
st.caption("Each order grows the model from the student to the teacher one patched layer at a "
           "time. Baselines shrink the teacher by dropping layers instead (no student at all).")

choices = ui.available_orders(pair) + ui.available_baselines()
if "orders_pick" not in st.session_state:  # first visit (URL) or back from another page (kept text)
    picked_text = url_default("orders", None, lambda raw: ui.query.parse_choices(
        "?orders", raw, choices, choices[:2]))
    st.session_state["orders_pick"] = (picked_text if isinstance(picked_text, list) else
                                       ui.query.parse_choices("orders", picked_text, choices, choices[:2]).value)
picked = st.multiselect("Orders and baselines", choices, key="orders_pick", wrap=True)
missing_note = ui.missing_orders_note(pair)
if missing_note:
    st.caption(missing_note)
others = ui.comparable_models(ctx.spec)
shown_models = st.multiselect(
    "Other models on the plot", list(others), key="compare_models", wrap=True,
    placeholder="Other students of this teacher" if others else "No other student of this teacher yet",
    disabled=not others,
    help="Students of the same teacher trained otherwise (the demo's ablations, runs from the Train "
         "page), each drawn as one point at its own size, measured on the same blocks.")
c2, c3 = st.columns([1, 1])
keep("orders", ",".join(picked))
with c2:
    x_axis, lat_batch = x_axis_choice("compare_x")
metrics = ui.available_metrics()
bind("metric", "perplexity", lambda raw: ui.query.parse_choice("?metric", raw, metrics, "perplexity"))
metric = c3.selectbox("Metric", metrics, key="metric", format_func=lambda m: m if m == "perplexity"
                      else f"accuracy: {m}", help="Perplexity on the sidebar's data, or zero-shot accuracy "
                      "on an offline lm-eval task (slow: limited to a sample of examples).")
keep("metric", metric)
limit = None
if metric != "perplexity":
    limit = st.slider("Examples per size", 20, 500, 100, step=20, key="compare_limit")

if not picked:
    st.info("Pick at least one order.", icon=":material/info:")
    st.stop()

try:
    blocks = eval_blocks(ctx)
    calib = calib_ids(ctx) if any(ui.needs_calibration(o) for o in picked) else None
    frames = [computed(ctx.key("sweep", o, metric, limit), f"Evaluating {o}",
                       lambda progress, o=o: ui.sweep(pair, [o], blocks, calib, progress, metric, limit))
              for o in picked]
    frames += [computed(ctx.key("compare", others[m], metric, limit), f"Evaluating {m}",
                        lambda progress, m=m: ui.compare_model(pair, m, others[m], blocks, metric, limit))
               for m in shown_models]
    same_size = ui.same_size_students(ctx.spec)
    if same_size:
        frames.append(computed(ctx.key("same-size", metric, limit),
                               "Evaluating the students distilled at each size",
                               lambda progress: ui.same_size_points(pair, same_size, blocks, metric, limit)))
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()

import pandas as pd  # noqa: E402

df = pd.concat([f for f in frames if not f.empty], ignore_index=True)
if metric not in df:
    st.warning(f"The backend returned no '{metric}' column; showing perplexity.", icon=":material/warning:")
    metric = "perplexity"
ppl_what = ui.present.ppl_label(ctx.split, blocks.shape)
y_title = (f"{ppl_what} (lower is better)" if metric == "perplexity"
           else f"accuracy on {metric} ({limit} examples per size)")
x_title = None
if x_axis == "latency":
    timed = latency_timings(ctx, lat_batch)
    df = computed(ctx.key("latency x", tuple(picked), tuple(shown_models), metric, limit, lat_batch),
                  "Timing every size", lambda progress: ui.with_latency(pair, df, timed, lat_batch, progress))
    x_title = latency_title(lat_batch)
fig = plots.curve_figure(df, x=x_axis, y=metric, height=480, log_y=metric == "perplexity", y_title=y_title,
                         x_title=x_title)
st.plotly_chart(fig, width="stretch", key="compare_curve")
calib_note = (f" Calibration text: {calib.shape[0]} × {calib.shape[1]} tokens of the *{ctx.data}* train "
              "split, never the evaluation blocks." if calib is not None else "")
st.markdown("\n".join(f"- **{o}** optimises {ui.order_caption(o)}" for o in picked))
st.caption(f"Measured: {ppl_what if metric == 'perplexity' else y_title}.{calib_note} An order "
           "that optimises KL on calibration text need not be best for perplexity on evaluation text. "
           "Points of one curve that share a size are labelled with their k."
           + (f" **{ui.SAME_SIZE_ORDER}**: students distilled directly at {', '.join(map(str, same_size))} "
              "layers with the student's recipe and token budget." if same_size else ""))

# The gap each order leaves to the best order at the same size.
table = df.copy()
if "patched" in table:
    table["patched"] = table["patched"].map(lambda p: ", ".join(map(str, p)) if isinstance(p, (tuple, list, frozenset, set)) else p)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"params": st.column_config.NumberColumn("parameters", format="compact"),
                            "k": st.column_config.NumberColumn("k patched"),
                            "layers": st.column_config.NumberColumn("decoder layers"),
                            "perplexity": st.column_config.NumberColumn(f"{ctx.split} perplexity",
                                                                        format="%,.3f"),
                            "nll": st.column_config.NumberColumn("NLL (nats/token)", format="%.4f"),
                            "seconds": st.column_config.NumberColumn("seconds", format="%,.2f")})

downloads = st.container(horizontal=True)  # buttons as wide as their labels
downloads.download_button("CSV", table.to_csv(index=False).encode(), file_name="boomerang-orders.csv",
                   mime="text/csv", icon=":material/download:", width="content")
downloads.download_button("Figure (HTML)", lambda fig=fig: plots.figure_html(fig),  # built on click
                   file_name="boomerang-orders.html", mime="text/html", icon=":material/download:",
                   width="content")
sig = (tuple(picked), tuple(shown_models), x_axis, metric, ctx.pair_key, ctx.data_key)
if downloads.button("Figure (PNG)", icon=":material/image:", width="content"):
    with st.spinner("Rendering PNG with kaleido…"):
        png, why = plots.figure_png(fig)
    st.session_state["_png"] = (sig, png, why)
png = st.session_state.get("_png")
png = png[1:] if png is not None and png[0] == sig else None
if png is not None:
    if png[0] is not None:
        st.download_button("Download PNG", png[0], file_name="boomerang-orders.png", mime="image/png",
                           icon=":material/download:")
    else:
        st.warning(png[1], icon=":material/warning:")
