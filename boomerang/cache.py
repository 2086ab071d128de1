"""One in-memory cache for computed results: a thread-safe LRU keyed by content, not identity.

Keys are tuples of strings and numbers built from *fingerprints* (a hash of a pair's weights, of
the token blocks, of the settings), never from ``id(obj)``: an id is reused as soon as an object
is freed, so an id-keyed cache can hand one pair's results to another. Values are shared between
callers and treated as read-only. The on-disk sweep cache (:mod:`boomerang.eval.sweep`) keys its
files the same way.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


class Memo:
    """A thread-safe LRU of computed results (at most ``max_entries``)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._d: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: Hashable) -> Any | None:
        """The value stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        with self._lock:
            return len(self._d)

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` under ``key``, dropping the least recently used beyond the limit."""
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)
        return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value, or ``compute()`` stored under ``key``."""
        hit = self.get(key)
        if hit is not None:
            return hit
        return self.put(key, compute())

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._d.clear()


def tensor_fingerprint(t: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes."""
    t = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pair_fingerprint(pair: Any, samples_per_tensor: int = 512) -> str:
    """A content hash of a :class:`~boomerang.core.BoomerangPair`: its mapping, both configs and a
    strided sample of every weight.

    Stable across processes and machines for the same weights (unlike ``id`` or data pointers),
    cheap (a few hundred values per tensor), and it changes when training updates any tensor.
    It is remembered on the pair and recomputed only after an in-place change to a parameter
    (the tensors' version counters are part of the check).
    """
    versions = tuple(p._version for m in (pair.teacher, pair.student) for p in m.parameters())
    memo = pair.__dict__.get("_fingerprint")
    if memo is not None and memo[0] == (versions, samples_per_tensor):
        return memo[1]
    h = hashlib.sha256()
    h.update(json.dumps([list(b) for b in pair.mapping.blocks]).encode())
    for model in (pair.teacher, pair.student):
        h.update(model.config.to_json_string(use_diff=False).encode())
        for name, p in model.state_dict().items():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].float().cpu()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.numpy().tobytes())
    digest = h.hexdigest()
    pair.__dict__["_fingerprint"] = ((versions, samples_per_tensor), digest)
    return digest
