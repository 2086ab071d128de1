"""Tiny random pairs for the evaluation, order and similarity tests (no downloads)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

import boomerang as bm

VOCAB = 64


def tiny_config(family: str = "llama", layers: int = 6, hidden: int = 32, vocab: int = VOCAB):
    """A tiny config of ``family`` (llama, qwen2, gpt2, gemma3_text)."""
    from transformers import AutoConfig

    common = dict(vocab_size=vocab, num_hidden_layers=layers, hidden_size=hidden,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * hidden,
                  max_position_embeddings=128)
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab, n_layer=layers, n_embd=hidden, n_head=4,
                                    n_positions=128)
    if family == "gemma3_text":
        return AutoConfig.for_model("gemma3_text", head_dim=8, sliding_window=4, **common)
    if family == "qwen2":
        return AutoConfig.for_model("qwen2", use_sliding_window=True, sliding_window=4,
                                    max_window_layers=2, **common)
    return AutoConfig.for_model(family, **common)


def tiny_pair(family: str = "llama", teacher_layers: int = 6, keep_last: int = 2, seed: int = 0,
              perturb: float = 0.05, vocab: int = VOCAB) -> bm.BoomerangPair:
    """A random teacher and a student initialised from it, its weights nudged so that the
    student is not exactly its teacher's kept layers (and orders have something to choose)."""
    torch.manual_seed(seed)
    teacher: PreTrainedModel = AutoModelForCausalLM.from_config(tiny_config(family, teacher_layers, vocab=vocab))
    teacher.eval()
    mapping = bm.LayerMapping.from_rule(teacher_layers, keep_first=0, every=2, keep_last=keep_last)
    student = bm.init_student(teacher, mapping)
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb * (p.std() if p.numel() > 1 else 1))
    student.eval()
    return bm.BoomerangPair(teacher, student, mapping)


def random_ids(n: int = 6, seq_len: int = 16, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    """``[n, seq_len]`` random token ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq_len), generator=g)


def tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE trained in milliseconds on a few sentences (EOS ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be: that is the question.",
            "In the beginning God created the heaven and the earth.", "Shares rose on takeover talk."] * 20
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", bos_token="<|endoftext|>")


def saved_tiny_pair(root, family: str = "llama", teacher_layers: int = 6):
    """Save a tiny teacher and student (with a tokenizer) under ``root``; return their folders
    and a small text file to read data from."""
    from pathlib import Path

    root = Path(root)
    tok = tiny_tokenizer()
    pair = tiny_pair(family, teacher_layers, vocab=len(tok))
    t_dir, s_dir = root / "teacher", root / "student"
    pair.teacher.save_pretrained(t_dir)
    tok.save_pretrained(t_dir)
    bm.save_student(pair.student, pair.mapping, s_dir, tok, teacher=str(t_dir))
    text = root / "text.txt"
    text.write_text("\n\n".join(
        f"Paragraph {i}: the quick brown fox jumps over the lazy dog, to be or not to be." for i in range(300)
    ))
    return t_dir, s_dir, text
