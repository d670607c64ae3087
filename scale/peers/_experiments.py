"""Candidate hussh optimizations, applied as patches from a runner, to measure them before anyone edits hussh.

``python -m scale.bench --tools hussh,hussh+cork`` runs ``hussh_multi.py`` twice per
repetition, the second time with these patches applied in the parent before it forks its workers
(which inherit them). Nothing here is hussh's behaviour; each function documents the change it
stands for.
"""

from __future__ import annotations

import asyncio
import sys

EXPERIMENTS = ("cork",)


class _CorkedTransport:
    """Packets written during one event-loop turn leave in one ``write()`` (flushed by ``call_soon``)."""

    def __init__(self, transport, loop) -> None:  # type: ignore[no-untyped-def]
        self._transport, self._loop, self._buffer = transport, loop, None

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        if self._buffer is None:
            self._buffer = [data]
            self._loop.call_soon(self._flush)
        else:
            self._buffer.append(data)

    def _flush(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer and not self._transport.is_closing():
            self._transport.write(b"".join(buffer))

    def close(self) -> None:
        if self._buffer:
            self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer = None
        self._transport.abort()

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self._transport, name)


def cork() -> None:
    """Coalesce asyncssh's writes: it calls ``transport.write`` once per packet (uvloop: one syscall each)."""
    from asyncssh.connection import SSHConnection

    original = SSHConnection.connection_made

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        original(self, _CorkedTransport(transport, asyncio.get_running_loop()))

    SSHConnection.connection_made = connection_made


def apply(names: list[str]) -> None:
    """Apply the named experiments."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    for name in EXPERIMENTS:
        if name in names:
            globals()[name.replace("-", "_")]()
