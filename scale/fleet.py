"""Fleets of OpenSSH containers for scale tests, run as one Docker Compose project.

Every container runs one or more sshd (one per port), published on 127.0.0.1 at host
ports this module allocates: ``base_port`` upwards, one per endpoint, fixed in the
container's config so that an endpoint keeps its (address, port) and its host key when
its container is killed and started again (Docker re-picks ephemeral ports on restart).
Pausing, killing or restarting an endpoint acts on its whole container: the drill
helpers return every endpoint they affected.

    python -m scale.fleet up 1000 --per-container 10
    python -m scale.fleet hosts
    python -m scale.fleet down
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from scale.image import KEY_PATH, REPO_ROOT, SERVICE_IMAGE, compose_command, ensure_images

Endpoint = tuple[str, int]

PROJECT = "hussh-scale"
ADDRESS = "127.0.0.1"
BASE_PORT = 22000
# Ten sshd share a container's memory (its files are paged in once): measured on 2 cores and
# 24 GiB, 1000 endpoints take ~3.3 GB as 100 containers, ~20 GB as 1000 containers.
PER_CONTAINER = 10
CONTAINER_PORT = 22
AUTHORIZED_KEYS = "/etc/hussh/authorized_keys"
PROJECT_LABEL = "com.docker.compose.project"
UP_TIMEOUT = 900.0
READY_TIMEOUT = 180.0
DOCKER_WORKERS = 16
# Compose v1 deadlocks when one `up` holds more services than COMPOSE_PARALLEL_LIMIT allows
# (each service holds a slot while its container waits for another), so `up` goes in
# batches of at most half the limit; a slow start on 2 cores may wait long for the API.
COMPOSE_ENV = {"COMPOSE_PARALLEL_LIMIT": "64", "COMPOSE_HTTP_TIMEOUT": "600"}
SERVICES_PER_UP = 32
PROBE_CONCURRENCY = 64
PROBE_ATTEMPT_TIMEOUT = 5.0
PROBE_RETRY_DELAY = 0.25


class FleetError(RuntimeError):
    """A fleet could not be brought up, reached or changed."""


@dataclass(frozen=True)
class Node:
    """One container of the fleet: its compose service and its sshd host ports."""

    service: str
    first_port: int
    sshd_count: int

    def endpoints(self) -> list[Endpoint]:
        """Return the (address, port) of every sshd of this node."""
        return [(ADDRESS, self.first_port + i) for i in range(self.sshd_count)]

    def compose_service(self, public_key: Path) -> dict:
        """Return this node's Compose service: docker-compose.yml's ``sshd`` at fixed ports."""
        last = CONTAINER_PORT + self.sshd_count - 1
        container_ports = _port_range(CONTAINER_PORT, last)
        host_ports = _port_range(self.first_port, self.first_port + self.sshd_count - 1)
        return {
            "image": SERVICE_IMAGE,
            "init": True,
            "environment": {"SSHD_PORTS": container_ports},
            "ports": [f"{ADDRESS}:{host_ports}:{container_ports}"],
            "volumes": [
                {
                    "type": "bind",
                    "source": str(public_key),
                    "target": AUTHORIZED_KEYS,
                    "read_only": True,
                }
            ],
        }


def _port_range(first: int, last: int) -> str:
    """Format ports as Docker does: ``22`` or ``22-31``."""
    return str(first) if first == last else f"{first}-{last}"


def layout(endpoints: int, per_container: int, base_port: int) -> list[Node]:
    """Split ``endpoints`` sshd into containers of ``per_container``, ports from ``base_port``."""
    if endpoints < 1 or per_container < 1:
        raise FleetError("a fleet needs at least one endpoint and one sshd per container")
    if base_port < 1024 or base_port + endpoints > 65536:
        raise FleetError(f"ports {base_port}..{base_port + endpoints - 1} are out of range")
    return [
        Node(
            service=f"node-{index + 1:04d}",
            first_port=base_port + first,
            sshd_count=min(per_container, endpoints - first),
        )
        for index, first in enumerate(range(0, endpoints, per_container))
    ]


def compose_file(nodes: list[Node], public_key: Path) -> dict:
    """Return the Compose document of a fleet (JSON is valid Compose YAML)."""
    return {
        "version": "2.4",
        "services": {node.service: node.compose_service(public_key) for node in nodes},
    }


def _port_taken(port: int) -> bool:
    """Tell whether something listens on 127.0.0.1:port (bind as docker-proxy would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ADDRESS, port))
        except OSError:
            return True
    return False


def _run(command: list[str], what: str, deadline: float) -> None:
    """Run a command from the repository root; raise FleetError on failure or past ``deadline``."""
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **COMPOSE_ENV},
            capture_output=True,
            text=True,
            timeout=max(deadline - time.monotonic(), 1.0),
        )
    except subprocess.TimeoutExpired as error:
        raise FleetError(f"{what} did not finish in time") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise FleetError(f"{what} failed:\n" + "\n".join(output[-20:]))


