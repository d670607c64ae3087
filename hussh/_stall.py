"""The inactivity bound of SFTP and SCP operations: a server that sends nothing for ``stall_timeout``
seconds while hussh waits on it fails the operation instead of hanging it forever.

asyncssh already keeps the clock this needs: its keepalive timer restarts on every packet
received. While at least one operation waits on a connection, ``StallGuard`` sets that timer to
``stall_timeout + BACKSTOP`` with no keepalive probe allowed (``count_max=0``) and watches it: once
``stall_timeout`` seconds passed since the last packet, it aborts the connection, and every
operation on it fails. When the last one is done, the connection's own keepalive settings
(``ServerAliveInterval``, ``ServerAliveCountMax``; usually off) come back. Probes would not do:
sshd answers them while its sftp-server is stuck on a dead disk.

Why abort here rather than let asyncssh's timer close the connection: asyncssh closes it with an
error that its parallel SFTP reads and writes do not expect, leaving a "Task exception was never
retrieved" log line per request in flight; after an abort they fail cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from asyncssh.connection import SSHClientConnection

from ._spec import ConnectSpec
from .errors import ConnectionLost, HusshError, TransferStalled

__all__ = ["StallGuard", "lost_error"]

BACKSTOP = 1.0
"""Seconds after the bound at which asyncssh's own timer closes the connection, should the watch
below not run (asyncssh no longer keeping the timer where it is read): bounded, if less cleanly."""


class StallGuard:
    """Arms the inactivity bound of one SSH connection while operations wait on its server."""

    def __init__(self, conn: SSHClientConnection, spec: ConnectSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.waiting = 0
        self.stalled = False  # this bound closed the connection (not the server or the network)
        self._watch: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """Within this block, ``stall_timeout`` seconds with nothing received abort the connection."""
        bound = self.spec.stall_timeout
        if not bound or self.conn.is_closed():
            yield
            return
        if not self.waiting:
            self.conn.set_keepalive(bound + BACKSTOP, 0)
            self._check()
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1
            if not self.waiting:
                self._disarm()

    def _disarm(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if not self.conn.is_closed():
            self.conn.set_keepalive(self.spec.keepalive_interval, self.spec.keepalive_count_max)

    def _check(self) -> None:
        """Abort the connection if nothing arrived for the bound, else look again when it could have."""
        self._watch = None
        timer = getattr(self.conn, "_keepalive_timer", None)  # asyncssh: restarted on every packet received
        if timer is None or self.conn.is_closed():
            return
        loop = asyncio.get_running_loop()
        due = timer.when() - BACKSTOP  # the last packet's arrival + the bound
        if loop.time() >= due:
            self.stalled = True
            self.conn.abort()
        else:
            self._watch = loop.call_at(due, self._check)


def lost_error(guard: StallGuard | None, doing: str, exc: BaseException) -> HusshError:
    """The error for a connection that closed during ``doing`` ("SFTP read of /x on host:22"):
    ``TransferStalled`` if the bound closed it, else ``ConnectionLost``."""
    if guard is not None and guard.stalled:
        return TransferStalled(f"{doing} stalled: nothing received for {guard.spec.stall_timeout:g} seconds; "
                               "closed the connection")
    reason = getattr(exc, "reason", "") or str(exc)
    return ConnectionLost(f"connection lost during {doing}: {reason}")
