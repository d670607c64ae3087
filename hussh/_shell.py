"""Interactive shells on one SSH channel, with upstream hussh's semantics and every wait bounded.

``AsyncInteractiveShell`` allows many send/read cycles: ``read()`` waits up to 2 s for output to
start and returns at its first 50 ms pause (upstream's timings, measured). The blocking
``InteractiveShell`` ends the input on ``read()`` or when its ``with`` block ends, then collects
everything the shell wrote, within the connection's timeout; a shell still running then is hung up
(SIGHUP, channel closed), and leaving the ``with`` block keeps what it wrote as upstream does.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import signal
from collections.abc import Callable
from types import TracebackType
from typing import TypedDict

import asyncssh

from . import _loop
from ._link import Link
from ._result import SSHResult
from .errors import CommandTimeout, ConnectionLost, OutputLimitExceeded, describe

__all__ = ["AsyncInteractiveShell", "InteractiveShell", "open_shell"]

FIRST_OUTPUT_WAIT = 2.0
"""Seconds ``AsyncInteractiveShell.read()`` waits for output to start, as upstream does."""

QUIET_GAP = 0.05
"""Once output has started, ``read()`` returns at the first pause this long (upstream: ~50 ms)."""

PTY_TYPE, PTY_SIZE = "xterm", (80, 24)
"""The terminal upstream requests: ``TERM=xterm``, 80 columns, 24 rows."""


class _Terminal(TypedDict, total=False):
    term_type: str
    term_size: tuple[int, int]


class _ShellSession(asyncssh.SSHClientSession[bytes]):
    """Buffers the shell's output until read; past ``limit`` unread bytes the channel is paused."""

    def __init__(self, limit: int, on_lost: Callable[[], None]) -> None:
        self.limit = limit
        self.on_lost = on_lost  # the connection went while the shell ran: its link forgets it
        self.out = bytearray()
        self.err = bytearray()
        self.decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(2)]
        self.status: int | None = None
        self.signal: str | None = None
        self.closed = False
        self.lost: Exception | None = None
        self.changed = asyncio.Event()
        self.channel: asyncssh.SSHClientChannel[bytes] | None = None

    @property
    def full(self) -> bool:
        return len(self.out) + len(self.err) >= self.limit

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.channel = chan

    def data_received(self, data: bytes, datatype: int | None) -> None:
        (self.out if datatype is None else self.err).extend(data)
        self.changed.set()
        if self.full and self.channel is not None:
            self.channel.pause_reading()

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed, self.lost = True, exc
        self.changed.set()
        if exc is not None:
            self.on_lost()

    def exit_code(self) -> int:
        """0 while the shell runs (as upstream reports it); then its exit status, ``128 + signal``
        if a signal killed it, or -1 if the connection dropped first."""
        if not self.closed:
            return 0
        if self.status is not None:
            return self.status
        try:
            return 128 + signal.Signals[f"SIG{self.signal}"].value
        except KeyError:
            return -1

    def take(self) -> tuple[str, str]:
        """The buffered output as text; a split UTF-8 character waits for the rest unless the shell ended."""
        out = self.decoders[0].decode(bytes(self.out), self.closed)
        err = self.decoders[1].decode(bytes(self.err), self.closed)
        self.out.clear()
        self.err.clear()
        if not self.closed and self.channel is not None:
            self.channel.resume_reading()
        return out, err


