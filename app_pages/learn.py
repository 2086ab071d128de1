"""Learn: a guided tour of boomerang distillation on the demo family, with numbers computed live."""

import pandas as pd
import streamlit as st

from app_pages._context import context
from app_pages._results import computed, eval_blocks, load_spec, show_error
from boomerang import plots, ui

ctx = context()

STEPS = ["1 · The student", "2 · Patching", "3 · The curve", "4 · Order matters", "5 · Ablations",
         "6 · A real model"]

st.title("Learn", anchor=False)
lesson, lesson_ablations = ui.registry.lesson()
on_demo = lesson is not None
if on_demo:
    spec = ui.PairSpec.named(lesson)
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
summary = ui.RESULTS.get_or_compute(ctx.key("summary", pair_key=pair_key, on_text=False),
                                    lambda: ui.pair_summary(pair))

try:
    blocks = eval_blocks(ctx, pair, pair_key)
    ltf = computed(ctx.key("curve", "last-to-first", pair_key=pair_key), "Evaluating the curve",
                   lambda progress: ui.curve(pair, "last-to-first", blocks, None, progress))
except Exception as e:  # noqa: BLE001
    show_error(e)
    st.stop()
student, teacher = ltf[0], ltf[-1]


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
    st.markdown(f"{'After distillation the' if spec.distilled else 'The (undistilled)'} student's "
                f"perplexity is **{student['perplexity']:,.2f}**, the teacher's **{teacher['perplexity']:,.2f}** "
                f"(on {ui.present.ppl_source(ctx.split, blocks.shape)}).")
    st.plotly_chart(plots.strip_figure(ui.strip_cells(pair, ()), ui.layer_labels(pair)),
                    width="stretch", key="learn_strip_s")
    next_button(0)

elif step == STEPS[1]:
    st.header("Patching swaps a student layer for its teacher block", anchor=False)
    try:
        gains = computed(ctx.key("single", pair_key=pair_key), "Patching each student layer alone",
                         lambda progress: ui.single_layer_gains(pair, blocks, progress))
    except Exception as e:  # noqa: BLE001
        show_error(e)
        st.stop()
    summ = ui.tour.single_patch_summary(gains)
    labels = ui.layer_labels(pair)
    i = st.select_slider("Patch student layer", list(range(n)), value=summ["best"],
                         format_func=lambda i: labels[i], key="learn_layer")
    point = ui.RESULTS.get_or_compute(ctx.key("point", (i,), pair_key=pair_key),
                                      lambda: ui.evaluate_point(pair, (i,), blocks))
    st.plotly_chart(plots.strip_figure(ui.strip_cells(pair, (i,)), labels),
                    width="stretch", key="learn_strip_p")
    delta = point["perplexity"] - student["perplexity"]
    if delta < -1e-9:
        verdict = ("**Lower**: the teacher block does the work of the one student layer better. It can "
                   "slot in because the student layer was trained to *produce what the block produces*: "
                   "the block receives the kind of input it expects and hands on the kind of output the "
                   "next student layer expects.")
    elif delta > 1e-9:
        verdict = ("**Higher**: this block, patched alone, makes the model worse. Nothing guarantees that one "
                   "swap helps: the student layers above it were trained on this layer's output, which only "
                   "approximates the block's, and the difference can cost more than the block adds. The "
                   "model still works (no training, no collapse); the next step shows the trend as more "
                   "layers are patched.")
    else:
        verdict = ("**Unchanged**: this student layer stands for a single teacher layer and was kept at the "
                   "teacher's weights (frozen), so patching it swaps a layer for an identical one.")
    st.markdown(
        f"Replacing student layer {i} by teacher layers {list(m.blocks[i])} gives a model with "
        f"**{point['layers']} layers** and {point['params'] / 1e6:,.2f} M parameters, with no training at "
        f"all. Its perplexity is **{point['perplexity']:,.2f}** against the student's "
        f"{student['perplexity']:,.2f} ({delta:+,.2f}). {verdict}")
    colors = [plots.TEACHER_COLOR if j == i else "#BBBBBB" for j in range(n)]
    st.plotly_chart(plots.bar_figure(gains.assign(label=labels), "label", "perplexity", color=colors,
                                     title="Each student layer patched alone",
                                     y_title=ui.present.ppl_label(ctx.split, blocks.shape),
                                     y_range=(0.97 * min(gains["perplexity"].min(), student["perplexity"]),
                                              1.02 * max(gains["perplexity"].max(), student["perplexity"])),
                                     reference=(float(student["perplexity"]), "student")),
                    width="stretch", key="learn_single")
    parts = [f"helps for layer{'s' if len(summ['helps']) != 1 else ''} {', '.join(map(str, summ['helps']))}"
             if summ["helps"] else "helps for no layer",
             f"hurts for {', '.join(map(str, summ['hurts']))}" if summ["hurts"] else "hurts for none"]
    if summ["neutral"]:
        parts.append(f"changes nothing for {', '.join(map(str, summ['neutral']))} (frozen one-to-one layers)")
    st.markdown(f"On this data, patching a single layer {'; '.join(parts)} (bars below the dashed "
                "student line help).")
    next_button(1)

