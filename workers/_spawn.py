"""Starting worker processes safely: fork the caller only while it has one thread, else ask a zygote.

Forking a process that has other threads (a blocking ``Connection``'s loop thread, a user's
thread pool, a logging handler) can leave the child holding a lock nobody will release. A
single-threaded caller is a known-safe state and forking it costs a millisecond, so that is done
directly. Otherwise a zygote does the fork: a fresh single-threaded interpreter
(``python -m hussh.workers.zygote``, started once per process) that has imported the worker code and
forks a worker per request, passing the pipe ends over a Unix socket.

The standard library's ``multiprocessing`` forkserver does the same job but re-runs the caller's
``__main__`` module in every worker (its "main module fixup"): a user script without an
``if __name__ == "__main__"`` guard would run again in each worker. Hence this small zygote.

Either way the worker starts with only its two pipe ends (and stdin/stdout/stderr) open.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

_EXIT = struct.Struct(">ii")  # zygote -> parent: (pid, wait status) of a worker that exited


def single_threaded() -> bool:
    """True when this process runs exactly one thread (counted by the kernel, C threads included)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def close_all_but(*keep: int) -> None:
    """Close every descriptor above 2 except ``keep`` (a new worker keeps its two pipe ends)."""
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def exit_note(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Process:
    """A started worker: signalled through a pidfd (never a recycled pid), its exit note known once it exited."""

    def __init__(self, pid: int, pidfd: int, zygote: _Zygote | None) -> None:
        self.pid, self.pidfd, self.zygote = pid, pidfd, zygote
        self.note = ""

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def exited(self, timeout: float = 0.0) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; True once it has."""
        readable, _, _ = select.select([self.pidfd], [], [], timeout)
        return bool(readable)

    def reap(self) -> str:
        """Collect the exit status (after the process exited) and release the pidfd; return the note."""
        if self.pidfd >= 0:
            if self.zygote is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    self.note = exit_note(status)
                except ChildProcessError:
                    pass
            else:
                code = self.zygote.exit_status(self.pid, timeout=1.0)
                self.note = exit_note(code) if code is not None else ""
            os.close(self.pidfd)
            self.pidfd = -1
        return self.note


def start(to_child: int, from_child: int) -> Process:
    """A new worker serving ``to_child`` (requests) and ``from_child`` (replies), our ends of which stay open."""
    if single_threaded():
        return _fork(to_child, from_child)
    return zygote().fork(to_child, from_child)


def _fork(to_child: int, from_child: int) -> Process:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # child: keep only its own pipe ends, serve, never return into the caller's code
        code = 0
        try:
            close_all_but(to_child, from_child)
            from .main import run  # noqa: PLC0415 - only the child needs the event loop machinery

            run(to_child, from_child)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    return Process(pid, os.pidfd_open(pid), None)


class _Zygote:
    """The parent's handle on ``python -m hussh.workers.zygote``; shared by every pool of this process."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        root = str(Path(__file__).parent.parent.parent)  # where ``hussh`` is importable from (this file unresolved)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hussh.workers.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env,
        )
        theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}

    def alive(self) -> bool:
        return os.getpid() == self.owner and self.process.poll() is None

    def stop(self, grace: float = 2.0) -> None:
        """Hang up (end of file ends the zygote) and reap it, so the caller exits with nothing left behind."""
        self.sock.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def fork(self, to_child: int, from_child: int) -> Process:
        with self.lock:
            socket.send_fds(self.sock, [b"F"], [to_child, from_child])
            while True:
                message, fds, _, _ = socket.recv_fds(self.sock, 64, 1)
                if not message:
                    raise OSError("the hussh zygote process exited")
                if message[:1] == b"P" and fds:
                    return Process(int(message[1:]), fds[0], self)
                self._note_exit(message)

    def _note_exit(self, message: bytes) -> None:
        if message[:1] == b"X":
            pid, status = _EXIT.unpack(message[1:])
            self.statuses[pid] = status

    def exit_status(self, pid: int, timeout: float) -> int | None:
        """The wait status of worker ``pid``, as reported by the zygote (waiting up to ``timeout``)."""
        with self.lock:
            while pid not in self.statuses:
                readable, _, _ = select.select([self.sock], [], [], timeout)
                if not readable:
                    return None
                message = self.sock.recv(64)
                if not message:
                    return None
                self._note_exit(message)
            return self.statuses.pop(pid)


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def zygote() -> _Zygote:
    """This process's zygote, started on first need (and again in a forked child, which has none)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            _zygote = _Zygote()
        return _zygote


@atexit.register
def _stop_zygote() -> None:
    if _zygote is not None and os.getpid() == _zygote.owner:
        _zygote.stop()


def _after_fork_in_child() -> None:
    """A forked child (ours or the user's) starts its own zygote if it needs one, never shares ours."""
    global _zygote, _zygote_lock
    if _zygote is not None:
        _zygote.sock.close()
    _zygote, _zygote_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
