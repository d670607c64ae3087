"""The progress line the command line draws on a terminal's stderr: done/total, failures so far, rate, ETA.

Drawn with tqdm: one small pure-Python package with no dependencies of its own, ~10 ms to import
on top of hussh (rich.progress: ~20 ms and two more packages), imported only when a bar is drawn.
Its monitor thread is turned off, so the command stays single-threaded and workers are forked
directly, inheriting the logging set up for ``-v``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} hosts{postfix} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


class ProgressBar:
    """A bar counting finished hosts and failures; ``cleared()`` lets other lines through without tearing it."""

    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - only a terminal run pays for the import

        tqdm.monitor_interval = 0
        self._bar = tqdm(total=total, file=stream, unit=" hosts", leave=False, dynamic_ncols=True,
                         mininterval=0.2, bar_format=FORMAT, postfix="0 failed")

    def advance(self, failed: int) -> None:
        """One more host finished; ``failed`` is the count of failures so far."""
        self._bar.set_postfix_str(f"{failed} failed", refresh=False)
        self._bar.update(1)

    @contextmanager
    def cleared(self) -> Iterator[None]:
        """Take the bar off the screen while the block writes to the terminal, then draw it again."""
        self._bar.clear()
        try:
            yield
        finally:
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar for good (before the summary)."""
        self._bar.close()