elif step == STEPS[2]:
    st.header("Every size in between, for free", anchor=False)
    mid = ltf.midway()
    inner_sizes = sorted(ltf.intermediate().by_size())
    st.markdown(
        f"Patching student layers one after another (here from the last to the first) walks from the "
        f"student ({int(student['layers'])} layers, perplexity {student['perplexity']:,.2f}) to the teacher "
        f"({int(teacher['layers'])} layers, {teacher['perplexity']:,.2f}) through {len(inner_sizes)} "
        f"intermediate sizes ({', '.join(map(str, inner_sizes))} layers). Half-way in size, at "
        f"**{int(mid['layers'])} layers** ({int(mid['k'])} of {n} student layers patched), the perplexity "
        f"is **{mid['perplexity']:,.2f}** (the star).")
    frames = [ltf.to_frame()]
    if "naive-pruning" in ui.available_baselines():
        try:
            frames.append(computed(ctx.key("sweep", "naive-pruning", "perplexity", None, pair_key=pair_key),
                                   "Pruning the teacher", lambda progress: ui.sweep(
                                       pair, ["naive-pruning"], blocks, None, progress)))
            pr = frames[-1]
            same = pr[pr["layers"] == int(mid["layers"])]
            if not same.empty:
                pruned = float(same["perplexity"].iloc[0])
                verdict = (f"{pruned / mid['perplexity']:.2f}× the patched model's perplexity: without a "
                           "distilled student standing in for the missing layers, dropping them costs more"
                           if pruned > mid["perplexity"] else
                           "no worse than the patched model here — a sign that this student is not (yet) "
                           "distilled well enough to beat pruning")
                st.markdown(
                    f"For comparison, simply **dropping** teacher layers to reach the same "
                    f"{int(mid['layers'])} layers (naive pruning, dotted) gives a perplexity of "
                    f"**{pruned:,.2f}**, {verdict}.")
        except Exception as e:  # noqa: BLE001
            show_error(e)
    st.plotly_chart(plots.curve_figure(pd.concat(frames, ignore_index=True), x="layers", current=mid,
                                       y_title=f"{ui.present.ppl_label(ctx.split, blocks.shape)} (lower is better)"),
                    width="stretch", key="learn_curve")
    note = ui.present.repeated_size_note(pair, ltf.to_frame())
    if note:
        st.caption(note)
    next_button(2)

elif step == STEPS[3]:
    st.header("Which layers you patch first matters", anchor=False)
    try:
        ftl = computed(ctx.key("curve", "first-to-last", pair_key=pair_key), "Evaluating first-to-last",
                       lambda progress: ui.curve(pair, "first-to-last", blocks, None, progress))
    except Exception as e:  # noqa: BLE001
        show_error(e)
        st.stop()
    table = ui.tour.at_equal_sizes({"last-to-first": ltf, "first-to-last": ftl})
    gap = ui.tour.largest_gap(table, "last-to-first", "first-to-last")
    if gap is None:
        st.markdown("The two orders share no intermediate size on this pair.")
    else:
        layers_, a, b = gap
        better = "last-to-first" if a < b else "first-to-last"
        wins, losses, ties = ui.tour.clear_wins(table, "last-to-first", "first-to-last")
        there = ui.tour.clear_wins(table.loc[[layers_]], "last-to-first", "first-to-last")[2] == 0
        if wins == losses == 0:
            why = ("On these evaluation blocks the two orders cannot be told apart; more blocks (the "
                   "sidebar) narrow the intervals.")
        elif wins > losses:
            why = ("One reason: a patched block hands the student layers above it states they were not "
                   "trained on, and patching from the output end leaves fewer student layers downstream of "
                   "each patch.")
        elif losses > wins:
            why = ("So on this pair and data the input end is the better place to start: no fixed rule wins "
                   "everywhere, which is why data-driven orders choose the layers from calibration text.")
        else:
            why = "Neither end wins everywhere, which is why data-driven orders choose from calibration text."
        st.markdown(
            f"Compare the two orders at the **same size**: at **{layers_} layers**, patching from the output "
            f"end (last-to-first, {int(table.loc[layers_, 'k_last-to-first'])} layers patched) gives "
            f"perplexity **{a:,.2f}**, patching from the input end (first-to-last, "
            f"{int(table.loc[layers_, 'k_first-to-last'])} patched) gives **{b:,.2f}**: "
            + (f"*{better}* is better there. " if there else
               f"*{better}* is lower there, but their 95% intervals overlap: within noise. ")
            + f"Over the {len(table)} intermediate sizes both reach, last-to-first is better at {wins} "
            f"and first-to-last at {losses}, with 95% intervals apart; at {ties} they overlap (within "
            "noise). The orders reach a size with different numbers of patched "
            "layers (first-to-last patches the two-layer blocks first), so they are compared by size, not "
            f"by k. {why} Data-driven orders (similarity, KLPatch, the optimum) are on the **Compare "
            "orders** page.")
        shown = table.reset_index()[["layers", "last-to-first", "first-to-last"]]
        st.dataframe(shown, hide_index=True, column_config={
            "layers": st.column_config.NumberColumn("decoder layers"),
            "last-to-first": st.column_config.NumberColumn("last-to-first perplexity", format="%,.2f"),
            "first-to-last": st.column_config.NumberColumn("first-to-last perplexity", format="%,.2f")})
    st.plotly_chart(plots.curve_figure(pd.concat([ltf.to_frame(), ftl.to_frame()], ignore_index=True), x="layers",
                                       y_title=f"{ui.present.ppl_label(ctx.split, blocks.shape)} (lower is better)"),
                    width="stretch", key="learn_orders")
    next_button(3)

