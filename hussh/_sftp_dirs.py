"""Recursive SFTP directory transfers, as upstream's ``sftp_put_dir`` / ``sftp_get_dir`` behave.

``remote_path`` / ``local_path`` becomes the copy of the source directory (its parents are made).
Each returns ``(transferred_files, failed_files)``, source paths both; a failure skips that entry and
the walk goes on, unless ``fail_fast`` raises it. With ``follow_symlinks`` links are copied as
what they point to (a dangling one fails); without, links are skipped. ``preserve_permissions``
copies the 0777 mode bits, never setuid, setgid or sticky (upload: as OpenSSH's sftp; download: less
the umask). An upload creates each file and directory with the local one's 0777 bits (the server's
umask applies; a directory also gets owner rwx until it is filled), so none is ever more open on the
host than here; with ``preserve_permissions`` an existing file gets its mode before a byte is written
(see ``_uploads``). ``failures``, if given, receives each failure's exception, in the order of the
failed list.

A download trusts nothing the server lists: a name that is not one plain file name (``/``, ``..``,
empty, NUL or control characters, not UTF-8) fails alone, with a warning naming host and entry;
local files and directories are made relative to their open parent, so a local link in the
destination is never followed out of it; files never have more than the remote file's 0777 bits
(see ``_local_files``); no more than ``MAX_DEPTH`` directories deep, as OpenSSH's sftp.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import cast

import asyncssh

from ._local_files import create, download, file_perms, local_errors, name_refusal
from ._uploads import created_with, upload

__all__ = ["get_dir", "put_dir"]

log = logging.getLogger("hussh")

MAX_DEPTH = 64
"""Directories a download descends at most (OpenSSH's sftp: ``MAX_DIR_DEPTH``): a server inventing an
endless tree stops there instead of exhausting descriptors or the stack."""

Op = Callable[[str], AbstractAsyncContextManager[None]]
"""Bounds one SFTP step on a path and maps its failure to a builtin ``OSError`` (``_link.sftp_op``)."""


@dataclass
class _Walk:
    """One transfer's options and its two result lists."""

    sftp: asyncssh.SFTPClient
    op: Op
    follow_symlinks: bool
    preserve_permissions: bool
    fail_fast: bool
    transferred: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ancestors: set[str] = field(default_factory=set)  # real paths of the directories being walked: loops stop
    host: str = ""
    window: tuple[int, int] = (0, 0)  # (block size, requests in flight) of each file
    failures: list[OSError] | None = None  # why each entry of ``failed`` failed, for callers that report it

    def fail(self, path: str, exc: OSError) -> None:
        if self.fail_fast:
            raise exc
        self.failed.append(path)
        if self.failures is not None:
            self.failures.append(exc)

    def checked_name(self, remote_dir: str, raw: bytes) -> str | None:
        """A listed name fit to be a local file name, or ``None`` once it has failed (and been reported)."""
        try:
            name, why = raw.decode(), name_refusal(raw.decode())
        except UnicodeDecodeError:
            name, why = raw.decode(errors="backslashreplace"), "is not UTF-8"
        if why is None:
            return name
        message = f"refused the name {name!r} that {self.host} listed in {remote_dir}: it {why}"
        log.warning("hussh: %s", message)
        self.fail(f"{remote_dir}/{name}", OSError(errno.EINVAL, message, f"{remote_dir}/{name}"))
        return None

    def result(self) -> tuple[list[str], list[str]]:
        return self.transferred, self.failed


async def put_dir(sftp: asyncssh.SFTPClient, op: Op, local_path: str | os.PathLike[str], remote_path: str,
                  follow_symlinks: bool, preserve_permissions: bool, fail_fast: bool, *, window: tuple[int, int],
                  failures: list[OSError] | None = None) -> tuple[list[str], list[str]]:
    """Upload the local directory ``local_path`` as ``remote_path``; lists of local paths.

    ``window`` is (block size, writes in flight) of each file."""
    walk = _Walk(sftp, op, follow_symlinks, preserve_permissions, fail_fast, window=window, failures=failures)
    root = os.fspath(local_path)
    if not os.path.isdir(root):
        code = errno.ENOTDIR if os.path.exists(root) else errno.ENOENT
        walk.fail(root, OSError(code, f"cannot read local directory: {os.strerror(code)}", root))
        return walk.result()
    try:
        async with op(remote_path):
            await sftp.makedirs(remote_path, exist_ok=True)
    except OSError as exc:
        walk.fail(root, exc)
        return walk.result()
    await _put_tree(walk, root, remote_path)
    return walk.result()


async def _put_tree(walk: _Walk, local_dir: str, remote_dir: str) -> None:
    real = os.path.realpath(local_dir)
    if real in walk.ancestors:
        walk.fail(local_dir, OSError(errno.ELOOP, "symbolic link loop", local_dir))
        return
    walk.ancestors.add(real)
    try:
        entries = sorted(os.scandir(local_dir), key=lambda e: (e.is_dir(), e.name))
    except OSError as exc:
        walk.fail(local_dir, exc)
        entries = []
    for entry in entries:
        if entry.is_symlink() and not walk.follow_symlinks:
            continue
        source, target = entry.path, f"{remote_dir}/{entry.name}"
        try:
            mode = stat.S_IMODE(os.stat(source).st_mode) & 0o777  # as OpenSSH's sftp: never setuid on the host
            if entry.is_dir():
                async with walk.op(target):  # as OpenSSH's sftp: the owner may fill it, its mode comes after
                    await walk.sftp.makedirs(target, created_with(mode | stat.S_IRWXU), exist_ok=True)
                await _put_tree(walk, source, target)
                if walk.preserve_permissions:
                    async with walk.op(target):
                        await walk.sftp.chmod(target, mode)
            elif entry.is_file():
                async with walk.op(target):
                    await upload(walk.sftp, source, target, exact=walk.preserve_permissions,
                                 block_size=walk.window[0], max_requests=walk.window[1])
                walk.transferred.append(source)
            else:
                raise OSError(errno.EINVAL, "not a regular file or directory", source)
        except OSError as exc:
            walk.fail(source, exc)
    walk.ancestors.discard(real)


async def get_dir(sftp: asyncssh.SFTPClient, op: Op, remote_path: str, local_path: str | os.PathLike[str],
                  follow_symlinks: bool, preserve_permissions: bool, fail_fast: bool, *,
                  host: str, window: tuple[int, int],
                  failures: list[OSError] | None = None) -> tuple[list[str], list[str]]:
    """Download the remote directory ``remote_path`` as ``local_path``; lists of remote paths.

    ``host`` names the server in warnings; ``window`` is (block size, reads in flight) of each file.
    """
    walk = _Walk(sftp, op, follow_symlinks, preserve_permissions, fail_fast, host=host, window=window,
                 failures=failures)
    root = os.fspath(local_path)
    try:
        async with op(remote_path):
            if not stat.S_ISDIR((await sftp.stat(remote_path)).permissions or 0):
                raise asyncssh.SFTPNotADirectory("Not a directory")
        os.makedirs(root, exist_ok=True)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the caller's path: links followed
    except OSError as exc:
        walk.fail(remote_path, exc)
        return walk.result()
    try:
        await _get_tree(walk, remote_path, _Local(root_fd, root), 0)
    finally:
        os.close(root_fd)
    return walk.result()


@dataclass(frozen=True)
class _Local:
    """A local directory being filled: an open descriptor (names are made relative to it, so no link on
    the way is followed) and its path, for messages."""

    fd: int
    path: str

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)


