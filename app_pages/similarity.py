"""Similarity: how closely each student layer imitates its teacher block, and whether that predicts
where patching helps."""

import streamlit as st

from app_pages._context import context
from app_pages._results import calib_ids, computed, show_error
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
    sim, per_layer = computed(ctx.key("similarity", ctx.data, ctx.seq_len, on_text=False),
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
sim_col = c1.segmented_control("Similarity", list(SIMS), default="cos_local", format_func=SIMS.get, wrap=True,
                               key="sim_col", help=SIM_HELP) or "cos_local"
gain_col = c2.segmented_control("Gain of patching the layer alone", list(GAINS), default="ppl_gain",
                                format_func=GAINS.get, key="gain_col", wrap=True) or "ppl_gain"

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
                               title="Does similarity predict<br>where patching helps?")
    st.plotly_chart(fig, width="stretch", key="gain_scatter")
corr = ui.present.spearman_ci(per_layer[sim_col], per_layer[gain_col])
if corr is not None:
    spans_zero = corr["low"] < 0 < corr["high"]
    st.caption(
        f"Spearman correlation between the {SIMS[sim_col]} similarity and the {GAINS[gain_col]}: "
        f"**{corr['rho']:+.2f}** (95% interval {corr['low']:+.2f} to {corr['high']:+.2f}, Fisher z, "
        f"n = {int(corr['n'])} layers)"
        + (": with this few layers it cannot be told apart from no correlation. " if spans_zero else ". ")
        + "A negative value would mean the layers that imitate their block worst are where the teacher "
        "block helps most — the idea behind the *similarity* patch order. The dashed line is a "
        "least-squares fit, a guide to the eye.")
else:
    st.caption("Too few student layers (fewer than 4) to give this correlation an uncertainty.")
# Short headers, so the table fits the page; what each column is goes in its tooltip. The layer,
# its block and where the block ends are all in the first column's label.
COLUMNS = {"label": ("layer → block", "student layer → the teacher block it stands for"),
           "cos_local": ("cos, local", "similarity to its block, from the teacher's input to the block"),
           "cos_global": ("cos, global", "similarity to its block, with the student's own earlier layers"),
           "kl_alone": ("KL alone", "KL to the teacher with only this layer patched"),
           "kl_gain": ("KL gain", "the student's KL to the teacher minus the KL with only this layer patched"),
           "ppl_alone": ("ppl alone", "calibration perplexity with only this layer patched"),
           "ppl_gain": ("ppl gain", "the student's calibration perplexity minus that with only this layer patched")}
shown = per_layer[[c for c in COLUMNS if c in per_layer]].rename(columns={c: h for c, (h, _) in COLUMNS.items()})
st.dataframe(shown, hide_index=True, width="stretch",
             column_config={h: st.column_config.NumberColumn(h, help=why, format="%,.3f")
                            if c != "label" else st.column_config.TextColumn(h, help=why)
                            for c, (h, why) in COLUMNS.items()})
st.caption("Gains are the student's value minus the value with only that layer patched (positive: "
           f"patching it helps). Perplexity and KL here are on the calibration text ({calib.shape[0]} × "
           f"{calib.shape[1]} tokens of the *{ctx.data}* train split).")
