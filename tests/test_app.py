"""Every dashboard page renders through Streamlit's AppTest, and its widgets change the results.

The pages run on a tiny random pair built once per session (the demo family's weights are not
needed); one test also opens the bundled demo when it is on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from tiny import saved_tiny_pair  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 300


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(student_dir, text_file) of a tiny pair; runs and caches go to temporary folders."""

    root = tmp_path_factory.mktemp("dash")
    old = {k: os.environ.get(k) for k in ("BOOMERANG_RUNS", "BOOMERANG_CACHE")}
    os.environ["BOOMERANG_RUNS"] = str(root / "runs")
    os.environ["BOOMERANG_CACHE"] = str(root / "cache")
    _, student, text = saved_tiny_pair(root / "runs" / "pair")  # links may only name files under runs/
    yield str(student), str(text)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def app(tiny, page: str | None = None, **params: str) -> AppTest:
    """The app on the tiny pair (through the URL), optionally switched to ``page``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"pair": "folders", "student": tiny[0], "data": tiny[1], "blocks": "4",
                            "seq_len": "32", **params})
    at.run()
    ok(at)
    if page is not None:  # AppTest runs a switched-to page on its own: the sidebar ran above
        at.switch_page(f"app_pages/{page}.py")
        at.run()
        ok(at)
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def read(element) -> str:
    """What the user reads in a warning or error: its Markdown source with backslash escapes undone
    (the dashboard escapes every message, which quotes user input)."""
    return re.sub(r"\\(.)", r"\1", element.value)


def metrics(at: AppTest) -> dict[str, str]:
    """Metric values by label; the perplexity's label (which names split and tokens) as "Perplexity"."""
    return {"Perplexity" if "perplexity" in m.label else m.label: m.value for m in at.metric}


def charts(at: AppTest) -> list:
    return at.get("plotly_chart")


def live_figures(at: AppTest) -> list[dict]:
    """Figures of the charts drawn by the in-place updating component (app_pages/_live_chart.py)."""
    return [json.loads(json.loads(e.proto.json_args)["figure"]) for e in at.get("component_instance")
            if e.proto.component_name.endswith(".live_plotly")]


def current_k(at: AppTest) -> int:
    """The size the curve's "current" star marks (its k)."""
    (fig,) = live_figures(at)
    return next(t for t in fig["data"] if t.get("name") == "current")["customdata"][0]


def test_interpolate_slider_and_order_change_the_model(tiny):
    at = app(tiny)
    first = metrics(at)
    assert set(first) == {"Perplexity", "Parameters", "Decoder layers", "Latency"}
    assert first["Decoder layers"] == "4"  # the student
    assert len(live_figures(at)) == 1 and not charts(at)  # the curve, updated in place (the strip is HTML)
    assert current_k(at) == 0

    at.select_slider(key="k").set_value(4).run()
    ok(at)
    assert metrics(at)["Decoder layers"] == "6"  # the teacher
    assert current_k(at) == 4
    assert metrics(at)["Parameters"] != first["Parameters"]
    assert at.query_params["k"] == "4"

    at.select_slider(key="k").set_value(1).run()
    ltf = metrics(at)["Decoder layers"]  # last layer patched: a 1-layer block
    at.segmented_control(key="order").set_value("first-to-last").run()
    ok(at)
    assert at.query_params["order"] == "first-to-last"
    assert (ltf, metrics(at)["Decoder layers"]) == ("4", "5")  # first layer: a 2-layer block


def test_numbers_say_what_they_are(tiny):
    at = app(tiny)
    captions = "\n".join(c.value for c in at.caption)
    assert "Perplexity: validation perplexity, 4 × 32 tokens." in captions  # split and token count
    assert "**last-to-first** optimises nothing: patches the top student layers first" in captions
    # S2 and S3 are one-to-one: k = 0, 1, 2 of last-to-first all have 4 layers, and the page says why
    assert "k = 0, 1, 2 all have 4 layers" in captions and "one-to-one" in captions
    lat = next(m for m in at.metric if m.label == "Latency")
    assert lat.value.endswith(" ms") and lat.delta == "per token"
    assert "Latency: median of 3 runs, greedy decoding, batch 1" in captions
    at.segmented_control(key="order").set_value("klpatch").run()
    ok(at)
    captions = "\n".join(c.value for c in at.caption)
    assert "KL to the teacher on calibration text, greedily" in captions and "train split" in captions

    at = app(tiny, page="similarity")
    captions = "\n".join(c.value for c in at.caption)
    assert "95% interval" in captions and "n = 4 layers" in captions
    columns = list(at.dataframe[0].value.columns)
    assert not {"cos_global", "cos_local", "kl_gain", "ppl_gain"} & set(columns), columns
    assert columns == ["layer → block", "cos, local", "cos, global", "KL alone", "KL gain", "ppl alone", "ppl gain"]


def test_smollm2_is_not_called_distilled_unless_it_is():
    from boomerang import ui as dash

    spec = dash.PairSpec.from_query({"pair": "smollm2:undistilled"})
    assert "undistilled" in spec.title and not spec.distilled and spec.key == "smollm2:undistilled"
    built = dash.PairSpec.from_query({"pair": "smollm2"})
    assert built.distilled and built.title == "SmolLM2-135M: distilled" and built.key == "smollm2"
    assert dash.PairSpec.from_query({"pair": "demo"}).distilled


