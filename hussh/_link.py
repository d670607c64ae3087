"""What the helpers built on one host's connection (shell, scp, remote copy) need of it, and the bounds
of one SFTP step: ``AsyncConnection`` implements ``Link``; the helpers import this module, not ``aio``
(which imports them), so the transport's imports run one way."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from typing import Protocol

import asyncssh
from asyncssh.connection import SSHClientConnection

from ._spec import ConnectSpec
from ._stall import StallGuard, lost_error
from .errors import HusshTimeout

__all__ = ["Link", "bounded", "sftp_op", "via"]


class Link(Protocol):
    """One host's connection as its helpers see it (the package's own interface, hence the private names)."""

    spec: ConnectSpec
    _stall: StallGuard | None  # bounds a transfer that stops moving (``stall_timeout``)

    @property
    def connected(self) -> bool: ...

    async def _connection(self) -> SSHClientConnection:
        """The live connection, reconnecting first if there is none or the server dropped it."""
        ...

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        """The connection's SFTP client, started on first use."""
        ...

    def _forget(self, conn: SSHClientConnection) -> None:
        """``conn`` was lost: drop it if it is still the live one."""
        ...

    def _drop(self) -> None:
        """Forget a broken connection so the next operation reconnects."""
        ...


@contextlib.asynccontextmanager
async def bounded(link: Link) -> AsyncIterator[None]:
    """A transfer step within the connection's ``timeout`` (``TimeoutError``) and ``stall_timeout``."""
    with link._stall.armed() if link._stall is not None else contextlib.nullcontext():
        async with asyncio.timeout(link.spec.timeout or None):
            yield


def via(spec: ConnectSpec) -> str:
    """`` via bastion user@host:port`` for a host behind one: when it stops answering, every host
    behind it fails alike, and the message must say which bastion they share."""
    return f" via bastion {spec.jump.target}" if spec.jump is not None else ""


@contextlib.asynccontextmanager
async def sftp_op(link: Link, path: str, what: str) -> AsyncIterator[None]:
    """Bound an SFTP operation by the connection's ``timeout`` and ``stall_timeout`` and turn its
    failures into hussh's errors or the builtin ``OSError`` subclasses (``FileNotFoundError``...),
    naming host and path; ``what`` ("read", "write"...) names the operation in the messages."""
    spec, guard = link.spec, link._stall
    where = f"{path} on {spec.address}"
    try:
        async with bounded(link):
            yield
    except TimeoutError:
        raise HusshTimeout(f"SFTP {what} of {where}{via(spec)} timed out after {spec.timeout:g} seconds") from None
    except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.DisconnectError,
            asyncssh.ConnectionLost) as exc:
        raise lost_error(guard, f"SFTP {what} of {where}{via(spec)}", exc) from None
    except asyncssh.SFTPError as exc:
        if exc.code not in _SFTP_ERRORS:  # the server's generic failure: say which operation failed
            raise OSError(errno.EIO, f"SFTP {what} failed: {exc.reason}", where) from None
        kind, code = _SFTP_ERRORS[exc.code]
        raise kind(code, exc.reason, where) from None


_SFTP_ERRORS = {
    asyncssh.FX_NO_SUCH_FILE: (FileNotFoundError, errno.ENOENT),
    asyncssh.FX_PERMISSION_DENIED: (PermissionError, errno.EACCES),
    asyncssh.FX_NOT_A_DIRECTORY: (NotADirectoryError, errno.ENOTDIR),
    asyncssh.FX_FILE_IS_A_DIRECTORY: (IsADirectoryError, errno.EISDIR),
    asyncssh.FX_FILE_ALREADY_EXISTS: (FileExistsError, errno.EEXIST),
}
