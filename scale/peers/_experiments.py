"""Candidate hussh optimizations, applied as patches from a runner, to measure them before anyone edits hussh.

``python -m scale.bench --tools hussh,hussh+pipeline-auth`` runs ``hussh_multi.py`` twice per
repetition, the second time with these patches applied in the parent before it forks its workers
(which inherit them). Nothing here is hussh's behaviour; each function documents the change it
stands for, and scale/README.md what it measured.
"""

from __future__ import annotations

import sys

EXPERIMENTS = ("pipeline-auth", "sftp-window", "skip-none", "cork", "tweaks-on", "chacha", "abort-close", "no-eof-reply",
               "bastion-open-failed", "tail-handle")


def pipeline_auth() -> None:
    """Send the first USERAUTH_REQUEST with SERVICE_REQUEST instead of waiting for SERVICE_ACCEPT.

    One round trip less per login (a WAN saving); the corked flush waits one more loop turn so
    the auth task's packet leaves in the same write as the service request.
    """
    from asyncssh import ServiceNotAvailable
    from asyncssh.connection import _USERAUTH_SERVICE, SSHClientConnection
    from asyncssh.constants import MSG_SERVICE_ACCEPT

    from hussh._connector import _FleetConnection

    def send_service_request(self, service):  # type: ignore[no-untyped-def]
        SSHClientConnection.send_service_request(self, service)
        if service == _USERAUTH_SERVICE:
            self._auth_pipelined = self._hold_flush = self._auth_in_progress = True
            self._owner.begin_auth(self._username)
            self.try_next_auth()

    accept = SSHClientConnection._packet_handlers[MSG_SERVICE_ACCEPT]

    def process_service_accept(self, pkttype, pktid, packet):  # type: ignore[no-untyped-def]
        if not getattr(self, "_auth_pipelined", False):
            return accept(self, pkttype, pktid, packet)
        service = packet.get_string()
        packet.check_end()
        if service != _USERAUTH_SERVICE:
            raise ServiceNotAvailable("Unexpected service in service accept")
        self._next_service = None
        self._auth_pipelined = False
        return True

    flush = _FleetConnection._flush

    def hold_then_flush(self, transport):  # type: ignore[no-untyped-def]
        if getattr(self, "_hold_flush", False):  # the auth task writes on the next turn: wait for it
            self._hold_flush = False
            self._loop.call_soon(self._flush, transport)
            return
        flush(self, transport)

    _FleetConnection.send_service_request = send_service_request
    _FleetConnection._packet_handlers = {**SSHClientConnection._packet_handlers,
                                         MSG_SERVICE_ACCEPT: process_service_accept}
    _FleetConnection._flush = hold_then_flush


def sftp_window() -> None:
    """``sftp_write_data`` with at most 16 x 64 KiB SFTP writes in flight per host (asyncssh's default is 128
    requests of up to the server's write limit, ~255 KiB for OpenSSH: a whole 10 MB payload in flight, copied
    per block, per host: batch_size copies of the payload in the client)."""
    from hussh import aio

    async def sftp_write_data(self, data, remote_path):  # type: ignore[no-untyped-def]
        payload = data.encode() if isinstance(data, str) else data
        sftp = await self._sftp_client()
        async with aio._sftp_op(self.spec, remote_path):
            async with sftp.open(remote_path, "wb", block_size=64 * 1024, max_requests=16) as remote:
                await remote.write(payload)

    aio.AsyncConnection.sftp_write_data = sftp_write_data


def skip_none() -> None:
    """Password-only logins send the password first, as ``_asyncssh_internals`` documents, but does not do: its
    guard ``_has(SSHClientConnection, "_auth_methods")`` looks for an *instance* attribute on the class, so
    ``SKIP_NONE_PROBE_AVAILABLE`` is False and every login starts with a ``none`` request the server refuses."""
    from hussh import _asyncssh_internals as internals

    internals.SKIP_NONE_PROBE_AVAILABLE = True  # connection_factory reads the module global at each connection


def cork() -> None:
    """Corked writes (one ``write()`` per loop turn), as documented; off for the same reason as skip-none
    (``_transport`` and ``_loop`` are instance attributes, so ``CORK_AVAILABLE`` is False and ``_send`` was never
    overridden)."""
    from hussh._asyncssh_internals import FleetConnection

    def _send(self, data):  # type: ignore[no-untyped-def]
        if self._unsent is not None:
            self._unsent.append(data)
        elif self._transport:
            self._unsent = [data]
            self._loop.call_soon(self._flush, self._transport)

    FleetConnection._send = _send


def tweaks_on() -> None:
    """Both of the above: the transport tweaks the README describes, actually in effect."""
    skip_none()
    cork()


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


def bastion_open_failed() -> None:
    """A bastion out of descriptors refuses a direct-tcpip channel with code 2 (CONNECT_FAILED) and the bare reason
    "open failed" (its socket() failed: EMFILE), not RESOURCE_SHORTAGE: treat that as "this link is full" too, so
    the host is opened through another bastion login instead of failing. A target that refuses answers "connect
    failed: ..." and still fails the host."""
    import asyncssh

    from hussh import _bastions

    original = _bastions.BastionPool.open

    async def open_(self, hop, factory, host, port):  # type: ignore[no-untyped-def]
        for _ in range(_bastions.MAX_LINKS_PER_CALL):
            link = await self._link(self.bastions.setdefault(hop, _bastions._Bastion(hop)))
            try:
                return await original(self, hop, factory, host, port)
            except _bastions.ConnectError as exc:
                if not str(exc).endswith(": open failed") or link.channels == 0:
                    raise
                link.full = True  # out of descriptors on the bastion: the next try opens another login
        raise _bastions.ConnectError(f"{host}:{port} via bastion {hop.target}: no room for another tunnel")

    assert asyncssh.OPEN_CONNECT_FAILED == 2
    _bastions.BastionPool.open = open_


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
