"""``AsyncConnection``: one host over asyncssh, the building block of ``Connection`` and the workers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import posixpath
import signal
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

import asyncssh
import msgspec
from asyncssh.connection import SSHClientConnection

from . import _asyncssh_internals as internals
from . import _bastions
from ._config import SSHConfigArg
from ._connector import open_connection
from ._held_file import HeldFile
from ._known_hosts import record as record_host_keys
from ._known_hosts import warn_changed_key
from ._link import sftp_op, via
from ._local_files import create, download, file_perms
from ._make_spec import make_spec
from ._options import DEFAULT_PORT, MAX_OUTPUT, NO_SECONDS, STALL_SECONDS, ConnectOptions, connect_options
from ._result import RawResult, SSHResult, text
from ._sftp_dirs import get_dir, put_dir
from ._shared_output import OutputStream
from ._shell import AsyncInteractiveShell, open_shell
from ._spec import ConnectSpec, HostKeyChecking, HostKeys, ProxyJump
from ._stall import StallGuard
from ._sudo import SudoGate, check_password
from ._uploads import created_with, upload
from .errors import CommandTimeout, ConnectionLost, HusshError, OutputLimitExceeded, SudoError, also_runtime_error

__all__ = ["AsyncConnection", "AsyncFileTailer", "AsyncInteractiveShell", "stop_abandoned"]

SFTP_BLOCK, SFTP_REQUESTS = 65536, 16
"""SFTP writes in flight per host: 16 x 64 KiB. asyncssh's default (128 x ~255 KiB) holds the whole
payload in memory once per host being served; this cut a 10 MB fan-out's memory growth by ~70%
and the fleet's CPU by ~40% at about the same wall time (scale/README.md, experiment sftp-window)."""

CLOSE_GRACE = 2.0
"""Seconds ``close()`` waits for the server to acknowledge the disconnect before dropping the socket."""

STOP_GRACE = 0.4
"""Seconds a stopped command gets between TERM and KILL (and after KILL, to confirm it ended)."""

INPUT_CHUNK = 32 << 10
"""Bytes of a command's stdin handed to asyncssh at a time: it copies what it is given, so the
payload, shared by every host of a worker, is never copied whole per host."""

Input = str | bytes | bytearray | memoryview


P = ParamSpec("P")
T = TypeVar("T")