async def _answers(endpoint: Endpoint, deadline: float, gate: asyncio.Semaphore) -> bool:
    """Retry until ``endpoint`` sends an ``SSH-2.0-`` banner or ``deadline`` passes."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*endpoint), min(remaining, PROBE_ATTEMPT_TIMEOUT)
                )
                try:
                    line = await asyncio.wait_for(
                        reader.readline(), min(remaining, PROBE_ATTEMPT_TIMEOUT)
                    )
                finally:
                    writer.close()
            if line.startswith(b"SSH-2.0-"):
                return True
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(PROBE_RETRY_DELAY)


async def unanswered_async(endpoints: Iterable[Endpoint], timeout: float) -> list[Endpoint]:
    """Wait up to ``timeout`` seconds for every banner; return the endpoints that sent none."""
    targets = sorted(set(endpoints))
    deadline = time.monotonic() + timeout
    gate = asyncio.Semaphore(PROBE_CONCURRENCY)
    answered = await asyncio.gather(*(_answers(e, deadline, gate) for e in targets))
    return [endpoint for endpoint, ok in zip(targets, answered) if not ok]


def unanswered(endpoints: Iterable[Endpoint], timeout: float) -> list[Endpoint]:
    """Blocking form of :func:`unanswered_async` (not for use inside a running event loop)."""
    return asyncio.run(unanswered_async(endpoints, timeout))


def wait_ready(endpoints: Iterable[Endpoint], timeout: float = READY_TIMEOUT) -> None:
    """Raise FleetError unless every endpoint sends its SSH banner within ``timeout``."""
    silent = unanswered(endpoints, timeout)
    if silent:
        shown = ", ".join(f"{host}:{port}" for host, port in silent[:10])
        raise FleetError(f"{len(silent)} sshd sent no banner within {timeout:.0f}s: {shown}")


def container_endpoints(container: Container) -> list[Endpoint]:
    """Return a container's published sshd endpoints, fixed ones even while it is stopped."""
    configured = container.attrs["HostConfig"].get("PortBindings") or {}
    running = container.attrs["NetworkSettings"].get("Ports") or {}
    found = set()
    for container_port, bindings in configured.items():
        for binding in bindings or []:
            if not binding.get("HostPort"):
                binding = next(iter(running.get(container_port) or []), {})
            if binding.get("HostPort"):
                found.add((binding.get("HostIp") or ADDRESS, int(binding["HostPort"])))
    return sorted(found)


