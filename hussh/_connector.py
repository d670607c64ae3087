"""Open asyncssh client connections cheaply: options are prepared once per auth profile, not per host.

``asyncssh.connect()`` re-runs its whole option preparation (config files, default keys, agent
lookup) in a thread for every connection. With thousands of hosts that dominates client CPU, so
this module prepares one ``SSHClientConnectionOptions`` per distinct set of credentials and gives
each connection a shallow copy with its own host, port and host-key check, mirroring the direct
TCP path of ``asyncssh.connection._connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import os
import socket
from collections.abc import Callable, Iterable

import asyncssh
from asyncssh.connection import SSHClientConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

from . import _speedups
from ._known_hosts import known_hosts_for
from ._spec import ConnectSpec
from .errors import AuthenticationError, ConnectError, ConnectTimeout, HostKeyError

# AES-GCM first: chacha20-poly1305 builds a new cipher object per packet in asyncssh, costing ~20% CPU.
_ENCRYPTION = [
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
]

_profiles: dict[tuple[object, ...], asyncssh.SSHClientConnectionOptions | str] = {}
"""Prepared options per credential profile, or the reason the profile's key cannot be used."""

_speedups.install()


def _profile_key(spec: ConnectSpec) -> tuple[object, ...]:
    key: tuple[object, ...] = (spec.username, spec.password, spec.private_key, spec.keepalive_interval)
    if spec.private_key is not None:  # a key file replaced or fixed on disk is read again
        try:
            key += (os.stat(spec.private_key).st_mtime_ns,)
        except OSError:
            key += (None,)
    elif spec.password is None:  # agent and default keys come from the environment
        key += (os.environ.get("SSH_AUTH_SOCK"), os.path.expanduser("~"))
    return key


def _profile_options(spec: ConnectSpec) -> asyncssh.SSHClientConnectionOptions:
    """The prepared options shared by every host with the same credentials (built on first use).

    A key that cannot be used is remembered too: a wrong passphrase costs its bcrypt rounds (up to
    seconds) once, not once per host.
    """
    key = _profile_key(spec)
    options = _profiles.get(key)
    if options is None:
        try:
            options = asyncssh.SSHClientConnectionOptions(
                config=None,  # ~/.ssh/config is not consulted: every host gets exactly what the caller gave
                username=spec.username,
                password=spec.password,
                known_hosts=None,
                x509_trusted_certs=None,
                gss_host=None,
                encryption_algs=_ENCRYPTION,
                compression_algs=["none"],
                login_timeout=0,  # our own deadline covers connect + login together
                keepalive_interval=spec.keepalive_interval,
                **_credentials(spec),
            )
        except AuthenticationError as exc:
            options = str(exc)
        _profiles[key] = options
    if isinstance(options, str):
        raise AuthenticationError(options)
    return options


def prepare(specs: Iterable[ConnectSpec]) -> None:
    """Prepare every distinct profile and known_hosts file of ``specs`` now, in this process.

    The pool calls this before forking workers, which inherit the result: a passphrase-protected
    key is decrypted once, not once per worker, and never inside a worker's loop, which must keep
    its heartbeat going. What fails here is reported per host when those hosts connect.
    """
    specs = list(specs)
    # Failures are not lost: each host's connect raises them again, as that host's result.
    for spec in {_profile_key(spec): spec for spec in specs}.values():
        with contextlib.suppress(Exception):
            _profile_options(spec)
    for spec in {(spec.known_hosts, spec.host_key_checking): spec for spec in specs}.values():
        with contextlib.suppress(Exception):
            known_hosts_for(spec)  # parses the file into its per-process cache