def _upstream_errors(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A file operation's ``OSError`` leaves as a ``RuntimeError`` too, as upstream's async API raises."""
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OSError as exc:
            if isinstance(exc, (RuntimeError, TimeoutError, ConnectionError)):  # hussh's own, or upstream's kinds
                raise
            raise also_runtime_error(exc) from exc.__cause__  # one error shown, as before: not two chained

    return wrapper


class AsyncConnection:
    """An SSH connection to one host; timeouts are in seconds and ``0`` means no limit.

    ``timeout`` bounds connecting (TCP + handshake + login) and is the default per-command limit.
    With ``timeout=0`` commands may run forever but connecting is still bounded, by
    ``connect_timeout`` or else ``hussh.DEFAULT_CONNECT_TIMEOUT`` (15 s), so a silent host cannot
    hang the caller; neither can an SFTP or SCP operation: one that receives nothing from the
    server for ``stall_timeout`` seconds (default 30, ``0`` for none) fails with ``TransferStalled``.
    ``host`` may be a name from the ssh config (``ssh_config``: ``None`` reads ``~/.ssh/config``
    and ``/etc/ssh/ssh_config`` as ``ssh`` does, a path reads only that file, ``False`` none);
    explicit arguments beat the config. ``proxy_jump="user@bastion:22"`` (a
    comma-separated chain, like ``ssh -J``) reaches the host through bastions. Host keys: see
    ``host_key_checking`` (``accept-new`` records new keys in known_hosts, ``strict``, ``off``).
    ``options`` (a ``hussh.ConnectOptions``) holds any of these; a keyword given beats its field.
    """

    def __init__(
        self,
        host: str,
        username: str | None = None,
        password: str | None = None,
        key_path: str | os.PathLike[str] | None = None,
        private_key: str | os.PathLike[str] | None = None,
        proxy_jump: ProxyJump | None = None,
        proxy_command: str | None = None,
        port: int = DEFAULT_PORT,
        keepalive_interval: float = NO_SECONDS,
        timeout: float = NO_SECONDS,
        *,
        options: ConnectOptions | None = None,
        connect_timeout: float = NO_SECONDS,
        known_hosts: str | os.PathLike[str] | None = None,
        host_key_checking: HostKeyChecking | None = None,
        max_output: int = MAX_OUTPUT,
        forward_agent: bool | None = None,
        ssh_config: SSHConfigArg = None,
        stall_timeout: float = STALL_SECONDS,
    ) -> None:
        self.spec = make_spec(host, connect_options(
            options, username=username, password=password, key_path=key_path, private_key=private_key,
            proxy_jump=proxy_jump, proxy_command=proxy_command, port=port, keepalive_interval=keepalive_interval,
            timeout=timeout, connect_timeout=connect_timeout, known_hosts=known_hosts,
            host_key_checking=host_key_checking, max_output=max_output, forward_agent=forward_agent,
            ssh_config=ssh_config, stall_timeout=stall_timeout,
        ))
        self._conn: SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._stall: StallGuard | None = None
        self._record_keys = True
        self.learned: list[tuple[ConnectSpec, str]] = []

    @classmethod
    def from_spec(cls, spec: ConnectSpec, record_keys: bool = True) -> AsyncConnection:
        """Build from an already resolved spec (how workers recreate a host).

        With ``record_keys=False`` host keys accepted on first use are kept in ``learned`` for the
        caller to record (workers send them to the parent) instead of being written here.
        """
        self = cls.__new__(cls)
        self.spec, self._conn, self._sftp, self._stall = spec, None, None, None
        self._record_keys = record_keys
        self.learned = []
        return self

    host = property(lambda self: self.spec.host)
    port = property(lambda self: self.spec.port)
    username = property(lambda self: self.spec.username)
    password = property(lambda self: self.spec.password)
    private_key = property(lambda self: self.spec.private_key)
    key_path = private_key
    timeout = property(lambda self: self.spec.timeout)
    keepalive_interval = property(lambda self: self.spec.keepalive_interval)
    proxy_command = property(lambda self: self.spec.proxy_command or None)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"AsyncConnection({self.spec.username}@{self.spec.address}, {state})"

    async def connect(self, timeout: float | None = None) -> None:
        """Connect and log in, within ``timeout`` seconds if given (else the connect bound)."""
        if self.connected:
            return
        self._drop()
        self._conn = await open_connection(self.spec, timeout)
        warn_changed_key(self._conn, self.spec)
        self._stall = StallGuard(self._conn, self.spec)
        await self._keep_learned_keys()

    async def _keep_learned_keys(self) -> None:
        """Trust a key accepted on first use from now on, and record it (or leave it to the caller)."""
        learned: list[tuple[ConnectSpec, str]] = []
        key = getattr(self._conn, "learned_key", None)
        if key:
            learned.append((self.spec, key))
            self.spec = msgspec.structs.replace(self.spec, host_keys=HostKeys(trusted=(key,)))
        bastions = _bastions.pool()
        learned += bastions.learned
        bastions.learned.clear()
        if not learned:
            return
        if self._record_keys:
            await asyncio.get_running_loop().run_in_executor(None, record_host_keys, learned)
        else:
            self.learned += learned

    async def _connection(self) -> SSHClientConnection:
        """The live connection, reconnecting first if there is none or the server dropped it."""
        if not self.connected:
            await self.connect()
        assert self._conn is not None
        return self._conn

    async def execute(self, command: str, timeout: float | None = None, *, budget: OutputBudget | None = None,
                      input: Input | None = None, sudo: bool = False, sudo_password: str | None = None) -> SSHResult:
        """Run ``command``; raise ``CommandTimeout`` (with the partial output) past ``timeout`` seconds.

        The command's stdin gets ``input`` (text is UTF-8 encoded), then end of file: a command
        reading stdin never waits for more. With ``sudo=True`` it runs through ``sudo``, which gets
        ``sudo_password`` if it asks (once: a refusal raises ``SudoError``, as does sudo asking
        when no password was given). A command stopped (deadline, output bound, the caller giving
        up) gets TERM, then KILL, on the host. Opening the session is bounded too, by the command's
        deadline or else the connect bound, so a server that stops answering cannot hang the call.
        Output past ``max_output`` (or past what ``budget``, shared with other hosts, has left)
        stops the command with ``OutputLimitExceeded``.
        """
        raw = await self.execute_raw(command, timeout, budget=budget, input=input, sudo=sudo,
                                     sudo_password=sudo_password)
        return _raise_stopped(raw).decoded()

    async def execute_raw(self, command: str, timeout: float | None = None, *, budget: OutputBudget | None = None,
                          input: Input | None = None, sudo: bool = False,
                          sudo_password: str | None = None) -> RawResult:
        """``execute``, the output left as bytes and a command stopped by its deadline or output bound
        (or refused by sudo) returned with ``error`` and ``reason`` set instead of raised: what workers
        send on."""
        check_password(sudo_password)
        conn = await self._connection()
        limit = self.spec.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit if limit else None
        open_by = loop.time() + self.spec.connect_bound
        gate = SudoGate(sudo_password) if sudo else None
        session = _CommandSession(self.spec.max_output, budget, _as_bytes(input), gate)
        remote = gate.wrap(command) if gate is not None else command
        try:
            async with asyncio.timeout_at(min(open_by, deadline or open_by)):
                channel, _ = await conn.create_session(lambda: session, remote, encoding=None)
        except TimeoutError:
            if deadline is not None and deadline <= open_by:
                return session.raw(-1, CommandTimeout, f"command timed out after {limit:g} seconds{via(self.spec)}")
            self._drop()
            raise ConnectionLost(f"{self.spec.address}{via(self.spec)} did not open a session within "
                                 f"{self.spec.connect_bound:g} seconds") from None
        except asyncssh.ChannelOpenError as exc:
            raise ConnectionLost(f"{self.spec.address} refused a session: {exc.reason}") from None
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
            self._drop()
            raise ConnectionLost(f"connection to {self.spec.address}{via(self.spec)} lost: {exc}") from None
        session.start()
        try:
            async with asyncio.timeout_at(deadline):
                lost = await session.finished
        except TimeoutError:
            ended = await asyncio.shield(_stop(channel, session))
            return session.raw(-1, CommandTimeout, f"command timed out after {limit:g} seconds{via(self.spec)}"
                               + ("; stopped it" if ended else _NOT_CONFIRMED))
        except BaseException:
            _stop(channel, session)  # the caller gave up: end it on the host all the same (see stop_abandoned)
            raise
        if session.overflow:
            return session.raw(-1, OutputLimitExceeded, session.overflow_reason())
        if lost is not None:
            self._drop()
            raise ConnectionLost(f"connection to {self.spec.address}{via(self.spec)} lost during the command: {lost}")
        if gate is not None and not gate.started:
            return session.raw(-1, SudoError, gate.reason(self.spec.address))
        return session.raw()

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        """The connection's SFTP client, started on first use within the connect bound."""
        conn = await self._connection()
        if self._sftp is None:
            try:
                async with asyncio.timeout(self.spec.connect_bound):
                    self._sftp = await internals.start_sftp_client(conn)
            except TimeoutError:
                self._drop()
                raise ConnectionLost(f"{self.spec.address}{via(self.spec)} did not start SFTP within "
                                     f"{self.spec.connect_bound:g} seconds") from None
            except asyncssh.Error as exc:
                raise ConnectionLost(f"{self.spec.address} refused the SFTP subsystem: {exc}") from None
        return self._sftp

    async def sftp_read_bytes(self, remote_path: str, offset: int = 0, limit: int = -1,
                              budget: OutputBudget | None = None) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of the remote file from ``offset`` (and no more than ``budget`` grants),
        with how many bytes there were from ``offset`` to the end.

        Two round trips for a file that fits one read: OPEN with STAT of the path beside it (the size
        bounds the read), then READ with CLOSE behind it."""
        sftp = await self._sftp_client()
        async with sftp_op(self, remote_path, "read"):
            remote, size = await _open_with_size(sftp, remote_path)
            try:
                available = max(0, size - offset)  # past the end (a truncated log): nothing to read
                wanted = available if limit < 0 else min(limit, available)
                if budget is not None:
                    wanted = budget.take(wanted)
                data = await _read_at(sftp, remote, remote_path, offset, wanted) if wanted else b""
                if budget is not None:
                    budget.left += wanted - len(data)  # the file shrank meanwhile
                return data, available
            finally:
                await remote.close()  # nothing left to do if the read closed it

    @_upstream_errors
    async def sftp_read(self, remote_path: str, local_path: str | os.PathLike[str] | None = None, *,
                        budget: OutputBudget | None = None) -> str | None:
        """Return the remote file as text (undecodable bytes replaced), or save it to ``local_path``.

        Read into memory, a file is held to ``max_output`` bytes (and what ``budget`` grants) like a
        command's output: past it, ``OutputLimitExceeded`` carries the first bytes. A local failure
        (a full disk, a read-only or missing directory) raises the builtin ``OSError`` subclass
        naming the local path and saying "(local file)"; what was written stays. A saved file gets the
        remote file's 0777 bits plus owner write, less the umask, from its creation (as OpenSSH's sftp;
        never setuid): a file that already existed is narrowed to them, never widened.
        """
        if local_path is None:
            return _raise_stopped(await self.sftp_read_raw(remote_path, budget=budget)).decoded().stdout
        sftp = await self._sftp_client()
        local = os.fspath(local_path)
        if os.path.isdir(local):  # into a directory, by the name the caller asked for (as asyncssh's get)
            local = os.path.join(local, posixpath.basename(remote_path))
        async with sftp_op(self, remote_path, "read"):  # local file: at most the remote 0777 bits
            await download(sftp, remote_path, local, lambda mode: create(local, file_perms(mode)),
                           block_size=SFTP_BLOCK, max_requests=SFTP_REQUESTS)
        return None

    async def sftp_read_raw(self, remote_path: str, *, budget: OutputBudget | None = None) -> RawResult:
        """``sftp_read`` into memory, the file left as bytes (``stdout``) and one over the bound returned
        with its first bytes and ``error`` set instead of raised: what workers send on."""
        limit = self.spec.max_output
        data, available = await self.sftp_read_bytes(remote_path, limit=limit, budget=budget)
        if len(data) == available:
            return RawResult(data)
        why = (f"is larger than {limit} bytes" if len(data) == limit
               else f"did not fit in what was left of the call's output budget ({len(data)} bytes)")
        return RawResult(data, b"", -1, OutputLimitExceeded.__name__,
                         f"{remote_path} on {self.spec.address} {why}; kept the first bytes "
                         "(save it with local_path= to get all of it)")

    @_upstream_errors
    async def sftp_write(self, local_path: str | os.PathLike[str], remote_path: str | None = None) -> None:
        """Copy a local file to ``remote_path`` (default: the same path as the local file)."""
        local_path = os.fspath(local_path)
        if not os.path.isfile(local_path):
            raise FileNotFoundError(errno.ENOENT, "local file does not exist", local_path)
        sftp = await self._sftp_client()
        target = remote_path or local_path
        async with sftp_op(self, target, "write"):  # a new file gets the local 0777 bits, as scp and sftp do
            await upload(sftp, local_path, target, exact=False, block_size=SFTP_BLOCK, max_requests=SFTP_REQUESTS)

    @_upstream_errors
    async def sftp_write_data(self, data: str | bytes, remote_path: str, *, mode: int | None = None) -> None:
        """Write ``data`` (text is UTF-8 encoded) to ``remote_path``, replacing it. ``mode``: the 0777 bits a
        new file is created with (less the server's umask; an existing file keeps its mode), else the server's."""
        payload = data.encode() if isinstance(data, str) else data
        sftp = await self._sftp_client()
        attrs = created_with(None if mode is None else mode & 0o777)
        async with sftp_op(self, remote_path, "write"):
            async with sftp.open(remote_path, "wb", attrs, block_size=SFTP_BLOCK, max_requests=SFTP_REQUESTS) as remote:
                if len(payload) > SFTP_BLOCK or not await internals.write_and_close(remote, payload):
                    await remote.write(payload)  # in parallel blocks, then closed

    @_upstream_errors
    async def sftp_list(self, path: str) -> list[str]:
        """Names in a remote directory, without ``.`` and ``..``, sorted."""
        sftp = await self._sftp_client()
        async with sftp_op(self, path, "listing"):
            names = await sftp.listdir(path)
        return sorted(name for name in names if name not in (".", ".."))

    @_upstream_errors
    async def sftp_size(self, remote_path: str) -> int:
        sftp = await self._sftp_client()
        async with sftp_op(self, remote_path, "stat"):
            return (await sftp.stat(remote_path)).size or 0

    def tail(self, remote_file: str) -> AsyncFileTailer:
        """An async context manager reading what is appended to ``remote_file`` while it is open."""
        return AsyncFileTailer(self, remote_file)

    async def close(self) -> None:
        """Disconnect politely, or drop the socket if the server does not answer within ``CLOSE_GRACE``."""
        conn = self._conn
        if self._sftp is not None:
            self._sftp.exit()
        self._conn = self._sftp = None
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(CLOSE_GRACE):
                    await conn.wait_closed()
                    if self.spec.jump is not None:  # and the bastion login its tunnel was the last one of
                        await _bastions.pool().settle()
            except TimeoutError:
                conn.abort()

    def _forget(self, conn: SSHClientConnection) -> None:
        """``conn`` was lost (a session on it saw the connection go): drop it if it is still the live one, so
        the next operation reconnects instead of finding out again."""
        if self._conn is conn:
            self._drop()

    def _drop(self) -> None:
        """Forget a broken connection (and its SFTP client) so the next operation reconnects."""
        if self._sftp is not None:
            self._sftp.exit()
        if self._conn is not None:
            self._conn.abort()
        self._conn = self._sftp = None

    async def __aenter__(self) -> AsyncConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def shell(self, pty: bool | None = None) -> AsyncInteractiveShell:
        """A login shell for several ``send``/``read`` cycles (``async with await conn.shell() as sh``)."""
        return await open_shell(self, pty)

    @_upstream_errors
    async def sftp_put_dir(self, local_path: str | os.PathLike[str], remote_path: str, follow_symlinks: bool = True,
                           preserve_permissions: bool = True, fail_fast: bool = False, *,
                           failures: list[OSError] | None = None) -> tuple[list[str], list[str]]:
        """Upload a local directory tree as ``remote_path``: (transferred, failed) local file paths
        (``failures``, if given, receives why each failed)."""
        return await put_dir(await self._sftp_client(), functools.partial(sftp_op, self, what="upload"), local_path,
                             remote_path, follow_symlinks, preserve_permissions, fail_fast,
                             window=(SFTP_BLOCK, SFTP_REQUESTS), failures=failures)

    @_upstream_errors
    async def sftp_get_dir(self, remote_path: str, local_path: str | os.PathLike[str], follow_symlinks: bool = True,
                           preserve_permissions: bool = True, fail_fast: bool = False, *,
                           failures: list[OSError] | None = None) -> tuple[list[str], list[str]]:
        """Download a remote directory tree as ``local_path``: (transferred, failed) remote file paths
        (``failures``, if given, receives why each failed)."""
        return await get_dir(await self._sftp_client(), functools.partial(sftp_op, self, what="download"), remote_path,
                             local_path, follow_symlinks, preserve_permissions, fail_fast, host=self.spec.address,
                             window=(SFTP_BLOCK, SFTP_REQUESTS), failures=failures)


class AsyncFileTailer:
    """Reads the text appended to a remote file, fetching only the bytes past the remembered offset.

    ``last_pos`` is the offset read up to (the file size once opened); after exit ``contents``
    holds everything from ``init_pos`` (default: the size when the tailer opened) to the end.

    Open (entered, or ``start()``-ed by workers) a tailer holds the file open until it exits or
    ``close()``: a ``read()`` then costs one round trip, and follows the file as ``tail -F`` does. A
    file truncated below ``last_pos`` is read again from its start; one replaced at its path
    (rotated: renamed away, a new one created) is read to its end, then the new one from its start,
    in the same read; a file removed is read to its end, and the next read fails with
    ``FileNotFoundError`` unless a new one was created meanwhile. Not open, each read opens the
    file by path and reads from ``last_pos`` (upstream's way: past the end of a truncated file, ``""``).
    """

    def __init__(self, conn: AsyncConnection, remote_file: str, init_pos: int | None = None) -> None:
        self.conn = conn
        self.remote_file = remote_file
        self.init_pos = init_pos
        self.last_pos = 0
        self.contents: str | None = None
        self._open = False
        self._held: HeldFile | None = None
        self._leaving = False  # the file held is no longer the path's: read to its end, then the new one

    @_upstream_errors
    async def __aenter__(self) -> AsyncFileTailer:
        await self.start()
        return self

    async def start(self, since: float | None = None, lines: int = 10) -> int:
        """Open the tailer: hold the file and start at its end or, with ``since``, where ``seek_since``
        says; ``init_pos`` is that offset unless it was given. Returns it. ``close()`` lets the file go."""
        self._open = True
        try:
            pos = await (self.seek_end() if since is None else self.seek_since(since, lines))
        except BaseException:
            self.close()
            raise
        if self.init_pos is None:
            self.init_pos = pos
        return pos

    def close(self) -> None:
        """Let the file go (its CLOSE sent, not awaited: callable anywhere, a dead connection included);
        reads from now on open it by path each time."""
        self._open = False
        self._let_go()

    async def seek_end(self) -> int:
        """Skip to the file's current end (what ``read()`` returns starts after it); returns that offset.
        An open tailer takes hold of the file now at the path (one that replaced it is followed from here)."""
        if not self._open:
            self.last_pos = await self.conn.sftp_size(self.remote_file)
            return self.last_pos
        sftp = await self.conn._sftp_client()
        async with sftp_op(self.conn, self.remote_file, "read"):
            self.last_pos = (await self._hold(sftp)).size or 0
        return self.last_pos

    async def seek_since(self, since: float, lines: int) -> int:
        """Start where the file was at ``since`` (a POSIX time) if it can be known: at its end when it was
        not modified since then (its mtime, whole seconds in SFTP v3, is before ``since``'s second), else at
        the start of its last ``lines`` lines, as ``tail -n`` (what was appended meanwhile, if no more).
        Returns the offset; the modification time is the host's clock, ``since`` the caller's."""
        sftp = await self.conn._sftp_client()
        async with sftp_op(self.conn, self.remote_file, "read" if self._open else "stat"):
            attrs = await (self._hold(sftp) if self._open else sftp.stat(self.remote_file))
        size = attrs.size or 0
        unchanged = attrs.mtime is not None and attrs.mtime < int(since)
        self.last_pos = size if unchanged or lines <= 0 else await self._lines_back(size, lines)
        return self.last_pos

    async def _lines_back(self, end: int, lines: int) -> int:
        """The offset of the start of the last ``lines`` lines before ``end`` (a final line without its
        newline counts), looking back no further than ``max_output`` bytes."""
        start = max(0, end - self.conn.spec.max_output)
        held = self._held
        if held is None:
            data, _ = await self.conn.sftp_read_bytes(self.remote_file, start, end - start)
        else:
            async with sftp_op(self.conn, self.remote_file, "read"):
                data = await held.read(start, end - start)
        data = data[:end - start]
        cut = len(data) - 1 if data.endswith(b"\n") else len(data)
        for _ in range(lines):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                return start if start == 0 else start + data.find(b"\n") + 1  # no more than whole lines
        return start + cut + 1

    @_upstream_errors
    async def read(self, from_pos: int | None = None, *, budget: OutputBudget | None = None) -> str:
        """Text added since the last read (or since ``from_pos``); a split UTF-8 character waits for the next read.

        One read returns at most ``max_output`` bytes (or what ``budget`` grants); the rest comes next time.
        """
        return text(await self.read_bytes(from_pos, budget=budget))

    async def read_bytes(self, from_pos: int | None = None, *, budget: OutputBudget | None = None) -> bytes:
        """``read`` before decoding (what workers send on)."""
        limit = self.conn.spec.max_output
        if self._open:
            return await self._read_open(from_pos, _Room(limit, budget))
        start = self.last_pos if from_pos is None else from_pos
        data, _ = await self.conn.sftp_read_bytes(self.remote_file, start, limit, budget)
        return self._advance(start, data)

    def _advance(self, start: int, data: bytes) -> bytes:
        """``data``, read from ``start``, less a trailing incomplete UTF-8 character; ``last_pos`` moves past it."""
        complete = utf8_complete_length(data)
        self.last_pos = start + complete
        return data if complete == len(data) else data[:complete]

    async def _read_open(self, from_pos: int | None, room: _Room) -> bytes:
        """A read on the file held: one round trip (a burst: READ, FSTAT, STAT of the path on either side),
        more only to read past one READ's worth, to read a truncated file from its start, or to take hold
        of the file that replaced it. Any failure lets the file go (the next read opens it again)."""
        sftp = await self.conn._sftp_client()
        try:
            async with sftp_op(self.conn, self.remote_file, "read"):
                return await self._follow(sftp, from_pos, room, switch=True)
        except BaseException:
            if self._leaving:  # a new file waits at the path: start it from its start
                self.last_pos = 0
            self._let_go()
            raise
        finally:
            room.settle()

    async def _follow(self, sftp: asyncssh.SFTPClient, from_pos: int | None, room: _Room, switch: bool) -> bytes:
        held = self._held
        if held is None or held.sftp is not sftp:  # let go after a failure, or its connection was lost
            await self._hold(sftp)
            held = self._held
            assert held is not None
        start = self.last_pos if from_pos is None else from_pos
        granted = room.grant(held.block)
        if not granted:
            return self._advance(start, b"")  # the call's budget is spent: the rest next time
        look = await held.look(self.remote_file, start, granted)
        moved = look.moved or self._leaving
        chunk = look.data
        if from_pos is None and not moved and look.size is not None and look.size < start:
            start = 0  # truncated (copytruncate, `> file`): from its start again
            chunk = await held.read_once(0, granted)
        data = last = room.keep(chunk, granted)
        more = room.left if look.size is None else min(room.left, look.size - start - len(data))
        if len(data) == granted and more > 0:  # more than one READ's worth: the rest in parallel
            asked = room.grant(more)
            if asked:
                last = room.keep(await held.read(start + len(data), asked), asked)
                data += last
                granted = asked
        if not moved:
            return self._advance(start, data)
        end = start + len(data)
        drained = not last or (end >= look.size if look.size is not None else len(last) < granted)
        if not drained:  # the rest of the old file first, next time
            self._leaving = True
            return self._advance(start, data)
        self._let_go()
        self.last_pos = 0
        if look.gone or not switch or not room.left:
            return data  # the next read takes hold of what the path names then (FileNotFoundError if nothing)
        await self._hold(sftp)
        return data + await self._follow(sftp, None, room, switch=False)

    async def _hold(self, sftp: asyncssh.SFTPClient) -> asyncssh.SFTPAttrs:
        """Let the file held go and hold the one now at the path (one round trip); its attributes."""
        self._let_go()
        self._held, attrs = await HeldFile.open(sftp, self.remote_file, SFTP_REQUESTS)
        return attrs

    def _let_go(self) -> None:
        held, self._held, self._leaving = self._held, None, False
        if held is not None:
            held.close()

    async def contents_bytes(self) -> bytes:
        """Everything from ``init_pos`` to the end, up to ``max_output`` bytes: ``contents`` before decoding."""
        data, _ = await self.conn.sftp_read_bytes(self.remote_file, self.init_pos or 0, self.conn.spec.max_output)
        self.last_pos = (self.init_pos or 0) + len(data)
        return data

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Let the file go and collect ``contents`` (up to ``max_output`` bytes, read by path) even when the
        block failed; then a failed read does not hide the block's error."""
        self.close()
        try:
            data = await self.contents_bytes()
        except (OSError, HusshError):
            if exc_type is None:
                raise
            return
        self.contents = text(data)


class _Room:
    """What one read may still take: ``limit`` bytes, of which the call's shared ``budget`` grants some,
    reserved request by request; ``settle()`` gives back what was reserved and not kept."""

    def __init__(self, limit: int, budget: OutputBudget | None) -> None:
        self.left = limit
        self.budget = budget
        self.reserved = self.kept = 0

    def grant(self, size: int) -> int:
        wanted = max(0, min(size, self.left))
        granted = wanted if self.budget is None else self.budget.take(wanted)
        self.reserved += granted
        return granted

    def keep(self, data: bytes, granted: int) -> bytes:
        """``data`` within what was granted for it (a server may send more than asked)."""
        data = data[:granted]
        self.kept += len(data)
        self.left -= len(data)
        return data

    def settle(self) -> None:
        if self.budget is not None:
            self.budget.left += self.reserved - self.kept
        self.reserved = self.kept


def utf8_complete_length(data: bytes) -> int:
    """Length of ``data`` without a trailing, still incomplete UTF-8 sequence (at most 3 bytes).

    Bytes that never start a sequence (0xC0, 0xC1, 0xF5-0xFF) are complete as they are: undecodable,
    they must not be held back for a next read that cannot complete them."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80 or byte in (0xC0, 0xC1) or byte > 0xF4:
            return len(data)
        if byte >= 0xC2:  # lead byte: is its sequence complete?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)


class OutputBudget:
    """Bytes of output a whole call may still keep, shared by its hosts (a worker's share of the call's budget)."""

    def __init__(self, left: int) -> None:
        self.total = self.left = left

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` bytes; return how many were granted."""
        granted = min(wanted, self.left)
        self.left -= granted
        return granted


class _CommandSession(asyncssh.SSHClientSession[bytes]):
    """Collects one command's output per stream, stopping it past ``limit`` bytes (or when the call's
    shared ``budget`` runs out); asyncssh's own buffer stays within its window. Outputs alike are held
    once across the commands running at a time (``OutputStream``): each counts its own bytes against
    ``limit``, the budget pays only for what is held (see ``hussh._shared_output``).

    It feeds the command's stdin with ``stdin`` (a chunk at a time, as the channel drains) then end
    of file; under sudo (``gate``), only once sudo has let the command start."""

    def __init__(self, limit: int, budget: OutputBudget | None = None, stdin: bytes = b"",
                 gate: SudoGate | None = None) -> None:
        self.stdout = OutputStream(budget)
        self.stderr = OutputStream(budget)
        self.size = 0
        self.limit = limit
        self.budget = budget
        self.overflow = False
        self.budget_spent = False
        self.status: int | None = None
        self.signal: str | None = None
        self.channel: asyncssh.SSHClientChannel[bytes] | None = None
        self.finished: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.exited = asyncio.Event()  # exit status or signal received, or the channel closed
        self.stdin = memoryview(stdin)
        self.sent = 0
        self.paused = self.started = False
        self.gate = gate

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.channel = chan

    def start(self) -> None:
        """The session is open: feed stdin now, or once sudo has let the command start."""
        self.started = True
        if self.gate is None or self.gate.started:
            self.feed()

    def feed(self) -> None:
        """Write stdin while the channel takes it; end of file after the last byte."""
        channel = self.channel
        if channel is None or not self.started or channel.is_closing():
            return
        try:
            while not self.paused and self.sent < len(self.stdin):
                chunk = self.stdin[self.sent:self.sent + INPUT_CHUNK]
                self.sent += len(chunk)
                channel.write(chunk)  # asyncssh copies it
            if self.sent >= len(self.stdin):
                channel.write_eof()
        except OSError:  # the command ended (or closed stdin) before reading all of it
            self.sent = len(self.stdin)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.feed()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.overflow:
            return
        gate = self.gate
        if gate is not None and not gate.started and datatype is not None:
            data, answer = gate.feed(data)
            if answer and self.channel is not None:
                self.channel.write(gate.answer())
            if gate.refused and self.channel is not None:
                _stop(self.channel, self)
            elif gate.started:
                self.feed()
            if not data:
                return
        room = min(len(data), self.limit - self.size)
        kept = (self.stdout if datatype is None else self.stderr).extend(data[:room] if room < len(data) else data)
        self.budget_spent = kept < room
        self.size += kept
        if kept < len(data):
            self.overflow = True
            assert self.channel is not None
            _stop(self.channel, self)

    def overflow_reason(self) -> str:
        if self.budget_spent and self.budget is not None:
            return (f"the call's output budget ({self.budget.total} bytes for this worker's hosts) ran out "
                    f"after {self.size} bytes of this command; stopped it")
        return f"command output exceeded {self.limit} bytes; stopped it"

    def exit_status_received(self, status: int) -> None:
        self.status = status
        self.exited.set()

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = signal
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.exited.set()
        if not self.finished.done():
            self.finished.set_result(exc)

    def raw(self, status: int | None = None, stopped: type[HusshError] | None = None, reason: str = "") -> RawResult:
        """The output as received, with why the command was ``stopped`` if it was; each stream's hold
        is released as it is taken, and outputs alike are one object."""
        if status is None:
            status = self.status if self.status is not None else _signal_status(self.signal)
        stdout, whole = self.stdout.take()
        stderr, whole_too = self.stderr.take()
        if not (whole and whole_too) and stopped is None:  # outputs alike once more: no room for another
            assert self.budget is not None
            status, stopped = -1, OutputLimitExceeded
            reason = (f"the call's output budget ({self.budget.total} bytes for this worker's hosts) ran out as "
                      f"this command ended: kept its first {len(stdout)} + {len(stderr)} bytes")
        return RawResult(stdout, stderr, status, stopped.__name__ if stopped else "", reason)


_STOPPED: dict[str, type[CommandTimeout | OutputLimitExceeded | SudoError]] = {
    kind.__name__: kind for kind in (CommandTimeout, OutputLimitExceeded, SudoError)}

_NOT_CONFIRMED = ("; the host did not confirm it ended (it may still run there: OpenSSH before 7.9, a forced "
                  "command, or a process that left its process group)")


def _raise_stopped(raw: RawResult) -> RawResult:
    """``raw`` if it finished; else the exception it was stopped with, keeping its output as text."""
    if raw.error:
        raise _STOPPED[raw.error](raw.reason, SSHResult(text(raw.stdout), text(raw.stderr), -1))
    return raw


def _signal_status(name: str | None) -> int:
    """A shell-style ``128 + signal number`` for a command killed by a signal, else -1."""
    try:
        return 128 + signal.Signals[f"SIG{name}"].value
    except (KeyError, TypeError):
        return -1


_stopping: set[asyncio.Task[bool]] = set()


def _stop(channel: asyncssh.SSHClientChannel[bytes], session: _CommandSession) -> asyncio.Task[bool]:
    """End the remote command (in the background, so a cancelled caller need not wait): see ``_terminate``."""
    task = asyncio.get_running_loop().create_task(_terminate(channel, session.exited))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
    return task


async def _terminate(channel: asyncssh.SSHClientChannel[bytes], exited: asyncio.Event) -> bool:
    """TERM the command's process group on the host (OpenSSH 7.9+ ``killpg``s it on a ``signal``
    request), KILL it if it is still there ``STOP_GRACE`` seconds later, close the channel; whether
    the host reported it ended. TERM first: sudo relays it to a command it runs as another user,
    which a KILL of sudo itself would leave running."""
    for name in ("TERM", "KILL"):
        if exited.is_set():
            break
        try:
            channel.send_signal(name)
        except (OSError, asyncssh.Error):
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await exited.wait()
    channel.close()
    return exited.is_set()


async def stop_abandoned(timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the commands whose callers gave up (a cancelled ``execute``:
    Ctrl-C, an aborted wave) to be ended on their hosts; call it before closing the connections,
    which would otherwise cut the KILL off. Takes at most ``2 * STOP_GRACE`` when every host answers."""
    if _stopping:
        await asyncio.wait(set(_stopping), timeout=timeout)


def _as_bytes(data: Input | None) -> bytes:
    """A command's stdin as bytes (text UTF-8 encoded); kept as given when it already is bytes."""
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else bytes(data)


async def _open_with_size(sftp: asyncssh.SFTPClient, path: str) -> tuple[asyncssh.SFTPClientFile, int]:
    """``path`` opened for reading, and its size, in one round trip: STAT by path beside OPEN."""
    opened, stat = await asyncio.gather(sftp.open(path, "rb"), sftp.stat(path), return_exceptions=True)
    if isinstance(opened, BaseException):
        raise opened
    if isinstance(stat, BaseException):
        await opened.close()
        raise stat
    return opened, stat.size or 0


async def _read_at(sftp: asyncssh.SFTPClient, remote: asyncssh.SFTPClientFile, path: str, offset: int,
                   wanted: int) -> bytes:
    """``wanted`` bytes from ``offset`` (fewer if the file ends sooner); a read that fits one request
    has the CLOSE pipelined behind it, and one the server answers short is finished from a new handle."""
    data = await internals.read_and_close(remote, offset, wanted) if wanted <= SFTP_BLOCK else None
    if data is None:
        return cast(bytes, await remote.read(wanted, offset))  # in parallel blocks; opened "rb"
    if 0 < len(data) < wanted:
        async with sftp.open(path, "rb") as rest:
            data += cast(bytes, await rest.read(wanted - len(data), offset + len(data)))
    return data




