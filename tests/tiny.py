"""Tiny random causal LMs of every supported family, built from configs (nothing downloads)."""

from __future__ import annotations

import torch
import transformers as tf

VOCAB = 96

# family -> (config class, model class, config kwargs). Hidden sizes 32-64, 6-8 layers.
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128)
FAMILIES: dict[str, tuple[type, type, dict]] = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, dict(_COMMON, tie_word_embeddings=True)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, dict(_COMMON)),
    # Qwen3 with sliding-window layers, so per-layer `layer_types` must be carried along.
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM,
              dict(_COMMON, head_dim=8, use_sliding_window=True, sliding_window=4, max_window_layers=3,
                   tie_word_embeddings=True)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, dict(_COMMON, sliding_window=6)),
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM,
                 dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      max_position_embeddings=128, rotary_pct=0.25)),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel,
             dict(vocab_size=VOCAB, n_embd=32, n_head=4, n_positions=128, resid_pdrop=0.0,
                  embd_pdrop=0.0, attn_pdrop=0.0)),
    "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, dict(_COMMON)),
    "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM,
                    dict(_COMMON, head_dim=8, sliding_window=4, sliding_window_pattern=3,
                         query_pre_attn_scalar=8)),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, dict(_COMMON)),
}


def tiny_model(family: str, num_layers: int = 8, seed: int = 0) -> tf.PreTrainedModel:
    """A randomly initialised model of ``family`` with ``num_layers`` decoder layers (eval mode)."""
    config_cls, model_cls, kwargs = FAMILIES[family]
    key = "n_layer" if family == "gpt2" else "num_hidden_layers"
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = config_cls(**{**ids, **kwargs, key: num_layers})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return model_cls(config).eval()


def perturb(model: torch.nn.Module, scale: float = 0.02, seed: int = 1) -> None:
    """Nudge every parameter so a student differs from its teacher (stands in for training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.LongTensor:
    """Random token ids [batch, length]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)
