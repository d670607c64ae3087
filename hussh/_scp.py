"""SCP transfers for ``Connection.scp_*`` through asyncssh's ``scp()``, with errors as builtin ``OSError``s.

Upstream raises a bare ``OSError`` for every SCP failure; we raise its subclasses
(``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``...), naming host and path, so
``except OSError`` code keeps working. Remote paths are shell-quoted: the remote ``scp`` runs
through the login shell, which must neither split nor expand them; one starting with ``-`` is
sent as ``./-...``, so the remote scp does not take it for an option.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePath, PurePosixPath

import asyncssh

from ._link import Link, bounded
from ._local_files import create, file_perms, local_errors
from ._stall import lost_error
from .errors import HusshTimeout

__all__ = ["scp_read", "scp_write", "scp_write_data"]

_REASONS = (  # what the remote scp (or asyncssh) says -> the builtin error it means
    ("no such file or directory", FileNotFoundError, errno.ENOENT),
    ("not a regular file", IsADirectoryError, errno.EISDIR),
    ("is a directory", IsADirectoryError, errno.EISDIR),
    ("not a directory", NotADirectoryError, errno.ENOTDIR),
    ("permission denied", PermissionError, errno.EACCES),
)


async def scp_read(conn: Link, remote_path: str,
                   local_path: str | os.PathLike[str] | None = None) -> str | None:
    """Return the remote file as text (undecodable bytes replaced), or save it to ``local_path``.

    The file is received in a private temporary directory, so what the server sends (names, extra
    files, modes) lands nowhere else; saved, it gets the remote file's 0777 bits plus owner write,
    less the umask, from its creation (an existing file is narrowed, never widened). Into an existing
    directory, it is named after ``remote_path``, never after what the server says.
    """
    with tempfile.TemporaryDirectory(prefix="hussh-scp-") as tmp:
        if local_path is None:
            received, _ = await _receive(conn, remote_path, Path(tmp, "file"))
            return received.read_bytes().decode("utf-8", "replace")
        local = Path(local_path)
        if local.is_dir():
            local = local / PurePosixPath(remote_path).name
        if not local.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "local directory does not exist", str(local.parent))
        received, mode = await _receive(conn, remote_path, Path(tmp, "file"))
        with local_errors(str(local)), open(received, "rb") as source:
            target = create(str(local), file_perms(mode))
            with open(target, "wb") as handle:
                shutil.copyfileobj(source, handle, 1 << 20)
        return None


async def _receive(conn: Link, remote_path: str, staged: Path) -> tuple[Path, int]:
    """Receive the remote file as ``staged`` (a path in a private directory); it and the mode the server gave."""
    await _scp(conn, remote_path, staged, upload=False)  # preserve=True: the mode comes, kept here only
    try:
        mode = staged.stat().st_mode
    except FileNotFoundError:
        raise OSError(errno.EIO, "the server's scp sent no file", f"{remote_path} on {conn.spec.address}") from None
    staged.chmod(0o600)  # whatever the server said (0o000, setuid...), ours to read, nobody else's
    return staged, mode


async def scp_write(conn: Link, local_path: str | os.PathLike[str], remote_path: str) -> None:
    """Copy a local file to ``remote_path`` (or into it, if it is a directory); the local mode bits go along."""
    local = Path(local_path)
    if not local.is_file():
        if local.is_dir():
            raise IsADirectoryError(errno.EISDIR, "local path is a directory, not a file", str(local))
        raise FileNotFoundError(errno.ENOENT, "local file does not exist", str(local))
    await _scp(conn, remote_path, local, upload=True)


async def scp_write_data(conn: Link, data: str | bytes, remote_path: str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``remote_path``, replacing it; a new file gets mode 0644."""
    payload = data.encode() if isinstance(data, str) else bytes(data)
    with tempfile.TemporaryDirectory(prefix="hussh-scp-") as tmp:
        source = Path(tmp, PurePath(remote_path).name or "data")  # the name scp uses if remote_path is a directory
        source.write_bytes(payload)
        source.chmod(0o644)
        await _scp(conn, remote_path, source, upload=True)


async def _scp(conn: Link, remote_path: str, local: PurePath, *, upload: bool) -> None:
    """One asyncssh ``scp()`` copy between ``local`` and ``remote_path`` on the live connection; a download
    keeps the remote mode (``preserve``) on ``local``, which must be in a private directory."""
    sent = remote_arg(remote_path)
    remote = (await conn._connection(), shlex.quote(sent))
    async with _scp_op(conn, remote_path, sent):
        if upload:
            await asyncssh.scp(local, remote)
        else:
            await asyncssh.scp(remote, local, preserve=True)


def remote_arg(remote_path: str) -> str:
    """``remote_path`` as the remote scp must see it: a relative path starting with ``-`` gets ``./``, as
    OpenSSH's scp does, or the remote scp would take it for an option."""
    return f"./{remote_path}" if remote_path.startswith("-") else remote_path


@contextlib.asynccontextmanager
async def _scp_op(conn: Link, path: str, sent: str) -> AsyncIterator[None]:
    """Bound an SCP transfer by the connection's ``timeout`` and ``stall_timeout``; map its failures
    to builtin ``OSError``s naming ``path`` (``sent``: how the remote scp was given it)."""
    spec, guard = conn.spec, conn._stall
    where = f"{path} on {spec.address}"
    try:
        async with bounded(conn):
            yield
    except TimeoutError:
        raise HusshTimeout(f"SCP of {where} timed out after {spec.timeout:g} seconds") from None
    except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection) as exc:
        raise lost_error(guard, f"SCP of {where}", exc) from None
    except asyncssh.SFTPError as exc:
        reason = exc.reason.removeprefix("scp: ").removeprefix(f"{sent}: ").removeprefix(f"{path}: ")
        lowered = reason.lower()
        kind, code = next(((k, c) for text, k, c in _REASONS if text in lowered), (OSError, errno.EIO))
        raise kind(code, reason, where) from None
    except (asyncssh.DisconnectError, asyncssh.ConnectionLost, asyncssh.ChannelOpenError) as exc:
        raise lost_error(guard, f"SCP of {where}", exc) from None
