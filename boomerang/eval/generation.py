"""Text from a model, and how fast it comes: generation, streaming, per-token latency.

:func:`generate_text` continues a prompt with ``model.generate`` (greedy or sampled, KV cache);
:func:`stream_generate` yields the text as it comes, for a UI; :func:`latency_ms_per_token`
times greedy decoding with the KV cache, batch 1, as the median of several runs (one run on a
shared CPU is noisy).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from transformers import PreTrainedModel, TextIteratorStreamer

from ..errors import BoomerangError
from .perplexity import model_device


@torch.inference_mode()
def generate_text(
    model: PreTrainedModel,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    streamer: Any = None,
) -> str:
    """Continue ``prompt`` with ``model.generate``; greedy when ``temperature`` is 0.

    ``streamer`` (e.g. a ``transformers.TextIteratorStreamer``) receives tokens as they come.
    Returns the new text only.
    """
    if tokenizer is None:
        raise BoomerangError("Generation needs a tokenizer; this pair has none.")
    if max_new_tokens < 1:
        raise BoomerangError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
    if temperature < 0:
        raise BoomerangError(f"temperature must be 0 (greedy) or positive, not {temperature}.")
    enc = tokenizer(prompt, return_tensors="pt")
    ids = enc["input_ids"]
    if ids.size(1) == 0:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[bos]])
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    device = model_device(model)
    kwargs: dict[str, Any] = dict(
        input_ids=ids.to(device),
        attention_mask=enc["attention_mask"].to(device),
        max_new_tokens=max_new_tokens,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**kwargs)  # [1, prompt + new]
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, ids.size(1):], skip_special_tokens=True)


def stream_generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 60,
                    temperature: float = 0.8) -> Iterator[str]:
    """Generate from ``model`` in a thread and yield the text as it comes (for ``st.write_stream``)."""
    if tokenizer is None:
        raise BoomerangError("This pair has no tokenizer, so it cannot generate text.")
    if not prompt.strip():
        raise BoomerangError("Type a prompt first.")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens,
                          temperature=temperature, streamer=streamer)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield from streamer
    th.join()
    if errors:
        e = errors[0]
        if isinstance(e, BoomerangError):
            raise e
        raise BoomerangError(f"Generation failed: {type(e).__name__}: {e}".split("\n")[0])


@torch.inference_mode()
def latency_ms_per_token(model: Any, new_tokens: int = 16, prompt_len: int = 8, repeats: int = 3,
                         batch: int = 1) -> float:
    """Milliseconds per generated token of each sequence (greedy, KV cache) while decoding
    ``batch`` sequences at once: one decoding step's time, the median of ``repeats`` runs."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BoomerangError(f"The latency batch must be a whole number of at least 1, not {batch!r}.")
    device = model_device(model)
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    ids = torch.arange(prompt_len, device=device).remainder(vocab).unsqueeze(0).expand(batch, -1).contiguous()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens - 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        runs.append((time.perf_counter() - t0) * 1000 / new_tokens)
    return statistics.median(runs)
