"""hussh: SSH commands, file transfers and log tails across very large fleets, from one machine.

Upstream hussh's import names, over asyncssh: ``Connection`` (blocking, one host),
``hussh.aio.AsyncConnection`` and ``hussh.multi_conn.MultiConnection`` (many hosts, sharded
across uvloop worker processes). Importing this package starts no process and no thread.
"""

from ._result import SSHResult
from ._spec import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_OUTPUT
from ._sync import Connection, FileTailer
from .errors import (
    AuthenticationError,
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    HostKeyError,
    HusshError,
    HusshTimeout,
    OutputLimitExceeded,
    WorkerLost,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "CommandTimeout",
    "ConnectError",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "FileTailer",
    "HostKeyError",
    "HusshError",
    "HusshTimeout",
    "OutputLimitExceeded",
    "SSHResult",
    "WorkerLost",
]
