"""hussh: SSH commands, file transfers and log tails across very large fleets, from one machine.

Upstream hussh's import names, over asyncssh: ``Connection`` (blocking, one host),
``hussh.aio.AsyncConnection`` and ``hussh.multi_conn.MultiConnection`` (many hosts, sharded
across uvloop worker processes). Their settings are also values: ``ConnectOptions`` (how to reach
and log in to a host) and ``FleetLimits`` (how many at once, output and retries). Importing this
package starts no process and no thread.
"""

from ._fast_import import import_asyncssh

import_asyncssh()  # before anything below imports it

from ._options import ConnectOptions, FleetLimits  # noqa: E402
from ._result import SSHResult  # noqa: E402
from ._spec import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_OUTPUT, Retry  # noqa: E402
from ._sync import Connection, FileTailer, InteractiveShell  # noqa: E402
from .errors import (  # noqa: E402
    AuthenticationError,
    CommandTimeout,
    ConfigError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    HostKeyError,
    HusshError,
    HusshTimeout,
    OutputLimitExceeded,
    ResolveError,
    SudoError,
    TransferStalled,
    WorkerLost,
)
from .journal import Journal, JournalError  # noqa: E402
from .rollout import CallStatus, Rollout  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "aio",
    "multi_conn",
    "AuthenticationError",
    "CallStatus",
    "CommandTimeout",
    "ConfigError",
    "ConnectError",
    "ConnectOptions",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "FileTailer",
    "FleetLimits",
    "HostKeyError",
    "HusshError",
    "HusshTimeout",
    "InteractiveShell",
    "Journal",
    "JournalError",
    "OutputLimitExceeded",
    "ResolveError",
    "Retry",
    "Rollout",
    "SSHResult",
    "SudoError",
    "TransferStalled",
    "WorkerLost",
]


def __getattr__(name: str) -> object:
    """``hussh.multi_conn`` on first use (upstream lists it in ``__all__``; importing it starts nothing)."""
    if name == "multi_conn":
        import importlib  # noqa: PLC0415

        return importlib.import_module(".multi_conn", __name__)
    raise AttributeError(f"module 'hussh' has no attribute {name!r}")
