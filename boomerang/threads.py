"""How many CPU threads torch uses: one rule for the dashboard, the command line and training runs.

torch's own default is one thread per core. On a machine shared with other work (a dashboard
beside a training run, a laptop, a busy CI machine), a small model then gets *much* slower than
with fewer threads: OpenMP workers spin waiting for cores that are busy elsewhere (a forward was
measured 6x slower on a loaded 2-core machine). So boomerang uses one thread per two cores (at
least one), or ``$BOOMERANG_THREADS``, or what a command or config asks for.
"""

from __future__ import annotations

import os

import torch

from .errors import BoomerangError

ENV = "BOOMERANG_THREADS"


def default_threads() -> int:
    """``$BOOMERANG_THREADS`` when set, else one thread per two cores (at least one)."""
    env = os.environ.get(ENV)
    if env is not None and env.strip():
        if not (env.strip().isdigit() and int(env) > 0):
            raise BoomerangError(f"{ENV} must be a whole number of threads of at least 1, not {env!r}.")
        return int(env)
    return max(1, (os.cpu_count() or 2) // 2)


def configure_threads(n: int | None = None) -> int:
    """Set torch's CPU threads to ``n`` (None: :func:`default_threads`) and return the number."""
    n = default_threads() if n is None else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