class Fleet:
    """A Compose project of sshd containers, seen through the Docker API."""

    def __init__(self, project: str = PROJECT, client: docker.DockerClient | None = None):
        self.project = project
        self.client = client or docker.from_env(timeout=120)

    def containers(self) -> list[Container]:
        """Return every container of the project, running or not."""
        found = self.client.containers.list(
            all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"}
        )
        return sorted(found, key=lambda c: (container_endpoints(c), c.name))

    def endpoint_map(self) -> dict[Endpoint, Container]:
        """Map every endpoint of the project to its container."""
        return {e: c for c in self.containers() for e in container_endpoints(c)}

    def hosts(self) -> list[Endpoint]:
        """Return the (address, port) of every sshd in the project, sorted."""
        return sorted(self.endpoint_map())

    def up(
        self,
        endpoints: int,
        per_container: int = PER_CONTAINER,
        base_port: int = BASE_PORT,
        timeout: float = UP_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
    ) -> list[Endpoint]:
        """Bring up ``endpoints`` sshd, wait for every banner, and return their endpoints.

        A fleet of the same layout is kept (stopped containers are started); another is
        removed first. ``timeout`` bounds the Compose work, ``ready_timeout`` the banners.
        """
        nodes = layout(endpoints, per_container, base_port)
        wanted = [e for node in nodes for e in node.endpoints()]
        ensure_images(self.client)
        current = {tuple(container_endpoints(c)) for c in self.containers()}
        if current != {tuple(node.endpoints()) for node in nodes}:
            self.down()
            self._check_ports_free(wanted)
        document = compose_file(nodes, KEY_PATH.with_suffix(".pub"))
        deadline = time.monotonic() + timeout
        with tempfile.TemporaryDirectory(prefix="hussh-scale-") as tmp:
            path = Path(tmp) / "compose.json"
            path.write_text(json.dumps(document, indent=1))
            for first in range(0, len(nodes), SERVICES_PER_UP):
                batch = [node.service for node in nodes[first : first + SERVICES_PER_UP]]
                command = self._compose(path, "up", "--detach", *batch)
                _run(command, f"compose up of {batch[0]}..{batch[-1]}", deadline)
        wait_ready(wanted, ready_timeout)
        return wanted

    def down(self) -> None:
        """Remove every container and network of the project."""
        self._each(self.containers(), lambda c: c.remove(force=True, v=True))
        for network in self.client.networks.list(
            filters={"label": f"{PROJECT_LABEL}={self.project}"}
        ):
            network.remove()

    def pause(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """Freeze the containers of ``endpoints``; return every endpoint frozen with them."""
        return self._act(endpoints, lambda c: c.pause())

    def unpause(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """Thaw the containers of ``endpoints``; return every endpoint thawed with them."""
        return self._act(endpoints, lambda c: c.unpause())

    def kill(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """SIGKILL the containers of ``endpoints``; return every endpoint lost with them."""
        return self._act(endpoints, lambda c: c.kill())

    def start(
        self, endpoints: Iterable[Endpoint], ready_timeout: float | None = READY_TIMEOUT
    ) -> list[Endpoint]:
        """Start the stopped containers of ``endpoints``, at the same ports and host keys."""
        affected = self._act(endpoints, lambda c: c.start())
        if ready_timeout is not None:
            wait_ready(affected, ready_timeout)
        return affected

    def restart(
        self, endpoints: Iterable[Endpoint], ready_timeout: float | None = READY_TIMEOUT
    ) -> list[Endpoint]:
        """Restart the containers of ``endpoints`` (1 s grace) and wait for their banners."""
        affected = self._act(endpoints, lambda c: c.restart(timeout=1))
        if ready_timeout is not None:
            wait_ready(affected, ready_timeout)
        return affected

    def _act(
        self, endpoints: Iterable[Endpoint], action: Callable[[Container], None]
    ) -> list[Endpoint]:
        """Apply ``action`` once per container owning any of ``endpoints``; return all theirs."""
        endpoints = list(endpoints)
        owners = self.endpoint_map()
        missing = sorted(set(endpoints) - set(owners))
        if missing:
            raise FleetError(f"not endpoints of {self.project}: {missing[:10]}")
        chosen = {owners[e].id: owners[e] for e in endpoints}
        self._each(list(chosen.values()), action)
        return sorted(e for e, c in owners.items() if c.id in chosen)

    def _each(self, containers: list[Container], action: Callable[[Container], None]) -> None:
        """Apply ``action`` to containers in parallel; raise FleetError naming the failures."""
        with ThreadPoolExecutor(DOCKER_WORKERS) as pool:
            futures = {c.name: pool.submit(action, c) for c in containers}
        errors = {name: error for name, f in futures.items() if (error := f.exception())}
        if errors:
            shown = "; ".join(f"{name}: {error}" for name, error in list(errors.items())[:5])
            raise FleetError(f"{len(errors)} of {len(containers)} containers failed: {shown}")

    @staticmethod
    def _check_ports_free(wanted: list[Endpoint]) -> None:
        """Raise FleetError if any of the ``wanted`` ports is already listened on."""
        taken = [port for _, port in wanted if _port_taken(port)]
        if taken:
            raise FleetError(
                f"{len(taken)} ports already in use on {ADDRESS}, e.g. {taken[:5]}: "
                "choose another --base-port"
            )

    def _compose(self, path: Path, *arguments: str) -> list[str]:
        """Return a Compose command line for this project and the generated file."""
        return [
            *compose_command(),
            "--project-name", self.project,
            "--project-directory", str(REPO_ROOT),
            "--file", str(path),
            *arguments,
        ]


def main(argv: list[str] | None = None) -> int:
    """CLI: ``up N``, ``hosts`` or ``down``."""
    parser = argparse.ArgumentParser(
        prog="python -m scale.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", default=PROJECT, help="Compose project name")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="bring up N sshd endpoints and wait for them")
    up.add_argument("endpoints", type=int, metavar="N")
    up.add_argument("--per-container", type=int, default=PER_CONTAINER, metavar="K")
    up.add_argument("--base-port", type=int, default=BASE_PORT, metavar="PORT")
    up.add_argument("--timeout", type=float, default=UP_TIMEOUT, help="seconds for compose up")
    up.add_argument(
        "--ready-timeout", type=float, default=READY_TIMEOUT, help="seconds for every banner"
    )
    commands.add_parser("hosts", help="print ADDRESS PORT of every sshd")
    commands.add_parser("down", help="remove the project's containers and networks")
    args = parser.parse_args(argv)

    fleet = Fleet(args.project)
    started = time.monotonic()
    try:
        if args.command == "up":
            ready = fleet.up(
                args.endpoints, args.per_container, args.base_port, args.timeout, args.ready_timeout
            )
            print(f"{len(ready)} sshd ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        elif args.command == "hosts":
            for host, port in fleet.hosts():
                print(host, port)
        else:
            fleet.down()
            print(f"down in {time.monotonic() - started:.1f}s", file=sys.stderr)
    except (FleetError, docker.errors.DockerException) as error:
        print(f"error: {error}", file=sys.stderr)
        if args.command == "up":
            print("a partial fleet may be left: python -m scale.fleet down", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
