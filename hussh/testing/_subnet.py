"""The subnet of a compose fleet's internal network: a /16 of 10.128.0.0/9 picked by project name.

Fixed before ``up``, so the endpoints behind the bastion are known as early as published ones;
``up`` refuses it when a route of this machine or another Docker network already covers part of
it (the host would lose that route's destinations to the fleet's bridge).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

ROUTES = Path("/proc/net/route")


def default_subnet(project: str) -> str:
    """One of 128 subnets, the same for the same project name."""
    return f"10.{128 + zlib.crc32(project.encode()) % 128}.0.0/16"


def _routes() -> list[ipaddress.IPv4Network]:
    """This machine's IPv4 routes but the default one."""
    found = []
    for line in ROUTES.read_text().splitlines()[1:]:
        fields = line.split()
        destination, mask = (socket.inet_ntoa(struct.pack("<I", int(value, 16))) for value in (fields[1], fields[7]))
        if mask != "0.0.0.0":
            found.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return found


def _docker_subnets(client: docker.DockerClient) -> list[tuple[str, ipaddress.IPv4Network]]:
    """(network name, subnet) of every IPv4 subnet Docker's networks hold."""
    found = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = ipaddress.ip_network(config.get("Subnet", "::/128"), strict=False)
            if isinstance(subnet, ipaddress.IPv4Network):
                found.append((network.name, subnet))
    return found


def users(subnet: str, client: docker.DockerClient) -> list[str]:
    """What already uses addresses of ``subnet``: routes of this machine, Docker networks."""
    wanted = ipaddress.IPv4Network(subnet)
    return ([f"route {route}" for route in _routes() if route.overlaps(wanted)]
            + [f"network {name} ({net})" for name, net in _docker_subnets(client) if net.overlaps(wanted)])
