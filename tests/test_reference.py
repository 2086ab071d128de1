"""boomerang.build_intermediate_model against the reference code's algorithm, at every r.

The oracle below is written from the reference's description and shares no code with boomerang:
it loads both checkpoints with transformers, deep-copies the teacher, deletes the pruned layers,
loads the student's weights into it (strict), finds the cut from the gaps in
``copied_teacher_layers`` with the reference's loops, splices deep copies of teacher layers in,
swaps the embedding (first-k) or the final norm, rotary embedding and head (last-k) by their
transformers names, and renumbers ``layer_idx`` by hand.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from tiny import VOCAB, perturb, tiny_model, tokens
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import boomerang as bm
from boomerang.reference import ReferencePlan, multi_layer_blocks, reference_plan, size_table

# ---- the oracle -----------------------------------------------------------------------------


def _oracle_cutoffs(kept: list[int], r: int, from_last: bool) -> tuple[int, int]:
    """(student index, teacher index) of the cut, as the reference computes them."""
    students, teachers = [], []
    if not from_last:
        for i in range(len(kept) - 1):
            if kept[i + 1] - kept[i] > 1:
                students.append(i)
                teachers.append(kept[i])
        if r >= len(students):
            return len(kept), kept[-1] + 1
        return students[r], teachers[r]
    for i in range(1, len(kept)):
        if kept[i] - kept[i - 1] > 1:
            students.append(i)
            teachers.append(kept[i])
    if r + 1 > len(students):
        return 0, 0
    return students[-(r + 1)], teachers[-(r + 1)]


def _renumber(model, base_name: str):
    layers = getattr(model, base_name).layers
    model.config.num_hidden_layers = len(layers)
    for i, block in enumerate(layers):
        for m in block.modules():
            m.layer_idx = i
    return model


def oracle(teacher_dir, student_dir, r: int, first: bool):
    """The reference's intermediate model, by deep copy and splice."""
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    meta = json.loads((student_dir / "student_config.json").read_text())
    kept, pruned = meta["copied_teacher_layers"], meta["pruned_teacher_layers"]
    pythia = hasattr(teacher, "gpt_neox")
    base_name = "gpt_neox" if pythia else "model"
    s_idx, t_idx = _oracle_cutoffs(kept, r, from_last=not first)
    n_s = student.config.num_hidden_layers
    if (first and s_idx == n_s) or (not first and s_idx == 0):
        return teacher
    model = copy.deepcopy(teacher)
    for t in sorted(pruned, reverse=True):
        del getattr(model, base_name).layers[t]
    _renumber(model, base_name)
    model.load_state_dict(student.state_dict(), strict=True)
    base, t_base = getattr(model, base_name), getattr(teacher, base_name)
    n_t = teacher.config.num_hidden_layers
    if first:
        front = [copy.deepcopy(t_base.layers[i]) for i in range(t_idx)]
        base.layers = torch.nn.ModuleList(front + list(base.layers[s_idx:]))
        if pythia:
            base.embed_in = copy.deepcopy(t_base.embed_in)
            base.emb_dropout = copy.deepcopy(t_base.emb_dropout)
        else:
            base.embed_tokens = copy.deepcopy(t_base.embed_tokens)
    else:
        back = [copy.deepcopy(t_base.layers[i]) for i in range(t_idx, n_t)]
        base.layers = torch.nn.ModuleList(list(base.layers[:s_idx]) + back)
        if pythia:
            base.final_layer_norm = copy.deepcopy(t_base.final_layer_norm)
            head = "embed_out" if hasattr(teacher, "embed_out") else "lm_head"  # transformers 5 renamed it
            setattr(model, head, copy.deepcopy(getattr(teacher, head)))
        else:
            base.norm = copy.deepcopy(t_base.norm)
            base.rotary_emb = copy.deepcopy(t_base.rotary_emb)
            model.lm_head = copy.deepcopy(teacher.lm_head)
    return _renumber(model, base_name)


# ---- tiny pairs on disk ---------------------------------------------------------------------


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with the tiny models' vocabulary (ids 0-2 special)."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def tiny_teacher(family: str, num_layers: int, **overrides):
    """A tiny random model of ``family`` whose config gets ``overrides`` before it is built."""
    if not overrides:
        return tiny_model(family, num_layers)
    config = tiny_model(family, 1).config
    for key, value in {**overrides, "num_hidden_layers": num_layers}.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return type(tiny_model(family, 1))(config).eval()


