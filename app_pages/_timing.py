"""Server-side timing of page fragments, for ``bench/bench_dashboard.py`` (off unless asked).

``with timed("name"):`` appends the block's duration to ``$BOOMERANG_TIMING_LOG`` (JSON lines);
without the variable it costs nothing. The benchmark sets it to split a slider move into server
time and browser time.
"""

import json
import os
import time
from typing import Any


class timed:
    """Context manager: log the duration of its block under ``name`` when timing is on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = os.environ.get("BOOMERANG_TIMING_LOG")

    def __enter__(self) -> "timed":
        self.t0 = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.path:
            t1 = time.time()
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"name": self.name, "start": self.t0, "end": t1,
                                    "ms": round(1000 * (t1 - self.t0), 2)}) + "\n")
