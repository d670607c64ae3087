"""Recursive SFTP directory transfers, as upstream's ``sftp_put_dir`` / ``sftp_get_dir`` behave.

``remote_path`` / ``local_path`` becomes the copy of the source directory (its parents are made).
Each returns ``(transferred_files, failed_files)``, source paths both; a failure skips that entry and
the walk goes on, unless ``fail_fast`` raises it. With ``follow_symlinks`` links are copied as
what they point to (a dangling one fails); without, links are skipped. ``preserve_permissions``
copies the mode bits, else new files get the receiving side's default.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import asyncssh

__all__ = ["get_dir", "put_dir"]

Op = Callable[[str], AbstractAsyncContextManager[None]]
"""Bounds one SFTP step on a path and maps its failure to a builtin ``OSError`` (``aio._sftp_op``)."""


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

    def fail(self, path: str, exc: OSError) -> None:
        if self.fail_fast:
            raise exc
        self.failed.append(path)

    def result(self) -> tuple[list[str], list[str]]:
        return self.transferred, self.failed


async def put_dir(sftp: asyncssh.SFTPClient, op: Op, local_path: str | os.PathLike[str], remote_path: str,
                  follow_symlinks: bool, preserve_permissions: bool, fail_fast: bool) -> tuple[list[str], list[str]]:
    """Upload the local directory ``local_path`` as ``remote_path``; lists of local paths."""
    walk = _Walk(sftp, op, follow_symlinks, preserve_permissions, fail_fast)
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
            mode = stat.S_IMODE(os.stat(source).st_mode)
            if entry.is_dir():
                async with walk.op(target):
                    await walk.sftp.makedirs(target, exist_ok=True)
                await _put_tree(walk, source, target)
            elif entry.is_file():
                async with walk.op(target):
                    await walk.sftp.put(source, target, follow_symlinks=True)
                walk.transferred.append(source)
            else:
                raise OSError(errno.EINVAL, "not a regular file or directory", source)
            if walk.preserve_permissions:
                async with walk.op(target):
                    await walk.sftp.chmod(target, mode)
        except OSError as exc:
            walk.fail(source, exc)
    walk.ancestors.discard(real)


async def get_dir(sftp: asyncssh.SFTPClient, op: Op, remote_path: str, local_path: str | os.PathLike[str],
                  follow_symlinks: bool, preserve_permissions: bool, fail_fast: bool) -> tuple[list[str], list[str]]:
    """Download the remote directory ``remote_path`` as ``local_path``; lists of remote paths."""
    walk = _Walk(sftp, op, follow_symlinks, preserve_permissions, fail_fast)
    root = os.fspath(local_path)
    try:
        async with op(remote_path):
            if not stat.S_ISDIR((await sftp.stat(remote_path)).permissions or 0):
                raise asyncssh.SFTPNotADirectory("Not a directory")
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        walk.fail(remote_path, exc)
        return walk.result()
    await _get_tree(walk, remote_path, root)
    return walk.result()


async def _get_tree(walk: _Walk, remote_dir: str, local_dir: str) -> None:
    try:
        async with walk.op(remote_dir):
            real = await walk.sftp.realpath(remote_dir)
            if real in walk.ancestors:
                raise asyncssh.SFTPFailure("symbolic link loop")
            entries = [e async for e in walk.sftp.scandir(remote_dir) if e.filename not in (".", "..")]
    except OSError as exc:
        walk.fail(remote_dir, exc)
        return
    walk.ancestors.add(real)
    for entry in sorted(entries, key=lambda e: (e.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY, e.filename)):
        name = str(entry.filename)  # a str already: asyncssh decodes the names of a str path
        source, target = f"{remote_dir}/{name}", os.path.join(local_dir, name)
        attrs = entry.attrs
        if attrs.type == asyncssh.FILEXFER_TYPE_SYMLINK:
            if not walk.follow_symlinks:
                continue
            with contextlib.suppress(OSError):
                async with walk.op(source):
                    attrs = await walk.sftp.stat(source)
        try:
            if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                os.makedirs(target, exist_ok=True)
                await _get_tree(walk, source, target)
            elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                async with walk.op(source):
                    await walk.sftp.get(source, target, follow_symlinks=True)
                walk.transferred.append(source)
            else:
                raise OSError(errno.EINVAL, "not a regular file or directory (or a dangling link)", source)
            if walk.preserve_permissions and attrs.permissions is not None:
                os.chmod(target, stat.S_IMODE(attrs.permissions))
        except OSError as exc:
            walk.fail(source, exc)
    walk.ancestors.discard(real)
