"""Similarity: how closely each student layer imitates its teacher block, and whether that predicts
where patching helps."""

import streamlit as st

from app_pages._sidebar import calib_ids, computed, context, show_error
from boomerang import plots, ui

ctx = context()
pair = ctx.pair

st.title("Similarity", anchor=False)
st.caption("Mean cosine similarity between the hidden states of the student (rows) and the teacher "
           "(columns) on calibration text from the training split. A well-aligned student lights "
           "up the framed cells: each of its layers reproduces the teacher's state at the end of "
           "the block it stands for.")

try:
    calib = calib_ids(ctx)
    sim, per_layer = computed(("similarity", ctx.pair_key, ctx.data, ctx.seq_len),
                              "Running both models on calibration text",
                              lambda progress: ui.similarity_tables(pair, calib))
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()

st.plotly_chart(plots.heatmap_figure(sim, ui.mapping_cells(pair)), width="stretch", key="heatmap")

SIMS = {"cos_local": "local (same input)", "cos_global": "global (with drift)"}
SIM_HELP = ("local: student layer i vs. teacher block i run on the same teacher input (this layer's own "
            "error). global: the student's own state after layer i vs. the teacher's at the end of block i "
            "(errors accumulated from below).")
GAINS = {"ppl_gain": "perplexity gain", "kl_gain": "KL-to-teacher gain"}
c1, c2 = st.columns(2)
sim_col = c1.segmented_control("Similarity", list(SIMS), default="cos_local", format_func=SIMS.get,
                               key="sim_col", help=SIM_HELP) or "cos_local"
gain_col = c2.segmented_control("Gain of patching the layer alone", list(GAINS), default="ppl_gain",
                                format_func=GAINS.get, key="gain_col") or "ppl_gain"

left, right = st.columns(2)
with left:
    low = float(per_layer[sim_col].min())
    y_range = (max(0.0, low - 0.1 * (1.0 - low) - 0.01), 1.0) if low > 0 else None
    st.plotly_chart(plots.bar_figure(per_layer, "label", sim_col, title="Per-layer similarity to its block",
                                     y_title="cosine similarity", y_range=y_range),
                    width="stretch", key="block_bar")
with right:
    fig = plots.scatter_figure(per_layer, sim_col, gain_col, text="label", x_title=f"similarity, {SIMS[sim_col]}",
                               y_title=GAINS[gain_col] + " (patched alone)",
                               title="Does similarity predict where patching helps?")
    st.plotly_chart(fig, width="stretch", key="gain_scatter")
if len(per_layer) >= 3:
    rho = per_layer[sim_col].corr(per_layer[gain_col], method="spearman")
    st.caption(f"Spearman correlation between {sim_col} and {gain_col}: **{rho:+.2f}**. A negative "
               "value means the layers that imitate their block worst are where the teacher block "
               "helps most — the idea behind the *similarity* patch order.")
st.dataframe(per_layer, hide_index=True, width="stretch")