def test_correlation_interval_is_wide_for_few_points():
    from boomerang import ui as dash

    c = dash.present.spearman_ci([1, 2, 3, 4, 5, 6, 7], [3, 1, 2, 5, 4, 7, 6])
    assert c["rho"] == pytest.approx(0.821, abs=1e-3)
    assert c["low"] < 0.25 and c["high"] > 0.95  # n = 7: the interval spans most of the range
    assert dash.present.spearman_ci([1, 2, 3], [1, 2, 3]) is None


def test_interpolate_generates_text(tiny):
    at = app(tiny)
    at.text_input[0].set_value("The king")
    at.number_input[0].set_value(8)
    at.button[0].click().run()
    ok(at)


def test_url_restores_state(tiny):
    at = app(tiny, order="first-to-last", k="2")
    assert at.segmented_control(key="order").value == "first-to-last"
    assert at.select_slider(key="k").value == 2
    assert metrics(at)["Decoder layers"] == "6"  # S0 and S1 patched: two 2-layer blocks


def test_layer_picker_toggles_and_exports(tiny):
    at = app(tiny, page="layers", patched="3")
    assert metrics(at)["Decoder layers"] == "4"
    assert at.toggle(key="pick_3").value is True
    at.toggle(key="pick_0").set_value(True).run()
    ok(at)
    assert metrics(at)["Decoder layers"] == "5"
    assert at.query_params["patched"] == "0,3"
    strip, curves = live_figures(at)  # both updated in place as the pick changes
    assert next(t for t in curves["data"] if t.get("name") == "your pick")["x"] == [5]  # 5 decoder layers
    export = next(b for b in at.button if b.label == "Export")
    export.click().run()
    ok(at)
    assert at.success and "Saved to" in at.success[0].value
    assert at.get("download_button")


def test_compare_orders_with_baselines(tiny):
    from boomerang import ui as dash

    orders = dash.available_orders()[:2] + dash.available_baselines()[:1]
    at = app(tiny, page="compare", orders=",".join(orders))
    table = at.dataframe[0].value
    assert set(table["order"]) == set(orders)
    assert len(charts(at)) == 1
    at.multiselect(key="orders_pick").unselect(orders[-1]).run()
    ok(at)
    assert set(at.dataframe[0].value["order"]) == set(orders[:-1])
    assert len(at.get("download_button")) == 2  # CSV + HTML


def test_compare_puts_another_student_of_the_teacher_beside_the_curves(tiny):
    student = Path(tiny[0])
    runs = student.parent.parent
    other = runs / "second-student" / "student"
    shutil.copytree(student, other)
    meta = json.loads((other / "student_config.json").read_text())
    meta["teacher"] = str((student / meta["teacher"]).resolve()) if not Path(meta["teacher"]).is_absolute() \
        else meta["teacher"]
    (other / "student_config.json").write_text(json.dumps(meta))
    try:
        at = app(tiny, page="compare", orders="last-to-first")
        pick = at.multiselect(key="compare_models")
        assert pick.options == ["second-student (local)"], pick.options
        pick.select("second-student (local)").run()
        ok(at)
        table = at.dataframe[0].value
        row = table[table.order == "model: second-student (local)"]
        assert len(row) == 1 and row.layers.item() == table[table.order == "last-to-first"].layers.min()
        # The same weights as the pair's student: the same perplexity as the curve's first point.
        student_ppl = table[(table.order == "last-to-first") & (table.k == 0)].perplexity.item()
        assert row.perplexity.item() == pytest.approx(student_ppl, rel=1e-5)
        assert row.perplexity_lo.item() <= row.perplexity.item() <= row.perplexity_hi.item()
    finally:
        shutil.rmtree(other.parent)


def test_a_student_naming_a_teacher_outside_the_runs_folder_is_not_loaded(tiny):
    student = Path(tiny[0])
    runs = student.parent.parent
    meta = json.loads((student / "student_config.json").read_text())
    teacher = (student / meta["teacher"]).resolve() if not Path(meta["teacher"]).is_absolute() else Path(meta["teacher"])
    outside = runs.parent / "outside-teacher"
    planted = runs / "planted" / "student"
    shutil.copytree(teacher, outside)
    shutil.copytree(student, planted)
    (planted / "student_config.json").write_text(json.dumps({**meta, "teacher": str(outside)}))
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params.update({"pair": "folders", "student": str(planted), "data": tiny[1], "blocks": "4",
                                "seq_len": "32"})
        at.run()
        assert not at.exception
        shown = [read(m) for m in (*at.info, *at.error)]
        assert any(f"names its teacher '{outside}', outside the runs folder" in m for m in shown), shown
        assert not charts(at)  # nothing computed from that teacher
        at.checkbox(key="allow_outside").check().run()  # the user's explicit choice loads it
        ok(at)
        assert not any("names its teacher" in read(m) for m in (*at.info, *at.error))
    finally:
        shutil.rmtree(planted.parent)
        shutil.rmtree(outside)


