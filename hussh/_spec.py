"""``ConnectSpec``: everything needed to reach and log in to one host, resolved once in the caller.

Resolution follows ``ssh``'s precedence: an explicit argument beats the ssh config, which beats
hussh's defaults. ``port`` and ``username`` defaults are markers equal to ``22`` and ``"root"``
(so signatures read as upstream's) that ``make_spec`` can tell from an explicit ``22``/``"root"``.
Workers receive finished specs (with host keys pre-matched) and never read config or known_hosts.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from ._config import ConfigResolver, HostConfig, SSHConfigArg
from .errors import ConfigError

HostKeyChecking = Literal["accept-new", "strict", "off"]
"""What an unlisted or changed host key does (``@revoked`` keys are refused under all three):
``strict`` refuses both; ``accept-new`` (the default) records an unlisted key and refuses a
changed one; ``off`` connects to both, without password, keyboard-interactive or agent forwarding
for a changed key (``ssh``'s ``StrictHostKeyChecking no``)."""

DEFAULT_CONNECT_TIMEOUT = 15.0
"""Seconds allowed for TCP connect + SSH handshake + login when nothing else says (``timeout=0``).

Upstream hussh waits forever here. 15 s is ClusterShell's default (Ansible's is 10 s, for the TCP
connect alone); ours also covers the handshake and the login, and a failed host is then not
retried for ``Retry.cooldown`` seconds, so a dead host costs one bound per cool-down, not per call."""

DEFAULT_STALL_TIMEOUT = 30.0
"""Seconds an SFTP or SCP operation may wait with nothing at all received from the server.

A transfer that is making progress may run as long as it takes; a server that stops answering
(frozen, cut off, a hung disk under sftp-server) fails it with ``TransferStalled`` after this long
instead of never. A healthy server answers an SFTP request in well under a second; 30 s is twice
the connect bound, room for a loaded host."""

DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
"""Bytes of stdout + stderr kept per command before it is stopped with ``OutputLimitExceeded``."""

DEFAULT_KEY_FILES = ("id_ed25519", "id_ecdsa", "id_rsa", "id_ed25519_sk", "id_ecdsa_sk", "id_dsa")
"""``~/.ssh`` keys offered when nothing names one (OpenSSH's list, in a fixed order)."""

MAX_JUMPS = 8  # ProxyJump chains longer than this are a configuration loop

DEFAULT_KEEPALIVE_INTERVAL = 15.0
"""Seconds of silence from the server after which a keepalive is sent, when neither the argument nor
the ssh config (``ServerAliveInterval``) says: a server whose network vanished is noticed.

With ``DEFAULT_KEEPALIVE_COUNT_MAX`` unanswered, the connection closes ``(3 + 1) x 15 = 60`` seconds
after the last packet received, failing what runs on it (a silent command included) with
``ConnectionLost``; a bastion takes its tunnels down with it. A live sshd answers each one."""

DEFAULT_KEEPALIVE_COUNT_MAX = 3
"""Unanswered keepalives before the connection is closed (``ServerAliveCountMax``'s default)."""


class _DefaultSeconds(float):
    """``0``, but recognisably "not given" (upstream's default), so the ssh config or hussh's default applies."""


KEEPALIVE_NOT_GIVEN = _DefaultSeconds(0)
"""The ``keepalive_interval`` default: the config's ``ServerAliveInterval``, else 15 s; an explicit 0 turns it off."""


class _DefaultPort(int):
    """``22``, but recognisably "not given", so an ssh config ``Port`` can take its place."""


class _DefaultUser(str):
    """``"root"``, but recognisably "not given", so an ssh config ``User`` can take its place."""


DEFAULT_PORT = _DefaultPort(22)
DEFAULT_USERNAME = _DefaultUser("root")


class HostKeys(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The known_hosts entries that apply to one host, as OpenSSH public key lines.

    ``hashed`` names the files whose hashed entries still have to be tried: a hashed name can
    only be tested, so that is done once the server has shown its key (see ``HashedHosts``).
    ``revoked_in`` says where the ``revoked`` keys are marked (``file:line``), for the error.
    """

    trusted: tuple[str, ...] = ()
    authorities: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    hashed: tuple[str, ...] = ()
    revoked_in: tuple[str, ...] = ()

    @property
    def listed(self) -> bool:
        return bool(self.trusted or self.authorities)


class HashedHosts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One known_hosts file's hashed entries (``HashKnownHosts``), shipped once to each worker.

    Each is (salt, HMAC-SHA1 of the name under it, ``"type base64"`` key): testing every entry
    against every host would cost hosts x entries HMACs before connecting, so a host is tested
    only against the entries holding the key it presents.
    """

    path: str
    entries: tuple[tuple[bytes, bytes, str], ...] = ()


class ConnectSpec(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """How to reach and log in to one host; timeouts in seconds, ``0`` meaning "no limit" for commands.

    ``host`` is the name as given (result key, config match); ``hostname`` where to connect.
    ``known_hosts`` are the files consulted; new keys are recorded in the first one.
    ``host_keys`` is filled from them by ``finalized`` before a spec travels to a worker.
    ``stall_timeout`` bounds an SFTP or SCP operation's wait for anything from the server (``0``: none).
    """

    host: str
    hostname: str = ""
    port: int = 22
    username: str = "root"
    password: str | None = None
    private_key: str | None = None
    identities: tuple[str, ...] = ()
    identities_only: bool = False
    certificates: tuple[str, ...] = ()
    agent: str | None = None
    forward_agent: bool = False
    timeout: float = 0.0
    connect_timeout: float = 0.0
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_count_max: int = DEFAULT_KEEPALIVE_COUNT_MAX
    known_hosts: tuple[str, ...] = ()
    host_key_checking: HostKeyChecking = "accept-new"
    hash_known_hosts: bool = False
    host_keys: HostKeys | None = None
    max_output: int = DEFAULT_MAX_OUTPUT
    jump: ConnectSpec | None = None
    proxy_command: str = ""
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

    @property
    def connect_bound(self) -> float:
        """Seconds allowed to connect and log in: ``connect_timeout``, else ``timeout``, else the default."""
        return self.connect_timeout or self.timeout or DEFAULT_CONNECT_TIMEOUT

    @property
    def address(self) -> str:
        """``hostname:port``, what the messages name (``[v6]:port`` for IPv6 addresses)."""
        name = self.hostname or self.host
        return f"[{name}]:{self.port}" if ":" in name else f"{name}:{self.port}"

    @property
    def target(self) -> str:
        """``user@hostname:port``, how a bastion is named in the errors of the hosts behind it."""
        return f"{self.username}@{self.address}"

    def __repr__(self) -> str:
        via = f" via {self.jump.target}" if self.jump is not None else ""
        secret = ", password=***" if self.password is not None else ""
        return f"ConnectSpec({self.host!r} -> {self.target}{via}{secret})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[object]:  # type: ignore[override]  # rich takes values and pairs
        """What rich's pretty printer shows (msgspec's default lists every field, the password too)."""
        yield self.host
        yield "target", self.target
        if self.jump is not None:
            yield "via", self.jump.target
        if self.password is not None:
            yield "password", "***"


class HasSpec(Protocol):
    """A connection object given as a bastion (``AsyncConnection``, ``Connection``): its resolved spec."""

    @property
    def spec(self) -> ConnectSpec: ...


ProxyJump = str | tuple[str, int] | ConnectSpec | HasSpec
"""``proxy_jump=``: ``"user@bastion:port"`` or a ``-J`` style chain, upstream's ``(host, port)``, or a connection."""

class Retry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What hussh does when connecting fails or a server is crowded; a command that started is never run again.

    Within ``cooldown`` seconds of a failure to connect, later ``MultiConnection`` calls return it
    at once instead of waiting on the host again (``connect()`` always retries). ``attempts`` > 1
    retries transient connect failures (timeouts, refused, reset, unreachable; never a login or
    host key refused) after ``backoff * 2**n`` seconds, give or take ``jitter`` of it.

    ``handshake_attempts``: tries for a connection the server accepts and then drops or resets
    before the login completes (sshd's ``MaxStartups``, a host reset during the key exchange), with
    the same backoff, all within the connect bound. ``per_server``: connections being opened (TCP
    connect to login) at once to one server name and port, for the whole call: split over the
    workers (each gets ``per_server // workers``, at least 1), so it stays below sshd's
    ``MaxStartups`` (10) with up to 8 workers.
    """

    cooldown: float = 60.0
    attempts: int = 1
    backoff: float = 1.0
    jitter: float = 0.5
    handshake_attempts: int = 3
    per_server: int = 8

    def __post_init__(self) -> None:
        if (self.cooldown < 0 or self.backoff < 0 or not 0 <= self.jitter <= 1 or self.attempts < 1
                or self.handshake_attempts < 1 or self.per_server < 1):
            raise ValueError(f"bad {self!r}: cooldown and backoff must be >= 0, jitter in 0..1, attempts, "
                             "handshake_attempts and per_server >= 1")

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed try ``attempt`` (from 0): ``backoff * 2**attempt``, +/- ``jitter`` of it."""
        base = self.backoff * (2 ** attempt)
        return max(0.0, float(base * (1 + random.uniform(-self.jitter, self.jitter))))

    def shared_by(self, workers: int) -> Retry:
        """This policy as one of ``workers`` workers applies it: its share of ``per_server``."""
        return msgspec.structs.replace(self, per_server=max(1, self.per_server // max(1, workers)))


def make_spec(
    host: str,
    *,
    port: int = DEFAULT_PORT,
    username: str | None = None,
    password: str | None = None,
    private_key: str | os.PathLike[str] | None = None,
    key_path: str | os.PathLike[str] | None = None,
    timeout: float = 0,
    connect_timeout: float = 0,
    keepalive_interval: float = KEEPALIVE_NOT_GIVEN,
    known_hosts: str | os.PathLike[str] | None = None,
    host_key_checking: HostKeyChecking | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    proxy_jump: ProxyJump | None = None,
    proxy_command: str | None = None,
    forward_agent: bool | None = None,
    ssh_config: SSHConfigArg = None,
    resolver: ConfigResolver | None = None,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> ConnectSpec:
    """Validate arguments and apply the ssh config into a ``ConnectSpec`` (``key_path`` = ``private_key``)."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}")
    if key_path is not None and private_key is not None:  # upstream's TypeError and words
        raise TypeError("key_path and private_key are aliases; provide only one")
    if proxy_jump not in (None, "none") and proxy_command:
        raise TypeError("proxy_jump and proxy_command are mutually exclusive")
    key = private_key if private_key is not None else key_path
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                        ("keepalive_interval", keepalive_interval), ("stall_timeout", stall_timeout)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if host_key_checking not in (None, "accept-new", "strict", "off"):
        raise ValueError(f"host_key_checking must be 'accept-new', 'strict' or 'off', got {host_key_checking!r}")
    if not isinstance(max_output, int) or max_output <= 0:
        raise ValueError(f"max_output must be a positive number of bytes, got {max_output!r}")
    if resolver is None:
        resolver = ConfigResolver(ssh_config)
    explicit_user = username if username is not None and username is not DEFAULT_USERNAME else None
    explicit_port = port if port is not DEFAULT_PORT else None
    config = resolver.resolve(host, explicit_user, explicit_port)
    checking = host_key_checking or _checking_from(config.strict_host_key_checking)
    known = (os.path.expanduser(os.fspath(known_hosts)),) if known_hosts is not None else _known_hosts_from(config)
    if proxy_jump is None:
        jump = _chain(config.proxy_jump, resolver, known_hosts, host_key_checking, connect_timeout, depth=1)
    else:
        jump = _jump_from_argument(proxy_jump, resolver, known_hosts, host_key_checking, connect_timeout)
    if proxy_command:
        proxy_command = _expand_tokens(proxy_command, config.hostname or host, explicit_port or config.port or 22,
                                       explicit_user or config.user or "root", host)
    elif proxy_jump is None and config.proxy_jump is None:
        proxy_command = config.proxy_command  # expanded by the config; a ProxyJump takes its place, as in ssh
    hostname = config.hostname or host
    port = explicit_port or config.port or 22
    username = explicit_user or config.user or "root"
    return ConnectSpec(
        host=host,
        hostname=hostname,
        port=port,
        username=username,
        password=password,
        private_key=os.path.expanduser(os.fspath(key)) if key is not None else None,
        identities=() if key is not None or password is not None else _identities_from(config),
        identities_only=bool(config.identities_only),
        certificates=tuple(os.path.expanduser(path) for path in config.certificate_files or ()),
        agent=None if key is not None or password is not None else _agent_from(config),
        forward_agent=bool(forward_agent if forward_agent is not None else config.forward_agent),
        timeout=float(timeout),
        connect_timeout=float(connect_timeout or config.connect_timeout or 0),
        keepalive_interval=_keepalive_interval(keepalive_interval, config),
        keepalive_count_max=DEFAULT_KEEPALIVE_COUNT_MAX if config.server_alive_count_max is None
        else config.server_alive_count_max,
        known_hosts=known,
        host_key_checking=checking,
        hash_known_hosts=bool(config.hash_known_hosts),
        max_output=max_output,
        jump=jump,
        proxy_command=proxy_command or "",
        stall_timeout=float(stall_timeout),
    )


def _keepalive_interval(given: float, config: HostConfig) -> float:
    """The argument if given (0: off), else the config's ``ServerAliveInterval`` (0: off), else the default."""
    if type(given) is not _DefaultSeconds:
        return float(given)
    if config.server_alive_interval is not None:
        return config.server_alive_interval
    return DEFAULT_KEEPALIVE_INTERVAL


def _expand_tokens(command: str, hostname: str, port: int, username: str, alias: str) -> str:
    """``ssh``'s ``%h %p %r %n %%`` in a ``proxy_command=`` argument (the config expands its own)."""
    tokens = {"h": hostname, "p": str(port), "r": username, "n": alias, "%": "%"}
    out, chars = [], iter(command)
    for char in chars:
        out.append(tokens.get(next(chars, ""), "") if char == "%" else char)
    return "".join(out)


def _checking_from(value: str | None) -> HostKeyChecking:
    """``StrictHostKeyChecking`` in hussh's terms (``ask`` is ``strict``: nobody answers prompts in a batch)."""
    if value in ("yes", "ask"):
        return "strict"
    if value in ("no", "off"):
        return "off"
    return "accept-new"


def _known_hosts_from(config: HostConfig) -> tuple[str, ...]:
    user = config.user_known_hosts_files
    if user is None:
        user = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
    system = config.global_known_hosts_files
    if system is None:
        system = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    return tuple(os.path.expanduser(path) for path in (*user, *system))


def _identities_from(config: HostConfig) -> tuple[str, ...]:
    """Config ``IdentityFile``s, else the default ``~/.ssh/id_*`` files that exist now."""
    if config.identity_files:
        return tuple(os.path.expanduser(path) for path in config.identity_files)
    ssh_dir = Path("~/.ssh").expanduser()
    return tuple(str(ssh_dir / name) for name in DEFAULT_KEY_FILES if (ssh_dir / name).is_file())


def _agent_from(config: HostConfig) -> str | None:
    """The agent socket: config ``IdentityAgent`` (``none`` turns it off), else ``SSH_AUTH_SOCK``."""
    value = config.identity_agent
    if value == "none":
        return None
    if value is None or value == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    return os.path.expanduser(value)


def _jump_from_argument(value: ProxyJump,
                        resolver: ConfigResolver, known_hosts: object, checking: HostKeyChecking | None,
                        connect_timeout: float) -> ConnectSpec | None:
    """``proxy_jump=``: a ``-J`` style chain, ``"none"``, or a connection object giving the last hop."""
    if isinstance(value, ConnectSpec):
        return value
    spec = getattr(value, "spec", None)
    if isinstance(spec, ConnectSpec):
        return spec
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int:
        value = f"[{value[0]}]:{value[1]}" if ":" in value[0] else f"{value[0]}:{value[1]}"  # upstream's (host, port)
    if not isinstance(value, str):
        raise TypeError(f"proxy_jump must be a string like 'user@bastion:22' or a connection, got {value!r}")
    for hop in value.split(","):  # upstream's TypeError for a port that is no number, before any lookup
        port = hop.removeprefix("ssh://").rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port and not port.isdigit():
            raise TypeError(f"proxy_jump port must be a valid integer, got {port!r} in {hop!r}")
    return _chain(value, resolver, known_hosts, checking, connect_timeout, depth=1)


def _chain(chain: str | None, resolver: ConfigResolver, known_hosts: object, checking: HostKeyChecking | None,
           connect_timeout: float, depth: int) -> ConnectSpec | None:
    """The last hop of a ``ProxyJump`` chain, each hop resolved through the config like ``ssh -J``.

    A hop is reached through the hops before it; only the first hop's own config ``ProxyJump``
    applies. Credentials given to hussh are the target's: hops log in with what their config
    (or the agent and default keys) provides, as with ``ssh -J``.
    """
    if chain is None or chain.strip().lower() in ("", "none"):
        return None
    if depth > MAX_JUMPS:
        raise ConfigError(f"ProxyJump chain longer than {MAX_JUMPS} hops (a loop in the ssh config?)")
    cache_key = (chain, str(known_hosts), checking, connect_timeout, depth)
    if cache_key in resolver.jumps:  # 10,000 hosts behind one bastion resolve it once
        return resolver.jumps[cache_key]  # type: ignore[return-value]
    from .hostlist import parse_target  # noqa: PLC0415 - hostlist imports nothing of ours; keeps start-up lean

    previous: ConnectSpec | None = None
    for number, text in enumerate(part.strip() for part in chain.split(",")):
        if text.startswith("ssh://"):
            text = text[len("ssh://"):]
        try:
            target = parse_target(text)
        except ValueError as exc:
            raise ConfigError(f"bad ProxyJump hop {text!r}: {exc}") from None
        own_jump: str | ConnectSpec | None = previous if number else None
        hop_config = resolver.resolve(target.host, target.user, target.port)
        if number == 0:
            own_jump = _chain(hop_config.proxy_jump, resolver, known_hosts, checking, connect_timeout, depth + 1)
        previous = make_spec(
            target.host, port=target.port or DEFAULT_PORT, username=target.user,
            connect_timeout=connect_timeout, known_hosts=known_hosts,  # type: ignore[arg-type]
            host_key_checking=checking, proxy_jump=own_jump or "none", resolver=resolver,
        )
    resolver.jumps[cache_key] = previous
    return previous


def finalized(spec: ConnectSpec) -> ConnectSpec:
    """``spec`` (and its hops) ready to ship to a worker: the known_hosts entries that apply and
    the connect bound filled in here, so the worker depends on no file and no setting of ours."""
    from ._known_hosts import lookup  # noqa: PLC0415 - _known_hosts imports this module

    return msgspec.structs.replace(
        spec,
        host_keys=spec.host_keys if spec.host_keys is not None else lookup(spec),
        connect_timeout=spec.connect_bound,
        jump=finalized(spec.jump) if spec.jump is not None else None,
    )
