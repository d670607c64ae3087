"""Running the ``hussh`` command as a subprocess of the tests, and reading its output as it comes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def env(**extra: str) -> dict[str, str]:
    """This process's environment (the isolated HOME included) with the working tree's hussh importable,
    and Python's own buffering of stdout (which the command must flush as hosts finish)."""
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**inherited, "PYTHONPATH": str(REPO), **extra}


def hussh(*args: str, timeout: float = 60, cwd: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``python -m hussh ARGS`` to completion (stdin closed) and capture its output as text."""
    return subprocess.run([sys.executable, "-m", "hussh", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env(**extra_env), stdin=subprocess.DEVNULL)


class Running:
    """``python -m hussh ARGS`` in the background; its stdout and stderr lines are collected as they arrive."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hussh", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=cwd, env=env())
        self.out: list[str] = []
        self.err: list[str] = []
        self._arrived: queue.Queue[None] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        with stream:  # closed at end of file: no pipe is left for the garbage collector to warn about
            for line in stream:
                lines.append(line)
                self._arrived.put(None)
        self._arrived.put(None)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20, what: str = "output") -> None:
        """Block until ``condition()`` holds (checked as lines arrive), or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:  # exited: its last lines may still be on their way
                for reader in self._readers:
                    reader.join(timeout=5)
                if condition():
                    return
                raise AssertionError(f"exited ({self.proc.returncode}) without {what}; "
                                     f"stdout={self.out!r} stderr={self.err!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} after {timeout} s; stdout={self.out!r} stderr={self.err!r}")
            try:
                self._arrived.get(timeout=min(left, 0.5))
            except queue.Empty:
                pass

    def saw(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Whether ``condition()`` comes to hold within ``timeout`` seconds (for polling loops)."""
        try:
            self.wait_for(condition, timeout)
        except AssertionError:
            return False
        return True

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit (bounded) and for the last lines; return the exit status."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (hussh's workers, when they were forked directly)."""
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            kids.extend(int(k) for k in handle.read().split())
    return kids
