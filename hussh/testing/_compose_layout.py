"""How a compose fleet is laid out: containers of K sshd each, at fixed host ports, as a Compose file.

Every container runs ``sshd_count`` sshd (one per container port from 22), published on 127.0.0.1
at host ports allocated here: ``base_port`` upwards, one per endpoint, fixed in the container's
config, so an endpoint keeps its (address, port) and its host key when its container is killed
and started again (Docker re-picks ephemeral ports on restart).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ._base import Endpoint
from ._errors import FleetError

ADDRESS = "127.0.0.1"
CONTAINER_PORT = 22


@dataclass(frozen=True)
class Node:
    """One container of the fleet: its compose service and its sshd host ports."""

    service: str
    first_port: int
    sshd_count: int

    def endpoints(self) -> list[Endpoint]:
        """The (address, port) of every sshd of this node."""
        return [Endpoint(ADDRESS, self.first_port + i) for i in range(self.sshd_count)]

    def container_ports(self) -> list[int]:
        """The ports the node's sshd listen on inside the container, in endpoint order."""
        return [CONTAINER_PORT + i for i in range(self.sshd_count)]

    def compose_service(self, image: str, authorized_keys: str) -> dict:
        """This node's Compose service: docker-compose.yml's ``sshd`` at fixed host ports."""
        container_ports = _port_range(CONTAINER_PORT, CONTAINER_PORT + self.sshd_count - 1)
        host_ports = _port_range(self.first_port, self.first_port + self.sshd_count - 1)
        return {
            "image": image,
            "init": True,
            "environment": {"SSHD_PORTS": container_ports, "HUSSH_AUTHORIZED_KEYS": authorized_keys},
            "ports": [f"{ADDRESS}:{host_ports}:{container_ports}"],
        }


def _port_range(first: int, last: int) -> str:
    """Format ports as Docker does: ``22`` or ``22-31``."""
    return str(first) if first == last else f"{first}-{last}"


def layout(endpoints: int, per_container: int, base_port: int) -> list[Node]:
    """Split ``endpoints`` sshd into containers of ``per_container``, host ports from ``base_port``."""
    if endpoints < 1 or per_container < 1:
        raise FleetError("a fleet needs at least one endpoint and one sshd per container")
    if base_port < 1024 or base_port + endpoints > 65536:
        raise FleetError(f"ports {base_port}..{base_port + endpoints - 1} are out of range")
    return [
        Node(service=f"node-{index + 1:04d}", first_port=base_port + first,
             sshd_count=min(per_container, endpoints - first))
        for index, first in enumerate(range(0, endpoints, per_container))
    ]


def compose_file(nodes: list[Node], image: str, authorized_keys: str) -> dict:
    """The Compose document of a fleet (JSON is valid Compose YAML)."""
    return {
        "version": "2.4",
        "services": {node.service: node.compose_service(image, authorized_keys) for node in nodes},
    }


def taken_ports(endpoints: list[Endpoint]) -> list[int]:
    """The ports of ``endpoints`` something already listens on (bind as docker-proxy would)."""
    taken = []
    for host, port in endpoints:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(port)
    return taken
