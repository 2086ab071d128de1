"""Learn: a guided tour of boomerang distillation on the demo family, with numbers computed live."""

import pandas as pd
import streamlit as st

from app_pages._sidebar import computed, context, eval_blocks, load_spec, show_error
from boomerang import plots, ui

ctx = context()

STEPS = ["1 · The student", "2 · Patching", "3 · The curve", "4 · Order matters", "5 · Ablations"]

st.title("Learn", anchor=False)
on_demo = ui.demo_available()
if on_demo:
    spec = ui.PairSpec("demo", "boomerang", label="demo: boomerang student")
    try:
        pair = load_spec(spec, ctx.device)
    except Exception as e:  # noqa: BLE001
        show_error(e)
        st.stop()
    pair_key = ui.spec_fingerprint(spec, ctx.device)
    st.caption("A guided tour on the bundled demo family (a 12-layer Llama trained from scratch on "
               "Shakespeare, the Bible and BBC News, and students distilled from it). Every number "
               "below is computed from the models, on the sidebar's evaluation data.")
else:
    spec, pair, pair_key = ctx.spec, ctx.pair, ctx.pair_key
    st.caption(f"The demo family is not on disk, so this tour runs on the sidebar's pair ({spec.title}); "
               "the last step needs the demo's ablation students.")

if "learn_step" not in st.session_state:
    st.session_state["learn_step"] = STEPS[0]
step = st.segmented_control("Step", STEPS, key="learn_step", label_visibility="collapsed") or STEPS[0]
m = pair.mapping
n, N = m.num_student_layers, m.num_teacher_layers
summary = ui.RESULTS.get_or_compute(("summary", pair_key), lambda: ui.pair_summary(pair))

try:
    blocks = eval_blocks(ctx, pair, pair_key)
    ltf = computed(("curve", pair_key, ctx.data_key, "last-to-first"), "Evaluating the curve",
                   lambda progress: ui.curve(pair, "last-to-first", blocks, None, progress))
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()
student, teacher = ltf.iloc[0], ltf.iloc[-1]


def next_button(i: int) -> None:
    if i + 1 < len(STEPS):
        st.button(f"Next: {STEPS[i + 1].split(' · ')[1]} →", key=f"next_{i}", type="primary",
                  on_click=lambda: st.session_state.update(learn_step=STEPS[i + 1]))


if step == STEPS[0]:
    st.header("A student is the teacher with layers removed", anchor=False)
    st.markdown(
        f"The teacher has **{N} decoder layers** and {summary['teacher_params'] / 1e6:.2f} M parameters. "
        f"The student keeps **{n}** of them — teacher layers {m.kept} — and so has "
        f"{summary['student_params'] / 1e6:.2f} M parameters "
        f"({100 * summary['student_params'] / summary['teacher_params']:.0f}% of the teacher). "
        "Each student layer is copied from the first layer of a *block* of consecutive teacher "
        "layers and is then trained to do the work of the whole block: its output should match the "
        "teacher's hidden state at the end of that block.")
    table = pd.DataFrame({"student layer": range(n), "copied from teacher layer": m.kept,
                          "stands for teacher layers": [", ".join(map(str, b)) for b in m.blocks]})
    st.dataframe(table, hide_index=True)
    st.markdown(f"After distillation the student's perplexity is **{student['perplexity']:.2f}**, the "
                f"teacher's **{teacher['perplexity']:.2f}**.")
    st.plotly_chart(plots.strip_figure(ui.strip_cells(pair, ()), ui.layer_labels(pair)),
                    width="stretch", key="learn_strip_s")
    next_button(0)

elif step == STEPS[1]:
    st.header("Patching swaps a student layer for its teacher block", anchor=False)
    i = st.select_slider("Patch student layer", list(range(n)), value=n // 2,
                         format_func=lambda i: ui.layer_labels(pair)[i], key="learn_layer")
    point = ui.RESULTS.get_or_compute(("point", pair_key, ctx.data_key, (i,)),
                                        lambda: ui.evaluate_point(pair, (i,), blocks))
    st.plotly_chart(plots.strip_figure(ui.strip_cells(pair, (i,)), ui.layer_labels(pair)),
                    width="stretch", key="learn_strip_p")
    delta = point["perplexity"] - student["perplexity"]
    st.markdown(
        f"Replacing student layer {i} by teacher layers {list(m.blocks[i])} gives a model with "
        f"**{point['layers']} layers** and {point['params'] / 1e6:.2f} M parameters, with no training at "
        f"all. Its perplexity is **{point['perplexity']:.2f}** ({delta:+.2f} against the student). "
        "This works because the student layer was trained to *produce what the block produces*: the "
        "teacher block receives the kind of input it expects and hands on the kind of output the next "
        "student layer expects.")
    next_button(1)