def test_similarity_page(tiny):
    pytest.importorskip("boomerang.eval.similarity")
    at = app(tiny, page="similarity")
    assert len(charts(at)) == 3  # heatmap, per-layer bars, scatter
    assert len(at.dataframe[0].value) == 4  # one row per student layer
    at.segmented_control(key="sim_col").set_value("cos_global").run()
    ok(at)


def test_learn_tour_steps(tiny):
    at = app(tiny, page="learn")
    steps = at.segmented_control(key="learn_step").options
    for step in steps[1:4]:
        at.segmented_control(key="learn_step").set_value(step).run()
        ok(at)
        assert charts(at), step


def test_mean_ratio_counts_only_intermediate_sizes():
    import pandas as pd

    from boomerang import ui as dash

    ref = dash.Curve.from_frame(pd.DataFrame({"layers": [3, 3, 4, 5, 6], "perplexity": [40.0, 40.0, 36.0, 33.0, 30.0]}))
    other = dash.Curve.from_frame(pd.DataFrame({"layers": [3, 3, 4, 5, 6], "perplexity": [80.0, 99.0, 72.0, 33.0, 30.0]}))
    assert dash.mean_ratio(other, ref) == pytest.approx(1.5)  # (2 + 1) / 2
    flat = dash.Curve.from_frame(pd.DataFrame({"layers": [3, 3], "perplexity": [40.0, 41.0]}))
    assert dash.mean_ratio(flat, flat) is None


@pytest.mark.skipif("not __import__('boomerang.zoo').zoo.demo_student_dirs()",
                    reason="the demo family is not on disk")
def test_learn_ablation_step_reports_measured_ratios(tiny):
    at = app(tiny, page="learn")
    at.segmented_control(key="learn_step").set_value(at.segmented_control(key="learn_step").options[4]).run()
    ok(at)
    text = "\n".join(m.value for m in at.markdown)
    ratio = {}
    for name in ("no-align", "random-init"):
        line = next(x for x in text.splitlines() if x.startswith(f"- **{name}**"))
        ratio[name] = float(line.split("**")[-2].rstrip("×"))
    assert ratio["random-init"] > 5 and 0.9 < ratio["no-align"] < 1.5, ratio
    assert charts(at)


@pytest.mark.skipif("not __import__('boomerang.zoo').zoo.demo_student_dirs()",
                    reason="the demo family is not on disk")
def test_learn_tour_claims_are_true_of_the_demo_numbers(tiny):
    """Each step's sentence quotes numbers its own plot shows, checked against the models here."""
    import re

    from boomerang import ui as dash
    from boomerang.zoo import load_pair

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(pair="demo", blocks="4", seq_len="64")
    at.run()
    ok(at)
    at.switch_page("app_pages/learn.py").run()
    ok(at)
    pair = load_pair("demo")
    blocks = dash.load_eval_blocks(pair, "demo", 64, 4, "validation")
    ltf = dash.curve(pair, "last-to-first", blocks).to_frame()  # the oracle reads plain frames
    ftl = dash.curve(pair, "first-to-last", blocks).to_frame()
    steps = at.segmented_control(key="learn_step").options

    def text() -> str:
        return "\n".join(m.value for m in at.markdown)

    # 2: the default is the layer whose patch helps most, and the sentence says lower/higher truly
    at.segmented_control(key="learn_step").set_value(steps[1]).run()
    ok(at)
    gains = dash.single_layer_gains(pair, blocks)
    best = int(gains.loc[gains["gain"].idxmax(), "student_layer"])
    assert at.select_slider(key="learn_layer").value == best
    patched_ppl = float(gains.loc[best, "perplexity"])
    assert f"Its perplexity is **{patched_ppl:,.2f}**" in text()
    assert ("**Lower**" in text()) == (patched_ppl < ltf["perplexity"].iloc[0])
    for i in range(pair.mapping.num_student_layers):  # every choice: the verdict follows the number
        at.select_slider(key="learn_layer").set_value(i).run()
        p = float(gains.loc[i, "perplexity"])
        s = float(ltf["perplexity"].iloc[0])
        word = "**Lower**" if p < s - 1e-9 else "**Higher**" if p > s + 1e-9 else "**Unchanged**"
        assert word in text(), (i, p, s)

    # 3: "half-way" is half-way in size (7 and 12 layers: 9 or 10), with that size's perplexity
    at.segmented_control(key="learn_step").set_value(steps[2]).run()
    ok(at)
    layers = int(re.search(r"Half-way in size, at \*\*(\d+) layers", text()).group(1))
    assert layers in (9, 10)
    row = ltf[ltf["layers"] == layers].iloc[0]
    assert f"perplexity is **{row['perplexity']:,.2f}**" in text()

    # 4: the orders are compared at the same size, with each order's model of that size
    at.segmented_control(key="learn_step").set_value(steps[3]).run()
    ok(at)
    m = re.search(r"at \*\*(\d+) layers\*\*.*?perplexity \*\*([\d,.]+)\*\*.*?gives \*\*([\d,.]+)\*\*", text(), re.S)
    size, a, b = int(m.group(1)), float(m.group(2).replace(",", "")), float(m.group(3).replace(",", ""))
    assert a == pytest.approx(ltf[ltf["layers"] == size]["perplexity"].iloc[0], abs=0.01)
    assert b == pytest.approx(ftl[ftl["layers"] == size]["perplexity"].iloc[0], abs=0.01)
    # A win counts only where the two 95% intervals are apart; overlapping ones are within noise.
    first = {name: df.sort_values("k").drop_duplicates("layers").set_index("layers") for name, df in
             (("l", ltf), ("f", ftl))}
    inner = [s for s in first["l"].index if s in first["f"].index and ltf.layers.min() < s < ltf.layers.max()]
    wins = sum(first["l"].perplexity_hi[s] < first["f"].perplexity_lo[s] for s in inner)
    losses = sum(first["f"].perplexity_hi[s] < first["l"].perplexity_lo[s] for s in inner)
    assert (f"last-to-first is better at {wins} and first-to-last at {losses}, with 95% intervals apart; "
            f"at {len(inner) - wins - losses} they overlap") in text()
    assert ("fewer student layers downstream" in text()) == (wins > losses)  # the reason only when it holds
    apart = (first["l"].perplexity_hi[size] < first["f"].perplexity_lo[size]
             or first["f"].perplexity_hi[size] < first["l"].perplexity_lo[size])
    assert ("is better there" in text()) == apart and ("within noise. " in text()) == (not apart)

    # 5: the ablation plot is against k (no vertical line of same-size points), ticks are numbers
    at.segmented_control(key="learn_step").set_value(steps[4]).run()
    ok(at)
    fig = json.loads(charts(at)[-1].proto.spec)
    assert fig["layout"]["xaxis"]["title"]["text"] == "student layers patched"
    assert fig["layout"]["yaxis"]["type"] == "log" and fig["layout"]["yaxis"]["tickformat"]
    assert any("k = 1, 2 patch one-to-one layers" in c.value for c in at.caption)


