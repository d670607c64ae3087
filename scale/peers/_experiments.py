"""Candidate hussh optimizations, applied as patches from a runner, to measure them before anyone edits hussh.

``python -m scale.bench --tools hussh,hussh+chacha`` runs ``hussh_multi.py`` twice per
repetition, the second time with these patches applied in the parent before it forks its workers
(which inherit them). Nothing here is hussh's behaviour; each function documents the change it
stands for, and scale/README.md what it measured.
"""

from __future__ import annotations

import sys

EXPERIMENTS = ("chacha", "abort-close", "no-eof-reply", "tail-handle")
"""Candidates still open. Adopted (now hussh's own behaviour, scale/README.md has their figures): sftp-window,
skip-none, cork (and tweaks-on, the two together), bastion-open-failed, pipeline-auth."""


def chacha() -> None:
    """chacha20-poly1305 first, as OpenSSH's and libssh2's (upstream's) clients negotiate it, instead of AES-GCM."""
    from hussh import _connector

    _connector._ENCRYPTION[:] = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                 "aes128-ctr", "aes192-ctr", "aes256-ctr"]


def abort_close() -> None:
    """Close by dropping the socket, as upstream does at exit, instead of MSG_DISCONNECT and waiting for the server."""
    from hussh import aio

    async def close(self):  # type: ignore[no-untyped-def]
        conn = self._conn
        if self._sftp is not None:
            self._sftp.exit()
        self._conn = self._sftp = None
        if conn is not None:
            conn.abort()

    aio.AsyncConnection.close = close


def no_eof_reply() -> None:
    """Do not answer the server's CHANNEL_EOF with one of ours (asyncssh half-closes by default; libssh2 does not)."""
    from hussh import aio

    aio._CommandSession.eof_received = lambda self: True


def tail_handle() -> None:
    """A tailer keeps its SFTP file handle open and reads at its offset until a short read: one or two SFTP
    requests per ``read()`` instead of four (open, fstat, read, close). Trade-off: it follows the file it opened,
    not a new file renamed into place by log rotation (the path-based read does)."""
    from hussh import aio

    async def read(self, from_pos=None):  # type: ignore[no-untyped-def]
        start = self.last_pos if from_pos is None else from_pos
        async with aio._sftp_op(self.conn.spec, self.remote_file):
            handle = getattr(self, "_handle", None)
            if handle is None:
                sftp = await self.conn._sftp_client()
                handle = self._handle = await sftp.open(self.remote_file, "rb")
            chunks, offset = [], start
            while True:
                chunk = await handle.read(1 << 18, offset)
                chunks.append(chunk)
                offset += len(chunk)
                if len(chunk) < 1 << 18:
                    break
        data = b"".join(chunks)
        complete = aio.utf8_complete_length(data)
        self.last_pos = start + complete
        return data[:complete].decode("utf-8", "replace")

    aio.AsyncFileTailer.read = read


def apply(names: list[str]) -> None:
    """Apply the named experiments."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    for name in EXPERIMENTS:
        if name in names:
            globals()[name.replace("-", "_")]()
