"""Open asyncssh client connections cheaply: options are prepared once per credential profile, not per host.

``asyncssh.connect()`` re-runs its whole option preparation (config files, default keys, agent
lookup) in a thread for every connection. With thousands of hosts that dominates client CPU, so
this module prepares one ``SSHClientConnectionOptions`` per distinct set of credentials and gives
each connection a shallow copy with its own host, port and host keys, directly or through a
bastion (``_bastions``). Every failure leaves here as one of hussh's errors, naming the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import logging
import shlex
import socket
import weakref
from collections.abc import AsyncIterator, Callable

import asyncssh
import msgspec
from asyncssh.connection import SSHClientConnection

from . import _asyncssh_internals as internals
from . import _bastions, _credentials, _resolve
from ._known_hosts import HostKeyVerifier, changed_key_message, lookup, revoked_key_message
from ._proxy_command import open_proxy_command
from ._spec import ConnectSpec, HostKeys, Retry
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    HostKeyError,
    HusshError,
    ResolveError,
)

# AES-GCM first: chacha20-poly1305 builds a new cipher object per packet in asyncssh, costing ~20% CPU.
_ENCRYPTION = [
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
]

Profiles = dict[tuple[object, ...], asyncssh.SSHClientConnectionOptions]
_profiles: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Profiles] = weakref.WeakKeyDictionary()
"""Prepared options per event loop (agent keys belong to one loop; a new loop may reuse an old one's
``id``, a forked child keeps its parent's loop object), then per credential profile."""

internals.install_log_speedups()
internals.install_packet_speedups()
internals.install_sftp_task_reaping()


def _quiet_asyncssh() -> None:
    """asyncssh logs every connection at INFO (1,300 lines for 100 hosts): noise from hussh's
    transport at fleet scale. Unless asyncssh's logger was given a level, it passes warnings only;
    ``logging.getLogger("asyncssh").setLevel(logging.INFO)`` brings the detail back."""
    logger = logging.getLogger("asyncssh")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


_quiet_asyncssh()


def _profile_key(spec: ConnectSpec) -> tuple[object, ...]:
    return (spec.username, spec.password, spec.private_key, spec.identities, spec.identities_only,
            spec.certificates, spec.agent, spec.forward_agent, spec.keepalive_interval, spec.keepalive_count_max,
            tuple(id(_credentials.material(path, pw)) for path, pw in _credentials.key_refs(spec)))


async def _profile_options(spec: ConnectSpec) -> asyncssh.SSHClientConnectionOptions:
    """The prepared options shared by every host with the same credentials (built on first use)."""
    profiles = _profiles.setdefault(asyncio.get_running_loop(), {})
    key = _profile_key(spec)
    options = profiles.get(key)
    if options is not None:
        return options
    client_keys = _credentials.keypairs(spec)  # raises AuthenticationError for an unusable explicit key
    if spec.private_key is None and spec.password is None:  # as _credentials.agent_held decides
        client_keys = await _credentials.agent_keys(spec) + client_keys
    options = asyncssh.SSHClientConnectionOptions(
        config=None,  # the ssh config was applied when the spec was made, in the caller
        username=spec.username,
        password=spec.password if spec.private_key is None else None,  # a passphrase is never sent as a password
        client_keys=client_keys or None,
        agent_path=None,  # agent keys are in client_keys, fetched once per loop
        known_hosts=None,
        x509_trusted_certs=None,
        gss_host=None,
        encryption_algs=_ENCRYPTION,
        compression_algs=["none"],
        login_timeout=0,  # our own deadline covers connect + login together
        keepalive_interval=spec.keepalive_interval,
        keepalive_count_max=spec.keepalive_count_max,
        preferred_auth=["password", "keyboard-interactive"] if client_keys == [] else (),
    )
    if spec.forward_agent and spec.agent:
        options.agent_forward_path = spec.agent
    profiles[key] = options
    return options


def _offered_keys(spec: ConnectSpec) -> bool:
    options = _profiles.get(asyncio.get_running_loop(), {}).get(_profile_key(spec))
    return bool(options is not None and options.client_keys)


_TrustedKeys = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]
"""Host keys, CA keys and revoked keys: the short (pre-X.509) form of asyncssh's ``known_hosts`` lists."""


