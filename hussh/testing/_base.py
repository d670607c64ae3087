"""What every fleet offers: endpoints, credentials, host keys and fault controls per node.

A node is what a fault acts on: one sshd process (loopback backend) or one container (compose
backend), serving one or more endpoints. Faults move a node between states; ``heal`` brings any
node back up, and a fault asked of a node in the wrong state raises ``FleetError``::

    up --pause--> paused --unpause--> up
    up, paused --kill--> killed --start--> up
    up --refuse | blackhole | slow--> refusing | blackholed | slowed
    up --freeze--> frozen --thaw--> up          (fleets made with network conditions)
    any --heal--> up

A fleet made with ``network=`` puts every endpoint behind one network relay (``_relay``): its
conditions change at run time (``set_network``), and its network faults act on live connections.
"""

from __future__ import annotations

import abc
import enum
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Self, TypedDict

from . import _registry, _watcher
from ._errors import FleetError
from ._probe import wait_ready
from ._relay import NetworkConditions, RelayProcess, conditions_dict


class Endpoint(NamedTuple):
    """Where one sshd listens; ``str()`` gives the ``host:port`` string hussh accepts as a host."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: Endpoint | tuple[str, int] | str, default_port: int | None = None) -> Endpoint:
        """Accept an Endpoint, a (host, port) pair, ``"host:port"`` or a bare host (``default_port``)."""
        if isinstance(value, tuple):
            return cls(value[0], int(value[1]))
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit():
            return cls(host, int(port))
        if default_port is None:
            raise FleetError(f"{value!r} names no port, and this fleet has no single port")
        return cls(value, default_port)


EndpointLike = Endpoint | tuple[str, int] | str


class State(enum.Enum):
    """Where a node stands after the faults applied to it."""

    UP = "up"
    PAUSED = "paused"
    KILLED = "killed"
    REFUSING = "refusing"
    BLACKHOLED = "blackholed"
    SLOWED = "slowed"
    FROZEN = "frozen"


# fault -> (states it may be applied in, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "pause": (frozenset({State.UP}), State.PAUSED),
    "unpause": (frozenset({State.PAUSED}), State.UP),
    "kill": (frozenset({State.UP, State.PAUSED}), State.KILLED),
    "start": (frozenset({State.KILLED}), State.UP),
    "refuse": (frozenset({State.UP}), State.REFUSING),
    "blackhole": (frozenset({State.UP}), State.BLACKHOLED),
    "slow": (frozenset({State.UP}), State.SLOWED),
    "freeze": (frozenset({State.UP}), State.FROZEN),
    "thaw": (frozenset({State.FROZEN}), State.UP),
}
# How heal undoes each state: the inverse fault, or "restore" for the network faults.
UNDO = {State.PAUSED: "unpause", State.KILLED: "start", State.REFUSING: "restore",
        State.BLACKHOLED: "restore", State.SLOWED: "restore", State.FROZEN: "thaw"}
# Faults after which a node's sshd must answer again before the call returns.
BRINGS_UP = {"unpause", "start", "restore"}
# Faults the relay applies, when the fleet has one (without: the backend's own, and no freeze).
RELAYED = {"refuse", "blackhole", "slow", "freeze", "thaw", "restore"}

Network = NetworkConditions | Mapping["EndpointLike", NetworkConditions] | None


class PasswordAuth(TypedDict):
    """``password_auth()``: typed per key, so ``**`` into hussh's calls type-checks (a ``dict[str, str]`` does not)."""

    username: str
    password: str


class KeyAuth(TypedDict):
    """``key_auth()``: typed per key, as ``PasswordAuth``."""

    username: str
    private_key: str


@dataclass(frozen=True)
class Credentials:
    """Logins every endpoint of a fleet accepts."""

    password_user: str
    password: str
    key_user: str
    client_key: Path
    encrypted_client_key: Path
    key_passphrase: str

    def password_auth(self) -> PasswordAuth:
        """Keyword arguments for hussh: ``username`` and ``password``."""
        return {"username": self.password_user, "password": self.password}

    def key_auth(self) -> KeyAuth:
        """Keyword arguments for hussh: ``username`` and ``private_key`` (unencrypted ed25519)."""
        return {"username": self.key_user, "private_key": str(self.client_key)}


