"""How a compose fleet is laid out: containers of K sshd each, at fixed ports, as a Compose file.

Every container runs ``sshd_count`` sshd (one per container port from 22). A published node's
sshd are reached at host ports on 127.0.0.1 allocated here: ``base_port`` upwards, one per
endpoint, fixed in the container's config, so an endpoint keeps its (address, port) and its host
key when its container is killed and started again (Docker re-picks ephemeral ports on restart).
Behind a bastion, nodes publish nothing: each has a fixed address on the fleet's internal network
(Docker's allocator would hand a restarted container a new one) and its endpoints are its
container ports there; the bastion, on both networks, is the one published node.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from ._base import Endpoint
from ._errors import FleetError

ADDRESS = "127.0.0.1"
CONTAINER_PORT = 22
INTERNAL_NETWORK = "fleet"  # Compose's key of the internal network (Docker names it <project>_fleet)
BASTION_SERVICE = "bastion"
FIRST_NODE_HOST = 3  # subnet host 1 is Docker's gateway on the host's bridge, 2 the bastion


@dataclass(frozen=True)
class Node:
    """One container of the fleet: its compose service, its sshd and where they are reached."""

    service: str
    first_port: int  # port of its first endpoint: a host port if published, else a container port
    sshd_count: int
    published: bool = True  # reached at host ports on 127.0.0.1
    internal_address: str | None = None  # its fixed address on the internal network, if it is on it

    @property
    def address(self) -> str:
        """Where its endpoints are: 127.0.0.1, or its address on the internal network."""
        return ADDRESS if self.published or self.internal_address is None else self.internal_address

    def endpoints(self) -> list[Endpoint]:
        """The (address, port) of every sshd of this node."""
        return [Endpoint(self.address, self.first_port + i) for i in range(self.sshd_count)]

    def container_ports(self) -> list[int]:
        """The ports the node's sshd listen on inside the container, in endpoint order."""
        return [CONTAINER_PORT + i for i in range(self.sshd_count)]

    def compose_service(self, image: str, authorized_keys: str) -> dict[str, Any]:
        """This node's Compose service: docker-compose.yml's ``sshd``, at fixed ports or a fixed address."""
        container_ports = _port_range(CONTAINER_PORT, CONTAINER_PORT + self.sshd_count - 1)
        service: dict[str, Any] = {
            "image": image,
            "init": True,
            "environment": {"SSHD_PORTS": container_ports, "HUSSH_AUTHORIZED_KEYS": authorized_keys},
        }
        if self.published:
            host_ports = _port_range(self.first_port, self.first_port + self.sshd_count - 1)
            service["ports"] = [f"{ADDRESS}:{host_ports}:{container_ports}"]
        if self.internal_address is not None:
            service["networks"] = {INTERNAL_NETWORK: {"ipv4_address": self.internal_address},
                                   **({"default": {}} if self.published else {})}
        return service


def _port_range(first: int, last: int) -> str:
    """Format ports as Docker does: ``22`` or ``22-31``."""
    return str(first) if first == last else f"{first}-{last}"


def _chunks(endpoints: int, per_container: int) -> list[tuple[int, int]]:
    """(first endpoint, sshd count) of each container."""
    if endpoints < 1 or per_container < 1:
        raise FleetError("a fleet needs at least one endpoint and one sshd per container")
    return [(first, min(per_container, endpoints - first)) for first in range(0, endpoints, per_container)]


def _service(index: int) -> str:
    return f"node-{index + 1:04d}"


def layout(endpoints: int, per_container: int, base_port: int) -> list[Node]:
    """Split ``endpoints`` sshd into containers of ``per_container``, host ports from ``base_port``."""
    chunks = _chunks(endpoints, per_container)
    if base_port < 1024 or base_port + endpoints > 65536:
        raise FleetError(f"ports {base_port}..{base_port + endpoints - 1} are out of range")
    return [Node(_service(index), base_port + first, count) for index, (first, count) in enumerate(chunks)]


def internal_layout(endpoints: int, per_container: int, subnet: str) -> list[Node]:
    """Split ``endpoints`` sshd into containers of ``per_container`` at fixed addresses of ``subnet``."""
    chunks = _chunks(endpoints, per_container)
    hosts = ipaddress.IPv4Network(subnet).num_addresses - 2
    if FIRST_NODE_HOST + len(chunks) - 1 > hosts:
        raise FleetError(f"{len(chunks)} containers do not fit in {subnet}")
    return [Node(_service(index), CONTAINER_PORT, count, published=False,
                 internal_address=host_address(subnet, FIRST_NODE_HOST + index))
            for index, (_, count) in enumerate(chunks)]


def bastion_node(port: int, subnet: str) -> Node:
    """The bastion: one sshd published at ``port`` on 127.0.0.1, on the internal network too."""
    if not 1024 <= port < 65536:
        raise FleetError(f"port {port} is out of range")
    return Node(BASTION_SERVICE, port, 1, internal_address=host_address(subnet, 2))


def host_address(subnet: str, number: int) -> str:
    """The ``number``-th host address of ``subnet`` (1 is the first)."""
    return str(ipaddress.IPv4Network(subnet).network_address + number)


def compose_file(nodes: list[Node], image: str, authorized_keys: str, subnet: str | None = None) -> dict[str, Any]:
    """The Compose document of a fleet (JSON is valid Compose YAML), with its internal network if any."""
    document: dict[str, Any] = {
        "version": "2.4",
        "services": {node.service: node.compose_service(image, authorized_keys) for node in nodes},
    }
    if subnet is not None:
        document["networks"] = {INTERNAL_NETWORK: {"internal": True, "ipam": {"config": [{"subnet": subnet}]}}}
    return document


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
