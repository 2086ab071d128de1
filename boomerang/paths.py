"""Where boomerang reads and writes: its cache, the runs folder, and the bundled demo assets.

Every other module asks here instead of building paths from ``__file__``, so an installed
package (``pip install .``) finds its demo and writes runs where the user works, not into
site-packages.

* ``cache_dir()``: recomputable things (tokenized text, sweep results, converted weights):
  ``$BOOMERANG_CACHE`` or ``~/.cache/boomerang``.
* ``runs_dir()``: what the user makes (trained students, exports, run logs): ``$BOOMERANG_RUNS``
  or ``./runs`` under the current folder.
* ``demo_assets_dir()``: the bundled demo family, shipped as package data.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The package's own folder (package data lives below it).
PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Root of boomerang's on-disk caches (``$BOOMERANG_CACHE`` or ``~/.cache/boomerang``)."""
    return Path(os.environ.get("BOOMERANG_CACHE", Path.home() / ".cache" / "boomerang")).expanduser()


def runs_dir() -> Path:
    """Where runs and exports go: ``$BOOMERANG_RUNS`` or ``runs/`` under the current folder."""
    return Path(os.environ.get("BOOMERANG_RUNS", "runs")).expanduser().absolute()


def demo_assets_dir() -> Path:
    """The bundled demo family (teacher, students, tokenizer, model card): package data."""
    return PACKAGE_DIR / "assets" / "demo"
