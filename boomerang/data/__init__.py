"""Text for training and evaluation: documents, deterministic splits, sources, token blocks.

``load_documents(source, split)`` gives texts; ``load_blocks(source, tokenizer, seq_len, split)``
gives them tokenized and packed into ``[n_blocks, seq_len]`` blocks. A source is ``"demo"``, a
local file or folder, or a hub dataset id.
"""

from .blocks import load_blocks, tokenizer_fingerprint
from .demo_corpus import demo_documents
from .documents import (
    SPLITS,
    Document,
    assign_splits,
    chunk_text,
    read_text_file,
    select_split,
)
from .sources import load_documents

__all__ = [
    "SPLITS", "Document", "assign_splits", "chunk_text", "demo_documents", "load_blocks",
    "load_documents", "read_text_file", "select_split", "tokenizer_fingerprint",
]
