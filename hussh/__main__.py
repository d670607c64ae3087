"""``python -m hussh``: the command line (see ``hussh.cli``)."""

from .cli import main

raise SystemExit(main())
