"""Test helpers: bounded waits for conditions, and what a process holds (the fleet runs on this machine)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], T], within: float, what: str, every: float = 0.05) -> T:
    """Poll ``condition`` until it returns something true (returned) or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(every)


def marker() -> str:
    """A unique duration for ``sleep`` (about 300 s): ``sleepers`` finds the processes running it."""
    return f"300.{uuid.uuid4().int % 10**9:09d}"


def sleepers(token: str) -> list[int]:
    """Live ``sleep <token>`` processes on this machine (zombies have an empty command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) >= 2 and os.path.basename(argv[0]) == b"sleep" and argv[1] == token.encode():
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def fd_targets(pid: int) -> dict[int, str]:
    """Descriptor -> what it refers to (path, ``socket:[inode]``, ``pipe:[inode]``...), for ``pid``."""
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return targets


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def run_script(body: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen[str]:
    """Start ``body`` in a fresh interpreter with the repo importable; stdout and stderr piped."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]


class CountingRelay:
    """A TCP relay on 127.0.0.1 to ``target`` that counts the connections it accepts (dials of the host)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._serve, name="relay", daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until ``src`` ends; its end of file goes on as one, a reset (sshd killed with
    bytes unread, say) as the end of both directions: swallowed, the other side would wait forever."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
