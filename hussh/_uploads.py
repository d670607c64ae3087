"""Remote files made from local ones, never more open on the host than here, not even for a moment.

OpenSSH's sftp and scp are the model: a new remote file is created with the local file's 0777 bits
(never setuid, setgid or sticky) less the server's umask, and an existing one keeps its mode,
unless modes are kept exactly (``sftp put -p``; ``put_dir``'s ``preserve_permissions``): then the
file gets them before the first byte of the new data is written.
"""

from __future__ import annotations

import asyncio
import os
import stat

import asyncssh

from . import _asyncssh_internals as internals
from ._local_files import local_errors

__all__ = ["created_with", "upload_perms", "upload"]


def upload_perms(local_mode: int) -> int:
    """The most a remote copy of a local file may allow: its 0777 bits."""
    return stat.S_IMODE(local_mode) & 0o777


def created_with(perms: int | None) -> asyncssh.SFTPAttrs:
    """What an SFTP OPEN or MKDIR creates with: ``perms`` (less the server's umask), else the server's default."""
    return asyncssh.SFTPAttrs() if perms is None else asyncssh.SFTPAttrs(permissions=perms)


async def upload(sftp: asyncssh.SFTPClient, local_path: str, remote_path: str, *, exact: bool, block_size: int,
                 max_requests: int) -> None:
    """Copy a local file to ``remote_path``, ``max_requests`` blocks in flight, the remote file created with
    the local file's 0777 bits; ``exact``: set to exactly them, ahead of the first WRITE in the same burst."""
    with local_errors(local_path):
        fd = os.open(local_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with local_errors(local_path):
            info = os.fstat(fd)
        perms = upload_perms(info.st_mode)
        source = _Blocks(fd, local_path, info.st_size, block_size)
        async with sftp.open(remote_path, "wb", created_with(perms), block_size=block_size,
                             max_requests=max_requests) as remote:
            # Tasks take their first step in the order made, and each sends its request in that step:
            # the server, which answers one request after the other, narrows the file before any WRITE.
            try:
                async with asyncio.TaskGroup() as group:
                    if exact:
                        group.create_task(remote.chmod(perms))
                    if info.st_size <= block_size:
                        group.create_task(_write_one(remote, source.next()))
                    else:
                        for _ in range(max_requests):
                            group.create_task(_write_blocks(remote, source))
            except BaseExceptionGroup as failed:  # the first failure, as one write would raise it
                raise failed.exceptions[0] from None
    finally:
        os.close(fd)


class _Blocks:
    """The local file's blocks, read in order (its offset shows the progress) up to the size it had when opened."""

    def __init__(self, fd: int, path: str, size: int, block_size: int) -> None:
        self.fd, self.path, self.left, self.block_size = fd, path, size, block_size
        self.offset = 0

    def next(self) -> tuple[int, bytes]:
        """The next block and its offset; empty at the end (or where the file ends sooner, having shrunk)."""
        offset = self.offset
        with local_errors(self.path):
            data = os.read(self.fd, min(self.block_size, self.left)) if self.left > 0 else b""
        self.offset += len(data)
        self.left = self.left - len(data) if data else 0  # a file that shrank ends where it ends now
        return offset, data


async def _write_one(remote: asyncssh.SFTPClientFile, block: tuple[int, bytes]) -> None:
    """A small file's only WRITE, its CLOSE right behind it where this asyncssh allows."""
    _, data = block
    if data and not await internals.write_and_close(remote, data):
        await remote.write(data, 0)


async def _write_blocks(remote: asyncssh.SFTPClientFile, source: _Blocks) -> None:
    """Write the source's next block until there is none: one of ``max_requests`` such writers."""
    while True:
        offset, data = source.next()
        if not data:
            return
        await remote.write(data, offset)
