"""Hostile SSH servers on loopback: small asyncssh servers that lie, to test what a client takes on trust.

``serve()`` starts one on 127.0.0.1 (a free port) in a thread with its own event loop, so a blocking
client in the caller's thread cannot stall it, with a fresh host key and a random password; the
``HostileServer`` it yields logs in with strict host key checking against a known_hosts file in a
private temporary directory (never ``~/.ssh``). What the server says is up to the caller:

* ``sftp``: an ``asyncssh.SFTPServer`` factory; ``FakeTree`` serves an in-memory tree whose names,
  modes, sizes and bytes are whatever a test says (subclass it to lie in other ways);
* ``process``: what runs for a command (``scp_source`` answers like ``scp -f``, with files of its choice).

Nothing starts on import. See docs/scale-testing.md ("Hostile servers").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

__all__ = ["USERNAME", "Dir", "FakeTree", "File", "HostileServer", "scp_source", "serve"]

USERNAME = "hostile"
ADDRESS = "127.0.0.1"
START_TIMEOUT = 30.0

SFTPFactory = Callable[[asyncssh.SSHServerChannel[bytes]], asyncssh.SFTPServer]
ProcessFactory = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None] | None]


@dataclass(frozen=True)
class HostileServer:
    """A running hostile server: where it listens and how to log in to it."""

    host: str
    port: int
    username: str
    password: str
    known_hosts: str

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``Connection``/``AsyncConnection`` (and ``from_shared_auth``, with ``port``)."""
        return {"port": self.port, "username": self.username, "password": self.password,
                "known_hosts": self.known_hosts, "host_key_checking": "strict"}