elif step == STEPS[2]:
    st.header("Every size in between, for free", anchor=False)
    mid = ltf.iloc[n // 2]
    st.markdown(
        f"Patching student layers one after another (here from the last to the first) walks from the "
        f"student ({student['perplexity']:.2f}) to the teacher ({teacher['perplexity']:.2f}) through "
        f"{ltf['layers'].nunique() - 2} intermediate sizes. Half-way, with {n // 2} layers patched, the model has "
        f"{int(mid['layers'])} layers and a perplexity of **{mid['perplexity']:.2f}**.")
    frames = [ltf]
    if "naive-pruning" in ui.available_baselines():
        try:
            frames.append(computed(("sweep", pair_key, ctx.data_key, "naive-pruning", "perplexity", None),
                                   "Pruning the teacher", lambda progress: ui.sweep(
                                       pair, ["naive-pruning"], blocks, None, progress)))
            pr = frames[-1]
            same = pr[pr["layers"] == int(mid["layers"])]
            if not same.empty:
                pruned = float(same["perplexity"].iloc[0])
                verdict = ("without a distilled student to stand in for the missing layers, the model "
                           f"degrades {pruned / mid['perplexity']:.1f}× more" if pruned > mid["perplexity"]
                           else "here pruning does as well — a sign that this student is not (yet) distilled")
                st.markdown(
                    f"For comparison, simply **dropping** teacher layers to reach the same "
                    f"{int(mid['layers'])} layers gives a perplexity of **{pruned:.2f}**: {verdict}.")
        except Exception as e:  # noqa: BLE001
            show_error(e)
    st.plotly_chart(plots.curve_figure(pd.concat(frames, ignore_index=True), x="layers",
                                       current=mid.to_dict()), width="stretch", key="learn_curve")
    next_button(2)

elif step == STEPS[3]:
    st.header("Which layers you patch first matters", anchor=False)
    try:
        ftl = computed(("curve", pair_key, ctx.data_key, "first-to-last"), "Evaluating first-to-last",
                       lambda progress: ui.curve(pair, "first-to-last", blocks, None, progress))
    except Exception as e:  # noqa: BLE001
        show_error(e)
        st.stop()
    both = ltf.merge(ftl, on="k", suffixes=("_ltf", "_ftl"))
    inner = both.iloc[1:-1]
    worst = inner.iloc[(inner["perplexity_ltf"] - inner["perplexity_ftl"]).abs().argmax()] if len(inner) else both.iloc[0]
    better = "last-to-first" if worst["perplexity_ltf"] < worst["perplexity_ftl"] else "first-to-last"
    st.markdown(
        f"With **{int(worst['k'])} of {n}** layers patched, patching from the output end "
        f"(last-to-first) gives perplexity **{worst['perplexity_ltf']:.2f}** while patching from the "
        f"input end (first-to-last) gives **{worst['perplexity_ftl']:.2f}**: here *{better}* is better. "
        "Patched teacher blocks early in the network feed student layers further up with states they "
        "were never trained on, and errors compound with depth. Data-driven orders (similarity, "
        "KLPatch, the optimum) are on the **Compare orders** page.")
    st.plotly_chart(plots.curve_figure(pd.concat([ltf, ftl], ignore_index=True), x="layers"),
                    width="stretch", key="learn_orders")
    next_button(3)

else:
    st.header("What initialisation and alignment buy", anchor=False)
    ablations = [s for s in ("no-align", "random-init") if s in ui.demo_student_dirs()]
    if not on_demo or not ablations:
        st.info("This step compares the demo's ablation students; they are not on disk.",
                icon=":material/info:")
        st.stop()
    frames = [ltf.assign(order="boomerang student")]
    notes = []
    for name in ablations:
        a_spec = ui.PairSpec("demo", name, label=f"demo: {name} student")
        try:
            a_pair = load_spec(a_spec, ctx.device)
            a_key = ui.spec_fingerprint(a_spec, ctx.device)
            a = computed(("curve", a_key, ctx.data_key, "last-to-first"), f"Evaluating the {name} student",
                         lambda progress, a_pair=a_pair: ui.curve(a_pair, "last-to-first", blocks, None, progress))
        except Exception as e:  # noqa: BLE001
            show_error(e)
            continue
        frames.append(a.assign(order=f"{name} student"))
        ratio = ui.mean_ratio_at_intermediate_sizes(a, ltf)
        if ratio is not None:
            notes.append(f"- **{name}**: student {a['perplexity'].iloc[0]:.2f} (boomerang "
                         f"{ltf['perplexity'].iloc[0]:.2f}); its models of intermediate size are on average "
                         f"**{ratio:.2f}×** the boomerang student's perplexity at the same size")
    st.markdown(
        "The same teacher and the same training budget, two ablations: **no-align** drops the cosine "
        "loss that ties each student layer to the end of its block, **random-init** starts the student "
        "from random weights instead of teacher layers. A student whose layers do not do what their "
        "teacher blocks do hands a patched block hidden states it was never trained on. Measured on "
        "this data:")
    st.markdown("\n".join(notes))
    st.plotly_chart(plots.curve_figure(pd.concat(frames, ignore_index=True), x="layers"),
                    width="stretch", key="learn_ablation")