elif step == STEPS[4]:
    st.header("What initialisation and alignment buy", anchor=False)
    ablations = lesson_ablations
    if not on_demo or not ablations:
        st.info("This step compares the demo's ablation students; they are not on disk.",
                icon=":material/info:")
        next_button(4)
        st.stop()
    frames = [ltf.to_frame().assign(order="boomerang student")]
    notes = []
    for ablation in ablations:
        name = ablation.student
        a_spec = ui.PairSpec.named(ablation)
        try:
            a_pair = load_spec(a_spec, ctx.device)
            a_key = ui.spec_fingerprint(a_spec, ctx.device)
            a = computed(ctx.key("curve", "last-to-first", pair_key=a_key), f"Evaluating the {name} student",
                         lambda progress, a_pair=a_pair: ui.curve(a_pair, "last-to-first", blocks, None, progress))
        except Exception as e:  # noqa: BLE001
            show_error(e)
            continue
        frames.append(a.to_frame().assign(order=f"{name} student"))
        ratio = ui.mean_ratio(a, ltf)
        if ratio is not None:
            notes.append(f"- **{name}**: student {a[0]['perplexity']:,.2f} (boomerang "
                         f"{ltf[0]['perplexity']:,.2f}); its models of intermediate size are on average "
                         f"**{ratio:.2f}×** the boomerang student's perplexity at the same size"
                         + (" — within 5%: on this small training budget this ablation costs next to nothing"
                            if 0.95 <= ratio <= 1.05 else ""))
    st.markdown(
        "The same teacher and the same training budget, two ablations: **no-align** drops the cosine "
        "loss that ties each student layer to the end of its block, **random-init** starts the student "
        "from random weights instead of teacher layers. A student whose layers do not do what their "
        "teacher blocks do hands a patched block hidden states it was never trained on. Measured on "
        "this data:")
    st.markdown("\n".join(notes))
    st.plotly_chart(plots.curve_figure(pd.concat(frames, ignore_index=True), x="k",
                                       y_title=f"{ui.present.ppl_label(ctx.split, blocks.shape)} (log scale)"),
                    width="stretch", key="learn_ablation")
    jumps = [f"{f['order'].iloc[0]} ({f['perplexity'].iloc[0]:,.2f} → {f['perplexity'].iloc[1]:,.2f})"
             for f in frames if len(f) > 1 and abs(f["perplexity"].iloc[1] - f["perplexity"].iloc[0]) > 1e-6]
    same_size = ui.present.repeated_sizes(ltf.to_frame()).get(int(student["layers"]), [0])[1:]
    ks = ", ".join(map(str, same_size))
    st.caption(
        "The x axis counts patched student layers (k), not layers"
        + (f": k = {ks} patch one-to-one layers, which keeps the size at {int(student['layers'])} layers "
           "(on a layer axis those points would stack into a vertical line). "
           + (f"Swapping them changes the model where they were trained rather than frozen: {'; '.join(jumps)}."
              if jumps else f"They were frozen in every student here, so nothing changes at k = {ks}.")
           if same_size else "."))
    next_button(4)

else:
    real = ui.registry.with_report()
    if not real:
        st.header("The same on a real model", anchor=False)
        st.info("This step reads the shipped report of a real model's student, which this installation lacks.",
                icon=":material/info:")
        st.stop()
    family = real[0]
    st.header(f"The same on a real model: {family.title}", anchor=False)
    rep = family.report()
    paragraphs = ui.tour.real_model_lesson(rep)
    st.markdown(paragraphs[0])
    st.plotly_chart(ui.report_figure(family.name, rep), width="stretch", key="learn_real")
    for paragraph in paragraphs[1:]:
        st.markdown(paragraph)
    st.caption(f"Measured once on the held-out test split by `python -m boomerang {family.name} report` (a fresh "
               f"install measures the same numbers). Choose the {family.title} student in the sidebar's pair list "
               "to patch it live.")
