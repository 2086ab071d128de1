"""A tiny pair on disk (teacher, student, tokenizer, text file) for the app and browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from boomerang.core import LayerMapping, init_student, save_student
from boomerang.data.demo_corpus import shakespeare_documents
from boomerang.recipes.demo import train_tokenizer


def build_tiny_pair(root: str | os.PathLike, num_layers: int = 6, hidden: int = 32,
                    vocab_size: int = 512, seed: int = 0) -> tuple[Path, Path, Path]:
    """A tiny random Llama teacher + its student + a text file, under ``root``.

    Returns ``(teacher_dir, student_dir, text_file)``. The tokenizer is a small byte-level BPE
    trained on a few Shakespeare plays (or on synthetic text when that package is missing).
    """
    root = Path(root)
    t_dir, s_dir, text_file = root / "teacher", root / "student", root / "text.txt"
    if (s_dir / "student_config.json").is_file() and text_file.is_file():
        return t_dir, s_dir, text_file
    try:
        texts = [d.text for d in shakespeare_documents()[:40]]
    except Exception:  # noqa: BLE001 - without the corpus packages: synthetic text
        words = "the king and queen of a far land went to see the sea with their old friend".split()
        g = torch.Generator().manual_seed(seed)
        texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (400,), generator=g))
                 for _ in range(60)]
    root.mkdir(parents=True, exist_ok=True)
    text_file.write_text("\n\n".join(texts), encoding="utf-8")
    tok = train_tokenizer(texts, root / "tokenizer", vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    teacher = LlamaForCausalLM(cfg).eval()
    teacher.save_pretrained(t_dir, safe_serialization=True)
    tok.save_pretrained(t_dir)
    mapping = LayerMapping.from_rule(num_layers, keep_first=0, every=2, keep_last=2)
    student = init_student(teacher, mapping)
    save_student(student, mapping, s_dir, tok, teacher=str(t_dir))
    return t_dir, s_dir, text_file

