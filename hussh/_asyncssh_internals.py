"""Every reach into asyncssh's private internals, in one place, each guarded.

hussh pins asyncssh to ``TESTED_RANGE``. Each patch here checks that the private names it relies
on still exist and otherwise leaves asyncssh's own behaviour in place (slower, never wrong), so
an upgrade degrades speed rather than correctness. ``tests/test_transport_tweaks.py`` fails when
one of them silently stops taking effect.

* ``FleetConnection``: fewer packets and writes per host (no empty ``MSG_IGNORE``, corked writes),
  fewer round trips per login (no ``none`` auth probe, the first login request sent with the
  service request, a key signed at once instead of asked about: ``_SignAtOnce``), no password in
  asyncssh's packet dumps, and no password, keyboard-interactive answer or agent forwarding once
  ``withhold_secrets`` is called.
* ``install_log_speedups``: asyncssh formats log arguments before checking the level.
* ``install_packet_speedups``: per-packet work with no effect skipped (an AES-GCM object built per
  packet, ``inspect.isawaitable`` on every handler's ``True``).
* ``install_sftp_task_reaping``: a parallel SFTP transfer given up (a stall, a timeout, Ctrl-C) leaves
  asyncssh's request tasks to fail when the connection closes; their errors are taken, not logged.
* ``read_once``, ``close_unawaited``: an SFTP read of exactly one request, and a CLOSE sent without
  waiting for its reply (a tail's held file, let go even by a cancelled task).
* ``with_owner``, ``OPENSSH_HOST_KEY_ORDER``: a per-connection owner that answers for hashed
  known_hosts entries, without re-preparing the shared options; host key types in ``ssh``'s order.
* ``CachedClientConfig``: asyncssh's ssh_config parser with each file tokenized once per process
  (asyncssh re-runs ``shlex`` over every line for every host: ~1 ms per host).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import inspect
import os
import re
import socket
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import asyncssh
from asyncssh import auth as _auth
from asyncssh.config import SSHClientConfig
from asyncssh.connection import SSHClientConnection
from asyncssh.constants import (
    FXP_CLOSE,
    MSG_IGNORE,
    MSG_SERVICE_ACCEPT,
    MSG_USERAUTH_FIRST,
    MSG_USERAUTH_LAST,
    MSG_USERAUTH_REQUEST,
)
from asyncssh.crypto import cipher as _cipher
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, SSHPacketLogger, String
from asyncssh.pattern import WildcardPatternList
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TESTED_RANGE = ((2, 14, 2), (2, 25))
"""asyncssh versions these patches were written and tested against: [low, high)."""


def _version() -> tuple[int, ...]:
    return tuple(int(part) for part in asyncssh.__version__.split(".")[:3] if part.isdigit())


VERSION_TESTED = TESTED_RANGE[0] <= _version() < TESTED_RANGE[1]


def _has(cls: type, *names: str) -> bool:
    """Whether ``cls`` has these methods or class attributes (on a tested asyncssh)."""
    return VERSION_TESTED and all(hasattr(cls, name) for name in names)


def _sets(cls: type, *names: str) -> bool:
    """Whether the constructors of ``cls`` assign these instance attributes, which ``hasattr`` on the
    class cannot see (on a tested asyncssh)."""
    assigned: set[str] = set()
    for klass in cls.__mro__:
        code = getattr(klass.__dict__.get("__init__"), "__code__", None)
        if code is not None:
            assigned.update(code.co_names)
    return VERSION_TESTED and all(name in assigned for name in names)


# ---------------------------------------------------------------------------------- transport

CORK_AVAILABLE = _has(SSHClientConnection, "_send", "send_packet") and _sets(SSHClientConnection, "_transport", "_loop")
SKIP_NONE_PROBE_AVAILABLE = _sets(SSHClientConnection, "_auth_methods")
HIDE_AUTH_AVAILABLE = _has(SSHClientConnection, "log_sent_packet")
WITHHOLD_AVAILABLE = _has(SSHClientConnection, "password_auth_requested", "kbdint_auth_requested",
                          "kbdint_challenge_received") and _sets(SSHClientConnection, "_agent_forward_path")
PIPELINE_AUTH_AVAILABLE = (
    _has(SSHClientConnection, "send_service_request", "try_next_auth", "_packet_handlers")
    and _sets(SSHClientConnection, "_next_service", "_auth_in_progress", "_owner", "_username")
    and MSG_SERVICE_ACCEPT in getattr(SSHClientConnection, "_packet_handlers", {})
    and getattr(asyncssh.connection, "_USERAUTH_SERVICE", None) == b"ssh-userauth")
SIGN_AT_ONCE_AVAILABLE = (
    VERSION_TESTED and getattr(_auth, "_client_auth_handlers", {}).get(b"publickey") is getattr(
        _auth, "_ClientPublicKeyAuth", None) and _has(getattr(_auth, "_ClientPublicKeyAuth", object),
                                                      "_start", "_send_signed_request"))
_EMPTY_STRING = (String(b""),)
_USERAUTH = b"ssh-userauth"


def _holds_credentials(pkttype: int) -> bool:
    """A packet a client sends to log in: a password, or the answers to a keyboard-interactive prompt."""
    return pkttype == MSG_USERAUTH_REQUEST or MSG_USERAUTH_FIRST <= pkttype <= MSG_USERAUTH_LAST


class _HiddenPayload:
    """Stands in as a sent packet's log handler: logs the packet's type and size, never its bytes.

    asyncssh at debug level 3 dumps every packet sent in hex and ASCII, the password included.
    """

    def __init__(self, handler: SSHPacketLogger) -> None:
        self.handler = handler

    def log_sent_packet(self, pkttype: int, pktid: int | None, packet: bytes, note: str = "") -> None:
        self.handler.log_sent_packet(pkttype, pktid, b"", f"{len(packet)} bytes not shown: may hold a password")


class FleetConnection(SSHClientConnection):
    """asyncssh's client connection with fewer packets and fewer writes per host.

    * No empty ``MSG_IGNORE`` before every encrypted packet: that padding defends CBC ciphers,
      which hussh never offers; dropping it saves a third of the packets per host.
    * Login packets are logged without their bytes (``_HiddenPayload``).
    * Corked writes: asyncssh writes each packet as it is built (a syscall and a TCP segment
      each); here the packets of one event-loop turn leave in one write, flushed on the next turn
      and so before anything scheduled after them, such as the abort that follows a disconnect.
    * ``withhold_secrets``: a server whose host key changed gets no password, no answer to a
      keyboard-interactive prompt and no agent (``ssh`` under ``StrictHostKeyChecking no``).
    """

    _unsent: list[bytes] | None = None
    writes = 0  # transport writes made (class-wide), read by the tests of these tweaks
    on_lost: Callable[[], None] | None = None  # a bastion counts the tunnels it carries
    learned_key: str | None = None  # a host key accepted under accept-new, for the caller to record
    withheld = ""  # why this server gets no password or keyboard-interactive answer (its key changed)
    changed_key = ""  # the fingerprint of the changed host key accepted under ``off``

    def withhold_secrets(self, reason: str) -> bool:
        """From now on send no password or keyboard-interactive answer and forward no agent;
        False if this asyncssh cannot be stopped from sending them (then refuse the server)."""
        if not WITHHOLD_AVAILABLE:
            return False
        self.withheld = reason
        self._agent_forward_path = None
        return True

    if WITHHOLD_AVAILABLE:
        async def password_auth_requested(self) -> str | None:
            return None if self.withheld else await super().password_auth_requested()

        async def kbdint_auth_requested(self) -> str | None:
            return None if self.withheld else await super().kbdint_auth_requested()

        async def kbdint_challenge_received(self, name: str, instructions: str, lang: str,
                                            prompts: Any) -> Any:
            if self.withheld:
                return None
            return await super().kbdint_challenge_received(name, instructions, lang, prompts)

    def connection_lost(self, exc: Exception | None = None) -> None:
        super().connection_lost(exc)
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback()

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_STRING:
            return
        if HIDE_AUTH_AVAILABLE and _holds_credentials(pkttype):
            handler = _HiddenPayload(handler or self)  # type: ignore[arg-type]
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[arg-type]

    sign_at_once = False  # sign a key's login request at once, without first asking if the key would do

    if PIPELINE_AUTH_AVAILABLE:
        def send_service_request(self, service: bytes) -> None:
            """Send the first login request right behind the service request instead of after its
            accept: one round trip less per login (servers handle requests in order; sshd does)."""
            super().send_service_request(service)
            if service == _USERAUTH:
                self._auth_pipelined = True
                self._auth_in_progress = True
                if self._owner:
                    self._owner.begin_auth(self._username)
                self.try_next_auth()

        def _accept_pipelined(self, pkttype: int, pktid: int, packet: Any) -> None:
            """The service accept of a pipelined login: checked, and the login already under way left alone."""
            if not getattr(self, "_auth_pipelined", False):
                SSHClientConnection._packet_handlers[MSG_SERVICE_ACCEPT](self, pkttype, pktid, packet)
                return
            service = packet.get_string()
            packet.check_end()
            if service != self._next_service:
                raise asyncssh.ServiceNotAvailable("Unexpected service in service accept")
            self._next_service = None
            self._auth_pipelined = False

        _packet_handlers = {**SSHClientConnection._packet_handlers, MSG_SERVICE_ACCEPT: _accept_pipelined}

    if CORK_AVAILABLE:
        def _send(self, data: bytes) -> None:
            if self._unsent is not None:
                self._unsent.append(data)
            elif self._transport:
                self._unsent = [data]
                self._loop.call_soon(self._flush, self._transport)

    def _flush(self, transport: asyncio.Transport) -> None:
        """Write the packets queued in the last loop turn; a no-op once the transport has closed.

        uvloop's ``is_closing`` stays False for a transport closed under its protocol (a connect
        cancelled just after ``connection_made``, as when the caller goes away): its ``write`` raises
        ``RuntimeError`` ("the handler is closed") instead.
        """
        data, self._unsent = b"".join(self._unsent or ()), None
        if transport.is_closing():
            return
        try:
            transport.write(data)
        except (ConnectionError, RuntimeError):  # the peer or the transport is gone; connection_lost reports it
            return
        FleetConnection.writes += 1


if SIGN_AT_ONCE_AVAILABLE:
    class _SignAtOnce(_auth._ClientPublicKeyAuth):
        """asyncssh's public key login, which on a ``FleetConnection`` sends each key's signed request
        at once: asking the server first whether it would accept the key (what ``ssh`` does too) costs
        a round trip per host to save a signature when the key is wrong. Other connections: unchanged."""

        async def _start(self) -> None:
            if not getattr(self._conn, "sign_at_once", False):
                await super()._start()
                return
            self._keypair = await self._conn.public_key_auth_requested()
            if self._keypair is None:
                self._conn.try_next_auth(next_method=True)
                return
            await self._send_signed_request()  # refused: USERAUTH_FAILURE, and asyncssh tries the next key

    _auth._client_auth_handlers[b"publickey"] = _SignAtOnce


def connection_factory(loop: asyncio.AbstractEventLoop, options: asyncssh.SSHClientConnectionOptions,
                       password_only: bool) -> Callable[[], SSHClientConnection]:
    """What ``loop.create_connection`` (or a tunnel) calls to build one client connection."""
    first = [b"password"] if password_only else [b"publickey"] if options.client_keys else None

    def build() -> SSHClientConnection:
        conn = FleetConnection(loop, options, wait="auth")
        if first is not None and SKIP_NONE_PROBE_AVAILABLE:
            conn._auth_methods = list(first)  # skip the "none" probe: one round trip less per host
        conn.sign_at_once = True
        return conn
    return build


# ---------------------------------------------------------------------------------- SFTP

SFTP_PIPELINE_AVAILABLE = (_sets(asyncssh.SFTPClientFile, "_handler", "_handle")
                           and _has(asyncssh.sftp.SFTPClientHandler, "read", "write", "close", "_make_request"))


SFTP_START_AVAILABLE = (
    _has(asyncssh.sftp.SFTPClientHandler, "start", "recv_packets", "request_limits")
    and _has(SSHClientConnection, "open_session", "create_task") and _sets(SSHClientConnection, "_utf8_decode_errors")
    and list(inspect.signature(asyncssh.sftp.SFTPClientHandler.__init__).parameters)[1:]
    == ["loop", "utf8_decode_errors", "reader", "writer", "sftp_version"]
    and list(inspect.signature(asyncssh.SFTPClient.__init__).parameters)[1:]
    == ["handler", "path_encoding", "path_errors"])


async def start_sftp_client(conn: SSHClientConnection) -> asyncssh.SFTPClient:
    """``conn.start_sftp_client()`` without waiting for the server's ``limits@openssh.com`` reply: the
    request goes out and the first operation right behind it, one round trip less per SFTP session.

    The server answers in order and the reply is applied before the first operation's (an OPEN or a
    STAT: no read or write size is chosen before it) is seen, so sizes still follow the limits."""
    if not SFTP_START_AVAILABLE:
        return await conn.start_sftp_client()
    writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
    handler = asyncssh.sftp.SFTPClientHandler(conn._loop, conn._utf8_decode_errors, reader, writer,
                                              asyncssh.sftp.MIN_SFTP_VERSION)
    try:
        await handler.start()
    except BaseException:
        writer.close()
        raise
    conn.create_task(handler.recv_packets(), handler.logger)
    conn.create_task(handler.request_limits(), handler.logger)  # its failure is logged; the defaults stay
    return asyncssh.SFTPClient(handler, "utf-8", "strict")


async def read_and_close(file: asyncssh.SFTPClientFile, offset: int, size: int) -> bytes | None:
    """Up to ``size`` bytes at ``offset`` in one READ, the CLOSE sent right behind it (requests on one
    handle are answered in order) instead of after its reply: one round trip less per read.

    ``None`` (the file left open) when this asyncssh cannot; ``b""`` at the end of the file; never
    more bytes than asked, maybe fewer (a server may answer short): the caller reads on with a new handle."""
    if not SFTP_PIPELINE_AVAILABLE or file._handle is None or size > file._handler.limits.max_read_len:
        return None
    handler, handle = file._handler, file._handle
    file._handle = None  # closed below: the file object must not close it again
    read, closed = await asyncio.gather(handler.read(handle, offset, size), handler.close(handle),
                                        return_exceptions=True)
    if isinstance(read, asyncssh.SFTPEOFError):
        read = (b"", True)
    if isinstance(read, BaseException):
        raise read
    if isinstance(closed, BaseException):
        raise closed
    return read[0][:size]  # a server may send more than asked


async def read_once(file: asyncssh.SFTPClientFile, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` in exactly one READ (``b""`` at the end of the file): asyncssh's
    ``read`` asks again for what a short answer left out, a second round trip whenever fewer bytes
    exist than asked, the usual case of a tail. A server answering with more than asked is cut to ``size``."""
    if not SFTP_PIPELINE_AVAILABLE or file._handle is None:
        return cast(bytes, await file.read(size, offset))[:size]
    try:
        data, _ = await file._handler.read(file._handle, offset, size)
    except asyncssh.SFTPEOFError:
        return b""
    return data[:size]


