"""Every message that crosses a worker pipe, as tagged msgspec Structs, and the frame format.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message. The parent sends
``Request`` messages; a worker answers each call with one ``HostDone`` per host, as soon as that
host finishes, an ``Alive`` every ``HEARTBEAT_EVERY`` seconds while it works, then ``CallDone``.
Host specs travel once, in ``Assign``, not with every call.
"""

from __future__ import annotations

import struct

import msgspec

from hussh._result import SSHResult
from hussh._spec import ConnectSpec

HEADER = struct.Struct(">I")
FD_RESERVE = 48  # descriptors a worker keeps free for its pipes, local files and the loop itself
HEARTBEAT_EVERY = 1.0  # seconds between a busy worker's Alive frames


class _Message(msgspec.Struct, array_like=True, tag=True, gc=False):
    pass


class Assign(_Message):
    """The worker's shard: (host index, spec) pairs, and its share of ``batch_size``."""

    hosts: list[tuple[int, ConnectSpec]]
    concurrency: int


class Connect(_Message):
    req: int
    indices: list[int]
    timeout: float | None = None


class Execute(_Message):
    req: int
    commands: list[tuple[int, str]]
    timeout: float | None = None


class WriteData(_Message):
    """Write the same bytes to every listed host: the payload crosses the pipe once per worker."""

    req: int
    indices: list[int]
    data: bytes
    remote_path: str


class ReadFile(_Message):
    """Read a remote file per host, returned as text or, with ``local_paths``, saved by the worker."""

    req: int
    indices: list[int]
    remote_path: str
    local_paths: list[str] | None = None


class TailOpen(_Message):
    req: int
    paths: list[tuple[int, str]]


class TailRead(_Message):
    req: int
    indices: list[int]
    from_pos: int | None = None


class TailClose(_Message):
    req: int
    indices: list[int]


class Close(_Message):
    req: int
    indices: list[int]


class Shutdown(_Message):
    """Close every connection and exit."""


class HostDone(_Message):
    req: int
    index: int
    result: SSHResult


class Alive(_Message):
    """Sent while a call runs, so the parent can tell a long call from a stopped or stuck worker."""

    req: int


class CallDone(_Message):
    req: int


Request = Assign | Connect | Execute | WriteData | ReadFile | TailOpen | TailRead | TailClose | Close | Shutdown
Reply = HostDone | Alive | CallDone
Call = Connect | Execute | WriteData | ReadFile | TailOpen | TailRead | TailClose | Close


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload
