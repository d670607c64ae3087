"""Candidate hussh optimizations, applied as patches from a runner, to measure them before anyone edits hussh.

``python -m scale.bench --tools hussh,hussh+pipeline-auth`` runs ``hussh_multi.py`` twice per
repetition, the second time with these patches applied in the parent before it forks its workers
(which inherit them). Nothing here is hussh's behaviour; each function documents the change it
stands for, and scale/README.md what it measured.
"""

from __future__ import annotations

import sys

EXPERIMENTS = ("pipeline-auth",)


def pipeline_auth() -> None:
    """Send the first USERAUTH_REQUEST with SERVICE_REQUEST instead of waiting for SERVICE_ACCEPT.

    One round trip less per login (a WAN saving); the corked flush waits one more loop turn so
    the auth task's packet leaves in the same write as the service request.
    """
    from asyncssh import ServiceNotAvailable
    from asyncssh.connection import _USERAUTH_SERVICE, SSHClientConnection
    from asyncssh.constants import MSG_SERVICE_ACCEPT

    from hussh._connector import _FleetConnection

    def send_service_request(self, service):  # type: ignore[no-untyped-def]
        SSHClientConnection.send_service_request(self, service)
        if service == _USERAUTH_SERVICE:
            self._auth_pipelined = self._hold_flush = self._auth_in_progress = True
            self._owner.begin_auth(self._username)
            self.try_next_auth()

    accept = SSHClientConnection._packet_handlers[MSG_SERVICE_ACCEPT]

    def process_service_accept(self, pkttype, pktid, packet):  # type: ignore[no-untyped-def]
        if not getattr(self, "_auth_pipelined", False):
            return accept(self, pkttype, pktid, packet)
        service = packet.get_string()
        packet.check_end()
        if service != _USERAUTH_SERVICE:
            raise ServiceNotAvailable("Unexpected service in service accept")
        self._next_service = None
        self._auth_pipelined = False
        return True

    flush = _FleetConnection._flush

    def hold_then_flush(self, transport):  # type: ignore[no-untyped-def]
        if getattr(self, "_hold_flush", False):  # the auth task writes on the next turn: wait for it
            self._hold_flush = False
            self._loop.call_soon(self._flush, transport)
            return
        flush(self, transport)

    _FleetConnection.send_service_request = send_service_request
    _FleetConnection._packet_handlers = {**SSHClientConnection._packet_handlers,
                                         MSG_SERVICE_ACCEPT: process_service_accept}
    _FleetConnection._flush = hold_then_flush


def apply(names: list[str]) -> None:
    """Apply the named experiments."""
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    for name in EXPERIMENTS:
        if name in names:
            globals()[name.replace("-", "_")]()
