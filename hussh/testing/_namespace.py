"""The loopback fleet's private mount namespaces: where its users exist, and how its processes are found.

A holder process (``sleep infinity`` under ``unshare --mount``) keeps the fleet's namespace alive.
There, /etc is an overlay whose upper layer (on a tmpfs of the namespace's own) holds the fleet's
account files: the users exist for nothing else. An overlay on the directory, not binds on the
files, because useradd, chpasswd or apt on the host replace /etc/passwd by renaming over it, and
the kernel then drops a file mount from every namespace: the fleet would see the host's accounts.

Every sshd starts in a child namespace of its own (``nsenter`` into the holder's, then ``unshare
--mount``: a copy with the same mounts), so the members of one namespace are exactly one node's
processes: listener, per-connection sshd, shells, commands, orphans included. That is how pause and
kill reach a node's sessions although sshd puts each in a new session, and how ``down`` finds every
process of a fleet, even from another process after a crash: a namespace is the fleet's when its
/etc is the fleet's overlay (its mountinfo names the fleet's directory), which also guards against
reused namespace ids.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._errors import FleetError

POLL = 0.01
SIGNAL_TIMEOUT = 10.0


def namespace_of(pid: int | str) -> int | None:
    """The mount namespace id of ``pid`` (None once it is gone or a zombie)."""
    try:
        link = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    return int(link[link.index("[") + 1 : -1])


def _has_marker(pids: list[int], marker: str) -> bool:
    """Tell whether the namespace of ``pids`` has an overlay on /etc whose layers lie in ``marker``."""
    for pid in pids:
        try:
            mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        return any(
            fields[4] == "/etc" and f"upperdir={marker}/" in fields[-1]
            for fields in (line.split() for line in mounts.splitlines())
            if len(fields) > 4
        )
    return False


def members(marker: str, only: Iterable[int] | None = None) -> dict[int, list[int]]:
    """Map each live namespace of the fleet (``marker``), or of ``only`` those, to its processes."""
    wanted = None if only is None else set(only)
    own = namespace_of("self")
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            inode = namespace_of(entry.name)
            if inode is not None and inode != own and (wanted is None or inode in wanted):
                groups.setdefault(inode, []).append(int(entry.name))
    return {inode: pids for inode, pids in groups.items() if _has_marker(pids, marker)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _until(what: str, done: Callable[[], bool], timeout: float = SIGNAL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise FleetError(f"{what} did not complete within {timeout:.0f}s")
        time.sleep(POLL)


def stop(marker: str, namespaces: set[int]) -> None:
    """SIGSTOP every member of ``namespaces``, again for any forked meanwhile, until all are stopped."""

    def all_stopped() -> bool:
        running = [p for pids in members(marker, namespaces).values() for p in pids if _state(p) not in "Tt"]
        _signal(running, signal.SIGSTOP)
        return not running

    _until("stopping a node's processes", all_stopped)


def resume(marker: str, namespaces: set[int]) -> None:
    """SIGCONT every member of ``namespaces`` (stopped processes fork nothing, so one pass does)."""
    _signal((p for pids in members(marker, namespaces).values() for p in pids), signal.SIGCONT)


def kill(marker: str, namespaces: set[int] | None = None) -> None:
    """SIGKILL every member of ``namespaces`` (default: of the whole fleet) until none is left."""

    def all_gone() -> bool:
        alive = [p for pids in members(marker, namespaces).values() for p in pids]
        _signal(alive, signal.SIGKILL)
        return not alive

    _until("killing a fleet's processes", all_gone)


class FleetNamespace:
    """The holder of a fleet's namespace, and the way into it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)  # an empty directory: the overlay's layers are mounted there
        self.holder: subprocess.Popen[bytes] | None = None

    @property
    def holder_pid(self) -> int:
        if self.holder is None:
            raise FleetError("the fleet's namespace is not open")
        return self.holder.pid

    def open(self, timeout: float = 10.0) -> int:
        """Start the holder in a fresh private mount namespace; return its pid."""
        holder = self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # no inherited stdout: a caller reading ours to its end must not wait for the fleet
        own = namespace_of("self")
        _until("unshare --mount", lambda: namespace_of(holder.pid) not in (own, None), timeout)
        return holder.pid

    def mount(self, etc_files: list[Path], homes: Path, login_records: list[str]) -> None:
        """Overlay /etc with ``etc_files``, mount ``homes`` on /home and empty files over ``login_records``.

        Both live on a tmpfs mounted at ``marker`` (a directory), so they work whatever filesystem
        holds it and vanish with the namespace. Login records get regular files, not /dev/null:
        glibc waits 10 s for a lock it cannot take there when a pty session ends.
        """
        layers = shlex.quote(self.marker)
        lines = [f"mount -t tmpfs -o mode=0755 hussh-fleet {layers}",
                 f"mkdir {layers}/upper {layers}/work {layers}/records",
                 f"cp -p {' '.join(shlex.quote(str(f)) for f in etc_files)} {layers}/upper/",
                 f"mount -t overlay overlay -o lowerdir=/etc,upperdir={layers}/upper,workdir={layers}/work /etc",
                 f"mount --bind {shlex.quote(str(homes))} /home"]
        for n, path in enumerate(login_records):
            lines += [f"touch {layers}/records/{n}", f"mount --bind {layers}/records/{n} {shlex.quote(path)}"]
        result = subprocess.run(self._enter(["sh", "-ec", "\n".join(lines)]), capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            raise FleetError(f"mounts in the fleet's namespace failed: {result.stderr.strip()}")

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new child namespace of the fleet's (same pid: each step execs the next)."""
        return subprocess.Popen(self._enter(["unshare", "--mount", "--", *argv]), start_new_session=True, **popen)

    def close(self) -> None:
        """Kill every process of every namespace of the fleet, the holder last among them."""
        kill(self.marker)
        if self.holder is not None:
            if self.holder.poll() is None:  # not marked yet when the binds failed
                self.holder.kill()
            self.holder.wait()

    def _enter(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.holder_pid}/ns/mnt", "--", *argv]