def _host_key_check(spec: ConnectSpec, keys: HostKeys) -> tuple[_TrustedKeys | None, bool, HostKeyVerifier | None]:
    """asyncssh's ``known_hosts`` value for ``spec``, whether an accepted key is new (to record),
    and the owner that decides about the keys the entries do not trust (whenever they list any
    key, CA or revoked key for the host, under every policy: ``off`` too refuses revoked keys)."""
    verifier = HostKeyVerifier(spec, keys)
    if keys.listed or keys.revoked or verifier.indexes:  # no index: the files changed, no hashed entry now
        return ([asyncssh.import_public_key(k) for k in keys.trusted],
                [asyncssh.import_public_key(k) for k in keys.authorities],
                [asyncssh.import_public_key(k) for k in keys.revoked]), False, verifier
    if spec.host_key_checking == "strict":
        raise HostKeyError(_unlisted(spec))
    return None, spec.host_key_checking == "accept-new", None


def _unlisted(spec: ConnectSpec) -> str:
    files = ", ".join(spec.known_hosts) or "no known_hosts file"
    return f"{spec.address} is not listed in {files} and host key checking is strict"


policy = Retry()
"""This process's handshake retries and cap on connections being opened per server (a worker's
share of the call's ``Retry``, set by ``hussh.workers.main``; the defaults in a caller's own loop)."""



class _Gate:
    """The connections waiting for or holding a turn to open one to a server, and the turns."""

    __slots__ = ("turns", "users")

    def __init__(self, cap: int) -> None:
        self.users = 0
        self.turns = asyncio.Semaphore(cap)


_opening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], _Gate]] = \
    weakref.WeakKeyDictionary()
"""Per event loop, the gate of each server a connection is being opened to: its (address, port) once
resolved, so many names for one address share it; (name, port) through a bastion or ProxyCommand."""


async def open_connection(spec: ConnectSpec, bound: float | None = None) -> SSHClientConnection:
    """Connect and log in to ``spec`` within ``bound`` seconds (default ``spec.connect_bound``).

    At most ``policy.per_server`` connections to one server (one address and port, whatever names
    lead there) are being opened at once (the wait for a turn is not counted in the bound, the name's
    lookup is); one the server drops or resets before the login is
    tried again, up to ``policy.handshake_attempts`` times, after a jittered pause, within the bound.
    A key accepted under ``accept-new`` is left on the connection as ``learned_key`` for the
    caller to record.
    """
    bound = bound or spec.connect_bound
    loop = asyncio.get_running_loop()
    started = loop.time()
    addresses = await _addresses(spec, bound)
    retry, left = policy, bound - (loop.time() - started)
    server = (addresses[0][1], spec.port) if addresses else (spec.hostname or spec.host, spec.port)
    for attempt in range(retry.handshake_attempts):
        async with _turn(loop, server, retry.per_server):
            started = loop.time()
            try:
                return await _attempt(spec, left, addresses, bound)
            except ConnectError as exc:
                left -= loop.time() - started
                pause = retry.pause(attempt)
                if not _dropped(exc) or attempt + 1 >= retry.handshake_attempts or pause >= left:
                    if attempt and exc.strerror:
                        exc.strerror += f" (tried {attempt + 1} times)"
                    raise
        await asyncio.sleep(pause)
        left -= pause
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextlib.asynccontextmanager
async def _turn(loop: asyncio.AbstractEventLoop, server: tuple[str, int], cap: int) -> AsyncIterator[None]:
    """One of ``cap`` turns to open a connection to ``server``: sshd drops unauthenticated connections
    past its ``MaxStartups`` (10 by default), so many names for one server, or one bastion, must queue."""
    gates = _opening.setdefault(loop, {})
    gate = gates.get(server)
    if gate is None:
        gate = gates[server] = _Gate(cap)
    gate.users += 1
    try:
        async with gate.turns:
            yield
    finally:
        gate.users -= 1
        if not gate.users:
            del gates[server]


