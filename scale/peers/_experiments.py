"""Candidate hussh optimizations, applied as patches from a runner, to measure them before anyone edits hussh.

``python -m scale.bench --tools hussh,hussh+chacha`` runs ``hussh_multi.py`` twice per
repetition, the second time with these patches applied in the parent before it forks its workers
(which inherit them). Nothing here is hussh's behaviour; each function documents the change it
stands for, and scale/README.md what it measured.
"""

from __future__ import annotations

import sys

EXPERIMENTS = ("chacha", "abort-close", "no-eof-reply")
"""Candidates still measured, by ``make bench-fleet-cpu`` (the fleet's CPU per client; ``make bench-smoke`` runs
them once, cheaply). Adopted (now hussh's own behaviour, scale/README.md has their figures): sftp-window,
skip-none, cork (and tweaks-on, the two together), bastion-open-failed, pipeline-auth. Measured, not adopted and
removed: tail-handle (scale/README.md says what it showed)."""


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


def apply(names: list[str]) -> None:
    """Apply the named experiments."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    for name in EXPERIMENTS:
        if name in names:
            globals()[name.replace("-", "_")]()