def test_train_runs_and_new_student_appears(tiny):
    from boomerang import ui as dash

    at = app(tiny, page="train")
    name = next(t for t in at.text_input if t.label == "Run name")
    name.set_value("apptest")
    steps = next(n for n in at.number_input if n.label == "Steps")
    steps.set_value(3)
    next(m for m in at.multiselect if m.label.startswith("Keep at the teacher")).set_value(["one-to-one", "head"])
    next(b for b in at.button if b.label == "Start training").click().run()
    ok(at)
    job = dash.training_job(dash.dashboard_runs_dir() / "apptest")
    assert job is not None, (dash.dashboard_runs(), [i.value for i in at.info], [w.value for w in at.warning])
    assert job.device == "cpu" and any("trains on **cpu**" in m.value for m in at.markdown)  # the sidebar's
    job.wait(240)
    assert job.state == "done", job.message
    at.run()
    ok(at)
    assert any("Finished" in s.value for s in at.success)
    assert any(str(p.student).endswith("apptest/student") for p in dash.discover_pairs())
    run_config = json.loads((dash.dashboard_runs_dir() / "apptest" / "config.json").read_text())
    assert run_config["freeze"] == ["one-to-one", "head"]

    # The interpolation curve, measured at step 0 and at the last step (validation every 20 steps),
    # with naive pruning as the reference; the slider replays the earlier curve.
    curves = dash.read_curves(dash.dashboard_runs_dir() / "apptest")
    assert [(c["order"], c["step"]) for c in curves] == [("naive-pruning", 0), ("last-to-first", 0),
                                                         ("last-to-first", 3)]

    def curve_chart() -> dict:
        return next(f for f in (json.loads(c.proto.spec) for c in charts(at))
                    if f["layout"]["title"]["text"].startswith(("last-to-first, step", "no curve")))

    fig = curve_chart()
    assert fig["layout"]["title"]["text"].startswith("last-to-first, step 3 (")
    names = [t["name"] for t in fig["data"]]
    assert names == ["naive pruning", "step 0", "step 3 (newest)"]
    assert fig["data"][2]["y"] == curves[2]["perplexity"] and fig["data"][2]["line"]["width"] > fig["data"][1]["line"]["width"]
    at.select_slider(key=f"curve_step_{dash.dashboard_runs_dir() / 'apptest'}").set_value(0).run()
    ok(at)
    assert [t["name"] for t in curve_chart()["data"]] == ["naive pruning", "step 0 (newest)"]


def test_bad_inputs_are_one_sentence_errors(tiny):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    missing = str(Path(os.environ["BOOMERANG_RUNS"]) / "nonexistent" / "student")
    at.query_params.update(pair="folders", student=missing)
    at.run()
    assert not at.exception
    assert any(missing in read(e) for e in at.error)

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(pair="folders", student=tiny[0],
                           data=str(Path(os.environ["BOOMERANG_RUNS"]) / "nonexistent.txt"))
    at.run()
    assert not at.exception
    assert at.error and "Traceback" not in at.error[0].value


