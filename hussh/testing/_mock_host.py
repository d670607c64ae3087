"""A host of the ``MockEngine``: an ``AsyncConnection`` whose every remote operation is a call of the handler.

Only the I/O is replaced: what the worker does around it (connecting first, output bounds, a command's
deadline, a tail's offsets, bounds and UTF-8 splits) is ``AsyncConnection``'s and ``AsyncFileTailer``'s own
code, so results, error kinds and messages read as with real hosts; an open tail reads the handler's
whole file each time instead of holding one (``MockTailer``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from hussh._result import RawResult, SSHResult
from hussh._spec import ConnectSpec
from hussh.aio import AsyncConnection, AsyncFileTailer, Input, OutputBudget, _Room
from hussh.errors import CommandTimeout, ConnectionLost, ConnectTimeout, OutputLimitExceeded, SudoError

Kind = Literal["connect", "execute", "sftp_write", "sftp_read"]


@dataclass(frozen=True)
class MockRequest:
    """What a ``MockEngine`` handler is asked: one operation on one host.

    ``kind``: ``"connect"`` (before a host's first operation, after ``close()`` or a lost
    connection, and for ``connect()``), ``"execute"`` (``command``, ``stdin``, ``sudo``,
    ``sudo_password``, ``timeout``: the call's, else the host's, ``None`` for none), ``"sftp_write"``
    (``data`` to ``path``) or ``"sftp_read"`` (``path``: return its contents; tails read files this
    way too). ``host``, ``port`` and ``user`` are the host's as resolved; ``index`` its position in
    the ``MultiConnection``'s hosts.
    """

    kind: Kind
    host: str
    port: int
    user: str
    index: int
    command: str = ""
    stdin: bytes = b""
    sudo: bool = False
    sudo_password: str | None = field(default=None, repr=False)
    path: str = ""
    data: bytes = field(default=b"", repr=False)
    mode: int | None = None  # sftp_write: a new remote file's mode (the local file's); None: the server's default
    timeout: float | None = None


Reply = SSHResult | str | bytes | None
Handler = Callable[[MockRequest], "Reply | Awaitable[Reply]"]
Record = Callable[[MockRequest], None]

_STOPPED = (CommandTimeout, OutputLimitExceeded, SudoError)  # a command stopped with its output kept


class MockConnection(AsyncConnection):
    """One host, answered by ``handler``; connected once a ``connect`` request returned."""

    def __init__(self, spec: ConnectSpec, index: int, handler: Handler, record: Record) -> None:
        self.spec, self._conn, self._sftp, self._stall = spec, None, None, None
        self._record_keys = False
        self.learned = []
        self.index, self.handler, self.record = index, handler, record
        self.is_open = False

    @property
    def connected(self) -> bool:
        return self.is_open

    async def connect(self, timeout: float | None = None) -> None:
        if self.is_open:
            return
        bound = timeout or self.spec.connect_bound
        await self._ask(self._request("connect", timeout=bound), bound, lambda: ConnectTimeout(
            f"{self.spec.address}: no connection within {bound:g} seconds"))
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False

    def _drop(self) -> None:
        self.is_open = False

    async def execute_raw(self, command: str, timeout: float | None = None, *, budget: OutputBudget | None = None,
                          input: Input | None = None, sudo: bool = False,
                          sudo_password: str | None = None) -> RawResult:
        await self.connect()
        limit = self.spec.timeout if timeout is None else timeout
        stdin = input.encode() if isinstance(input, str) else bytes(input or b"")
        request = self._request("execute", command=command, stdin=stdin, sudo=sudo, sudo_password=sudo_password,
                                timeout=limit or None)
        timed_out = f"command timed out after {limit:g} seconds; stopped it"
        try:
            reply = await self._ask(request, limit, lambda: CommandTimeout(timed_out, SSHResult()))
        except _STOPPED as exc:  # returned, not raised, as AsyncConnection does: the output so far is kept
            kept = exc.result
            return RawResult(kept.stdout.encode(), kept.stderr.encode(), -1, type(exc).__name__, str(exc))
        return self._bounded(_command(reply), budget)

    def _bounded(self, raw: RawResult, budget: OutputBudget | None) -> RawResult:
        """``raw`` within ``max_output`` and the call's output budget, as a command's output is held."""
        size = len(raw.stdout) + len(raw.stderr)
        room = min(size, self.spec.max_output)
        granted = budget.take(room) if budget is not None else room
        if granted == size:
            return raw
        stdout = raw.stdout[:granted]
        stderr = raw.stderr[:granted - len(stdout)]
        reason = (f"the call's output budget ({budget.total} bytes for this worker's hosts) ran out after {granted} "
                  "bytes of this command; stopped it" if budget is not None and granted < room
                  else f"command output exceeded {self.spec.max_output} bytes; stopped it")
        return RawResult(stdout, stderr, -1, OutputLimitExceeded.__name__, reason)

    async def sftp_write_data(self, data: str | bytes, remote_path: str, *, mode: int | None = None) -> None:
        await self.connect()
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._ask(self._request("sftp_write", path=remote_path, data=payload, mode=mode))

    async def sftp_read_bytes(self, remote_path: str, offset: int = 0, limit: int = -1,
                              budget: OutputBudget | None = None) -> tuple[bytes, int]:
        data = await self._file(remote_path)
        available = max(0, len(data) - offset)
        wanted = available if limit < 0 else min(limit, available)
        if budget is not None:
            wanted = budget.take(wanted)
        return data[offset:offset + wanted], available

    async def sftp_size(self, remote_path: str) -> int:
        return len(await self._file(remote_path))

    async def sftp_read(self, remote_path: str, local_path: str | os.PathLike[str] | None = None, *,
                        budget: OutputBudget | None = None) -> str | None:
        if local_path is None:
            return await super().sftp_read(remote_path, budget=budget)
        data = await self._file(remote_path)
        local = os.fspath(local_path)
        if os.path.isdir(local):
            local = os.path.join(local, posixpath.basename(remote_path))
        with open(local, "wb") as handle:
            handle.write(data)
        return None

    def tail(self, remote_file: str) -> AsyncFileTailer:
        return MockTailer(self, remote_file)

    async def _sftp_client(self) -> object:  # type: ignore[override]
        raise NotImplementedError("MockEngine simulates execute, sftp_write, sftp_read and tails only")

    async def _file(self, remote_path: str) -> bytes:
        await self.connect()
        reply = await self._ask(self._request("sftp_read", path=remote_path))
        if reply is None or isinstance(reply, str | bytes | bytearray | memoryview):
            return reply.encode() if isinstance(reply, str) else bytes(reply or b"")
        raise TypeError(f"the MockEngine handler returned {type(reply).__name__} for sftp_read of {remote_path}: "
                        "return the file's contents as str or bytes")

    def _request(self, kind: Kind, **fields: object) -> MockRequest:
        spec = self.spec
        return MockRequest(kind, spec.host, spec.port, spec.username, self.index, **fields)  # type: ignore[arg-type]

    async def _ask(self, request: MockRequest, limit: float = 0,
                   late: Callable[[], Exception] | None = None) -> Reply:
        """The handler's reply; an async one past ``limit`` seconds raises ``late()``. A lost connection
        (``ConnectionLost``) makes the next operation connect again."""
        self.record(request)
        try:
            reply = self.handler(request)
            if inspect.isawaitable(reply):
                if not limit or late is None:
                    return await reply
                try:
                    async with asyncio.timeout(limit):
                        return await reply
                except TimeoutError:
                    raise late() from None
            return reply
        except ConnectionLost:
            self.is_open = False
            raise


class MockTailer(AsyncFileTailer):
    """A tail on a mock host, whose file is what the handler returns each time: no file to hold open, no
    modification time to go by (``since`` starts at the last ``lines`` lines); open, a file shorter
    than ``last_pos`` is read again from its start, as a truncated file on a real host."""

    async def seek_end(self) -> int:
        self.last_pos = await self.conn.sftp_size(self.remote_file)
        return self.last_pos

    async def seek_since(self, since: float, lines: int) -> int:
        size = await self.conn.sftp_size(self.remote_file)
        self.last_pos = size if lines <= 0 else await self._lines_back(size, lines)
        return self.last_pos

    async def _read_open(self, from_pos: int | None, room: _Room) -> bytes:
        whole, _ = await self.conn.sftp_read_bytes(self.remote_file)
        start = self.last_pos if from_pos is None else from_pos
        if from_pos is None and len(whole) < start:
            start = 0
        granted = room.grant(len(whole) - start)
        data = room.keep(whole[start:start + granted], granted)
        room.settle()
        return self._advance(start, data)


def _command(reply: Reply) -> RawResult:
    """A command's outcome from the handler's reply: an ``SSHResult``, or its stdout alone (status 0)."""
    if reply is None:
        return RawResult()
    if isinstance(reply, str):
        return RawResult(reply.encode())
    if isinstance(reply, bytes | bytearray | memoryview):
        return RawResult(bytes(reply))
    if isinstance(reply, SSHResult):
        if reply.error:
            raise TypeError(f"the MockEngine handler returned an SSHResult with error={reply.error!r}: raise that "
                            "error instead (e.g. raise hussh.ConnectTimeout(...)), as a host's failure is raised")
        return RawResult(reply.stdout.encode(), reply.stderr.encode(), reply.status)
    raise TypeError(f"the MockEngine handler returned {type(reply).__name__} for a command: return an SSHResult, "
                    "str or bytes (its stdout), or None")
