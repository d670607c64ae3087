"""Network faults inside one container's network namespace, applied from the host.

docker-proxy publishes every endpoint: it accepts the client's TCP connection, then dials the
container. So a fault has to sit behind it, in the container's network namespace (entered with
``nsenter`` from the host: the image needs no tools), and only for new connections: iptables drops
them there (blackhole: docker-proxy has accepted, its dial hangs, the client hears nothing), resets
them (refuse: docker-proxy closes the accepted connection at once), or redirects them to a relay
(``_relay``) started in that namespace (slow; and ``relay``, which fronts the ports with their
network conditions for the fleet's life). The rules die with the namespace; the relay with its owner.

Behind a bastion there is no docker-proxy: a node's namespace admits new connections only from
the bastion (``admit_only``), since Docker's internal network leaves the host a route to it, and
the fleet's readiness probes run from inside the node's namespace (``inside``).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ._errors import FleetError
from ._relay import NetworkConditions, RelayProcess, conditions_dict

PROXY_PORT_OFFSET = 20000  # the relay listens at each container port + this
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@dataclass
class NetFault:
    """What one node's fault added to its container's namespace, so that it can be undone."""

    pid: int
    namespace: int  # inode of the namespace, so a reused pid is never mistaken for the container
    rules: list[list[str]] = field(default_factory=list)
    proxy: RelayProcess | None = None


def _namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _enter(pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net", "--", *argv]


def _iptables(pid: int, operation: str, rule: list[str], check: bool = True) -> None:
    table, chain, *spec = rule
    result = subprocess.run(_enter(pid, ["iptables", "-w", "-t", table, operation, chain, *spec]),
                            capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise FleetError(f"iptables {operation} {' '.join(rule)} in pid {pid}'s namespace: {result.stderr.strip()}")


def apply(kind: str, pid: int, ports: list[int], delay: float, log: Path,
          conditions: list[NetworkConditions] | None = None) -> NetFault:
    """Apply ``refuse``, ``blackhole``, ``slow`` or ``relay`` (with ``conditions`` per port) to ``ports``
    of the container whose init is ``pid``."""
    namespace = _namespace(pid)
    if namespace is None:
        raise FleetError(f"container process {pid} is gone")
    fault = NetFault(pid, namespace)
    span = f"{ports[0]}:{ports[-1]}"
    if kind == "refuse":
        fault.rules.append(["filter", "INPUT", "-p", "tcp", "--syn", "--dport", span,
                            "-j", "REJECT", "--reject-with", "tcp-reset"])
    elif kind == "blackhole":
        fault.rules.append(["filter", "INPUT", "-p", "tcp", "--syn", "--dport", span, "-j", "DROP"])
    else:
        each = conditions if kind == "relay" and conditions else [NetworkConditions(rtt=2 * delay)] * len(ports)
        fault.proxy = RelayProcess(log.with_suffix(".sock"), log, lambda argv, **popen: subprocess.Popen(
            _enter(pid, argv), start_new_session=True, **popen))
        fault.proxy.command("listen", links=[[link(p), f"127.0.0.1:{p}", conditions_dict(c)]
                                             for p, c in zip(ports, each, strict=True)])
        fault.rules += [["nat", "PREROUTING", "-p", "tcp", "--dport", str(p),
                         "-j", "REDIRECT", "--to-ports", str(p + PROXY_PORT_OFFSET)] for p in ports]
    applied = []
    try:
        for rule in fault.rules:
            _iptables(pid, "-I", rule)
            applied.append(rule)
    except FleetError:
        fault.rules = applied
        undo(fault)
        raise
    return fault


def undo(fault: NetFault) -> None:
    """Remove the fault's rules (gone already if the container was restarted) and stop its proxy."""
    if _namespace(fault.pid) == fault.namespace:
        for rule in fault.rules:
            _iptables(fault.pid, "-D", rule, check=False)
    if fault.proxy is not None:
        fault.proxy.stop()


def link(port: int) -> str:
    """The relay's name for the link in front of container port ``port``."""
    return f"0.0.0.0:{port + PROXY_PORT_OFFSET}"


def admit_only(pid: int, source: str) -> None:
    """Reset new TCP connections into the namespace of ``pid`` unless they come from ``source`` or its loopback."""
    _iptables(pid, "-A", ["filter", "INPUT", "-p", "tcp", "--syn", "!", "-s", source, "!", "-i", "lo",
                          "-j", "REJECT", "--reject-with", "tcp-reset"])


def inside(pid: int, action: Callable[[], T]) -> T:
    """Run ``action`` in a thread of its own that entered the network namespace of ``pid`` (its sockets live there)."""
    def entered() -> T:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            namespace = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        except OSError:
            raise FleetError(f"container process {pid} is gone") from None
        try:
            if libc.setns(namespace, CLONE_NEWNET) != 0:
                raise FleetError(f"cannot enter the network namespace of pid {pid}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(namespace)
        return action()

    with ThreadPoolExecutor(1) as thread:  # the thread ends with the pool: nothing else runs in that namespace
        return thread.submit(entered).result()
