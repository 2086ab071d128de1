"""What every page gets from the sidebar: the loaded pair, its evaluation text, the cache keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from boomerang import ui
from boomerang.core import BoomerangPair

FOLDERS = "folders"
DEFAULT_DATA = "demo"
SPLITS = ["validation", "test", "train"]
SEQ_LEN_RANGE = (16, 4096)
BLOCKS_RANGE = (1, 1024)


def sidebar_eval(data: str = DEFAULT_DATA, split: str = "validation", seq_len: int = 128,
                 blocks: int = 16) -> ui.EvalConfig:
    """The evaluation config the sidebar's fields make: the CLI's dataclass, with fewer blocks
    (the pages stay quick) and calibration on the train split of the same text, in blocks as
    long as the evaluation's."""
    return ui.EvalConfig(data=data, split=split, seq_len=seq_len, blocks=blocks, calib_data=data, calib_len=seq_len)


@dataclass
class Context:
    """What every page gets: the loaded pair, what it is measured on (``eval``) and the cache keys."""

    spec: ui.PairSpec | None = None
    pair: BoomerangPair | None = None
    device: str = "cpu"
    eval: ui.EvalConfig = field(default_factory=sidebar_eval)
    pair_key: str = ""
    error: str | None = None

    @property
    def data(self) -> str:
        return self.eval.data

    @property
    def split(self) -> str:
        return self.eval.split

    @property
    def seq_len(self) -> int:
        return self.eval.seq_len

    @property
    def data_key(self) -> str:
        return self.eval.key

    def key(self, kind: str, *parts: object, pair_key: str | None = None, on_text: bool = True) -> tuple:
        """The results cache's key of ``kind`` ("curve", "point", "same-size" ...) of this pair
        (or the pair of ``pair_key``) on this evaluation text (``on_text=False``: a result that
        does not read it, such as a latency or the pair's summary), with ``parts`` (order,
        metric ...): every page spells a result's key this way, so pages share what they computed."""
        return (kind, pair_key or self.pair_key, self.data_key if on_text else None, *parts)


def context() -> Context:
    """The context the sidebar built for this run; stops the page with a message if no pair."""
    ctx: Context = st.session_state.get("_ctx") or Context(error="No pair loaded.")
    if ctx.pair is None:
        st.info(ctx.error or "Choose a model pair in the sidebar.", icon=":material/info:")
        st.stop()
    return ctx
