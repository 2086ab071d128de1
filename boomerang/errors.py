"""Errors a user can act on.

Everything the backend raises because of bad input (a missing path, an incompatible pair, a
layer index out of range, an unreadable file) is a :class:`BoomerangError` carrying one clear
sentence: what is wrong and what to do. The CLI prints that sentence and exits non-zero; the
dashboard shows it with ``st.error``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BoomerangError(Exception):
    """Bad input described in one sentence a user can act on."""


class UnsupportedArchitectureError(BoomerangError):
    """The model's structure could not be mapped onto embeddings / layers / norm / head."""


class IncompatiblePairError(BoomerangError):
    """A teacher and a student that cannot be combined."""


class CheckpointError(BoomerangError):
    """A model directory or weight file that is missing, corrupt or truncated."""


class DataError(BoomerangError):
    """Text data that cannot be used (missing, empty, not UTF-8, too short)."""
