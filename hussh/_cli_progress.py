"""The progress line the command line draws on a terminal's stderr: done/total, failed, skipped and running
hosts so far (and the wave of a rollout), rate, ETA.

Drawn with tqdm: one small pure-Python package with no dependencies of its own, ~10 ms to import
on top of hussh (rich.progress: ~20 ms and two more packages), imported only when a bar is drawn.
Its monitor thread is turned off, so the command stays single-threaded and workers are forked
directly, inheriting the logging set up for ``-v``. The bar is redrawn as each host finishes and,
while none does, every ``TICK`` seconds by a SIGALRM interval timer, in the main thread between two
bytecodes (no thread; forked workers do not inherit the timer): elapsed time, rate and ETA move
until the last host ends.

``listing_on_request`` prints the hosts still running on SIGUSR1, SIGINFO or ``Enter``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def listing_on_request(show: Callable[[], None], stdin: TextIO | None = None) -> Iterator[None]:
    """While the block runs, ``show()`` on SIGUSR1, on SIGINFO (Ctrl-T, where the platform has it) and,
    when stdin is the terminal we run in the foreground of, on ``Enter``; stdin is never read otherwise
    (then it may be the hosts' input)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live there only
        yield
        return
    names = ["SIGUSR1", "SIGINFO"]
    previous = {name: signal.signal(getattr(signal, name), lambda signum, frame: show())
                for name in names if hasattr(signal, name)}
    keys = EnterKey(sys.stdin if stdin is None else stdin, show)
    try:
        keys.start()
        yield
    finally:
        keys.stop()
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


class EnterKey:
    """``Enter`` on the terminal calls ``show()``, as in clush: the terminal sends SIGIO when a line is
    typed (no thread, no polling), echo is off meanwhile so the key does not move the output, and the
    terminal's modes and flags are restored after."""

    def __init__(self, stdin: TextIO, show: Callable[[], None]) -> None:
        self._show = show
        self._fd = -1
        self._modes: list[Any] | None = None
        self._flags = 0
        self._previous: Any = None
        try:
            fd = stdin.fileno()
        except (AttributeError, ValueError, OSError):  # replaced or closed stdin: no terminal to listen to
            return
        if os.isatty(fd) and foreground(fd):
            self._fd = fd

    def start(self) -> None:
        if self._fd < 0:
            return
        import termios  # noqa: PLC0415 - POSIX only, like the rest of the command line

        self._flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        self._modes = termios.tcgetattr(self._fd)
        quiet = list(self._modes)
        quiet[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(self._fd, termios.TCSANOW, quiet)
        self._previous = signal.signal(signal.SIGIO, self._typed)
        fcntl.fcntl(self._fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags | os.O_ASYNC)

    def _typed(self, signum: int, frame: FrameType | None) -> None:
        """Read what was typed (complete lines: the terminal is in line mode) and list once per ``Enter``."""
        if not foreground(self._fd):  # put in the background since: reading would stop us (SIGTTIN)
            return
        lines = 0
        while select.select([self._fd], [], [], 0)[0]:
            typed = os.read(self._fd, 4096)
            if not typed:  # end of input (Ctrl-D)
                break
            lines += typed.count(b"\n")
        for _ in range(lines):
            self._show()

    def stop(self) -> None:
        if self._modes is None:
            return
        import termios  # noqa: PLC0415 - see start()

        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
        signal.signal(signal.SIGIO, self._previous if self._previous is not None else signal.SIG_DFL)
        ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # in the background by now: restore all the same
        try:
            termios.tcsetattr(self._fd, termios.TCSANOW, self._modes)
        finally:
            signal.signal(signal.SIGTTOU, ttou)
        self._modes = None


def foreground(fd: int) -> bool:
    """Whether our process group owns the terminal ``fd`` (else reading it stops us)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
