"""The progress line the command line draws on a terminal's stderr: done/total, failures so far, rate, ETA.

Drawn with tqdm: one small pure-Python package with no dependencies of its own, ~10 ms to import
on top of hussh (rich.progress: ~20 ms and two more packages), imported only when a bar is drawn.
Its monitor thread is turned off, so the command stays single-threaded and workers are forked
directly, inheriting the logging set up for ``-v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} hosts{postfix} [{elapsed}<{remaining}, {rate_noinv_fmt}]"


class ProgressBar:
    """A bar counting finished hosts and failures, redrawn as each host finishes (there is no thread to
    redraw it later), with that host's lines printed above it."""

    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - only a terminal run pays for the import

        tqdm.monitor_interval = 0
        self._bar = tqdm(total=total, file=stream, unit=" hosts", leave=False, dynamic_ncols=True,
                         mininterval=0, miniters=1, bar_format=FORMAT, postfix="0 failed")

    def advance(self, failed: int, write: Callable[[], None] | None = None) -> None:
        """One more host finished (``failed`` so far); ``write`` prints its lines where the bar was,
        above the new bar."""
        self._bar.set_postfix_str(f"{failed} failed", refresh=False)
        if write is not None:
            self._bar.clear()
            write()
        self._bar.update(1)

    def close(self) -> None:
        """Remove the bar for good (before the summary)."""
        self._bar.close()