def _credentials(spec: ConnectSpec) -> dict[str, object]:
    """Key, password, or (with neither) the ssh-agent and the default ``~/.ssh/id_*`` keys."""
    if spec.private_key is not None:
        try:
            key = asyncssh.read_private_key(spec.private_key, passphrase=spec.password)
        except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
            raise AuthenticationError(f"cannot use private key {spec.private_key}: {exc}") from None
        return {"client_keys": [key], "agent_path": None}
    if spec.password is not None:
        return {"client_keys": None, "agent_path": None, "preferred_auth": ["password", "keyboard-interactive"]}
    return {}  # asyncssh's defaults: SSH_AUTH_SOCK's agent, then ~/.ssh/id_* keys


async def open_connection(spec: ConnectSpec, bound: float | None = None) -> SSHClientConnection:
    """Connect and log in to ``spec`` within ``bound`` seconds (default ``spec.connect_bound``)."""
    bound = bound or spec.connect_bound
    try:
        async with asyncio.timeout(bound):
            return await _open(spec)
    except TimeoutError:
        raise ConnectTimeout(
            f"connecting to {spec.address} timed out after {bound:g} seconds (TCP connect, handshake and login)"
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise AuthenticationError(f"authentication failed for {spec.username}@{spec.address}: {exc.reason}") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(
            f"host key of {spec.address} does not match its known_hosts entry, refusing to connect ({exc.reason})"
        ) from None
    except socket.gaierror as exc:
        raise ConnectError(exc.errno, f"cannot resolve host {spec.host!r}: {exc.strerror}") from None
    except asyncssh.DisconnectError as exc:
        raise ConnectError(errno.ECONNABORTED, f"{spec.address} closed the SSH handshake: {exc.reason}") from None
    except ConnectionRefusedError:
        raise ConnectError(errno.ECONNREFUSED, f"connection refused by {spec.address}") from None
    except OSError as exc:
        if isinstance(exc, (ConnectError, AuthenticationError)):
            raise
        raise ConnectError(exc.errno, f"cannot connect to {spec.address}: {exc.strerror or exc}") from None


class _FleetConnection(SSHClientConnection):
    """asyncssh's client connection with fewer packets and fewer writes per host.

    * No empty ``MSG_IGNORE`` before every encrypted packet: that padding defends CBC ciphers,
      which ``_ENCRYPTION`` never offers; dropping it saves a third of the packets per host.
    * Corked writes: asyncssh writes each packet as it is built (a syscall and a TCP segment
      each); here the packets of one event-loop turn leave in one write, flushed on the next turn
      and so before anything scheduled after them, such as the abort that follows a disconnect.
    """

    _unsent: list[bytes] | None = None

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY_STRING:
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[arg-type]

    def _send(self, data: bytes) -> None:
        if self._unsent is not None:
            self._unsent.append(data)
        elif self._transport:
            self._unsent = [data]
            self._loop.call_soon(self._flush, self._transport)

    def _flush(self, transport: asyncio.Transport) -> None:
        data, self._unsent = b"".join(self._unsent or ()), None
        if not transport.is_closing():
            try:
                transport.write(data)
            except ConnectionError:  # the peer is gone; connection_lost reports it
                pass


_EMPTY_STRING = (String(b""),)


def _connection_factory(loop: asyncio.AbstractEventLoop, options: asyncssh.SSHClientConnectionOptions,
                        spec: ConnectSpec) -> Callable[[], SSHClientConnection]:
    def build() -> SSHClientConnection:
        conn = _FleetConnection(loop, options, wait="auth")
        if spec.password is not None and spec.private_key is None:
            conn._auth_methods = [b"password"]  # skip the "none" probe: one round trip less per host
        return conn
    return build


async def _open(spec: ConnectSpec) -> SSHClientConnection:
    loop = asyncio.get_running_loop()
    options = copy.copy(_profile_options(spec))
    options.host = options.orig_host = spec.host
    options.port = spec.port
    options.known_hosts = known_hosts_for(spec)
    options.waiter = loop.create_future()
    _, conn = await loop.create_connection(_connection_factory(loop, options, spec), spec.host, spec.port)
    conn.set_extra_info(host=spec.host, port=spec.port)
    try:
        await options.waiter
    except BaseException:
        conn.abort()
        raise
    return conn
