"""One exception tree for every hussh failure.

    HusshError (also RuntimeError, as upstream's async connect and login failures)
    ├── ConfigError (also ValueError)    a malformed ssh config, a bad ProxyJump, a ProxyCommand
    ├── ConnectError (also OSError)      TCP or SSH handshake failed (also: via a bastion)
    │   ├── ResolveError                 the host's name did not resolve, or the resolver did not answer
    │   └── HostKeyError                 host key mismatch, or unknown under ``strict``
    ├── AuthenticationError              credentials refused or unusable (bad key file, passphrase)
    ├── ConnectionLost (also ConnectionError)  the connection dropped during an operation
    ├── HusshTimeout (also TimeoutError)   as such: an SFTP or SCP operation ran past the connection's timeout
    │   ├── ConnectTimeout               no finished handshake + login within the connect bound
    │   ├── CommandTimeout               ``.result`` keeps the output received before the deadline
    │   └── TransferStalled              an SFTP/SCP operation received nothing for ``stall_timeout`` seconds
    ├── OutputLimitExceeded              ``.result`` keeps the first ``max_output`` bytes
    ├── SudoError                        ``sudo=True``: sudo refused (wrong or missing password, not allowed)
    ├── WorkerLost                       the worker process that owned the host died
    └── PartialFailureException          raised by ``MultiResult.raise_if_any_failed()``

Failed remote file operations raise the builtin ``OSError`` subclasses (``FileNotFoundError``...);
from ``AsyncConnection`` each is also a ``RuntimeError``, as upstream's async errors are.
Inside ``MultiConnection`` none of these is raised: each becomes that host's result, ``status=-1``,
with ``stderr`` starting with the class name, e.g. ``ConnectTimeout: ...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._result import SSHResult


class HusshError(RuntimeError):
    """Base of every error hussh raises.

    A ``RuntimeError``, because upstream's ``AsyncConnection`` raises ``RuntimeError`` for connect
    and login failures: code written for it keeps catching ours.
    """


class ConfigError(HusshError, ValueError):
    """The ssh config (or a host's settings from it) cannot be used; the message names file and line."""


class ConnectError(OSError, HusshError):
    """The TCP connection or the SSH handshake could not be made (``errno`` set when the OS said why)."""

    def __str__(self) -> str:
        return self.strerror if self.errno is not None and self.strerror else super().__str__()


class ResolveError(ConnectError):
    """The host's name has no address (the message names it), or no answer came within the connect bound."""


class HostKeyError(ConnectError):
    """The host's key does not match known_hosts, or the host is unknown under ``strict`` checking."""


class AuthenticationError(HusshError):
    """The server refused the credentials, or a private key could not be read or decrypted."""


class ConnectionLost(ConnectionError, HusshError):
    """An established connection dropped while an operation was running."""


class HusshTimeout(TimeoutError, HusshError):
    """A deadline expired; see the subclasses."""


class ConnectTimeout(HusshTimeout):
    """Connecting and logging in did not finish within the connect bound."""


class CommandTimeout(HusshTimeout):
    """A command ran past its timeout; ``result`` holds the output received until then."""

    def __init__(self, message: str, result: SSHResult) -> None:
        super().__init__(message)
        self.result = result


class TransferStalled(HusshTimeout):
    """An SFTP or SCP operation waited ``stall_timeout`` seconds with nothing received from the server.

    The connection is closed (the server may still be processing what was sent); the next
    operation on the host reconnects.
    """


class OutputLimitExceeded(HusshError):
    """A command wrote more than ``max_output`` bytes; ``result`` holds the first ones."""

    def __init__(self, message: str, result: SSHResult) -> None:
        super().__init__(message)
        self.result = result


class SudoError(HusshError):
    """``sudo`` did not start the command: a wrong or missing password, a user sudoers does not allow,
    no sudo on the host. The command never ran (as opposed to running and failing); ``result`` holds
    what it printed, which is nothing, and the message quotes sudo, never the password."""

    def __init__(self, message: str, result: SSHResult) -> None:
        super().__init__(message)
        self.result = result


class WorkerLost(HusshError):
    """The worker process that owned a host died or misbehaved before finishing the host."""


def describe(exc: BaseException) -> str:
    """``ClassName: message``, the form every per-host failure takes in a result's stderr."""
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


_ALSO_RUNTIME: dict[type[OSError], type[OSError]] = {}


def _reduce_as_builtin(self: OSError) -> tuple[type[OSError], tuple[object, ...]]:
    """Pickled as the builtin class it extends (the pairing with ``RuntimeError`` is made here, not kept)."""
    base = type(self).__mro__[1]
    return base, ((self.errno, self.strerror, self.filename) if self.errno is not None else self.args)


def also_runtime_error(exc: OSError) -> OSError:
    """``exc`` again, as an instance of its own class paired with ``RuntimeError``.

    Upstream's ``AsyncConnection`` raises ``RuntimeError`` for every failure, file errors included;
    hussh's async file operations raise the builtin ``OSError`` subclass (``FileNotFoundError``...),
    so code written for either keeps catching them. Name, ``errno``, ``strerror`` and ``filename`` stay.
    """
    if isinstance(exc, RuntimeError):
        return exc
    cls = type(exc)
    paired = _ALSO_RUNTIME.get(cls)
    if paired is None:
        paired = _ALSO_RUNTIME[cls] = type(cls.__name__, (cls, RuntimeError), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
            "__reduce__": _reduce_as_builtin})
    try:
        again = paired(exc.errno, exc.strerror, exc.filename) if exc.errno is not None else paired(*exc.args)
    except Exception:  # noqa: BLE001 - a subclass built otherwise (another library's): raised as it is
        return exc
    return again.with_traceback(exc.__traceback__)  # its cause: the caller's ``raise ... from``
