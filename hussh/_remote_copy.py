"""``Connection.remote_copy``: a file from one host to another through this client, streamed by SFTP.

At most two chunks of ``CHUNK`` bytes are held at once (one being written while the next is
read), so a file of any size costs the client the same memory. The destination is overwritten in
place and truncated at the end, so copying a file onto itself (same path on hosts that share a
filesystem, say) leaves it intact instead of emptying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno

import asyncssh

from ._link import Link, sftp_op

__all__ = ["remote_copy"]

CHUNK = 256 * 1024
"""Bytes per SFTP read and write; asyncssh splits it into parallel requests."""

_WRITE_NO_TRUNCATE = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT


async def remote_copy(source: Link, source_path: str, dest: Link, dest_path: str | None) -> None:
    """Copy ``source_path`` on ``source`` to ``dest_path`` (default: the same path) on ``dest``, replacing it.

    Every SFTP step is bounded by its own connection's ``timeout`` and ``stall_timeout``, and its
    failure names that host.
    """
    target = dest_path or source_path
    src_sftp = await source._sftp_client()
    dst_sftp = await dest._sftp_client()
    async with contextlib.AsyncExitStack() as stack:
        async with sftp_op(source, source_path, "read"):
            if await src_sftp.isdir(source_path):
                raise IsADirectoryError(errno.EISDIR, "is a directory, not a file",
                                        f"{source_path} on {source.spec.address}")
            reader = await src_sftp.open(source_path, "rb")
        stack.push_async_callback(_close, source, source_path, reader)
        async with sftp_op(dest, target, "write"):
            writer = await dst_sftp.open(target, _WRITE_NO_TRUNCATE, encoding=None)
        stack.push_async_callback(_close, dest, target, writer)
        copied = await _pump(source, source_path, reader, dest, target, writer)
        async with sftp_op(dest, target, "write"):
            await writer.truncate(copied)


async def _close(conn: Link, path: str, file: asyncssh.SFTPClientFile) -> None:
    """Close a remote file within its connection's bounds (nothing to do once the connection is gone)."""
    if conn.connected:
        async with sftp_op(conn, path, "close"):
            await file.close()


async def _pump(source: Link, source_path: str, reader: asyncssh.SFTPClientFile,
                dest: Link, target: str, writer: asyncssh.SFTPClientFile) -> int:
    """Read chunk n+1 while chunk n is written: two chunks in memory, both links kept busy; returns the size."""

    async def read() -> bytes:
        async with sftp_op(source, source_path, "read"):
            return await reader.read(CHUNK)

    chunk, copied = await read(), 0
    while chunk:
        next_read = asyncio.ensure_future(read())
        try:
            async with sftp_op(dest, target, "write"):
                await writer.write(chunk)
        except BaseException:
            next_read.cancel()
            raise
        copied += len(chunk)
        chunk = await next_read
    return copied