#: (page, URL parameters, what the warning must quote, what is used instead)
BAD_URLS = [
    (None, {"seq_len": "100000"}, "?seq_len='100000'", "between 16 and 4,096; using 128"),
    (None, {"seq_len": "abc"}, "?seq_len='abc'", "not a whole number; using 128"),
    (None, {"blocks": "0"}, "?blocks='0'", "between 1 and 1,024; using 16"),
    (None, {"split": "dev"}, "?split='dev'", "using validation"),
    (None, {"device": "tpu"}, "?device='tpu'", "using cpu"),
    (None, {"data": "/etc/passwd"}, "?data='/etc/passwd'", "using demo"),
    (None, {"data": "../../secret.txt"}, "?data='../../secret.txt'", "using demo"),
    (None, {"k": "9"}, "?k='9'", "between 0 and 4; using 0"),
    (None, {"k": "two"}, "?k='two'", "not a whole number"),
    (None, {"order": "sideways"}, "?order='sideways'", "using last-to-first"),
    (None, {"x": "depth"}, "?x='depth'", "using layers"),
    (None, {"teacher": "/etc"}, "?teacher='/etc'", "only paths under the runs folder"),
    ("layers", {"patched": "1,99"}, "?patched='1,99'", "layers 0 to 3 only (no 99)"),
    ("layers", {"patched": "abc"}, "?patched='abc'", "'abc' is not a layer number"),
    ("compare", {"orders": "last-to-first,bogus"}, "?orders='bogus'", "using last-to-first"),
    ("compare", {"metric": "bleu"}, "?metric='bleu'", "using perplexity"),
]


def test_bad_url_values_are_named_then_the_default_is_used(tiny):
    for page, params, quoted, using in BAD_URLS:
        at = app(tiny, page=page, **params)
        shown = [read(w) for w in at.warning]
        assert any(quoted in w and using in w for w in shown), (params, shown)
    # ... and the defaults are what the page then shows
    at = app(tiny, seq_len="100000", k="9")
    assert at.number_input(key="seq_len").value == 128 and at.query_params["seq_len"] == "128"
    assert at.select_slider(key="k").value == 0 and metrics(at)["Decoder layers"] == "4"
    at = app(tiny, page="layers", patched="1,99")
    assert not any(at.toggle(key=f"pick_{i}").value for i in range(4))


def test_links_cannot_name_files_outside_the_runs_folder(tiny):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(pair="folders", student="/nonexistent/student")
    at.run()
    assert not at.exception
    assert any("?student='/nonexistent/student'" in read(w) and "runs folder" in read(w) for w in at.warning)
    assert not at.metric  # nothing was loaded from it

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(pair="nope")
    at.run()
    assert not at.exception
    assert any("?pair='nope'" in read(w) for w in at.warning)


def test_typed_paths_outside_the_runs_folder_need_opt_in_and_stay_out_of_the_url(tiny, tmp_path):
    import shutil

    outside = tmp_path / "corpus.txt"
    shutil.copy(tiny[1], outside)
    at = app(tiny)
    at.text_input(key="data").set_value(str(outside)).run()
    assert not at.exception
    assert any(f"Ignored data='{outside}'" in read(w) and "using demo" in read(w) for w in at.warning), [
        read(w) for w in at.warning]

    at.checkbox(key="allow_outside").check().run()
    ok(at)
    assert not any(str(outside) in read(w) for w in at.warning)
    assert "data" not in at.query_params  # a shared link never names it
    assert "Perplexity" in metrics(at)


def test_export_outside_the_runs_folder_needs_opt_in(tiny, tmp_path):
    at = app(tiny, page="layers", patched="3")
    outside = tmp_path / "elsewhere"
    folder = next(t for t in at.text_input if t.label == "Folder")
    folder.set_value(str(outside)).run()
    next(b for b in at.button if b.label == "Export").click().run()
    assert any(str(outside) in read(e) and "Refused" in read(e) for e in at.error), [read(e) for e in at.error]
    assert not outside.exists() and not at.success

    at.checkbox(key="export_outside").check().run()
    next(b for b in at.button if b.label == "Export").click().run()
    ok(at)
    assert outside.is_dir() and f"Saved to `{outside}`" in at.success[0].value

    # a relative folder lands under the runs folder
    next(t for t in at.text_input if t.label == "Folder").set_value("exports/mine").run()
    next(b for b in at.button if b.label == "Export").click().run()
    ok(at)
    assert (Path(os.environ["BOOMERANG_RUNS"]) / "exports" / "mine" / "config.json").is_file()


def test_export_message_goes_when_the_pick_changes(tiny):
    at = app(tiny, page="layers", patched="3")
    next(b for b in at.button if b.label == "Export").click().run()
    assert at.success and at.get("download_button")
    at.toggle(key="pick_0").set_value(True).run()
    ok(at)
    assert not at.success and not at.get("download_button")  # the export was of another model


@pytest.mark.skipif("not __import__('boomerang.zoo').zoo.demo_student_dirs()",
                    reason="the demo family is not on disk")
def test_opens_on_the_demo_by_default():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(blocks="4", seq_len="64")
    at.run()
    ok(at)
    assert at.query_params["pair"] == "demo"
    assert "Perplexity" in metrics(at)