@contextlib.contextmanager
def serve(sftp: SFTPFactory | None = None, process: ProcessFactory | None = None,
          **listen_options: Any) -> Iterator[HostileServer]:
    """Run a hostile server until the block ends; ``listen_options`` go to ``asyncssh.listen``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hussh-hostile-server", daemon=True)
    thread.start()
    workdir = Path(tempfile.mkdtemp(prefix="hussh-hostile-"))
    running = _Running(secrets.token_urlsafe(16))
    try:
        acceptor = asyncio.run_coroutine_threadsafe(running.start(sftp, process, listen_options),
                                                    loop).result(START_TIMEOUT)
        port = acceptor.get_port()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[{ADDRESS}]:{port} {running.key.export_public_key().decode()}")
        yield HostileServer(ADDRESS, port, USERNAME, running.password, str(known_hosts))
    finally:
        try:
            asyncio.run_coroutine_threadsafe(running.stop(), loop).result(START_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(START_TIMEOUT)
            loop.close()
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class _Running:
    """The server's state in its own loop: its key, its listener and the connections to close at the end."""

    password: str
    key: asyncssh.SSHKey = field(default_factory=lambda: asyncssh.generate_private_key("ssh-ed25519"))
    acceptor: asyncssh.SSHAcceptor | None = None
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)

    async def start(self, sftp: SFTPFactory | None, process: ProcessFactory | None,
                    options: dict[str, Any]) -> asyncssh.SSHAcceptor:
        options.setdefault("encoding", None)
        self.acceptor = await asyncssh.listen(ADDRESS, 0, server_factory=lambda: _Login(self),
                                              server_host_keys=[self.key], sftp_factory=sftp,
                                              process_factory=process, allow_scp=False, **options)
        return self.acceptor

    async def stop(self) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
            await self.acceptor.wait_closed()
        for conn in list(self.connections):
            conn.close()
            await conn.wait_closed()
        current = asyncio.current_task()
        rest = [task for task in asyncio.all_tasks() if task is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


class _Login(asyncssh.SSHServer):
    """Password login as ``USERNAME`` with the server's password; nothing else."""

    def __init__(self, running: _Running) -> None:
        self.running = running
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.running.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.running.connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USERNAME and secrets.compare_digest(password, self.running.password)


# ------------------------------------------------------------------------------------------ SFTP


@dataclass(frozen=True)
class File:
    """A regular file: its bytes, the mode bits the server claims and the size it claims (default: the truth)."""

    data: bytes = b""
    mode: int = 0o644
    size: int | None = None


@dataclass(frozen=True)
class Dir:
    """A directory listing its entries under whatever names a test gives (``../x``, ``/etc/x``, ``a\\0b``...)."""

    entries: Mapping[str | bytes, File | Dir] = field(default_factory=dict)
    mode: int = 0o755


class FakeTree(asyncssh.SFTPServer):
    """An SFTP server of an in-memory tree, read-only: ``FakeTree.factory({"/top": Dir(...)})``.

    A node is found by the exact path a client asks for: an entry ``name`` of directory ``/top`` is
    ``/top/name``, however odd the name, so a client that joins names blindly gets what it asks for.
    ``realpath`` returns the path as given. Override ``read`` (or others) to lie in other ways.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], roots: Mapping[str, File | Dir]) -> None:
        super().__init__(chan)
        self.nodes: dict[bytes, File | Dir] = {}
        for path, node in roots.items():
            self._add(_bytes(path), node)

    @classmethod
    def factory(cls, roots: Mapping[str, File | Dir], **kwargs: Any) -> SFTPFactory:
        """What ``serve(sftp=...)`` takes: a server of these trees for each session."""
        return lambda chan: cls(chan, roots, **kwargs)

    def _add(self, path: bytes, node: File | Dir) -> None:
        self.nodes[path] = node
        if isinstance(node, Dir):
            for name, child in node.entries.items():
                self._add(path + b"/" + _bytes(name), child)

    def node(self, path: bytes) -> File | Dir:
        try:
            return self.nodes[path]
        except KeyError:
            raise asyncssh.SFTPNoSuchFile("No such file") from None

    def realpath(self, path: bytes) -> bytes:
        return path

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return attrs_of(self.node(path))

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return attrs_of(self.node(path))

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        directory = self.node(path)
        if not isinstance(directory, Dir):
            raise asyncssh.SFTPNotADirectory("Not a directory")
        for name, child in ((".", directory), ("..", directory), *directory.entries.items()):
            yield asyncssh.SFTPName(_bytes(name), attrs=attrs_of(child))

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> File:
        node = self.node(path)
        if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_CREAT):
            raise asyncssh.SFTPPermissionDenied("Read-only")
        if not isinstance(node, File):
            raise asyncssh.SFTPFileIsADirectory("Is a directory")
        return node

    def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        assert isinstance(file_obj, File)
        return attrs_of(file_obj)

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        assert isinstance(file_obj, File)
        return file_obj.data[offset:offset + size]

    def close(self, file_obj: object) -> None:
        pass


def attrs_of(node: File | Dir) -> asyncssh.SFTPAttrs:
    """What the server says of a node: type and claimed mode (setuid bits and all), claimed size."""
    if isinstance(node, Dir):
        return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY, permissions=stat.S_IFDIR | node.mode,
                                  size=0)
    size = len(node.data) if node.size is None else node.size
    return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, permissions=stat.S_IFREG | node.mode, size=size)


def _bytes(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


# ------------------------------------------------------------------------------------------ commands


def scp_source(*files: tuple[str | bytes, int, bytes]) -> ProcessFactory:
    """A command handler that answers as ``scp -f`` would, whatever was asked: it sends ``files``
    (name, mode, bytes), then exits 0; with none, it sends nothing at all."""
    async def run(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await process.stdin.readexactly(1)  # the receiver is ready
        for name, mode, data in files:
            process.stdout.write(b"C%04o %d %s\n" % (mode, len(data), _bytes(name)))
            await process.stdin.readexactly(1)
            process.stdout.write(data + b"\0")
            await process.stdin.readexactly(1)
        process.exit(0)
    return run
