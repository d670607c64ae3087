"""A fleet of OpenSSH containers, run as one Docker Compose project from a locally built image.

Each container (a node) runs ``per_container`` sshd at fixed host ports on 127.0.0.1 (see
``_compose_layout``); pause, kill and start act on whole containers, network faults on their
namespace (see ``_netns``). Login: user ``hussh``, password ``hussh``, or the fleet's own key
pair, made per fleet and handed to the containers in their environment (no bind mount).
With ``bastion=True`` the sshd containers publish nothing: they sit on an internal network, each
at a fixed address, and a bastion container (same image, on both networks) is the one published
sshd, ``fleet.bastion``. Needs a Docker daemon and the ``docker`` package
(``pip install 'hussh-fleet[fleet]'``); the images are built on first use
(``python -m hussh.testing image``), without a registry.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import _netns, _registry, _subnet
from ._base import Credentials, Endpoint, EndpointLike, Fleet, Network
from ._compose_layout import Node, bastion_node, compose_file, internal_layout, layout, taken_ports
from ._errors import FleetError
from ._keys import write_ed25519, write_encrypted_rsa
from ._probe import raise_silent, unanswered
from ._relay import RelayProcess
from ._users import KEY_PASSPHRASE, PASSWORD, PASSWORD_USER

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

PROJECT = "hussh-testing"
BASE_PORT = 22000
# Ten sshd share a container's memory (its files are paged in once): measured on 2 cores and
# 24 GiB, 1000 endpoints take ~4 GB as 100 containers, ~20 GB as 1000 containers.
PER_CONTAINER = 10
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HOST_KEYS = "/etc/ssh/host_keys"
UP_TIMEOUT = 900.0
READY_TIMEOUT = 180.0
DOCKER_WORKERS = 16
# Compose v1 deadlocks when one `up` holds more services than COMPOSE_PARALLEL_LIMIT allows
# (each service holds a slot while its container waits for another), so `up` goes in
# batches of at most half the limit; a slow start on 2 cores may wait long for the API.
COMPOSE_ENV = {"COMPOSE_PARALLEL_LIMIT": "64", "COMPOSE_HTTP_TIMEOUT": "600"}
SERVICES_PER_UP = 32
# runc gives up freezing a container whose processes do not all stop in time ("unable to freeze":
# seen pausing a bastion relaying 1000 tunnels on 2 cores at load 200) and thaws it again.
PAUSE_ATTEMPTS = 5


def _docker_client() -> docker.DockerClient:
    """A client of the local Docker daemon, or FleetError saying what is missing."""
    try:
        import docker  # noqa: PLC0415 - optional dependency, only for this backend
    except ImportError:
        raise FleetError("the compose backend needs the docker package: pip install 'docker>=7'") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        raise FleetError(f"no Docker daemon answers: {error}") from None
    return client


def _each(items: list[Any], action: Callable[[Any], None]) -> None:
    """Apply ``action`` to items in parallel; raise FleetError naming the failures."""
    with ThreadPoolExecutor(DOCKER_WORKERS) as pool:
        futures = [(item, pool.submit(action, item)) for item in items]
    errors = [(item, error) for item, future in futures if (error := future.exception())]
    if errors:
        shown = "; ".join(f"{getattr(item, 'name', item)}: {error}" for item, error in errors[:5])
        raise FleetError(f"{len(errors)} of {len(items)} docker actions failed: {shown}")


def _pause(container: Container) -> None:
    """``docker pause``, tried again while runc reports that it could not freeze the container in time."""
    import docker.errors  # noqa: PLC0415 - optional dependency, only for this backend

    for attempt in range(1, PAUSE_ATTEMPTS + 1):
        try:
            container.pause()
            return
        except docker.errors.APIError as error:
            if "unable to freeze" not in str(error) or attempt == PAUSE_ATTEMPTS:
                raise


def _remove_project(client: docker.DockerClient, project: str) -> None:
    """Remove every container and network labelled with ``project``."""
    label = {"label": f"{PROJECT_LABEL}={project}"}
    _each(client.containers.list(all=True, filters=label), lambda c: c.remove(force=True, v=True))
    for network in client.networks.list(filters=label):
        network.remove()


def leftovers(record: _registry.Record) -> list[str]:
    """Containers, networks and files of a compose fleet that still exist."""
    client = _docker_client()
    label = {"label": f"{PROJECT_LABEL}={record['project']}"}
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    found += [f"network {n.name}" for n in client.networks.list(filters=label)]
    found += [f"directory {record['workdir']}"] if Path(record["workdir"]).exists() else []
    return found


def remove(record: _registry.Record) -> None:
    """Tear down a compose fleet from its record alone (its owner is gone, or it was started detached).

    Its containers and networks carry its project's label; its directory goes only if it is the one
    the fleet made (see ``_registry.remove_workdir``).
    """
    _registry.check(record)
    _remove_project(_docker_client(), record["project"])
    _registry.remove_workdir(record["workdir"], record["token"])


@dataclass(frozen=True)
class Bastion:
    """The one way into a fleet behind a bastion: its sshd on 127.0.0.1 and the logins it accepts."""

    endpoint: Endpoint
    credentials: Credentials
    internal_address: str  # where the endpoints see its connections come from


class ComposeFleet(Fleet):
    """``count`` sshd endpoints in containers of ``per_container``, host ports from ``base_port``.

    With ``bastion=True`` only the bastion is published, at ``base_port``; the endpoints are the
    containers' ports at their addresses in ``subnet`` (default: a /16 of 10.128.0.0/9 picked by
    the project's name), which only the bastion may connect to. ``network`` puts a relay with
    these conditions in each container's network namespace, in front of its sshd (and the bastion's).
    """

    ready_timeout = READY_TIMEOUT

    def __init__(self, count: int, per_container: int = PER_CONTAINER, base_port: int = BASE_PORT,
                 project: str = PROJECT, bastion: bool = False, subnet: str | None = None,
                 network: Network = None) -> None:
        if not _registry.PROJECT_NAME.fullmatch(project):
            raise FleetError(f"bad project name {project!r}: lowercase letters, digits, '-' and '_' "
                             "(Docker Compose's rule), at most 63")
        self.subnet = (subnet or _subnet.default_subnet(project)) if bastion else None
        if self.subnet is None:
            self.layout, self._bastion = layout(count, per_container, base_port), None
        else:
            self.layout = internal_layout(count, per_container, self.subnet)
            self._bastion = bastion_node(base_port, self.subnet)
        self.project = project
        self.workdir: Path | None = None
        self._token = ""  # of the workdir's marker: what down checks before removing it
        self._client: docker.DockerClient | None = None
        self._credentials: Credentials | None = None
        self._host_keys: dict[Endpoint, str] = {}
        self._faults: dict[int, _netns.NetFault] = {}
        self._relays: dict[int, _netns.NetFault] = {}  # per unit, with network=: its relay for the fleet's life
        self._reset_states()
        self._init_network(network)

    # ---------------------------------------------------------------- what the fleet offers

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _docker_client()
        return self._client

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for node in self.layout for e in node.endpoints()]

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            raise FleetError("the fleet is not up")
        return self._credentials

    @property
    def bastion(self) -> Bastion | None:
        """Where the fleet's bastion listens and its logins (the endpoints' own); None without one."""
        if self._bastion is None or self._bastion.internal_address is None:
            return None
        return Bastion(self._bastion.endpoints()[0], self.credentials, self._bastion.internal_address)

    def nodes(self) -> list[tuple[Endpoint, ...]]:
        return [tuple(node.endpoints()) for node in self.layout]

    @property
    def _units(self) -> list[Node]:
        """The containers faults act on, by index: the nodes, then the bastion if any."""
        return self.layout + ([self._bastion] if self._bastion is not None else [])

    def _servers(self) -> list[tuple[Endpoint, ...]]:
        return [tuple(node.endpoints()) for node in self._units]

    def known_hosts(self) -> str:
        """known_hosts lines of every endpoint, then the bastion's."""
        bastion = self.known_hosts_line(self._bastion.endpoints()[0]) if self._bastion is not None else ""
        return super().known_hosts() + bastion

    def containers(self) -> list[Container]:
        """Every container of the project, running or not, in node order."""
        found = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})
        return sorted(found, key=lambda c: c.labels.get(SERVICE_LABEL, ""))

    def endpoint_map(self) -> dict[Endpoint, Container]:
        """Map every endpoint to its container."""
        by_service = {c.labels.get(SERVICE_LABEL): c for c in self.containers()}
        return {e: by_service[node.service] for node in self.layout if node.service in by_service
                for e in node.endpoints()}

    def host_public_key(self, endpoint: EndpointLike) -> str:
        target = self._endpoint(endpoint)
        if target not in self._host_keys:
            self._read_host_keys(self._units[self._node_index[target]])
        return self._host_keys[target]

    def _read_host_keys(self, node: Node) -> None:
        """Fetch the node's host public keys from its container (made at its first start)."""
        container = self._container(node)
        stream, _ = container.get_archive(HOST_KEYS)
        keys: dict[str, str] = {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            for m in archive.getmembers():
                if m.name.endswith(".pub"):
                    pub = archive.extractfile(m)
                    assert pub is not None, f"{m.name} is not a file"  # the entrypoint's ssh-keygen makes regular files
                    keys[m.name.rsplit("_", 1)[-1]] = pub.read().decode()
        for endpoint, port in zip(node.endpoints(), node.container_ports(), strict=True):
            if f"{port}.pub" not in keys:
                raise FleetError(f"{node.service} has no host key for port {port} yet")
            self._host_keys[endpoint] = " ".join(keys[f"{port}.pub"].split()[:2])

    # ---------------------------------------------------------------- up and down

    def up(self, timeout: float | None = None, ready_timeout: float = READY_TIMEOUT) -> Self:
        """Build the images if needed, start every container, wait for every banner.

        A leftover project of the same name is removed first. ``timeout`` bounds the Compose work.
        """
        if self.workdir is not None:
            raise FleetError("the fleet is already up")
        from .image import SERVICE_IMAGE, compose_command, ensure_images  # noqa: PLC0415 - needs docker

        _registry.reap_orphans()
        _remove_project(self.client, self.project)
        taken = taken_ports([e for node in self._units if node.published for e in node.endpoints()])
        if taken:
            raise FleetError(f"{len(taken)} ports already in use on 127.0.0.1, e.g. {taken[:5]}: "
                             "choose another base port")
        in_use = _subnet.users(self.subnet, self.client) if self.subnet is not None else []
        if in_use:
            raise FleetError(f"{self.subnet} overlaps {', '.join(in_use)}: choose another subnet")
        self.workdir, self._token = _registry.new_workdir("compose")
        try:
            self._register({"id": self.workdir.name, "backend": "compose", "project": self.project,
                            "workdir": str(self.workdir), "token": self._token})
            ensure_images(self.client)
            authorized = self._write_client_keys()
            path = self.workdir / "compose.json"
            path.write_text(json.dumps(compose_file(self._units, SERVICE_IMAGE, authorized, self.subnet), indent=1))
            deadline = time.monotonic() + (timeout or UP_TIMEOUT)
            for first in range(0, len(self._units), SERVICES_PER_UP):
                batch = [node.service for node in self._units[first : first + SERVICES_PER_UP]]
                command = [*compose_command(), "--project-name", self.project, "--project-directory",
                           str(self.workdir), "--file", str(path), "up", "--detach", *batch]
                self._compose(command, f"compose up of {batch[0]}..{batch[-1]}", deadline)
            self._admit_only_bastion(self.layout)
            self._wait_ready([e for server in self._servers() for e in server], ready_timeout)
            self._start_relays(range(len(self._units)))
            self._confirm_watcher()
        except BaseException:
            self.down()
            raise
        self._reset_states()
        return self

    def _write_client_keys(self) -> str:
        assert self.workdir is not None
        client, encrypted = self.workdir / "client_ed25519", self.workdir / "client_rsa_encrypted"
        lines = [write_ed25519(client, "hussh-fleet-client"),
                 write_encrypted_rsa(encrypted, KEY_PASSPHRASE, "hussh-fleet-client-encrypted")]
        self._credentials = Credentials(PASSWORD_USER, PASSWORD, PASSWORD_USER, client, encrypted, KEY_PASSPHRASE)
        return "\n".join(lines)

    def _compose(self, command: list[str], what: str, deadline: float) -> None:
        """Run a Compose command; raise FleetError on failure or past ``deadline``."""
        try:
            result = subprocess.run(command, cwd=self.workdir, env={**os.environ, **COMPOSE_ENV},
                                    capture_output=True, text=True,
                                    timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired as error:
            raise FleetError(f"{what} did not finish in time") from error
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise FleetError(f"{what} failed:\n" + "\n".join(output[-20:]))

    def down(self) -> None:
        """Stop fault proxies, remove every container and network of the project, files and record."""
        for fault in [*self._faults.values(), *self._relays.values()]:
            _netns.undo(fault)
        self._faults.clear()
        self._relays.clear()
        if self.workdir is not None:
            _remove_project(self.client, self.project)
            _registry.remove_workdir(str(self.workdir), self._token)
            _registry.unregister(self.workdir.name)
        self._unwatch()
        self.workdir = self._credentials = None
        self._host_keys.clear()
        self._reset_states()

    # ---------------------------------------------------------------- faults

    def _wait_ready(self, endpoints: list[Endpoint], timeout: float) -> None:
        """Probe published endpoints from here, those behind the bastion from inside their own container."""
        wanted = set(endpoints)
        deadline = time.monotonic() + timeout
        inner = [(node, eps) for node in self._units if not node.published
                 if (eps := [e for e in node.endpoints() if e in wanted])]

        def probe(group: tuple[Node, list[Endpoint]]) -> list[tuple[str, int]]:
            node, eps = group
            return _netns.inside(self._pid(node), lambda: unanswered(eps, max(deadline - time.monotonic(), 1.0)))

        with ThreadPoolExecutor(DOCKER_WORKERS) as pool:
            silent_inside = pool.map(probe, inner)
            silent = unanswered([e for node in self._units if node.published for e in node.endpoints()
                                 if e in wanted], timeout)
            silent += [e for found in silent_inside for e in found]
        raise_silent(silent, timeout)

    def _admit_only_bastion(self, nodes: list[Node]) -> None:
        """Behind a bastion, let only the bastion connect to these nodes' containers (the host has a route)."""
        if self._bastion is None or self._bastion.internal_address is None:
            return
        source = self._bastion.internal_address
        _each([node for node in nodes if not node.published], lambda node: _netns.admit_only(self._pid(node), source))

    def _pid(self, node: Node) -> int:
        """The pid of the node's container's init (its namespaces), 0 if it is not running."""
        pid: int = self._container(node).attrs["State"]["Pid"]
        return pid

    def _container(self, node: Node) -> Container:
        found = self.client.containers.list(all=True, filters={
            "label": [f"{PROJECT_LABEL}={self.project}", f"{SERVICE_LABEL}={node.service}"]})
        if not found:
            raise FleetError(f"no container for {node.service} in project {self.project}")
        return found[0]

    def _act(self, action: str, nodes: list[int], **options: Any) -> None:
        if action == "restore":
            _each(nodes, lambda i: _netns.undo(self._faults.pop(i)))
            return
        if action in ("refuse", "blackhole", "slow"):
            _each(nodes, lambda i: self._net_fault(action, i, options.get("delay", 0.05)))
            return
        docker_actions: dict[str, Callable[[Container], None]] = {
            "pause": _pause, "unpause": lambda c: c.unpause(),
            "kill": lambda c: c.kill(), "start": lambda c: c.start(),
        }
        if action not in docker_actions:
            raise FleetError(f"unknown fault {action!r}")
        if action == "kill":  # the relay would keep the dead namespace alive
            _each([i for i in nodes if i in self._relays], lambda i: _netns.undo(self._relays.pop(i)))
        _each([self._container(self._units[i]) for i in nodes], docker_actions[action])
        if action == "start":  # a new namespace, without the rule that kept the host out, nor the relay
            self._admit_only_bastion([self._units[i] for i in nodes])
            self._start_relays(nodes)

    def _start_relays(self, units: Iterable[int]) -> None:
        """With network conditions: a relay in each unit's namespace, its ports redirected to it."""
        if not self._conditions:
            return
        workdir = self.workdir
        assert workdir is not None

        def start(index: int) -> None:
            node = self._units[index]
            conditions = [self._conditions[e] for e in node.endpoints()]
            log = workdir / f"relay_{node.service}.log"
            self._relays[index] = _netns.apply("relay", self._pid(node), node.container_ports(), 0.0, log, conditions)

        _each(list(units), start)

    def _links(self, endpoints: list[Endpoint]) -> list[tuple[RelayProcess, list[str]]]:
        if not self._relays:
            return super()._links(endpoints)
        wanted, found = set(endpoints), []
        for index, fault in self._relays.items():
            node = self._units[index]
            names = [_netns.link(port) for e, port in zip(node.endpoints(), node.container_ports(), strict=True)
                     if e in wanted]
            if names and fault.proxy is not None:
                found.append((fault.proxy, names))
        return found

    def _net_fault(self, kind: str, index: int, delay: float) -> None:
        assert self.workdir is not None
        node = self._units[index]
        pid = self._pid(node)
        log = self.workdir / f"proxy_{node.service}.log"
        self._faults[index] = _netns.apply(kind, pid, node.container_ports(), delay, log)