def test_train_stop_then_resume_from_the_page(tiny):
    import time

    from boomerang import ui as dash
    from boomerang.train import DistillConfig

    out = dash.dashboard_runs_dir() / "stopresume"
    cfg = DistillConfig(teacher=str(Path(tiny[0]).parent / "teacher"), data=tiny[1], out=str(out), steps=60,
                        seq_len=32, batch_size=2, save_every=1000, log_every=1, max_blocks=32, warmup=0)
    job = dash.start_training(cfg)
    deadline = time.time() + 120
    while job.step < 2 and job.running and time.time() < deadline:
        time.sleep(0.05)
    job.stop()
    job.wait(120)
    assert job.state == "stopped", job.message
    assert dash.run_status(out)["checkpoint"] is not None

    at = app(tiny, page="train")
    at.selectbox(key="train_view").set_value(str(out)).run()
    ok(at)
    resume = next(b for b in at.button if b.label == "Resume")
    resume.click().run()
    ok(at)
    job2 = dash.training_job(out)
    assert job2 is not job and job2.config.resume
    job2.wait(240)
    assert job2.state == "done", job2.message
    assert job2.history[0]["step"] > 1  # continued, not restarted


def _acc(a, lo, hi):
    return {"accuracy": a, "n": 100, "lo": lo, "hi": hi}


def test_real_model_lesson_quotes_its_report():
    from boomerang import ui as dash

    student = {"bbc_news": _acc(0.5, 0.4, 0.6)}
    teacher = {"bbc_news": _acc(0.8, 0.71, 0.87)}
    rows = [{"layers": 3, "last_to_first": 40.0, "first_to_last": 40.0, "naive_pruning": 900.0, "block_influence": 500.0,
             "accuracy": {"last_to_first": student, "first_to_last": student}},
            {"layers": 4, "last_to_first": 35.0, "first_to_last": 38.0, "naive_pruning": 700.0, "block_influence": 30.0,
             "accuracy": {"last_to_first": {"bbc_news": _acc(0.6, 0.5, 0.7)},
                          "first_to_last": {"bbc_news": _acc(0.55, 0.45, 0.65)}}},
            {"layers": 5, "last_to_first": 36.0, "first_to_last": 33.0, "naive_pruning": 400.0, "block_influence": 100.0,
             "accuracy": {"last_to_first": {}, "first_to_last": {}}},
            {"layers": 6, "last_to_first": 20.0, "first_to_last": 20.0, "naive_pruning": 20.0, "block_influence": 20.0,
             "accuracy": {"last_to_first": teacher, "first_to_last": teacher}}]
    rep = {"rows": rows, "teacher": 20.0, "student": 40.0, "blocks": 32, "seq_len": 256,
           "student_config": {"copied_teacher_layers": [0, 2, 5], "local_distill": {"tokens": 1024000}}}
    p = dash.tour.real_model_lesson(rep)
    assert "keeps **3** of them (teacher layers [0, 2, 5])" in p[0] and "1,024,000 tokens" in p[0]
    assert "teacher's perplexity is **20.00** and the student's **40.00** (2.00× the teacher's)" in p[0]
    # Half-way between 3 and 6 layers: 4 and 5 are as close; the smaller is quoted.
    assert "at **4 layers**, patching last-to-first gives **35.00** and first-to-last **38.00**" in p[1]
    assert "**700.00** (naive pruning) and **30.00** (block-influence pruning): the best of them is 0.9×" in p[1]
    assert "Last-to-first beats every pruning baseline at 1 of the 2 intermediate sizes." in p[1]
    assert "First-to-last beats every pruning baseline at 1 of the 2 intermediate sizes." in p[1]
    rows[1]["angular"], rows[2]["angular"] = 36.0, 40.0  # a third baseline, where the report has one
    p = dash.tour.real_model_lesson(rep)
    assert "**700.00** (naive pruning), **30.00** (block-influence pruning) and **36.00** (angular-distance " \
           "pruning): the best of them is 0.9×" in p[1]
    assert "Last-to-first beats every pruning baseline at 1 of the 2" in p[1]
    del rows[1]["angular"], rows[2]["angular"]
    p = dash.tour.real_model_lesson(rep)
    assert p[2] == ("The two orders: last-to-first is better at 1 of the 2 intermediate sizes and first-to-last at 1; "
                    "last-to-first gets worse from 4 to 5 layers (+2.9%), and first-to-last never gets more "
                    "than 1% worse as a teacher block is added.")
    assert p[3] == ("Zero-shot accuracy, with 95% intervals over items: on bbc_news the student scores 50.0% "
                    "[40.0, 60.0] and the teacher 80.0% [71.0, 87.0] (apart beyond noise); at 4 layers, "
                    "last-to-first scores 60.0% [50.0, 70.0] and first-to-last 55.0% [45.0, 65.0].")
    teacher["bbc_news"]["lo"] = 0.59  # the intervals now overlap
    assert "(within noise of each other)" in dash.tour.real_model_lesson(rep)[3]
    # With intervals in the report, a win counts as clear only where they are apart.
    for r, spread in zip(rows, (5.0, 4.0, 3.0, 0.0)):
        for key in ("last_to_first", "first_to_last", "naive_pruning", "block_influence"):
            r[f"{key}_lo"], r[f"{key}_hi"] = r[key] - spread, r[key] + spread
    p = dash.tour.real_model_lesson(rep)
    # 5 layers: first-to-last 33 [30, 36] against block influence 100 [97, 103]: apart.
    assert "First-to-last beats every pruning baseline at 1 of the 2 intermediate sizes, every time with the " \
           "95% intervals apart." in p[1]
    rows[2]["first_to_last_hi"] = 98.0  # its interval now reaches block influence's
    assert "First-to-last beats every pruning baseline at 1 of the 2 intermediate sizes, with the 95% intervals " \
           "apart at 0 of them (the rest within noise)." in dash.tour.real_model_lesson(rep)[1]