SFTP_CLOSE_UNAWAITED_AVAILABLE = SFTP_PIPELINE_AVAILABLE and _has(asyncssh.sftp.SFTPClientHandler, "_send_request")

_closing: set[asyncio.Task[None]] = set()


def close_unawaited(file: asyncssh.SFTPClientFile) -> None:
    """Send ``file``'s CLOSE now without waiting for the reply, from any code (a ``finally`` of a cancelled
    task too): nothing is left to do if it fails, and its connection may be gone (nothing is sent then)."""
    if not SFTP_CLOSE_UNAWAITED_AVAILABLE:
        task = asyncio.get_running_loop().create_task(_close_quietly(file))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        return
    handler, handle = file._handler, file._handle
    file._handle = None
    if handle is None or not handler._writer:
        return
    reply: asyncio.Future[tuple[int, SSHPacket]] = asyncio.get_running_loop().create_future()
    reply.add_done_callback(_taken)  # its error (the connection lost) is not logged as never retrieved
    try:
        handler._send_request(FXP_CLOSE, (String(handle),), reply)
    except (asyncssh.Error, OSError):  # the session is closing: the server closes its handles
        if not reply.done():
            reply.cancel()


async def _close_quietly(file: asyncssh.SFTPClientFile) -> None:
    with contextlib.suppress(asyncssh.Error, OSError):
        await file.close()


