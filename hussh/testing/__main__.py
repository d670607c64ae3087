"""``python -m hussh.testing up N | hosts | down | image``: see :mod:`hussh.testing.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m hussh.testing"))
