"""The remote file an open tail follows, held open between reads so that a read costs one round trip.

Opening the file by path for every read cost two (OPEN, then READ). With the handle held, one burst
does it: a STAT of the path, an FSTAT of the handle, the READ, a STAT of the path again (the server
answers in order). The sizes tell whether the file shrank below the offset (truncated:
``copytruncate``, ``> file``) and whether the path still names the file held: for one file, appended
to meanwhile, size(STAT before) <= size(FSTAT) <= size(STAT after); a file that replaced it at the
path (rotated: the old one renamed away) breaks that order unless it is exactly as long, and then
one of the two grows and the next read sees it. SFTP v3 has no inode to compare, and modification
times are left out: a clock set back would make one file look like two, and a read of the whole
file again is worse than noticing a rotation one read late. Sizes are the server's word: absent,
they say nothing (the file held is taken to be the path's), and no read is bounded by them, only by
what the caller asked.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, cast

import asyncssh

from . import _asyncssh_internals as internals

__all__ = ["HeldFile", "Look"]

FALLBACK_BLOCK = 16 << 10
"""The largest single READ when the file object names none (asyncssh's safe default)."""


class Look(NamedTuple):
    """What one burst found: the bytes read, the held file's size, and what the path names now."""

    data: bytes
    size: int | None  # the held file's size (FSTAT), when the server gave one
    moved: bool  # the path no longer names the file held (another file, or none)
    gone: bool  # no file at the path


class HeldFile:
    """One remote file open for reading on one SFTP session; ``close()`` lets it go at once."""

    def __init__(self, sftp: asyncssh.SFTPClient, file: asyncssh.SFTPClientFile) -> None:
        self.sftp = sftp
        self.file = file

    @classmethod
    async def open(cls, sftp: asyncssh.SFTPClient, path: str, max_requests: int) -> tuple[HeldFile, asyncssh.SFTPAttrs]:
        """``path`` opened for reading, and its attributes: the STAT beside the OPEN, one round trip. A caller
        cancelled before the reply does not leak the handle: it is closed as it arrives."""
        opening = asyncio.ensure_future(sftp.open(path, "rb", max_requests=max_requests))
        stating = asyncio.ensure_future(sftp.stat(path))
        try:
            await asyncio.wait((opening, stating))
        except BaseException:
            stating.cancel()
            opening.add_done_callback(_close_when_opened)
            raise
        failed = opening.exception()
        if failed is not None:
            stating.exception()  # taken: the OPEN's error is the one that counts
            raise failed
        file = opening.result()
        failed = stating.exception()
        if failed is not None:
            internals.close_unawaited(file)
            raise failed
        return cls(sftp, file), stating.result()

    @property
    def block(self) -> int:
        """The most one READ asks for: the server's advertised limit (asyncssh's ``read_len``)."""
        return self.file.read_len or FALLBACK_BLOCK

    async def look(self, path: str, offset: int, size: int) -> Look:
        """Up to ``size`` bytes at ``offset`` and what became of the file, in one round trip."""
        before, held, data, after = await asyncio.gather(
            self.sftp.stat(path), self.file.stat(), internals.read_once(self.file, offset, size), self.sftp.stat(path),
            return_exceptions=True)
        for result in (held, data):
            if isinstance(result, BaseException):
                raise result
        for result in (before, after):
            if isinstance(result, BaseException) and not isinstance(result, asyncssh.SFTPNoSuchFile):
                raise result
        assert isinstance(held, asyncssh.SFTPAttrs) and isinstance(data, bytes)
        gone = isinstance(after, BaseException)
        sizes = [attrs.size if isinstance(attrs, asyncssh.SFTPAttrs) else None for attrs in (before, held, after)]
        first, mine, last = sizes
        moved = gone or isinstance(before, BaseException) or (
            first is not None and mine is not None and last is not None and not first <= mine <= last)
        return Look(data, held.size, moved, gone)

    async def read_once(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` in one READ."""
        return await internals.read_once(self.file, offset, size)

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, in parallel READs of ``block`` bytes (never more than asked)."""
        if size <= 0:
            return b""  # asyncssh would still send a READ (a negative size: to the end of the file)
        return cast(bytes, await self.file.read(size, offset))[:size]

    def close(self) -> None:
        """Let the handle go now (its CLOSE sent, its reply not awaited)."""
        internals.close_unawaited(self.file)


def _close_when_opened(opening: asyncio.Future[asyncssh.SFTPClientFile]) -> None:
    """An OPEN whose caller gave up: close the handle it brought, if any (its error, if any, is taken)."""
    if opening.cancelled() or opening.exception() is not None:
        return
    internals.close_unawaited(opening.result())
