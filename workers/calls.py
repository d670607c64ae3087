"""What each ``MultiConnection`` operation asks of a shard: a ``Build`` per operation, so that the public
module describes a call (command, paths, timeout) and never builds a wire message itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import protocol as p
from .core import Build

__all__ = ["close", "connect", "execute", "get_dir", "put_dir", "read_file", "tail_close", "tail_follow", "tail_open",
           "tail_read", "write_data"]


def connect(timeout: float | None) -> Build:
    return lambda req, indices, _: p.Connect(req, indices, timeout)


def close() -> Build:
    return lambda req, indices, _: p.Close(req, indices)


def execute(commands: Mapping[int, str], timeout: float | None, stdin: bytes = b"", sudo: bool = False,
            sudo_password: str | None = None) -> Build:
    """Host ``i`` runs ``commands[i]`` (with ``stdin``, through sudo); each shard's hosts share its part of the
    output budget."""
    return lambda req, indices, budget: p.Execute(req, [(i, commands[i]) for i in indices], timeout, budget,
                                                  stdin, sudo, sudo_password)


def write_data(data: bytes, remote_path: str, mode: int | None = None) -> Build:
    return lambda req, indices, _: p.WriteData(req, indices, data, remote_path, mode)


def read_file(remote_path: str, local_paths: Mapping[int, str] | None = None) -> Build:
    """Read ``remote_path`` as each result's output or, with ``local_paths``, into host ``i``'s file."""
    if local_paths is None:
        return lambda req, indices, budget: p.ReadFile(req, indices, remote_path, budget=budget)
    return lambda req, indices, _: p.ReadFile(req, indices, remote_path, [local_paths[i] for i in indices])


def put_dir(local: str, remote_path: str, follow_symlinks: bool, preserve_permissions: bool) -> Build:
    return lambda req, indices, _: p.PutDir(req, indices, local, remote_path, follow_symlinks, preserve_permissions)


def get_dir(remote_path: str, local_paths: Mapping[int, str], follow_symlinks: bool,
            preserve_permissions: bool) -> Build:
    """Download ``remote_path`` into host ``i``'s ``local_paths[i]``."""
    return lambda req, indices, _: p.GetDir(req, indices, remote_path, [local_paths[i] for i in indices],
                                            follow_symlinks, preserve_permissions)


def tail_open(paths: Mapping[int, str], since: float | None = None, lines: int = 0) -> Build:
    """Host ``i`` follows ``paths[i]`` (from ``since``: see ``AsyncFileTailer.seek_since``)."""
    return lambda req, indices, _: p.TailOpen(req, [(i, paths[i]) for i in indices], since, lines)


def tail_follow(paths: Mapping[int, str], since: float | None, lines: int, interval: float) -> Build:
    """Host ``i`` follows ``paths[i]`` until the call is stopped, its bytes streamed as read (``TailFollow``)."""
    return lambda req, indices, _: p.TailFollow(req, [(i, paths[i]) for i in indices], since, lines, interval)


def tail_read(from_pos: int | None) -> Build:
    return lambda req, indices, budget: p.TailRead(req, indices, from_pos, budget)


def tail_close() -> Build:
    return lambda req, indices, _: p.TailClose(req, indices)


MAX_PAYLOAD = p.MAX_REQUEST - (1 << 20)
"""The most bytes one request carries for every host of a worker (``sftp_write`` data, a command's stdin)."""


def check_payload(data: Sequence[int] | bytes) -> None:
    """``sftp_write`` data must fit in one request to a worker (with room for the rest of the message)."""
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"sftp_write holds the data in memory once and sends it to each worker; "
                         f"{len(data)} bytes is over its {p.MAX_REQUEST >> 20} MiB limit")
