"""Ports nothing listens on, so that a benchmark, the demo or a test run never meets a fleet of the user's
(``hussh fleet up``: 127.70.x.y:2200; the pytest plugin's: 127.76.x.y:2222) or another run's."""

from __future__ import annotations

import socket
from collections.abc import Iterable


def listening_nowhere(port: int, address: str = "0.0.0.0") -> bool:
    """Whether no socket listens on ``address:port`` (the default: at any address, as a bind to the wildcard
    fails when one does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def first_free(ports: Iterable[int]) -> int:
    """The first of ``ports`` that nothing listens on at any address."""
    for port in ports:
        if listening_nowhere(port):
            return port
    raise SystemExit("no free port to put the fleet on: give one with --port")
