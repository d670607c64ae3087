"""Local files made from what a server says: its names checked, its modes narrowed, its sizes held to.

A server picks the names in a directory listing, the mode bits of a file and the bytes it sends;
none of it may write outside the destination the caller named or make a file more open than the
remote one. OpenSSH's sftp and scp are the model: names with a ``/`` are refused, files keep only
the remote file's 0777 bits (never setuid, setgid or sticky) and the umask applies.
"""

from __future__ import annotations

import contextlib
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator

import asyncssh

__all__ = ["create", "download", "file_perms", "host_file_name", "name_refusal"]

Opener = Callable[[int | None], int]
"""Opens the local file of a download given the remote file's mode (``None``: unknown); returns its fd."""

SEPARATORS = frozenset(filter(None, (os.sep, os.altsep)))
"""What splits a local path here: ``/`` on POSIX (a ``\\`` is an ordinary character of a name there)."""


def name_refusal(name: str) -> str | None:
    """Why a name a server listed cannot become one local file name, or ``None`` if it can."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "names a directory, not an entry of one"
    if name[0] in SEPARATORS:
        return "is an absolute path"
    if any(sep in name for sep in SEPARATORS):
        return "contains a path separator"
    if "\0" in name:
        return "contains a NUL byte"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "contains a control character"
    return None


def host_file_name(host: str) -> str:
    """A host's name as one file name of its own: ``%``, ``/``, control characters (and the whole of a
    name that is ``.``, ``..`` or empty) percent-encoded, so no name escapes the directory and no two share a file."""
    if host in ("", ".", ".."):
        return "".join(f"%{ord(char):02X}" for char in host) or "%"
    return "".join(f"%{ord(char):02X}" if char == "%" or char in SEPARATORS or unicodedata.category(char) == "Cc"
                   else char for char in host)


def file_perms(remote_mode: int | None, exact: bool = False) -> int:
    """The most a local copy of a remote file may allow: its 0777 bits (0666 if unknown), plus owner
    write unless ``exact`` (as OpenSSH's sftp, so the copy can be fetched again); the umask comes on top."""
    perms = 0o666 if remote_mode is None else stat.S_IMODE(remote_mode) & 0o777
    return perms if exact else perms | stat.S_IWUSR


def create(path: str, perms: int, *, dir_fd: int | None = None, follow: bool = True) -> int:
    """Open ``path`` to write it from scratch; a new file gets ``perms`` less the umask from the start, an
    existing one is narrowed to them (never widened) before a byte is written. ``follow=False``: a link there fails."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, perms, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISREG(info.st_mode) and mode & ~perms:
            os.fchmod(fd, mode & perms)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def local_errors(path: str) -> Iterator[None]:
    """A failure on our side names the local path and says so ("(local file)"), apart from the server's."""
    try:
        yield
    except OSError as exc:
        raise type(exc)(exc.errno, f"{exc.strerror or exc} (local file)", path) from None


async def download(sftp: asyncssh.SFTPClient, remote_path: str, local_path: str, open_local: Opener, *,
                   block_size: int, max_requests: int) -> None:
    """Copy a remote file into the local file ``open_local(remote mode)`` opens, reading ``max_requests`` blocks
    at a time; never past the size the server stated when the file was opened, whatever it sends."""
    async with sftp.open(remote_path, "rb", block_size=block_size, max_requests=max_requests) as remote:
        attrs = await remote.stat()
        if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
            raise asyncssh.SFTPFileIsADirectory("Is a directory")
        size = attrs.size or 0
        with local_errors(local_path):
            fd = open_local(attrs.permissions)
        try:
            async for offset, data in await remote.read_parallel(size, 0):
                with local_errors(local_path):
                    _write_all(fd, memoryview(data)[:max(0, size - offset)], offset)
        finally:
            os.close(fd)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
