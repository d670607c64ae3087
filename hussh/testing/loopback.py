"""A fleet of real OpenSSH ``sshd`` processes on loopback addresses: no Docker, starts in seconds.

Each sshd process (a node) listens on up to 16 distinct 127.x.y.z addresses (OpenSSH 9.2's limit
per process) with its own host key; ``per_process=1`` gives every endpoint a process of its own,
so faults hit exactly one endpoint. Every node runs in a private mount namespace where the fleet's
login users exist (see ``_users`` and ``_namespace``): nothing is added to the machine's accounts.
Needs root, ``/usr/sbin/sshd`` and util-linux (``unshare``, ``nsenter``, ``mount``).

Network faults hand a node's endpoints to a relay (``_relay``) only while they last: the listener
stops (its sessions go on), the relay takes its addresses, and for ``slow`` a second listener
serves the relay on another port. With ``network=`` one relay process fronts every endpoint from
the start (each sshd listens on another port of its addresses), so conditions and faults act on
live connections too. Pause and kill signal every member of the node's namespaces, so sessions and
the commands they run freeze or die with the listener.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from . import _namespace, _registry
from ._base import Credentials, Endpoint, EndpointLike, Fleet, Network
from ._errors import FleetError
from ._keys import KeptHostKeys, public_key, write_ed25519, write_encrypted_rsa
from ._probe import unanswered
from ._relay import RELAYS_FILE, NetworkConditions, RelayProcess, conditions_dict, links_per_relay
from ._users import KEY_PASSPHRASE, KEY_USER, PASSWORD, PASSWORD_USER, fleet_users, make_homes, write_etc

SSHD = "/usr/sbin/sshd"
ADDRESSES_PER_SSHD = 16  # OpenSSH 9.2 refuses more ListenAddress sockets per process.
# Login records the fleet's sshd would write into the machine's logs (lastlog at uid * 292 bytes:
# a 500 GB sparse file for the fleet's uids): empty files of the namespace's own instead.
LOGIN_RECORDS = ("/var/log/lastlog", "/var/log/wtmp", "/var/log/btmp", "/run/utmp")
STOP_TIMEOUT = 10.0


def loopback_addresses(count: int, second_octet: int = 77) -> list[str]:
    """``count`` distinct loopback addresses 127.<second_octet>.x.y (Linux routes all of 127/8 to lo)."""
    if not 1 <= second_octet <= 254 or count > 250 * 256:
        raise FleetError(f"no room for {count} addresses under 127.{second_octet}")
    return [f"127.{second_octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]


@dataclass
class _Node:
    """One sshd process: its addresses and host key, and what currently serves them."""

    number: int
    addresses: list[str]
    listener: subprocess.Popen[bytes] | None = None
    proxy: RelayProcess | None = None  # a fault's own relay, while one is applied (fleets without network=)
    namespaces: set[int] = field(default_factory=set)


class LoopbackFleet(Fleet):
    """``len(addresses)`` SSH endpoints on ``port``, ``per_process`` per sshd process.

    ``with LoopbackFleet(loopback_addresses(100), port=2401) as fleet:`` starts them and stops
    everything after; ``up()`` / ``down()`` do the same by hand. ``network`` (conditions for all,
    or a map of endpoint to conditions, the others getting none) puts them behind a relay.
    """

    def __init__(self, addresses: Sequence[str], port: int = 2222, per_process: int = ADDRESSES_PER_SSHD,
                 network: Network = None) -> None:
        if not 1 <= per_process <= ADDRESSES_PER_SSHD:
            raise FleetError(f"per_process must be 1..{ADDRESSES_PER_SSHD}")
        if not addresses or len(set(addresses)) != len(addresses):
            raise FleetError("a fleet needs distinct addresses")
        self.addresses = list(addresses)
        self.port = port
        self.per_process = per_process
        self.workdir: Path | None = None
        self.kept_host_keys: KeptHostKeys | None = None  # set: host keys survive down and up (hussh fleet)
        self._token = ""  # of the workdir's marker: what down checks before removing it
        self._nodes = [
            _Node(n, self.addresses[first : first + per_process])
            for n, first in enumerate(range(0, len(self.addresses), per_process))
        ]
        self._node_of = {a: node for node in self._nodes for a in node.addresses}
        self._namespace: _namespace.FleetNamespace | None = None
        self._credentials: Credentials | None = None
        self._uids: dict[str, int] = {}
        self._relays: list[tuple[RelayProcess, list[str]]] = []  # each relay and the links it serves
        self._sshd_port = port  # where the sshd listen: another port when the relay takes ``port``
        self._reset_states()
        self._init_network(network)

    # ---------------------------------------------------------------- what the fleet offers

    @property
    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(a, self.port) for a in self.addresses]

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            raise FleetError("the fleet is not up")
        return self._credentials

    def nodes(self) -> list[tuple[Endpoint, ...]]:
        return [tuple(Endpoint(a, self.port) for a in node.addresses) for node in self._nodes]

    def host_public_key(self, endpoint: EndpointLike) -> str:
        target = self._endpoint(endpoint)
        if target.port != self.port or target.host not in self._node_of:
            raise FleetError(f"{target} is not an endpoint of this fleet")
        return public_key(self._host_key(self._node_of[target.host]))

    def uid(self, user: str) -> int:
        """The numeric uid of a fleet user (``PASSWORD_USER`` or ``KEY_USER``) while the fleet is up."""
        try:
            return self._uids[user]
        except KeyError:
            raise FleetError(f"{user!r} is not a user of this fleet, or the fleet is not up") from None

    def pids(self) -> list[int]:
        """Processes the fleet started itself and that still run: namespace holder, watcher, sshd listeners,
        fault proxies. Their CPU, with that of the children they reaped, is the fleet's."""
        procs = [self._namespace.holder if self._namespace else None, self.watcher,
                 *(relay.proc for relay, _ in self._relays)]
        procs += [p for node in self._nodes for p in (node.listener, node.proxy.proc if node.proxy else None)]
        return [p.pid for p in procs if p is not None and p.poll() is None]

    # ---------------------------------------------------------------- up and down

    def up(self, timeout: float | None = None) -> Self:
        """Start every sshd and wait until all endpoints answer (default bound: 60 s + 50 ms each)."""
        if self.workdir is not None:
            raise FleetError("the fleet is already up")
        _registry.reap_orphans()
        self.workdir, self._token = _registry.new_workdir("loopback")
        self.workdir.chmod(0o755)  # fleet users read their homes and authorized keys below it
        self._namespace = _namespace.FleetNamespace(marker=_layers(self.workdir))
        try:
            self._register({"id": self.workdir.name, "backend": "loopback", "workdir": str(self.workdir),
                            "token": self._token})
            self._start(timeout if timeout is not None else 60.0 + 0.05 * len(self.addresses))
            self._confirm_watcher()
        except BaseException:
            self.down()
            raise
        self._reset_states()
        return self

    def _start(self, timeout: float) -> None:
        assert self.workdir is not None and self._namespace is not None
        holder = self._namespace.open()
        users = fleet_users(holder)
        self._uids = {u.name: u.uid for u in users}
        self._register({**(self.record or {}), "uids": self._uids})  # so leftovers() can look for them
        etc_files = write_etc(users, self.workdir / "etc", int(time.time() // 86400))
        _layers(self.workdir).mkdir()
        make_homes(users, self.workdir / "home")
        self._namespace.mount(etc_files, self.workdir / "home", [p for p in LOGIN_RECORDS if Path(p).exists()])
        self._credentials = self._write_client_keys()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        if self._conditions:
            self._sshd_port = _free_port(self.addresses[0])
        write_host_key = self.kept_host_keys.write if self.kept_host_keys is not None else write_ed25519
        for node in self._nodes:
            write_host_key(self._host_key(node), f"hussh-fleet-node-{node.number}")
            self._start_listener(node, self._sshd_port)
        self._await_listeners(self._nodes, self._sshd_port, timeout)
        if self._conditions:
            self._start_relay()

    def _start_relay(self) -> None:
        """Relay processes in front of every endpoint, each link with its endpoint's conditions: as many
        processes as their descriptor limit needs (``links_per_relay``); ``relays.json`` in the fleet's
        directory names each one's control socket and links, for ``hussh fleet net``."""
        assert self.workdir is not None
        links: list[list[object]] = [[str(e), f"{e.host}:{self._sshd_port}", conditions_dict(c)]
                                     for e, c in self._conditions.items()]
        size = links_per_relay()
        for number, start in enumerate(range(0, len(links), size)):
            name = "relay" if number == 0 else f"relay-{number}"
            relay = RelayProcess(self.workdir / f"{name}.sock", self.workdir / f"{name}.log", self._ns.spawn,
                                 owned=not self.detached)
            chunk = links[start:start + size]
            self._relays.append((relay, [str(link[0]) for link in chunk]))  # before it can fail: down() stops it
            relay.command("listen", links=chunk)
        (self.workdir / RELAYS_FILE).write_text(json.dumps({r.control.name: names for r, names in self._relays}))

    def _links(self, endpoints: list[Endpoint]) -> list[tuple[RelayProcess, list[str]]]:
        if not self._relays:
            return super()._links(endpoints)
        wanted = {str(e) for e in endpoints}
        chosen = [(relay, [n for n in names if n in wanted]) for relay, names in self._relays]
        return [(relay, names) for relay, names in chosen if names]

    def _write_client_keys(self) -> Credentials:
        assert self.workdir is not None
        keys = self.workdir / "authorized_keys"
        keys.mkdir(mode=0o755)
        client, encrypted = self.workdir / "client_ed25519", self.workdir / "client_rsa_encrypted"
        lines = [write_ed25519(client, "hussh-fleet-client"),
                 write_encrypted_rsa(encrypted, KEY_PASSPHRASE, "hussh-fleet-client-encrypted")]
        (keys / KEY_USER).write_text("".join(f"{line}\n" for line in lines))
        return Credentials(PASSWORD_USER, PASSWORD, KEY_USER, client, encrypted, KEY_PASSPHRASE)

    def down(self) -> None:
        """Kill every process of the fleet, remove its files and its record; idempotent."""
        for relay, _ in self._relays:
            relay.stop()
        self._relays = []
        if self._namespace is not None and self._namespace.holder is not None:
            self._namespace.close()
        for node in self._nodes:
            if node.proxy is not None:
                node.proxy.stop()
            if node.listener is not None:
                node.listener.kill()  # already dead, unless it never entered the namespace
                node.listener.wait()
            node.listener = node.proxy = None
            node.namespaces.clear()
        if self.workdir is not None:
            _registry.remove_workdir(str(self.workdir), self._token)
            _registry.unregister(self.workdir.name)
        self._unwatch()
        self.workdir = self._namespace = self._credentials = None
        self._uids = {}
        self._sshd_port = self.port
        self._reset_states()

    # ---------------------------------------------------------------- faults

    def _act(self, action: str, nodes: list[int], **options: Any) -> None:
        chosen = [self._nodes[i] for i in nodes]
        marker = self._marker
        if action == "pause":
            _namespace.stop(marker, self._live_namespaces(chosen))
        elif action == "unpause":
            _namespace.resume(marker, self._live_namespaces(chosen))
        elif action == "kill":
            _namespace.kill(marker, self._live_namespaces(chosen))
            for node in chosen:
                self._stop(node)
            if self._relays:  # new connections refused, as by a dead sshd
                self._relay_command("refuse", self._affected(nodes))
        elif action == "start":
            for node in chosen:
                self._start_listener(node, self._sshd_port)
            if self._relays:
                self._relay_command("accept", self._affected(nodes))
        elif action == "refuse":
            for node in chosen:
                self._stop(node)
        elif action in ("blackhole", "slow"):
            for node in chosen:
                self._divert(node, action, options.get("delay", 0.05))
        elif action == "restore":
            for node in chosen:
                self._stop(node)
                self._start_listener(node, self._sshd_port)
        else:
            raise FleetError(f"unknown fault {action!r}")

    def _divert(self, node: _Node, mode: str, delay: float) -> None:
        """Hand the node's endpoints to a relay of their own (for ``slow``: in front of a listener elsewhere)."""
        self._stop(node)
        upstreams: list[str | None] = [None] * len(node.addresses)  # blackhole: nothing behind it
        if mode == "slow":
            backend = _free_port(node.addresses[0])
            self._start_listener(node, backend)
            self._await_listeners([node], backend, self.ready_timeout)
            upstreams = [f"{a}:{backend}" for a in node.addresses]
        slow = conditions_dict(NetworkConditions(rtt=2 * delay))
        node.proxy = RelayProcess(self._log(node, "relay").with_suffix(".sock"), self._log(node, "proxy"),
                                  self._ns.spawn, owned=not self.detached)
        node.proxy.command("listen", links=[[f"{a}:{self.port}", up, slow]
                                            for a, up in zip(node.addresses, upstreams, strict=True)])

    def _stop(self, node: _Node) -> None:
        """Stop whatever serves the node's endpoints (its sessions are left alone)."""
        if node.proxy is not None:
            node.proxy.stop()
        if node.listener is not None:
            self._remember_namespace(node, node.listener)
            node.listener.terminate()
            try:
                node.listener.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                node.listener.kill()
                node.listener.wait()
        node.proxy = node.listener = None

    def _start_listener(self, node: _Node, port: int) -> None:
        config = self._write_config(node, port)
        with self._log(node, "sshd").open("ab") as log:
            node.listener = self._ns.spawn([SSHD, "-D", "-e", "-r", "-f", str(config)],
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def _await_listeners(self, nodes: list[_Node], port: int, timeout: float) -> None:
        """Wait until the nodes' endpoints on ``port`` send banners; fail at once if an sshd exits, and
        if an sshd does not listen on every address of its node (sshd fails only when it binds none,
        and another process may be answering there)."""
        deadline = time.monotonic() + timeout
        pending = [(a, port) for node in nodes for a in node.addresses]
        while pending:
            for node in nodes:
                if node.listener is not None and node.listener.poll() is not None:
                    log = self._log(node, "sshd").read_text(errors="replace").strip().splitlines()
                    raise FleetError(f"sshd of {node.addresses[0]} exited with {node.listener.returncode}: "
                                     f"{log[-1] if log else 'no output'}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FleetError(f"{len(pending)} sshd sent no banner within {timeout:.0f}s, e.g. "
                                 f"{pending[0][0]}:{pending[0][1]}")
            pending = unanswered(pending, min(remaining, 1.0))
        for node in nodes:
            self._check_bound(node, port)

    def _check_bound(self, node: _Node, port: int) -> None:
        """Raise naming the first address of ``node`` its sshd does not listen on, with sshd's reason if it gave one.

        Called once the addresses answer: an sshd answers only after binding all it could."""
        assert node.listener is not None
        bound = _listening(node.listener.pid)
        for address in node.addresses:
            if (ipaddress.ip_address(address), port) not in bound:
                log = self._log(node, "sshd").read_text(errors="replace")
                said = re.findall(rf"^.*Bind to port {port} on {re.escape(address)} failed.*$", log, re.MULTILINE)
                why = said[-1].strip() if said else "it is not listening there (another process may be answering)"
                raise FleetError(f"sshd of {node.addresses[0]} could not listen on {address}:{port}: {why}")

    def _live_namespaces(self, nodes: list[_Node]) -> set[int]:
        """The namespaces with processes of ``nodes`` (listener's, proxy's, and older ones with sessions)."""
        for node in nodes:
            for proc in (node.listener, node.proxy.proc if node.proxy else None):
                if proc is not None:
                    self._remember_namespace(node, proc)
        alive = _namespace.members(self._marker, set().union(*(n.namespaces for n in nodes)))
        for node in nodes:
            node.namespaces &= alive.keys()
        return set(alive)

    def _remember_namespace(self, node: _Node, proc: subprocess.Popen[bytes]) -> None:
        inode = _namespace.namespace_of(proc.pid) if proc.poll() is None else None
        if inode is not None and inode != _namespace.namespace_of(self._ns.holder_pid):
            node.namespaces.add(inode)

    # ---------------------------------------------------------------- files

    @property
    def _ns(self) -> _namespace.FleetNamespace:
        if self._namespace is None:
            raise FleetError("the fleet is not up")
        return self._namespace

    @property
    def _marker(self) -> str:
        return self._ns.marker

    def _host_key(self, node: _Node) -> Path:
        if self.workdir is None:
            raise FleetError("the fleet is not up")
        return self.workdir / f"host_ed25519_{node.number}"

    def _log(self, node: _Node, kind: str) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{kind}_{node.number}.log"

    def _write_config(self, node: _Node, port: int) -> Path:
        assert self.workdir is not None
        config = self.workdir / f"sshd_{node.number}.conf"
        listen = "".join(f"ListenAddress {a}\n" for a in node.addresses)
        config.write_text(
            f"Port {port}\n{listen}HostKey {self._host_key(node)}\nPidFile none\n"
            "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
            f"PubkeyAuthentication yes\nAuthorizedKeysFile {self.workdir}/authorized_keys/%u\n"
            "StrictModes no\nMaxStartups 100000\nMaxSessions 1000\nMaxAuthTries 20\n"
            "LoginGraceTime 120\nUseDNS no\nPermitRootLogin no\nPrintMotd no\nPrintLastLog no\n"
            f"AllowUsers {PASSWORD_USER} {KEY_USER}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        return config


def _layers(workdir: Path) -> Path:
    """Where the namespace mounts its /etc overlay's layers: what marks the fleet's namespaces."""
    return workdir / "layers"


def _free_port(address: str) -> int:
    """A port nothing listens on at ``address`` right now."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(pid: int) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """The TCP (address, port) pairs process ``pid`` holds listening sockets on: its descriptors' socket
    inodes looked up in its network namespace's tables."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state 0A: LISTEN
                address, _, hex_port = fields[1].partition(":")
                raw = bytes.fromhex(address)  # host order in 32-bit words
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((ipaddress.ip_address(packed), int(hex_port, 16)))
    return found


def _pids_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            zombie = fields.get("State", "").split()[:1] == ["Z"]  # dead, only waiting for init to reap it
            if fields.get("Uid", "").split()[:1] == [str(uid)] and not zombie:
                found.append(int(entry.name))
    return found


def leftovers(record: _registry.Record) -> list[str]:
    """Processes, files and host accounts of a loopback fleet that still exist."""
    workdir = Path(record["workdir"])
    found = [f"processes {pids} in the fleet's namespace mnt:[{inode}]"
             for inode, pids in _namespace.members(str(_layers(workdir))).items()]
    found += [f"directory {workdir}"] if workdir.exists() else []
    for name, uid in record.get("uids", {}).items():
        found += [f"host account {entry.pw_name} with {name}'s uid {uid}" for entry in pwd.getpwall()
                  if entry.pw_uid == uid]
        found += [f"process {pid} running as {name} (uid {uid})" for pid in _pids_of_uid(uid)]
    return found


def remove(record: _registry.Record) -> None:
    """Tear down a loopback fleet from its record alone (its owner is gone, or it was started detached).

    Its processes are those in namespaces with the fleet's /etc overlay (a mount only the fleet made);
    its directory goes only if it is the one the fleet made (see ``_registry.remove_workdir``).
    """
    _registry.check(record)
    _namespace.kill(str(_layers(Path(record["workdir"]))))
    _registry.remove_workdir(record["workdir"], record["token"])
