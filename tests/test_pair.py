"""The patching engine's invariants, on every supported family.

patch nothing == student; patch everything == teacher; any subset == the same model assembled
by hand; no parameter is copied; the shared teacher and student are never mutated; cached
generation == an independent deep copy's; threads; save/reload; lm-eval.
"""

from __future__ import annotations

import copy
import itertools
import threading

import pytest
import torch
from conftest import make_pair
from oracles import assemble_by_hand
from tiny import perturb, tiny_model, tokens
from transformers import AutoModelForCausalLM

import boomerang as bm
from boomerang.core import export_model, shares_storage
from boomerang.core.arch import find_parts
from boomerang.errors import (
    BoomerangError,
    IncompatiblePairError,
    UnsupportedArchitectureError,
)


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


def layer_idx_values(model):
    return [m.layer_idx for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)]


def test_student_is_initialised_from_kept_teacher_layers():
    teacher = tiny_model("qwen3")
    m = bm.LayerMapping.from_rule(8, 1, 2, 1)
    student = bm.init_student(teacher, m)
    parts = find_parts(teacher)
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == m.num_student_layers
    # Per-layer lists follow the kept layers (sliding-window layers keep their window).
    assert student.config.layer_types == [teacher.config.layer_types[k] for k in m.kept]
    for i, k in enumerate(m.kept):
        s_sd = parts.layer_list(student)[i].state_dict()
        t_sd = parts.layer_list(teacher)[k].state_dict()
        assert all(torch.equal(s_sd[key], t_sd[key]) for key in t_sd)
    # A copy, not a view: training the student must not touch the teacher.
    assert not (set(p.data_ptr() for p in student.parameters())
                & set(p.data_ptr() for p in teacher.parameters()))
    torch.manual_seed(0)
    rand = bm.init_student(teacher, m, random_init=True)
    assert not torch.equal(parts.layer_list(rand)[1].mlp.up_proj.weight,
                           parts.layer_list(teacher)[1].mlp.up_proj.weight)


def test_ends_are_exact(family_pair):
    pair, x = family_pair, tokens()
    n = pair.num_student_layers
    assert torch.equal(logits(pair.build(patched=[]), x), logits(pair.student, x))
    assert torch.equal(logits(pair.build(patched=range(n)), x), logits(pair.teacher, x))


