"""A ``ProxyCommand``'s process as the connection's transport: its stdin and stdout carry the SSH bytes.

Its stderr is kept apart, as ``ssh`` keeps it: asyncssh's own tunnel reads every pipe into the SSH
stream, so a line on stderr after the server's banner (``ssh -v -W`` talks there all along) corrupts
the packets. Here it is logged at debug level on the ``hussh`` logger and its last line kept: when
the command's stdout ends, its exit status and that line say why the connection was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import asyncssh
from asyncssh.connection import SSHClientConnection

__all__ = ["open_proxy_command"]

log = logging.getLogger("hussh")

STDERR_KEPT = 4096
"""Bytes of the command's stderr kept for the error message: its last words, not all it said."""
EXIT_GRACE = 1.0
"""Seconds to wait, once the command's stdout has ended, for it to exit and give its status."""
SAID_MAX = 300
"""Characters of the command's last stderr line quoted in the error."""


class ProxyTunnel(asyncio.SubprocessProtocol):
    """The transport asyncssh's connection writes to and closes; the process's stdout feeds it."""

    def __init__(self, conn: SSHClientConnection, name: str) -> None:
        self.conn, self.name = conn, name
        self.process: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.stderr = bytearray()
        self.exited = asyncio.Event()
        self.stdout_ended = False
        self.closing = False
        self.reporting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.process = process = cast(asyncio.SubprocessTransport, transport)
        self.stdin = cast(asyncio.WriteTransport, process.get_pipe_transport(0))
        self.conn.connection_made(cast(asyncio.BaseTransport, self))  # what asyncssh calls on one, below

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.conn.data_received(data)
            return
        self.stderr += data
        del self.stderr[:-STDERR_KEPT]
        log.debug("hussh: ProxyCommand %r said: %r", self.name, data[:SAID_MAX])

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd != 1 or self.stdout_ended:
            return
        self.stdout_ended = True
        if self.closing:
            self.conn.connection_lost(exc)
        elif self.exited.is_set():
            self._lost()
        else:
            self.reporting = asyncio.get_running_loop().create_task(self._lost_after_exit())

    def process_exited(self) -> None:
        self.exited.set()

    async def _lost_after_exit(self) -> None:
        """The stream ended: tell the connection why once the command exits (a moment at most)."""
        try:
            async with asyncio.timeout(EXIT_GRACE):
                await self.exited.wait()
        except TimeoutError:
            pass
        self._lost()

    def _lost(self) -> None:
        status = self.process.get_returncode() if self.process is not None else None
        ended = f"exited with status {status}" if status is not None else "closed its output"
        said = self.stderr.decode(errors="replace").strip().splitlines()
        last = f"; it said: {said[-1][:SAID_MAX]!r}" if said else ""
        self.conn.connection_lost(asyncssh.ConnectionLost(f"the ProxyCommand {self.name!r} {ended}{last}"))

    # What asyncssh's connection calls on its transport.
    def write(self, data: bytes) -> None:
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.write(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.process.get_extra_info(name, default) if self.process is not None else default

    def close(self) -> None:
        """End the command (killed if it still runs), as ``ssh`` does when the connection closes."""
        self.closing = True
        if self.process is not None:
            self.process.close()

    abort = close

    async def wait_closed(self) -> None:
        await self.exited.wait()


async def open_proxy_command(loop: asyncio.AbstractEventLoop, argv: list[str],
                             factory: Callable[[], SSHClientConnection]) -> SSHClientConnection:
    """A connection through ``argv``'s stdin and stdout (``OSError`` if it cannot be started)."""
    conn = factory()
    _, tunnel = await loop.subprocess_exec(lambda: ProxyTunnel(conn, argv[0] if argv else ""), *argv,
                                           start_new_session=True)
    conn.set_tunnel(tunnel)  # its close, and wait_closed waiting for the command's exit
    return conn