def save_tiny_pair(root, family: str, num_layers: int, rule, **overrides):
    """A tiny teacher (with a tokenizer) and a perturbed student saved under ``root``.

    ``rule`` is ``from_rule``'s ``(keep_first, every, keep_last)`` or a ready LayerMapping.
    """
    teacher = tiny_teacher(family, num_layers, **overrides)
    mapping = rule if isinstance(rule, bm.LayerMapping) else bm.LayerMapping.from_rule(num_layers, *rule)
    student = bm.init_student(teacher, mapping).eval()
    perturb(student, scale=0.05)
    t_dir, s_dir = root / "teacher", root / "student"
    teacher.save_pretrained(t_dir)
    tiny_tokenizer().save_pretrained(t_dir)
    bm.save_student(student, mapping, s_dir)
    return t_dir, s_dir, mapping


# (family, teacher layers, our rule (keep_first, every, keep_last), config overrides)
CASES = {
    # Qwen3 base models use full attention in every layer (the reference's splicing keeps the
    # teacher's per-layer attention types by position, which only full attention survives).
    "qwen3": ("qwen3", 8, (0, 2, 2), dict(use_sliding_window=False, sliding_window=None,
                                          layer_types=["full_attention"] * 8)),
    "llama-keep-first": ("llama", 9, (1, 2, 2), {}),  # tied embeddings, a keep-first student
    "pythia": ("gpt_neox", 8, (0, 2, 2), {}),
    # The reference's own rule with a leftover: four one-to-one layers at the top.
    "llama-reference-leftover": ("llama", 10, bm.LayerMapping.from_reference_rule(10, 1, 3, 2), {}),
    # No rule makes these: a one-to-one layer between blocks, and a last layer that is a block
    # (which the reference's gap search cannot see).
    "pythia-interior": ("gpt_neox", 8, bm.LayerMapping.from_kept([0, 2, 3, 5, 6], 8), {}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
    family, n, rule, overrides = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    return save_tiny_pair(root, family, n, rule, **overrides)


@pytest.mark.parametrize("first", [False, True], ids=["last-to-first", "first-to-last"])
def test_equal_logits_to_the_reference_at_every_r(saved, first):
    t_dir, s_dir, mapping = saved
    ids = tokens(2, 10)
    top = len(multi_layer_blocks(mapping))
    assert top >= 2
    layers_seen = []
    for r in range(top + 2):  # one past the teacher: the reference returns the teacher there too
        model, tok = bm.build_intermediate_model(t_dir, s_dir, r, patch_first_k_layers=first,
                                                 dtype=torch.float32, device="cpu")
        expected = oracle(t_dir, s_dir, r, first)
        assert model.config.num_hidden_layers == expected.config.num_hidden_layers
        layers_seen.append(model.config.num_hidden_layers)
        with torch.no_grad():
            got, want = model(ids).logits, expected(ids).logits
        assert (got - want).abs().max().item() <= 1e-5, (r, first)
        model.tie_weights()  # lm-eval's HFLM calls this: a model with mixed ends must not re-tie
        with torch.no_grad():
            assert torch.equal(model(ids).logits, got), (r, first)
        assert tok.padding_side == "left" and tok.pad_token == "</s>"
    # The sizes grow from the student (or more) to the teacher, reached at r = top.
    assert layers_seen[-1] == layers_seen[-2] == mapping.num_teacher_layers
    assert layers_seen == sorted(layers_seen) and layers_seen[top - 1] < mapping.num_teacher_layers


def test_r_maps_to_k_as_documented():
    # Qwen3-4B-Base -> boomerang-qwen3-2.3B: 36 layers, every other one kept plus the last two.
    qwen = bm.LayerMapping.from_reference_rule(36, first_layers_to_keep=1, every=2, last_layers_to_keep=2)
    assert qwen.num_student_layers == 19
    rows = size_table(qwen)
    assert [row["k"] for row in rows] == [r + 2 for r in range(17)] + [19]
    assert [row["layers"] for row in rows] == [19 + r for r in range(18)]  # 19 .. 36
    first = size_table(qwen, patch_first_k_layers=True)
    assert [row["k"] for row in first] == list(range(17)) + [19]
    assert reference_plan(qwen, 0, True).teacher_embedding  # the one difference
    assert not reference_plan(qwen, 1, True).teacher_embedding
    # Llama-3.2-3B -> boomerang-llama-3.2-1.9B: first two layers kept, then every other one.
    llama = bm.LayerMapping.from_reference_rule(28, first_layers_to_keep=2, every=2, last_layers_to_keep=1)
    assert llama.num_student_layers == 15
    assert [row["k"] for row in size_table(llama, True)] == [r + 1 for r in range(13)] + [15]
    assert not reference_plan(llama, 0, True).teacher_embedding


def test_first_k_r0_swaps_only_the_embedding(saved):
    t_dir, s_dir, mapping = saved
    if mapping.blocks[0] == (0,):  # a keep-first student: r = 0 patches its first layer
        assert reference_plan(mapping, 0, True) == ReferencePlan(frozenset({0}), False)
        return
    pair = bm.load_pair(teacher=t_dir, student=s_dir, device="cpu", dtype=torch.float32)
    model, _ = bm.build_intermediate_model(t_dir, s_dir, 0, True, torch.float32, device="cpu")
    ids = tokens(1, 8)
    with torch.no_grad():
        got = model(ids).logits
        student = pair.student(ids).logits
    assert model.config.num_hidden_layers == mapping.num_student_layers
    assert (got - student).abs().max().item() > 1e-3  # not the student: the embedding differs
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb, pair.teacher.get_input_embeddings().weight)
    assert torch.equal(model.get_output_embeddings().weight, pair.student.get_output_embeddings().weight)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_r_is_one_sentence(bad):
    m = bm.LayerMapping.from_rule(8, 0, 2, 2)
    with pytest.raises(bm.BoomerangError, match=r"^num_layers_to_patch must be a whole number >= 0, not .+\.$"):
        reference_plan(m, bad)


# ---- the reference's layer rule -------------------------------------------------------------

# (teacher layers, (first_layers_to_keep, every, last_layers_to_keep), reference kept layers,
#  our rule's kept layers with keep_first = first_layers_to_keep - 1)
RULE_TABLE = [
    (10, (1, 3, 2), [0, 3, 6, 7, 8, 9], [0, 3, 6, 8, 9]),   # leftover of 2: the rules differ
    (11, (1, 3, 2), [0, 3, 6, 9, 10], [0, 3, 6, 9, 10]),    # the middle divides: they agree
    (12, (1, 4, 1), [0, 4, 8, 9, 10, 11], [0, 4, 8, 11]),    # leftover of 3
    (10, (2, 2, 2), [0, 1, 3, 5, 7, 8, 9], [0, 1, 3, 5, 7, 8, 9]),  # every = 2, leftover 1: agree
    (36, (1, 2, 2), list(range(0, 35, 2)) + [35], list(range(0, 35, 2)) + [35]),  # Qwen3-4B
    (32, (1, 2, 2), list(range(0, 31, 2)) + [31], list(range(0, 31, 2)) + [31]),  # Pythia-2.8B
    (28, (2, 2, 1), [0, 1] + list(range(3, 26, 2)) + [27], [0, 1] + list(range(3, 26, 2)) + [27]),
    (6, (1, 1, 0), list(range(6)), list(range(6))),
]


@pytest.mark.parametrize("n, rule, ref_kept, our_kept", RULE_TABLE)
def test_reference_rule_table(n, rule, ref_kept, our_kept):
    f, every, last = rule
    ref = bm.LayerMapping.from_reference_rule(n, f, every, last)
    ours = bm.LayerMapping.from_rule(n, keep_first=f - 1, every=every, keep_last=last)
    assert ref.kept == ref_kept
    assert ours.kept == our_kept
    # every=2 with a leftover layer: different kept lists can still mean the same blocks
    if every <= 2:
        assert ref.blocks == ours.blocks


def test_reference_rule_ten_layers_blocks():
    ref = bm.LayerMapping.from_reference_rule(10, first_layers_to_keep=1, every=3, last_layers_to_keep=2)
    assert ref.blocks == ((0, 1, 2), (3, 4, 5), (6,), (7,), (8,), (9,))
    assert ref.pruned == [1, 2, 4, 5]


@pytest.mark.parametrize("args, message", [
    ((10, 0, 2, 2), "first_layers_to_keep=0 (which counts the embedding, so at least 1)"),
    ((10, 1, 0, 2), "'every' must be at least 1, not 0."),
    ((4, 3, 2, 3), "must leave the teacher's 4 layers room."),
])
def test_reference_rule_bad_input(args, message):
    with pytest.raises(bm.BoomerangError, match=re.escape(message)):
        bm.LayerMapping.from_reference_rule(*args)


def test_dtype_by_name_as_the_reference_cli_spells_it(saved):
    t_dir, s_dir, mapping = saved
    model, _ = bm.build_intermediate_model(t_dir, s_dir, 1, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(bm.BoomerangError, match=r"^Unknown dtype 'bf16'; use one of float32, float16, bfloat16 or a torch dtype\.$"):
        bm.build_intermediate_model(t_dir, s_dir, 1, dtype="bf16", device="cpu")