def _dropped(exc: ConnectError) -> bool:
    """A connection the server closed or reset before the login, without saying why (what sshd does
    past ``MaxStartups``, or a host reset mid key exchange): worth another try, unlike a refusal."""
    cause = exc.__context__  # the transport's own error, which the ConnectError replaced
    return isinstance(cause, (asyncssh.ConnectionLost, ConnectionResetError, ConnectionAbortedError, BrokenPipeError))


async def _addresses(spec: ConnectSpec, bound: float) -> list[_resolve.Address] | None:
    """The addresses to connect to ``spec`` at, looked up within ``bound`` seconds; None when a bastion
    or a ProxyCommand reaches it (the name is theirs to resolve)."""
    if spec.jump is not None or spec.proxy_command:
        return None
    name = spec.hostname or spec.host
    try:
        async with asyncio.timeout(bound):
            return await _resolve.resolve(name)
    except TimeoutError:
        raise ResolveError(socket.EAI_AGAIN, f"cannot resolve host {name!r}: no answer from the resolver within "
                           f"{bound:g} seconds") from None


async def _attempt(spec: ConnectSpec, bound: float, addresses: list[_resolve.Address] | None,
                   stated: float) -> SSHClientConnection:
    """One try at connecting and logging in to ``spec`` (at ``addresses`` unless a bastion or a ProxyCommand
    reaches it) within ``bound`` seconds (what is left of the ``stated`` one after the name's lookup),
    failures as hussh's errors."""
    phase = ["connect"]
    try:
        async with asyncio.timeout(bound), _credentials.agent_held(spec):
            return await _open(spec, phase, addresses)
    except TimeoutError:
        if phase[0] == "bastion" and spec.jump is not None:
            raise ConnectError(f"via bastion {spec.jump.target}: ConnectTimeout: no answer from the bastion "
                               f"within this host's {stated:g} seconds") from None
        what = f"{spec.address} via bastion {spec.jump.target}" if spec.jump is not None else spec.address
        raise ConnectTimeout(
            f"connecting to {what} timed out after {stated:g} seconds (TCP connect, handshake and login)"
        ) from None
    except asyncssh.PermissionDenied as exc:
        if spec.password is None and spec.private_key is None and not _offered_keys(spec):
            raise AuthenticationError(_credentials.no_credentials_message(spec)) from None
        raise AuthenticationError(f"authentication failed for {spec.username}@{spec.address}: {exc.reason}") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(
            f"host key of {spec.address} does not match its known_hosts entry, refusing to connect ({exc.reason})"
        ) from None
    except asyncssh.DisconnectError as exc:
        if spec.proxy_command:  # the reason says what the command did
            raise ConnectError(errno.ECONNABORTED, f"{spec.address}: the SSH handshake ended: {exc.reason}") from None
        raise ConnectError(errno.ECONNABORTED, f"{spec.address} closed the SSH handshake: {exc.reason}") from None
    except asyncssh.ChannelOpenError as exc:
        raise ConnectError(errno.ECONNABORTED, f"{spec.address}: {exc.reason}") from None
    except ConnectionRefusedError:
        raise ConnectError(errno.ECONNREFUSED, f"connection refused by {spec.address}") from None
    except (HusshError, asyncio.CancelledError):
        raise
    except OSError as exc:
        raise ConnectError(exc.errno, f"cannot connect to {spec.address}: {exc.strerror or exc}") from None


async def _connect_first(loop: asyncio.AbstractEventLoop, factory: Callable[[], SSHClientConnection],
                         addresses: list[_resolve.Address], port: int) -> SSHClientConnection:
    """A TCP connection to the first of ``addresses`` that takes one, in order, as ``ssh`` tries them.

    The addresses are numeric, so the loop looks nothing up (see ``_resolve``). One connection
    object serves every try, as when the loop resolves and tries the addresses itself."""
    conn = factory()
    failures: list[OSError] = []
    for family, address in addresses:
        try:
            await loop.create_connection(lambda: conn, address, port, family=family)
            return conn
        except OSError as exc:
            failures.append(exc)
    raise failures[0]


