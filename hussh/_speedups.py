"""Skip asyncssh's log formatting when nothing would be logged; behaviour is otherwise unchanged.

asyncssh formats every log argument, and describes every packet sent or received, before the
logging level is checked. With thousands of connections that is a visible share of client CPU,
so both now check first, exactly as the code they wrap checks later.
"""

from __future__ import annotations

from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger

_format_and_log = SSHLogger.log
_describe_packet = SSHPacketLogger._log_packet


def _log_if_enabled(self: SSHLogger, level: int, msg: object, *args: object, **kwargs: object) -> None:
    if self.isEnabledFor(level):
        _format_and_log(self, level, msg, *args, **kwargs)


def _log_packet_if_enabled(self: SSHPacketLogger, *args: object) -> None:
    if SSHLogger._debug_level >= 3 and self.logger.isEnabledFor(10):  # logging.DEBUG
        _describe_packet(self, *args)


def install() -> None:
    """Idempotent: patch the two asyncssh methods once per process."""
    SSHLogger.log = _log_if_enabled  # type: ignore[method-assign]
    SSHPacketLogger._log_packet = _log_packet_if_enabled  # type: ignore[method-assign]