@pytest.mark.skipif("__import__('boomerang.zoo').zoo.shipped_smollm2_report() is None",
                    reason="no shipped SmolLM2 report")
def test_learn_real_model_step_tells_the_shipped_smollm2_report(tiny):
    from boomerang import ui as dash
    from boomerang.zoo import shipped_smollm2_report

    at = app(tiny, page="learn")
    at.segmented_control(key="learn_step").set_value(at.segmented_control(key="learn_step").options[5]).run()
    ok(at)
    shown = [m.value for m in at.markdown]
    lesson = dash.tour.real_model_lesson(shipped_smollm2_report())
    assert all(p in shown for p in lesson) and len(lesson) == 4
    fig = json.loads(charts(at)[-1].proto.spec)
    rep = shipped_smollm2_report()
    l2f = next(t for t in fig["data"] if t["name"] == "distilled student, last-to-first")
    assert l2f["y"] == [r["last_to_first"] for r in rep["rows"]]  # the plot draws the report's numbers


def test_values_from_a_link_are_shown_as_literal_text_not_markdown(tiny):
    from boomerang.ui.present import literal

    at = app(tiny, order="[text](https://example.com)", seq_len="![x](https://example.com/p.png)")
    shown = [w.value for w in at.warning]
    link = next(v for v in shown if "order" in v)
    image = next(v for v in shown if "seq_len" in v)
    # A run GFM would link even when escaped is a code span, shown verbatim; the rest is escaped.
    assert link.startswith("Ignored `?order='[text](https://example.com)':` not one of last\\-to\\-first")
    assert image.startswith("Ignored `?seq_len='![x](https://example.com/p.png)':` not a whole number")
    assert literal("a [b](c) d") == "a \\[b\\]\\(c\\) d" and literal("plain words") == "plain words"
    assert literal("see x`y@z") == "see ``x`y@z``"  # a fence longer than the backticks inside


def test_a_refused_evaluation_data_value_is_warned_about_outside_the_collapsed_expander(tiny):
    at = app(tiny, seq_len="1,6", blocks="0")
    sidebar_warnings = [read(w) for w in at.sidebar.warning]
    assert any("seq_len" in w for w in sidebar_warnings) and any("blocks" in w for w in sidebar_warnings)
    expander = next(e for e in at.sidebar.expander if "Evaluation data" in e.label)
    assert not [w for w in expander.warning]  # not hidden inside the collapsed section


@pytest.mark.skipif("not __import__('boomerang.zoo').zoo.demo_student_dirs()",
                    reason="the demo family is not on disk")
def test_students_distilled_at_each_size_are_points_on_the_demo_curves(tiny):
    """Interpolate and Compare orders draw the demo's same-size students at 8..11 layers, with the
    perplexity a direct forward of each (composed from the teacher) gives on the page's blocks."""
    import math

    import torch

    from boomerang import ui as dash
    from boomerang.core.delta import apply_delta
    from boomerang.zoo import load_pair, same_size_deltas

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(pair="demo", blocks="4", seq_len="64")
    at.run()
    ok(at)
    (fig,) = live_figures(at)
    points = next(t for t in fig["data"] if t["name"] == "distilled at this size")
    assert points["mode"] == "markers" and points["x"] == [8, 9, 10, 11]
    pair = load_pair("demo")
    blocks = dash.load_eval_blocks(pair, "demo", 64, 4, "validation")
    want = []
    for d in same_size_deltas().values():
        student, _ = apply_delta(pair.teacher, d)
        with torch.inference_mode():
            logits = student(blocks).logits
        want.append(math.exp(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), blocks[:, 1:].flatten()).item()))
    assert points["y"] == pytest.approx(want, rel=1e-4)
    assert any("students distilled directly at 8, 9, 10, 11 layers" in c.value for c in at.caption)

    at.switch_page("app_pages/compare.py").run()
    ok(at)
    table = at.dataframe[0].value
    same = table[table.order == "distilled at this size"]
    assert list(same.layers) == [8, 9, 10, 11] and list(same.perplexity) == pytest.approx(want, rel=1e-4)


def _wait_for(at: AppTest, found, rounds: int = 120) -> None:
    """Rerun the page until ``found(at)`` (a result computed in the background has arrived)."""
    import time

    for _ in range(rounds):
        if found(at):
            return
        time.sleep(0.5)
        at.run()
        ok(at)
    raise AssertionError("the background result never arrived")