async def write_and_close(file: asyncssh.SFTPClientFile, data: bytes) -> bool:
    """``data`` at offset 0 in one WRITE, the CLOSE right behind it (its reply still awaited: a failed
    close is a failed write): one round trip less. False (nothing sent) when this asyncssh cannot."""
    if not SFTP_PIPELINE_AVAILABLE or file._handle is None or len(data) > file._handler.limits.max_write_len:
        return False
    handler, handle = file._handler, file._handle
    file._handle = None
    results = await asyncio.gather(handler.write(handle, 0, data), handler.close(handle), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return True


# ---------------------------------------------------------------------------------- host keys

OWNER_AVAILABLE = VERSION_TESTED and (
    "protocol_factory" in asyncssh.connection.SSHConnectionOptions.prepare.__code__.co_names)


def with_owner(options: asyncssh.SSHClientConnectionOptions, owner: Callable[[], asyncssh.SSHClient]) -> None:
    """Give one connection's (copied) options their own ``client_factory``: asyncssh keeps the
    prepared factory as ``protocol_factory`` and asks its object about untrusted host keys."""
    options.protocol_factory = owner


def _openssh_host_key_order() -> list[str]:
    """asyncssh's host key types with OpenSSH's preference first (ed25519, ECDSA, then RSA-SHA2):
    without a key on record asyncssh would pick RSA, where ``ssh`` records ed25519."""
    try:
        available = [alg.decode() for alg in asyncssh.public_key.get_default_public_key_algs()]
    except AttributeError:
        return []
    first = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256"]
    return [alg for alg in first if alg in available] + [alg for alg in available if alg not in first]


OPENSSH_HOST_KEY_ORDER = _openssh_host_key_order()


# ---------------------------------------------------------------------------------- logging

def install_log_speedups() -> None:
    """Skip asyncssh's log formatting when nothing would be logged (idempotent)."""
    if not (_has(SSHLogger, "log", "_debug_level") and _has(SSHPacketLogger, "_log_packet")):
        return
    if getattr(SSHLogger.log, "_hussh", False):
        return
    format_and_log = SSHLogger.log
    describe_packet = SSHPacketLogger._log_packet

    def log_if_enabled(self: SSHLogger, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(level):
            format_and_log(self, level, msg, *args, **kwargs)

    def log_packet_if_enabled(self: SSHPacketLogger, *args: Any) -> None:  # whatever _log_packet takes
        if SSHLogger._debug_level >= 3 and self.logger.isEnabledFor(10):  # logging.DEBUG
            describe_packet(self, *args)

    def info_if_enabled(self: SSHLogger, msg: object, *args: object, **kwargs: object) -> None:
        if self.logger.isEnabledFor(20):  # logging.INFO; asyncssh logs a few per channel
            format_and_log(self, 20, msg, *args, **kwargs)

    log_if_enabled._hussh = True  # type: ignore[attr-defined]
    SSHLogger.log = log_if_enabled  # type: ignore[method-assign]
    SSHLogger.info = info_if_enabled  # type: ignore[method-assign, assignment]
    # [assignment]: positional arguments only, which is how asyncssh calls it (no per-packet kwargs dict)
    SSHPacketLogger._log_packet = log_packet_if_enabled  # type: ignore[method-assign, assignment]


# ---------------------------------------------------------------------------------- per-packet work

GCM_REUSE_AVAILABLE = (_has(_cipher.GCMCipher, "encrypt_and_sign", "verify_and_decrypt")
                       and _sets(_cipher.GCMCipher, "_key", "_iv") and getattr(_cipher, "_GCM_MAC_SIZE", None) == 16
                       and getattr(_cipher, "AESGCM", None) is AESGCM
                       and getattr(_cipher, "InvalidTag", None) is InvalidTag)
AWAITABLE_SHORTCUT_AVAILABLE = VERSION_TESTED and getattr(asyncssh.connection, "inspect", None) is inspect
_IV_MASK = 0xffffffffffffffff


def _gcm_aead(self: Any) -> Any:
    """This direction's AES-GCM object and IV counter, made once: asyncssh builds a new AESGCM (a key
    schedule) for every packet and re-parses its IV from bytes."""
    aead = AESGCM(self._key)
    self._hussh_gcm = aead, self._iv[:4], int.from_bytes(self._iv[4:], "big")
    return self._hussh_gcm


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    aead, fixed, counter = getattr(self, "_hussh_gcm", None) or _gcm_aead(self)
    data = aead.encrypt(self._iv, data, header)
    counter = (counter + 1) & _IV_MASK
    self._hussh_gcm = aead, fixed, counter
    self._iv = fixed + counter.to_bytes(8, "big")
    return header + data[:-16], data[-16:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    aead, fixed, counter = getattr(self, "_hussh_gcm", None) or _gcm_aead(self)
    try:
        decrypted: bytes | None = aead.decrypt(self._iv, data + mac, header)
    except InvalidTag:
        decrypted = None
    counter = (counter + 1) & _IV_MASK
    self._hussh_gcm = aead, fixed, counter
    self._iv = fixed + counter.to_bytes(8, "big")
    return decrypted


class _Inspect:
    """``inspect`` as asyncssh's connection module sees it: ``isawaitable`` answers a packet handler's
    usual ``True``, ``False`` or ``None`` without the generic checks (every received packet asks)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    @staticmethod
    def isawaitable(value: object) -> bool:
        return value is not True and value is not False and value is not None and inspect.isawaitable(value)


def install_packet_speedups() -> None:
    """Skip per-packet work that changes nothing (idempotent; each only where its names are as tested)."""
    if GCM_REUSE_AVAILABLE and _cipher.GCMCipher.encrypt_and_sign is not _gcm_encrypt_and_sign:
        _cipher.GCMCipher.encrypt_and_sign = _gcm_encrypt_and_sign  # type: ignore[method-assign]
        _cipher.GCMCipher.verify_and_decrypt = _gcm_verify_and_decrypt  # type: ignore[method-assign]
    if AWAITABLE_SHORTCUT_AVAILABLE:
        asyncssh.connection.inspect = _Inspect()  # type: ignore[assignment, attr-defined]


# ---------------------------------------------------------------------------------- SFTP tasks

SFTP_TASKS_AVAILABLE = VERSION_TESTED and _has(asyncssh.sftp._SFTPParallelIO, "_start_tasks") and \
    "_pending" in asyncssh.sftp._SFTPParallelIO.__init__.__code__.co_names
_start_sftp_tasks = asyncssh.sftp._SFTPParallelIO._start_tasks


def _taken(task: asyncio.Future[Any]) -> None:
    """A request task's outcome, read: once its transfer is given up, nobody else will."""
    if not task.cancelled():
        task.exception()


def _start_sftp_tasks_reaped(self: Any) -> None:
    _start_sftp_tasks(self)
    for task in self._pending:
        task.add_done_callback(_taken)  # the transfer still reads each result itself while it runs


def install_sftp_task_reaping() -> None:
    """A transfer abandoned mid-way (its caller cancelled: a stall, a deadline) leaves asyncssh's request
    tasks running until the connection closes; without this their errors are logged ("Task exception
    was never retrieved") on the user's terminal, once per request in flight (idempotent)."""
    if SFTP_TASKS_AVAILABLE:
        asyncssh.sftp._SFTPParallelIO._start_tasks = _start_sftp_tasks_reaped  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------- ssh_config

def _config_internals_present() -> bool:
    if not _has(SSHClientConfig, "_handlers", "_conditionals", "_no_split", "_set_tokens", "_percent_expand",
                "_expand_val", "_error", "_set_bool", "_set_bool_or_str", "_include", "parse"):
        return False
    try:
        probe = SSHClientConfig(None, False, False, False, "user", (), "host", ())  # type: ignore[arg-type]
    except TypeError:
        return False
    return all(hasattr(probe, name) for name in ("_matching", "_options", "_default_path", "_path", "_line_no"))


CONFIG_CACHE_AVAILABLE = _config_internals_present()

Line = tuple[int, str, tuple[str, ...]]


@lru_cache(maxsize=64)
def _tokenize(path: str, mtime_ns: int, size: int) -> tuple[Line, ...]:
    """asyncssh's per-line tokenizing (``shlex``, ``key=value``), done once per file version."""
    import shlex  # noqa: PLC0415 - only needed on a cache miss

    lines: list[Line] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line[0] == "#":
                continue
            try:
                split_args = shlex.split(line)
            except ValueError as exc:
                lines.append((line_no, "\0error", (str(exc),)))
                continue
            args: list[str] = []
            loption = ""
            allow_equal = True
            for i, arg in enumerate(split_args, 1):
                if arg.startswith("="):
                    if len(arg) > 1:
                        args.append(arg[1:])
                elif not allow_equal:
                    args.extend(split_args[i - 1:])
                    break
                elif arg.endswith("="):
                    args.append(arg[:-1])
                elif "=" in arg:
                    arg, val = arg.split("=", 1)
                    args.append(arg)
                    args.append(val)
                else:
                    args.append(arg)
                if i == 1:
                    loption = args.pop(0).lower()
                    allow_equal = loption in CachedClientConfig._conditionals
            if loption in CachedClientConfig._no_split:
                args = [line.lstrip()[len(loption):].strip()]
            lines.append((line_no, loption, tuple(args)))
    return tuple(lines)


class _CompiledPatterns:
    """asyncssh's ``WildcardPatternList`` semantics (any positive, no negative ``fnmatch``), as two regexes."""

    def __init__(self, positive: list[str], negative: list[str]) -> None:
        self.positive = re.compile("|".join(fnmatch.translate(p) for p in positive)) if positive else None
        self.negative = re.compile("|".join(fnmatch.translate(p) for p in negative)) if negative else None

    def matches(self, value: str) -> bool:
        return (self.positive is not None and self.positive.match(value) is not None
                and (self.negative is None or self.negative.match(value) is None))


@lru_cache(maxsize=1024)
def _host_patterns(pattern: str) -> WildcardPatternList | _CompiledPatterns:
    """A ``Host`` line's patterns, compiled once per process instead of once per host."""
    patterns = WildcardPatternList(pattern)
    try:  # asyncssh's own escaping of each pattern, matched by one regex instead of one fnmatch each
        # a CIDR pattern has no _pattern: AttributeError, and asyncssh's own matching below
        return _CompiledPatterns([p._pattern for p in patterns._pos_patterns],  # type: ignore[union-attr]
                                 [p._pattern for p in patterns._neg_patterns])  # type: ignore[union-attr]
    except AttributeError:
        return patterns


@lru_cache(maxsize=8)
def _local_tokens(home_env: str) -> tuple[str, str, str, str]:
    """This machine's name (long and short), the home directory and the uid, for ``%l %L %d %i``."""
    local_host = socket.gethostname()
    return local_host, local_host.split(".", 1)[0], os.path.expanduser("~"), str(os.getuid())


def _tokenized(path: Path) -> tuple[Line, ...]:
    stat = os.stat(path)
    return _tokenize(str(path), stat.st_mtime_ns, stat.st_size)


class CachedClientConfig(SSHClientConfig):
    """asyncssh's client config, reading each file's tokens from a per-process cache.

    Adds the two options asyncssh ignores and hussh implements: ``StrictHostKeyChecking`` and
    ``HashKnownHosts``. ``globs`` caches ``Include`` patterns for one batch of resolutions.
    """

    globs: dict[tuple[str, str], list[Path]] | None = None
    files: dict[Path, tuple[Line, ...]] | None = None

    _handlers = {
        **SSHClientConfig._handlers,
        "stricthostkeychecking": ("StrictHostKeyChecking", SSHClientConfig._set_bool_or_str),
        "hashknownhosts": ("HashKnownHosts", SSHClientConfig._set_bool),
    }
    if CONFIG_CACHE_AVAILABLE:
        _handlers["host"] = ("Host", lambda self, option, args: self._match_host(option, args))
        _handlers["include"] = ("Include", lambda self, option, args: self._include(option, args))

    def parse(self, path: Path) -> None:
        if not CONFIG_CACHE_AVAILABLE:
            super().parse(path)
            return
        self._path = path
        self._line_no = 0
        self._matching = True
        self._tokens = {"%": "%"}
        lines = self.files.get(path) if self.files is not None else None
        if lines is None:
            lines = _tokenized(path)
            if self.files is not None:
                self.files[path] = lines
        for line_no, loption, cached_args in lines:
            self._line_no = line_no
            if loption == "\0error":
                self._error(cached_args[0])
            if not self._matching and loption not in self._conditionals:
                continue
            try:
                option, handler = self._handlers[loption]
            except KeyError:
                continue
            args = list(cached_args)
            if not args:
                self._error(f"Missing {option} value")
            handler(self, option, args)
            if args:
                self._error(f'Extra data at end: {" ".join(args)}')
        self._set_tokens()
        for option in self._percent_expand:
            value = self._options.get(option)
            if isinstance(value, list):
                self._options[option] = [self._expand_val(item) for item in value]
            elif isinstance(value, str):
                self._options[option] = self._expand_val(value)

    def _set_tokens(self) -> None:
        """asyncssh's ``%`` tokens, with the parts that do not depend on the host computed once."""
        if not CONFIG_CACHE_AVAILABLE:
            super()._set_tokens()
            return
        local_host, short_local_host, home, uid = _local_tokens(os.environ.get("HOME", ""))
        host = cast(str, self._options.get("Hostname", self._orig_host))  # the same casts as asyncssh's
        port = str(self._options.get("Port", 22))
        user = cast(str, self._options.get("User") or self._local_user)
        conn_hash = hashlib.sha1("".join((local_host, host, port, user)).encode()).hexdigest()
        self._tokens.update({"C": conn_hash, "h": host, "L": short_local_host, "l": local_host,
                             "n": self._orig_host, "p": port, "r": user, "u": self._local_user, "i": uid})
        if home != "~":
            self._tokens["d"] = home

    def _match_host(self, option: str, args: list[str]) -> None:
        self._matching = _host_patterns(",".join(args)).matches(self._orig_host)
        args.clear()

    def _include(self, option: str, args: list[str]) -> None:
        if self.globs is None or not CONFIG_CACHE_AVAILABLE:
            super()._include(option, args)
            return
        old_path, old_line_no = self._path, self._line_no
        for pattern in args:
            key = (str(self._default_path), pattern)
            paths = self.globs.get(key)
            if paths is None:
                path = Path(pattern).expanduser()
                if path.anchor:
                    pattern, path = str(Path(*path.parts[1:])), Path(path.anchor)
                else:
                    path = self._default_path
                paths = self.globs[key] = sorted(p for p in path.glob(pattern) if p.is_file())
            for path in paths:
                self.parse(path)
        self._path, self._line_no = old_path, old_line_no
        self._matching = True
        args.clear()


def load_client_config(paths: tuple[Path, ...], host: str, user: str | None, port: int | None,
                       local_user: str, globs: dict[tuple[str, str], list[Path]] | None,
                       files: dict[Path, tuple[Line, ...]] | None = None) -> Any:
    """Evaluate ``paths`` for one host as ``ssh`` would (first value obtained wins)."""
    config = CachedClientConfig(None, False, False, False, local_user,  # type: ignore[arg-type]
                                user if user is not None else (),  # type: ignore[arg-type]
                                host, port if port is not None else ())  # type: ignore[arg-type]
    config.globs = globs
    config.files = files
    for path in paths:
        config.parse(path)
    config.loaded = True
    return config
