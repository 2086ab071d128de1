"""The paper's evaluation preset: task lists, per-size JSON records, parameter counts, the
per-family default order, and one clear sentence when the task data is unreachable offline."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny import tiny_pair, tiny_tokenizer

import boomerang as bm
from boomerang.eval.paper import (
    PRESETS,
    default_order,
    evaluate_sizes,
    parameter_counts,
    preset_tasks,
)

REFERENCE_TASKS = ("arc_easy,arc_challenge,boolq,hellaswag,openbookqa,piqa,winogrande,race,mmlu,rte,"
                   "wikitext,gsm8k_cot,ifeval,hendrycks_math")


def test_presets_are_the_papers_tasks():
    assert preset_tasks("paper") == REFERENCE_TASKS.split(",")
    assert len(PRESETS["paper-classification"]) == 10
    assert preset_tasks("paper-perplexity,demo_cloze,wikitext") == ["wikitext", "demo_cloze"]
    with pytest.raises(bm.BoomerangError, match="^Give a task preset"):
        preset_tasks(" , ")


def test_default_order_per_family():
    assert default_order(tiny_pair("llama")) == "first-to-last"
    assert default_order(tiny_pair("qwen2")) == "last-to-first"
    assert default_order(tiny_pair("gpt2")) == "last-to-first"


def test_parameter_counts_with_and_without_a_shared_embedding():
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", vocab_size=64, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, tie_word_embeddings=True)
    tied = AutoModelForCausalLM.from_config(cfg)
    counts = parameter_counts(tied)
    per_layer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32  # q, k, v, o; gate, up, down; two norms
    assert counts == {"with_embedding": 64 * 32 + 2 * per_layer + 32,
                      "without_embedding": 2 * per_layer + 32, "embedding": 64 * 32,
                      "embedding_shared_with_head": True}
    pair = tiny_pair("qwen2", vocab=64)  # untied: the head stays in "without"
    c = parameter_counts(pair.student)
    assert not c["embedding_shared_with_head"]
    assert c["with_embedding"] - c["without_embedding"] == c["embedding"] == 64 * 32


def test_per_size_json_records(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    pair.tokenizer = tok
    seen = []
    paths = evaluate_sizes(pair, tmp_path / "out", tasks=["demo_cloze"], sizes=[0, 3], limit=6,
                           batch_size=4, progress=lambda u: seen.append((u.done, u.total)))
    assert [p.name for p in paths] == ["first-to-last-k0.json", "first-to-last-k3.json"]
    assert seen == [(1, 2), (2, 2)]
    recs = [json.loads(p.read_text()) for p in paths]
    assert [r["num_layers"] for r in recs] == [3, 4] and recs[1]["patched"] == [0, 1, 2]
    r = recs[0]
    assert r["order"] == "first-to-last" and r["limit"] == 6 and r["tasks"] == ["demo_cloze"]
    assert r["seeds"] == {"random": 0, "numpy": 1234, "torch": 1234, "fewshot": 1234}
    assert r["packages"]["torch"] == torch.__version__
    assert r["packages"]["lm_eval"] == "0.4.13" and r["packages"]["transformers"] == "5.23.0"
    assert r["task_versions"] == {"demo_cloze": 1.0} and r["n-shot"] == {"demo_cloze": 0}
    res = r["results"]["demo_cloze"]
    assert 0.0 <= res["acc,none"] <= 1.0
    assert isinstance(res["acc_stderr,none"], float) and res["acc_stderr,none"] > 0
    assert r["n-samples"]["demo_cloze"]["effective"] == 6
    assert r["parameters"]["with_embedding"] == pair.build(patched=[]).num_parameters()
    # Reusing the loaded tasks across sizes changes nothing: k=0 alone gives the same record.
    again = evaluate_sizes(pair, tmp_path / "again", tasks="demo_cloze", order="first-to-last",
                           sizes=[0], limit=6)
    assert json.loads(again[0].read_text())["results"] == r["results"]


def test_bad_sizes_and_unknown_tasks(tmp_path):
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    pair.tokenizer = tok
    with pytest.raises(bm.BoomerangError, match=r"^Size k=9 is not a whole number from 0 to 3\.$"):
        evaluate_sizes(pair, tmp_path, tasks="demo_cloze", sizes=[0, 9])
    with pytest.raises(bm.BoomerangError, match=r"^Unknown lm-eval task\(s\) no_such_task; see"):
        evaluate_sizes(pair, tmp_path, tasks="demo_cloze,no_such_task", sizes=[0])
    assert not list(tmp_path.iterdir())


def test_offline_the_paper_preset_fails_naming_the_task(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache", raising=False)
    tok = tiny_tokenizer()
    pair = tiny_pair("llama", 4, vocab=len(tok))
    pair.tokenizer = tok
    with pytest.raises(bm.BoomerangError) as err:
        evaluate_sizes(pair, tmp_path / "out", tasks="paper", sizes=[0])
    msg = str(err.value)
    assert re.fullmatch(r"The data of lm-eval task 'arc_easy' is unreachable \(.*allenai/ai2_arc.*\); "
                        r"connect to the Hugging Face hub or fill the datasets cache, then run again\.", msg), msg
    assert not (tmp_path / "out").exists()  # nothing ran


def test_cli_paper_eval(tmp_path, monkeypatch, capsys):
    from tiny import saved_tiny_pair

    from boomerang.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t_dir, s_dir, _ = saved_tiny_pair(tmp_path / "pair", text="sentences", perturb=0.05)
    out = tmp_path / "res"
    code = main(["paper-eval", "--teacher", str(t_dir), "--student", str(s_dir), "--device", "cpu",
                 "--tasks", "demo_cloze", "--k", "0,4", "--limit", "3", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["first-to-last-k0.json", "first-to-last-k4.json"]
    assert json.loads((out / "first-to-last-k4.json").read_text())["num_layers"] == 6
    assert "wrote 2 result files" in capsys.readouterr().out
    code = main(["paper-eval", "--teacher", str(t_dir), "--student", str(s_dir), "--device", "cpu",
                 "--tasks", "demo_cloze", "--order", "last-to-first", "--k", "7", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: Size k=7 is not a whole number from 0 to 4."


def test_a_task_whose_package_is_missing_is_named(monkeypatch):
    from boomerang.eval import paper

    class Manager:
        all_tasks = ("ifeval",)

        def load(self, names):
            raise ModuleNotFoundError("No module named 'langdetect'")

    monkeypatch.setattr(paper, "known_tasks", lambda tasks, hint: Manager())
    with pytest.raises(bm.BoomerangError, match=r"^lm-eval task 'ifeval' needs a package that is not installed "
                                                r"\(No module named 'langdetect'\); install it, then run again\.$"):
        paper.load_task_data(["ifeval"])