def test_interpolate_shows_accuracy_beside_perplexity_computed_in_the_background(tiny):
    """?acc=demo_cloze: the page first shows its perplexity and a progress bar, then the accuracy at
    the chosen size (lm-eval's own score of that model) and the accuracy curve with its intervals."""
    import boomerang as bm
    from boomerang.zoo import load_pair

    at = app(tiny, acc="demo_cloze", k="2")
    assert "Perplexity" in metrics(at)

    def has_acc(a: AppTest) -> bool:
        return "Accuracy: demo_cloze" in metrics(a)

    _wait_for(at, has_acc)
    pair = load_pair(student=tiny[0])
    model = pair.build(patched=pair.sequential("last-to-first", 2))
    want = bm.eval.accuracy(model, pair.tokenizer, ["demo_cloze"], limit=100)["demo_cloze"]
    assert metrics(at)["Accuracy: demo_cloze"] == f"{100 * want:.0f}%"
    figs = live_figures(at)
    assert len(figs) == 2
    acc_fig = figs[1]
    curve = next(t for t in acc_fig["data"] if t["name"] == "last-to-first")
    assert curve["y"][2] == pytest.approx(want) and "error_y" in curve
    assert acc_fig["layout"]["yaxis"]["title"]["text"] == "demo_cloze accuracy"


def test_curves_can_be_drawn_against_measured_latency(tiny):
    """x=latency: the curve's points sit at the latency the page reports for each size, timed at the
    chosen batch, and the axis says so."""
    at = app(tiny, x="latency", k="1")
    (fig,) = live_figures(at)
    assert fig["layout"]["xaxis"]["title"]["text"] == "latency (ms per token, measured), batch 1"
    star = next(t for t in fig["data"] if t["name"] == "current")
    assert metrics(at)["Latency"] == f"{star['x'][0]:,.1f} ms"
    at.segmented_control(key="x_batch").set_value(8).run()
    ok(at)
    (fig,) = live_figures(at)
    assert fig["layout"]["xaxis"]["title"]["text"].endswith("batch 8")
    assert any("batch 8" in c.value for c in at.caption)


def test_layer_picker_and_compare_draw_accuracy_and_latency(tiny):
    """Layer picker: the pick's accuracy (lm-eval's score of that model) and both sequential
    orders' accuracy curves arrive from the background; Compare orders draws against latency."""
    import boomerang as bm
    from boomerang.zoo import load_pair

    at = app(tiny, page="layers", acc="demo_cloze", patched="1,3")  # the choice made on Interpolate is kept

    def arrived(a: AppTest) -> bool:
        figs = live_figures(a)  # strip, curve, accuracy
        return "Accuracy: demo_cloze" in metrics(a) and len(figs) == 3 and \
            {"last-to-first", "first-to-last"} <= {t["name"] for t in figs[2]["data"]}

    _wait_for(at, arrived)
    pair = load_pair(student=tiny[0])
    want = bm.eval.accuracy(pair.build(patched=[1, 3]), pair.tokenizer, ["demo_cloze"], limit=100)["demo_cloze"]
    assert metrics(at)["Accuracy: demo_cloze"] == f"{100 * want:.0f}%"
    acc_fig = live_figures(at)[2]
    assert "your pick" in {t["name"] for t in acc_fig["data"]}
    pick = next(t for t in acc_fig["data"] if t["name"] == "your pick")
    assert pick["y"] == [pytest.approx(want)] and pick["x"] == [pair.mapping.patched_layers({1, 3})]

    at = app(tiny, page="compare", compare_x="latency")
    (fig,) = at.get("plotly_chart")
    layout = json.loads(fig.proto.spec)["layout"]
    assert layout["xaxis"]["title"]["text"] == "latency (ms per token, measured), batch 1"


def test_the_page_and_the_cli_measure_the_same_text_through_one_eval_config(tiny, tmp_path):
    """The sidebar's evaluation data and `sweep`'s flags are one dataclass (EvalConfig): the same
    settings give the page's student perplexity and the CLI's, to the digit shown."""
    import argparse
    import csv
    import dataclasses

    from boomerang.cli import main
    from boomerang.eval import EvalConfig

    at = app(tiny, k="0")
    shown = metrics(at)["Perplexity"]
    out = tmp_path / "r.csv"
    assert main(["sweep", "--student", tiny[0], "--data", tiny[1], "--seq-len", "32", "--max-blocks", "4",
                 "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert shown == f"{float(row['perplexity']):,.2f}"
    # Every field has its flag, with the field's default.
    p = argparse.ArgumentParser()
    EvalConfig.add_cli_arguments(p)
    assert EvalConfig.from_cli_args(p.parse_args([])) == EvalConfig()
    flags = {a.dest: a for a in p._actions}
    assert {f.name for f in dataclasses.fields(EvalConfig)} <= set(flags)
    assert flags["blocks"].option_strings == ["--max-blocks"] and flags["split"].choices == ("train", "validation",
                                                                                              "test", "all")
