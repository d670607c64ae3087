"""``ConnectSpec``: everything needed to reach and log in to one host, resolved once in the caller
(by ``_make_spec.make_spec``) and shipped to the workers, which never read config or known_hosts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal, Protocol

import msgspec

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