def test_every_subset_equals_hand_assembly(family_pair):
    pair, x = family_pair, tokens()
    n = pair.num_student_layers
    for r in range(1, n):
        for patched in itertools.combinations(range(n), r):
            built = pair.build(patched=patched)
            assert built.config.num_hidden_layers == pair.mapping.patched_layers(patched)
            ref = assemble_by_hand(pair, patched)
            torch.testing.assert_close(logits(built, x), logits(ref, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_a_student_with_the_teacher_s_ends_takes_both_from_it(family, tmp_path):
    """Frozen ends (``--freeze head``): mixed builds take embeddings and head from the teacher."""
    teacher = tiny_model(family, 8)
    mapping = bm.LayerMapping.from_rule(8, 1, 2, 1)
    student = bm.init_student(teacher, mapping).eval()
    for layer in find_parts(student).layer_list(student):
        perturb(layer)
    pair, x, n = bm.BoomerangPair(teacher, student, mapping), tokens(), mapping.num_student_layers
    assert pair.ends_are_teachers()
    tied = teacher.get_output_embeddings().weight is teacher.get_input_embeddings().weight
    for patched in ([n - 1], [0], [0, 2]):
        built = pair.build(patched=patched)
        torch.testing.assert_close(logits(built, x), logits(assemble_by_hand(pair, patched), x), rtol=0, atol=1e-6)
        assert built.get_input_embeddings().weight is teacher.get_input_embeddings().weight
        assert built.get_output_embeddings().weight is teacher.get_output_embeddings().weight
        if tied:  # stays tied, so counted once: ends + the layers actually used
            layers = find_parts(built).layer_list(built)
            ends = teacher.num_parameters() - sum(p.numel() for p in find_parts(teacher).layer_list(teacher).parameters())
            assert built.num_parameters() == ends + sum(p.numel() for p in layers.parameters())
    assert torch.equal(logits(pair.build(patched=[]), x), logits(student, x))
    built = pair.build(patched=[n - 1])
    export_model(built, tmp_path / "mixed")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "mixed").eval()
    torch.testing.assert_close(logits(reloaded, x), logits(built, x), rtol=0, atol=1e-6)
    with torch.no_grad():  # an in-place change to the student's head is noticed
        find_parts(student).norm_module(student).weight.add_(0.1)
    assert not pair.ends_are_teachers()
    built = pair.build(patched=[n - 1])
    assert built.get_input_embeddings().weight is student.get_input_embeddings().weight


def test_build_is_zero_copy(family_pair):
    pair = family_pair
    before = [(p.data_ptr(), p.clone()) for p in itertools.chain(pair.teacher.parameters(),
                                                                 pair.student.parameters())]
    for patched in ([], [0], [1, 3], range(pair.num_student_layers)):
        built = pair.build(patched=patched)
        assert shares_storage(built, pair.teacher, pair.student)
        # Not just equal storage pointers: the very same Parameter objects.
        ids = {id(p) for p in itertools.chain(pair.teacher.parameters(), pair.student.parameters())}
        assert all(id(p) in ids for p in built.parameters())
    after = list(itertools.chain(pair.teacher.parameters(), pair.student.parameters()))
    assert all(p.data_ptr() == ptr and torch.equal(p, v) for (ptr, v), p in zip(before, after))


def test_build_never_mutates_shared_modules(family_pair):
    pair = family_pair
    t_idx, s_idx = layer_idx_values(pair.teacher), layer_idx_values(pair.student)
    t_cfg, s_cfg = pair.teacher.config.to_dict(), pair.student.config.to_dict()
    built = pair.build(patched=[1, 3])
    built.train()
    assert layer_idx_values(pair.teacher) == t_idx and layer_idx_values(pair.student) == s_idx
    assert pair.teacher.config.to_dict() == t_cfg and pair.student.config.to_dict() == s_cfg
    assert not pair.teacher.training and not pair.student.training
    # The built model's own layer indices run 0..L-1 (what the KV cache is keyed by).
    parts = pair.parts
    for p, layer in enumerate(parts.layer_list(built)):
        assert all(v == p for v in layer_idx_values(layer))


def test_cached_generation_equals_deep_copy(family_pair):
    pair = family_pair
    prompt = tokens(1, 5, seed=3)
    for patched in ([1, 3], [0, pair.num_student_layers - 1]):
        built = pair.build(patched=patched)
        ref = copy.deepcopy(assemble_by_hand(pair, patched))
        kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
        with torch.no_grad():
            out = built.generate(prompt, use_cache=True, **kw)
            assert torch.equal(out, ref.generate(prompt, use_cache=True, **kw))
            assert torch.equal(out, built.generate(prompt, use_cache=False, **kw))
            # Sampled continuations exercise more of the cache than a greedy loop on a random model.
            torch.manual_seed(5)
            a = built.generate(prompt, do_sample=True, max_new_tokens=10, pad_token_id=0)
            torch.manual_seed(5)
            b = ref.generate(prompt, do_sample=True, max_new_tokens=10, pad_token_id=0)
            assert torch.equal(a, b)


def test_two_built_models_in_two_threads(llama_pair):
    pair, x = llama_pair, tokens(2, 16)
    models = {p: pair.build(patched=p) for p in [(1,), (2, 3)]}
    expected = {p: logits(m, x) for p, m in models.items()}
    errors: list[str] = []

    def work(p):
        for _ in range(20):
            with torch.no_grad():
                out = models[p].generate(x[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
                if not torch.equal(logits(models[p], x), expected[p]) or out.shape[1] != 20:
                    errors.append(str(p))

    threads = [threading.Thread(target=work, args=(p,)) for p in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen3"])
def test_save_and_reload_gives_identical_logits(tmp_path, family):
    pair, x = make_pair(family), tokens()
    n = pair.num_student_layers
    for i, patched in enumerate(([], [0], [n - 1], [1, 2], range(n))):
        built = pair.build(patched=patched)
        out = export_model(built, tmp_path / f"m{i}")
        reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
        assert reloaded.config.num_hidden_layers == built.config.num_hidden_layers
        torch.testing.assert_close(logits(reloaded, x), logits(built, x), rtol=0, atol=0)
        if (0 in patched) != ((n - 1) in patched):
            # Embedding and head from different models: they must be saved untied.
            assert not reloaded.config.tie_word_embeddings or family == "gpt_neox"


def test_sequential_orders(llama_pair):
    pair = llama_pair
    n = pair.num_student_layers
    assert pair.build(order="last-to-first", k=2).boomerang_patched == (n - 2, n - 1)
    assert pair.build(order="first-to-last", k=2).boomerang_patched == (0, 1)
    assert pair.build(order="last-to-first", k=0).boomerang_patched == ()
    with pytest.raises(BoomerangError):
        pair.build(order="last-to-first", k=n + 1)
    with pytest.raises(BoomerangError):
        pair.build(order="sideways", k=1)
    with pytest.raises(BoomerangError, match="out of range"):
        pair.build(patched=[n])


def test_lm_eval_wraps_a_built_model(llama_pair):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(96)} | {"[UNK]": 95}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w2", pad_token="w0")
    built = llama_pair.build(patched=[1, 2])
    lm = HFLM(pretrained=built, tokenizer=tokenizer, batch_size=2)
    request = Instance("loglikelihood", doc={}, arguments=("w5 w6", " w7 w8"), idx=0)
    ((ll, _),) = lm.loglikelihood([request])
    ids = torch.tensor([[5, 6, 7, 8]])
    logp = torch.log_softmax(logits(built, ids)[0], -1)
    assert ll == pytest.approx((logp[1, 7] + logp[2, 8]).item(), abs=1e-4)


def test_incompatible_pairs_are_rejected():
    teacher = tiny_model("llama")
    m = bm.LayerMapping.from_rule(8, 1, 2, 1)
    student = bm.init_student(teacher, m)
    with pytest.raises(IncompatiblePairError, match="GPT2LMHeadModel"):
        bm.BoomerangPair(teacher, tiny_model("gpt2", 5), m)
    with pytest.raises(IncompatiblePairError, match="mapping"):
        bm.BoomerangPair(teacher, student, bm.LayerMapping.from_rule(8, 0, 2, 0))
    with pytest.raises(IncompatiblePairError, match="layers"):
        bm.init_student(tiny_model("llama", 6), m)


def test_unsupported_architecture_names_what_is_missing():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match="output head"):
        find_parts(bert)
