"""``python -m boomerang``: the command line (see :mod:`boomerang.cli`)."""

import sys

from .cli import main

sys.exit(main())