class Fleet(abc.ABC):
    """N SSH endpoints with credentials, known_hosts entries and per-node faults."""

    ready_timeout: float = 60.0
    detached: bool = False  # True: the fleet outlives its process; only ``down`` (or the CLI's) ends it
    record: _registry.Record | None = None  # what the registry knows of the running fleet
    watcher: subprocess.Popen[bytes] | None = None  # tears the fleet down if its owner dies first (not detached)

    # ---------------------------------------------------------------- what backends provide

    @property
    @abc.abstractmethod
    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, in a stable order."""

    @property
    @abc.abstractmethod
    def credentials(self) -> Credentials:
        """The logins the endpoints accept (available once the fleet is up)."""

    @abc.abstractmethod
    def nodes(self) -> list[tuple[Endpoint, ...]]:
        """The fault units: the endpoints of each sshd process or container, in order."""

    def _servers(self) -> list[tuple[Endpoint, ...]]:
        """Every fault unit with a host key: ``nodes()``, then any the endpoints are reached through (a bastion)."""
        return self.nodes()

    def _wait_ready(self, endpoints: list[Endpoint], timeout: float) -> None:
        """Raise ``FleetError`` unless every endpoint sends its banner in time (probed from here)."""
        wait_ready(endpoints, timeout)

    @abc.abstractmethod
    def host_public_key(self, endpoint: EndpointLike) -> str:
        """The ``type base64`` host key that ``endpoint`` presents."""

    @abc.abstractmethod
    def up(self, timeout: float | None = None) -> Self:
        """Start every endpoint and wait (bounded) until each sends its SSH banner."""

    @abc.abstractmethod
    def down(self) -> None:
        """Stop and remove everything the fleet made; safe to call twice or after a failed ``up``."""

    def leftovers(self) -> list[str]:
        """Describe whatever of the fleet last brought up still exists (after ``down``: nothing)."""
        return _registry.leftovers(self.record) if self.record is not None else []

    @abc.abstractmethod
    def _act(self, action: str, nodes: list[int], **options: Any) -> None:
        """Apply ``action`` (a fault, or ``restore``) to the nodes with these indexes."""

    # ---------------------------------------------------------------- shared behaviour

    def __enter__(self) -> Self:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def hosts(self) -> list[str]:
        """Every endpoint as a ``host:port`` string, ready for ``MultiConnection.from_shared_auth``."""
        return [str(e) for e in self.endpoints]

    @property
    def client_key(self) -> Path:
        """Unencrypted ed25519 private key authorized for the key user."""
        return self.credentials.client_key

    @property
    def encrypted_client_key(self) -> Path:
        """RSA private key encrypted with the key passphrase, authorized for the key user."""
        return self.credentials.encrypted_client_key

    def known_hosts_line(self, endpoint: EndpointLike) -> str:
        """The known_hosts line of ``endpoint`` (``[host]:port key`` unless the port is 22)."""
        target = self._endpoint(endpoint)
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        return f"{name} {self.host_public_key(target)}\n"

    def known_hosts(self) -> str:
        """known_hosts lines of every endpoint."""
        return "".join(self.known_hosts_line(e) for e in self.endpoints)

    def write_known_hosts(self, path: Path | str) -> Path:
        """Write :meth:`known_hosts` to ``path`` and return it."""
        target = Path(path)
        target.write_text(self.known_hosts())
        return target

    def state(self, endpoint: EndpointLike) -> State:
        """The state of the node serving ``endpoint``."""
        return self._states[self._node_index[self._endpoint(endpoint)]]

    def sample(self, share: float | int, offset: int = 0) -> list[Endpoint]:
        """Every endpoint of ``share`` of the nodes (a fraction, or a count), from node ``offset``.

        Whole nodes, so a fault on them hits exactly the endpoints returned.
        """
        nodes = self.nodes()
        count = share if isinstance(share, int) else max(1, round(share * len(nodes)))
        chosen = nodes[offset : offset + count]
        if len(chosen) < count:
            raise FleetError(f"asked for {count} nodes from node {offset}; the fleet has {len(nodes)}")
        return [e for node in chosen for e in node]

    def pause(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """Freeze the nodes of ``endpoints`` (TCP still accepted, nothing answers); return all affected."""
        return self._apply("pause", endpoints)

    def unpause(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """Thaw paused nodes; their queued connections and sessions go on."""
        return self._apply("unpause", endpoints)

    def kill(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """SIGKILL the nodes of ``endpoints`` with every session: clients see their connections lost."""
        return self._apply("kill", endpoints)

    def start(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """Start killed nodes again, at the same endpoints with the same host keys."""
        return self._apply("start", endpoints)

    def refuse(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """New connections to these nodes are refused; established sessions go on."""
        return self._apply("refuse", endpoints)

    def blackhole(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """New connections are accepted and then hear nothing; established sessions go on."""
        return self._apply("blackhole", endpoints)

    def slow(self, endpoints: Iterable[EndpointLike], delay: float = 0.05) -> list[Endpoint]:
        """New connections go through a relay that holds every chunk back ``delay`` seconds each way."""
        return self._apply("slow", endpoints, delay=delay)

    def freeze(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """The link goes silent both ways, live connections included; sockets stay open (needs ``network=``)."""
        return self._apply("freeze", endpoints)

    def thaw(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """Frozen links forward again: what was held back goes on, as after a retransmission."""
        return self._apply("thaw", endpoints)

    def reset(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        """RST both ends of every live connection to these nodes (needs ``network=``); new ones work."""
        affected = self._affected(self._nodes_of(endpoints))
        self._relay_command("reset", affected)
        return affected

    def set_network(self, conditions: NetworkConditions, endpoints: Iterable[EndpointLike] | None = None,
                    ) -> list[Endpoint]:
        """Give ``endpoints`` (default: every one) these conditions, live connections included."""
        chosen = self._servers_flat() if endpoints is None else sorted(self._wanted(endpoints))
        missing = [str(e) for e in chosen if e not in self._node_index]
        if missing:
            raise FleetError(f"not endpoints of this fleet: {', '.join(missing[:10])}")
        self._relay_command("set", chosen, conditions=conditions_dict(conditions))
        self._conditions.update(dict.fromkeys(chosen, conditions))
        return chosen

    def network(self, endpoint: EndpointLike) -> NetworkConditions:
        """The conditions ``endpoint`` was given (FleetError if the fleet has no relay)."""
        target = self._endpoint(endpoint)
        if target not in self._conditions:
            raise FleetError(f"{target} is not behind the network relay: make the fleet with network=")
        return self._conditions[target]

    def relay_stats(self) -> dict[str, int]:
        """Totals over this fleet's relays: ``links``, live ``connections``, connections ``accepted`` and
        ``bytes`` relayed so far (FleetError if the fleet has no relay)."""
        totals = dict.fromkeys(("links", "connections", "accepted", "bytes"), 0)
        for relay in self._relay_processes():
            stats = relay.command("stats")
            for name in totals:
                totals[name] += int(stats[name])
        return totals

    def relay_pids(self) -> list[int]:
        """The relay processes of this fleet (their CPU is the network's, apart from sshd and client)."""
        return sorted(relay.pid for relay in self._relay_processes()) if self._conditions else []

    def _relay_processes(self) -> list[RelayProcess]:
        """Each relay of the fleet once (FleetError if it has none)."""
        return list({relay.pid: relay for relay, _ in self._links(list(self._conditions))}.values())

    def heal(self, endpoints: Iterable[EndpointLike] | None = None) -> list[Endpoint]:
        """Bring the nodes of ``endpoints`` (default: every faulted node) back up; return them."""
        if endpoints is None:
            chosen = [i for i, state in enumerate(self._states) if state is not State.UP]
        else:
            chosen = self._nodes_of(endpoints)
        for state, action in UNDO.items():
            batch = [i for i in chosen if self._states[i] is state]
            if batch:
                self._run(action, batch, {})
        return self._affected(chosen)

    @contextmanager
    def fault(self, kind: str, endpoints: Iterable[EndpointLike], **options: Any) -> Iterator[list[Endpoint]]:
        """``with fleet.fault("pause", eps) as affected:`` applies a fault and heals it on exit."""
        if kind not in TRANSITIONS or kind in BRINGS_UP:
            raise FleetError(f"unknown fault {kind!r}: one of pause, kill, refuse, blackhole, slow, freeze")
        affected = self._apply(kind, endpoints, **options)
        try:
            yield affected
        finally:
            self.heal(affected)

    # ---------------------------------------------------------------- the relay

    def _links(self, endpoints: list[Endpoint]) -> list[tuple[RelayProcess, list[str]]]:
        """The relays serving ``endpoints`` and those endpoints' link names in each."""
        raise FleetError("this fleet has no network relay: make it with network=NetworkConditions(...)")

    def _init_network(self, network: Network) -> None:
        """Each server endpoint's conditions (empty: no relay), from one for all or a map per endpoint."""
        servers = self._servers_flat()
        if network is None:
            self._conditions: dict[Endpoint, NetworkConditions] = {}
        elif isinstance(network, NetworkConditions):
            self._conditions = dict.fromkeys(servers, network)
        else:
            self._conditions = dict.fromkeys(servers, NetworkConditions())
            for key, conditions in network.items():
                target = self._endpoint(key)
                if target not in self._conditions:
                    raise FleetError(f"network conditions for {target}, which is not an endpoint of this fleet")
                self._conditions[target] = conditions

    def _relay_command(self, op: str, endpoints: list[Endpoint], **fields: Any) -> None:
        for relay, names in self._links(endpoints):
            relay.command(op, links=names, **fields)

    def _servers_flat(self) -> list[Endpoint]:
        return [e for server in self._servers() for e in server]

    def _wanted(self, endpoints: Iterable[EndpointLike]) -> set[Endpoint]:
        return {self._endpoint(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)}

    # ---------------------------------------------------------------- helpers for backends

    def _register(self, record: _registry.Record) -> None:
        """Write the fleet's record (with its owner, unless detached) before it starts anything; an owned
        fleet's first record also starts its watcher, which tears it down if this process dies first."""
        self.record = {**record, **({"owner": None} if self.detached else _registry.owner())}
        _registry.register(self.record)
        if not self.detached and self.watcher is None:
            self.watcher = _watcher.start(record["id"], Path(record["workdir"]) / "watcher.log")

    def _confirm_watcher(self) -> None:
        """Before ``up`` returns: raise FleetError unless the watcher (if any) waits on this process."""
        if self.watcher is not None:
            assert self.record is not None, "a watcher starts with the record"
            _watcher.confirm(self.watcher, Path(self.record["workdir"]) / "watcher.log")

    def _unwatch(self) -> None:
        """Stop the watcher (called by ``down`` once the fleet is gone, so a dying owner's is finished)."""
        if self.watcher is not None:
            _watcher.stop(self.watcher)
            self.watcher = None

    def _reset_states(self) -> None:
        """Index endpoints by node and mark every node up (called by ``up``)."""
        nodes = self._servers()
        self._node_index = {e: i for i, node in enumerate(nodes) for e in node}
        self._states = [State.UP] * len(nodes)

    def _endpoint(self, value: EndpointLike) -> Endpoint:
        ports = {e.port for e in self.endpoints}
        return Endpoint.parse(value, next(iter(ports)) if len(ports) == 1 else None)

    def _nodes_of(self, endpoints: Iterable[EndpointLike]) -> list[int]:
        wanted = [self._endpoint(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)]
        missing = [str(e) for e in wanted if e not in self._node_index]
        if missing:
            raise FleetError(f"not endpoints of this fleet: {', '.join(missing[:10])}")
        return sorted({self._node_index[e] for e in wanted})

    def _affected(self, indexes: list[int]) -> list[Endpoint]:
        nodes = self._servers()
        return sorted(e for i in indexes for e in nodes[i])

    def _apply(self, fault: str, endpoints: Iterable[EndpointLike], **options: Any) -> list[Endpoint]:
        allowed, _ = TRANSITIONS[fault]
        chosen = self._nodes_of(endpoints)
        wrong = [i for i in chosen if self._states[i] not in allowed]
        if wrong:
            shown = ", ".join(f"{self._servers()[i][0]} ({self._states[i].value})" for i in wrong[:5])
            raise FleetError(f"cannot {fault} nodes in these states: {shown}; heal them first")
        self._run(fault, chosen, options)
        return self._affected(chosen)

    def _run(self, action: str, chosen: list[int], options: dict[str, Any]) -> None:
        if action in RELAYED and self._conditions:
            self._relay_command(action, self._affected(chosen), **options)
        elif action in ("freeze", "thaw"):
            raise FleetError(f"{action} needs the network relay: make the fleet with network=NetworkConditions()")
        else:
            self._act(action, chosen, **options)
        for i in chosen:
            self._states[i] = State.UP if action == "restore" else TRANSITIONS[action][1]
        if action in BRINGS_UP:
            self._wait_ready(self._affected(chosen), self.ready_timeout)