async def _get_tree(walk: _Walk, remote_dir: str, local: _Local, depth: int) -> None:
    try:
        async with walk.op(remote_dir):
            real = await walk.sftp.realpath(remote_dir)
            if real in walk.ancestors:
                raise asyncssh.SFTPFailure("symbolic link loop")
            # bytes: a name that is not UTF-8 fails alone, not the whole listing
            listed = [e async for e in walk.sftp.scandir(remote_dir.encode()) if e.filename not in (b".", b"..")]
    except OSError as exc:
        walk.fail(remote_dir, exc)
        return
    walk.ancestors.add(real)
    entries = []
    for entry in listed:
        name = walk.checked_name(remote_dir, cast(bytes, entry.filename))
        if name is not None:
            entries.append((name, entry.attrs))
    for name, attrs in sorted(entries, key=lambda e: (e[1].type == asyncssh.FILEXFER_TYPE_DIRECTORY, e[0])):
        source = f"{remote_dir}/{name}"
        if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
            if not walk.follow_symlinks:
                continue
            with contextlib.suppress(OSError):
                async with walk.op(source):
                    attrs = await walk.sftp.stat(source)
        try:
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                if depth >= MAX_DEPTH:
                    raise OSError(errno.ELOOP, f"more than {MAX_DEPTH} directories deep (OpenSSH's sftp stops there "
                                               "too)", source)
                await _get_subdir(walk, source, local, name, attrs.permissions, depth)
            elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                await _get_file(walk, source, local, name)
                walk.transferred.append(source)
            else:
                raise OSError(errno.EINVAL, "not a regular file or directory (or a dangling link)", source)
        except OSError as exc:
            walk.fail(source, exc)
    walk.ancestors.discard(real)


async def _get_subdir(walk: _Walk, source: str, local: _Local, name: str, remote_mode: int | None,
                      depth: int) -> None:
    """Make (or enter) the directory ``name`` and fill it; a local link in its place is not followed."""
    perms = file_perms(remote_mode, exact=True)
    with local_errors(local.join(name)):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, perms | stat.S_IRWXU, dir_fd=local.fd)  # as OpenSSH: the owner may fill it
        fd = _open_beneath(name, os.O_RDONLY | os.O_DIRECTORY, local)
    try:
        await _get_tree(walk, source, _Local(fd, local.join(name)), depth + 1)
        if walk.preserve_permissions and remote_mode is not None:
            with local_errors(local.join(name)):
                current = stat.S_IMODE(os.fstat(fd).st_mode)
                os.fchmod(fd, current & perms)  # the remote's bits less the umask; never widened
    finally:
        os.close(fd)


async def _get_file(walk: _Walk, source: str, local: _Local, name: str) -> None:
    """Download one file as ``name`` in ``local``, with at most the remote file's 0777 bits from the start."""
    def open_local(remote_mode: int | None) -> int:
        perms = file_perms(remote_mode, exact=walk.preserve_permissions)
        return _open_beneath(name, 0, local, perms)

    async with walk.op(source):
        await download(walk.sftp, source, local.join(name), open_local, block_size=walk.window[0],
                       max_requests=walk.window[1])


def _open_beneath(name: str, flags: int, local: _Local, perms: int | None = None) -> int:
    """Open ``name`` in ``local`` without following a link there (``perms``: create a file to write)."""
    try:
        if perms is None:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=local.fd)
        return create(name, perms, dir_fd=local.fd, follow=False)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link is in the way (links inside the destination are not "
                                       "followed)", local.join(name)) from None
        raise