async def open_shell(conn: Link, pty: bool | None) -> AsyncInteractiveShell:
    """Start a login shell on ``conn`` (with a terminal if ``pty``), opening it within the connect bound."""
    ssh = await conn._connection()
    spec = conn.spec
    session = _ShellSession(spec.max_output, lambda: conn._forget(ssh))
    terminal: _Terminal = {"term_type": PTY_TYPE, "term_size": PTY_SIZE} if pty else {}
    try:
        async with asyncio.timeout(spec.connect_bound):
            channel, _ = await ssh.create_session(lambda: session, encoding=None, **terminal)
    except TimeoutError:
        conn._drop()
        raise ConnectionLost(f"{spec.address} did not open a shell within {spec.connect_bound:g} seconds") from None
    except asyncssh.ChannelOpenError as exc:
        raise ConnectionLost(f"{spec.address} refused a shell: {exc.reason}") from None
    except (asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
        conn._drop()
        raise ConnectionLost(f"connection to {spec.address} lost: {exc}") from None
    return AsyncInteractiveShell(spec.address, channel, session, bool(pty), spec.timeout)


class AsyncInteractiveShell:
    """A remote shell that keeps its state (directory, variables) across ``send``/``read`` cycles.

    Made by ``await conn.shell(pty=None)``. ``read()`` returns what arrived since the last read, with
    status 0 while the shell runs and its exit status once it has ended; it never waits past its bound.
    """

    def __init__(self, address: str, channel: asyncssh.SSHClientChannel[bytes], session: _ShellSession,
                 pty: bool, timeout: float) -> None:
        self._address = address
        self._channel = channel
        self._session = session
        self._pty = pty
        self._timeout = timeout
        self._input_closed = False
        self._hung_up = False
        self._noted_loss = False

    def __repr__(self) -> str:
        state = "ended" if self._session.closed else "running"
        return f"AsyncInteractiveShell({self._address}, pty={self._pty}, {state})"

    async def send(self, data: str, add_newline: bool | None = None) -> None:
        """Type ``data`` into the shell, followed by a newline unless ``add_newline`` is false."""
        if self._input_closed or self._session.closed:
            raise BrokenPipeError(errno.EPIPE, "the shell's input is closed (it ended, or read() ended it)",
                                  f"shell on {self._address}")
        self._channel.write((data + "\n" if add_newline in (None, True) else data).encode())

    async def read(self, *, timeout: float = FIRST_OUTPUT_WAIT) -> SSHResult:
        """Output since the last read: waits up to ``timeout`` seconds for it to start, then returns
        at its first 50 ms pause, once the shell has ended, or when ``timeout`` has passed."""
        session = self._session
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not session.closed and not session.full:
            until = min(deadline, loop.time() + QUIET_GAP) if session.out or session.err else deadline
            session.changed.clear()
            try:
                async with asyncio.timeout_at(until):
                    await session.changed.wait()
            except TimeoutError:
                break
        return self._result()

    async def finish(self) -> SSHResult:
        """End the input and wait for the shell to end, within the connection's timeout; what the blocking
        ``read()`` does. With a PTY, ``exit`` is typed first, since a terminal ignores the EOF."""
        session = self._session
        if not self._input_closed and not session.closed:
            if self._pty:
                self._channel.write(b"exit\n")
            self._channel.write_eof()
        self._input_closed = True
        try:
            async with asyncio.timeout(self._timeout or None):
                while not session.closed:
                    if session.full:
                        self._channel.close()
                        raise OutputLimitExceeded(f"shell output on {self._address} exceeded "
                                                  f"{session.limit} bytes; closed it", self._result(-1))
                    session.changed.clear()
                    await session.changed.wait()
        except TimeoutError:
            self._hang_up()
            raise CommandTimeout(f"shell on {self._address} did not end within {self._timeout:g} seconds "
                                 "after its input was closed; hung up", self._result(-1)) from None
        return self._result()

    async def close(self) -> None:
        """Hang up the shell without collecting its output; the server ends it (nothing here waits)."""
        self._hang_up()

    def _hang_up(self) -> None:
        """Send the shell SIGHUP, as a terminal hanging up does, and close the channel: sshd then closes
        the shell's terminal or pipes, so a command still running (``tail -f``) ends too."""
        self._input_closed = True
        if not self._session.closed and not self._hung_up:
            self._hung_up = True
            try:
                self._channel.send_signal("HUP")
            except (OSError, asyncssh.Error):
                pass
        self._channel.close()

    async def __aenter__(self) -> AsyncInteractiveShell:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _result(self, status: int | None = None) -> SSHResult:
        """The output since the last read; ``status`` -1 marks a shell we gave up on (as ``execute`` does)."""
        out, err = self._session.take()
        lost = self._session.lost
        if lost is not None and not self._noted_loss:
            self._noted_loss = True
            err += describe(ConnectionLost(f"connection to {self._address} lost during the shell: {lost}"))
        return SSHResult(out, err, self._session.exit_code() if status is None else status)


class InteractiveShell:
    """The blocking shell of ``Connection.shell()``: ``send`` lines, then ``read()`` or leave the ``with``
    block to end the input; ``result`` then holds all the output and the shell's exit status (or -1 and
    ``CommandTimeout: ...`` in stderr for a shell hung up after the connection's timeout)."""

    def __init__(self, shell: AsyncInteractiveShell) -> None:
        self._shell = shell
        self.result: SSHResult | None = None

    def __repr__(self) -> str:
        return repr(self._shell).replace("AsyncInteractiveShell", "InteractiveShell", 1)

    def send(self, data: str, add_newline: bool | None = None) -> None:
        """Type ``data`` into the shell, followed by a newline unless ``add_newline`` is false."""
        _loop.run(self._shell.send(data, add_newline))

    def read(self) -> SSHResult:
        """Send EOF (no more ``send`` after this), wait for the shell to end and return its output."""
        return _loop.run(self._shell.finish())

    def close(self) -> None:
        """Hang up the shell without collecting its output; ``result`` stays as it is."""
        _loop.run(self._shell.close())

    def __enter__(self) -> InteractiveShell:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.result = self.read()
            except CommandTimeout as timeout:  # still running after the timeout: hung up, as upstream does
                kept = timeout.result
                self.result = SSHResult(kept.stdout, kept.stderr + describe(timeout), -1)
            return
        try:  # the block failed: keep what the shell said, but let the block's exception through
            if issubclass(exc_type, Exception):
                self.result = self.read()
        except (OSError, ConnectionLost, CommandTimeout, OutputLimitExceeded):
            pass
        finally:
            self.close()