async def _open(spec: ConnectSpec, phase: list[str], addresses: list[_resolve.Address] | None) -> SSHClientConnection:
    loop = asyncio.get_running_loop()
    keys = spec.host_keys if spec.host_keys is not None else lookup(spec)
    known_hosts, learning, verifier = _host_key_check(spec, keys)
    options = copy.copy(await _profile_options(spec))
    options.host = options.orig_host = spec.hostname or spec.host
    options.port = spec.port
    options.known_hosts = known_hosts  # type: ignore[assignment]  # asyncssh's type omits the 3-list form it takes
    if verifier is not None and internals.OWNER_AVAILABLE:  # else asyncssh refuses every key not listed
        internals.with_owner(options, lambda: verifier)
    if not keys.listed and internals.OPENSSH_HOST_KEY_ORDER:
        options.server_host_key_algs = internals.OPENSSH_HOST_KEY_ORDER  # the key type `ssh` records
    options.waiter = loop.create_future()
    password_only = spec.password is not None and spec.private_key is None
    factory = internals.connection_factory(loop, options, password_only)
    if spec.jump is not None:
        phase[0] = "bastion"
        conn = await _bastions.pool().open(spec.jump, factory, options.host, spec.port, open_connection)
        phase[0] = "connect"
    elif spec.proxy_command:
        try:
            argv = shlex.split(spec.proxy_command)
        except ValueError as exc:
            raise ConfigError(f"cannot parse the ProxyCommand of {spec.host}: {exc}") from None
        try:
            conn = await open_proxy_command(loop, argv, factory)
        except OSError as exc:  # upstream's words, which code written against it matches on
            raise ConnectError(exc.errno, f"Failed to start proxy command {argv[0] if argv else ''!r} for "
                                          f"{spec.address}: {exc.strerror or exc}") from None
    else:
        assert addresses is not None  # looked up by open_connection for a direct connection
        conn = await _connect_first(loop, factory, addresses, spec.port)
    conn.set_extra_info(host=options.host, port=spec.port)
    try:
        await options.waiter
    except asyncssh.HostKeyNotVerifiable as exc:
        conn.abort()
        if keys.revoked and "revoked" in str(exc.reason):  # asyncssh's words for a key or CA marked @revoked
            raise HostKeyError(f"{revoked_key_message(spec, keys)} ({exc.reason})") from None
        if verifier is not None and verifier.other_keys:  # listed only with other key types: prefer those
            retry = HostKeys(trusted=tuple(verifier.other_keys), authorities=keys.authorities, revoked=keys.revoked,
                             revoked_in=keys.revoked_in)
            try:
                return await _open(msgspec.structs.replace(spec, host_keys=retry), phase, addresses)
            except (asyncssh.DisconnectError, ConnectionError) as exc:  # sshd hangs up: no such key type
                kinds = ", ".join(sorted({k.split()[0] for k in verifier.other_keys}))
                raise HostKeyError(f"{spec.address} is listed in known_hosts only with {kinds} key(s), and asking "
                                   f"the server for those failed ({exc}): it does not offer them") from None
        if verifier is not None and verifier.unlisted:
            raise HostKeyError(_unlisted(spec)) from None
        raise
    except asyncssh.PermissionDenied as exc:
        conn.abort()
        if verifier is not None and verifier.changed:
            raise AuthenticationError(f"authentication failed for {spec.username}@{spec.address}: "
                                      f"{changed_key_message(spec)} ({exc.reason})") from None
        raise
    except BaseException:
        conn.abort()
        raise
    if learning or (verifier is not None and verifier.learned):
        host_key = conn.get_server_host_key()
        if host_key is not None:
            conn.learned_key = host_key.export_public_key("openssh").decode("ascii").strip()  # type: ignore[attr-defined]
    return conn
