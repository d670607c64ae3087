"""The progress line the command line draws on a terminal's stderr: done/total, failed, skipped and running
hosts so far (and the wave of a rollout), rate, ETA.

Drawn with tqdm: one small pure-Python package with no dependencies of its own, ~10 ms to import
on top of hussh (rich.progress: ~20 ms and two more packages), imported only when a bar is drawn.
Its monitor thread is turned off, so the command stays single-threaded and workers are forked
directly, inheriting the logging set up for ``-v``. The bar is redrawn as each host finishes and,
while none does, every ``TICK`` seconds by a SIGALRM interval timer, in the main thread between two
bytecodes (no thread; forked workers do not inherit the timer): elapsed time, rate and ETA move
until the last host ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} hosts{postfix} [{elapsed}<{remaining}, {rate_noinv_fmt}]"
TICK = 0.5
"""Seconds between redraws while no host finishes."""


class ProgressBar:
    """A bar counting finished hosts and failures, redrawn as each host finishes and on a timer, with
    that host's lines printed above it."""

    def __init__(self, total: int, stream: TextIO) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - only a terminal run pays for the import

        tqdm.monitor_interval = 0
        self._bar = tqdm(total=total, file=stream, unit=" hosts", leave=False, dynamic_ncols=True,
                         mininterval=0, miniters=1, bar_format=FORMAT, postfix="0 failed")
        self._drawing = False
        self._ticking = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        self._previous: Any = None
        if self._ticking:
            self._previous = signal.signal(signal.SIGALRM, self._tick)
            signal.setitimer(signal.ITIMER_REAL, TICK, TICK)

    def advance(self, note: str, write: Callable[[], None] | None = None, count: int = 1) -> None:
        """``count`` more hosts finished (``note``: failed, skipped, running so far); ``write`` prints its
        lines where the bar was, above the new bar."""
        self._drawing = True
        try:
            self._bar.set_postfix_str(note, refresh=False)
            if write is not None:
                self._bar.clear()
                write()
            self._bar.update(count)
        finally:
            self._drawing = False

    def _tick(self, signum: int, frame: FrameType | None) -> None:
        """Redraw with the time as it is now, unless the bar or a host's lines are being written."""
        if self._drawing:
            return
        try:
            self._bar.refresh()
        except (RuntimeError, OSError):  # interrupted another write to stderr (a -v log line): next tick
            pass

    def close(self) -> None:
        """Stop the timer and remove the bar for good (before the summary)."""
        if self._ticking:
            self._ticking = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous if self._previous is not None else signal.SIG_DFL)
        self._drawing = True
        self._bar.close()
