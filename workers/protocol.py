"""Every message between the parent and a worker, as tagged msgspec Structs, and the frame format.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message; ``FrameDecoder``
reads them on both sides, refusing a frame longer than the receiver allows. The parent sends
``Request`` messages; a worker answers each call with one ``HostDone`` per host, as soon as that
host finishes, a ``KeyLearned`` per host key accepted on first use, an ``Alive`` every
``HEARTBEAT_EVERY`` seconds while it works, then ``CallDone``. Host specs and keys travel once,
in ``Assign``. Closing the request pipe means "stop now": the worker stops the remote commands it
runs, disconnects and exits (that is how Ctrl-C and the parent's death reach it).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from hussh._credentials import KeyMaterial
from hussh._spec import ConnectSpec, HashedHosts, Retry

if TYPE_CHECKING:
    from typing_extensions import TypeForm  # typing's from Python 3.15 (PEP 747); msgspec's stubs use it

HEADER = struct.Struct(">I")
FD_RESERVE = 48  # descriptors a worker keeps free for its pipes, local files and the loop itself
HEARTBEAT_EVERY = 1.0  # seconds between a busy worker's Alive frames
MAX_REQUEST = 1 << 30  # bytes: the largest request a worker accepts (an sftp_write payload)
REPLY_OVERHEAD = 1 << 20  # bytes a reply may carry beyond its host's output


def reply_limit(max_output: int) -> int:
    """The largest reply frame a worker may send when outputs are capped at ``max_output`` bytes.

    Output crosses as the bytes received, stdout and stderr together within ``max_output``."""
    return max_output + REPLY_OVERHEAD


class _Message(msgspec.Struct, array_like=True, tag=True, gc=False):
    pass


class Assign(_Message):
    """The worker's shard: (host index, resolved spec) pairs, the keys they use, its share of ``batch_size``."""

    hosts: list[tuple[int, ConnectSpec]]
    concurrency: int
    keys: list[tuple[str, str | None, KeyMaterial]] = []
    retry: Retry = Retry()
    cwd: str = ""  # the caller's working directory and environment, which a worker started by the
    env: dict[str, str] | None = None  # zygote does not share (a ProxyCommand may rely on them)
    known: list[HashedHosts] = []  # hashed known_hosts entries its hosts are checked against


class Connect(_Message):
    req: int
    indices: list[int]
    timeout: float | None = None


class Execute(_Message):
    """Run a command per host. ``stdin`` is the same for every host: it crosses the pipe once per worker."""

    req: int
    commands: list[tuple[int, str]]
    timeout: float | None = None
    budget: int = 0  # bytes of output this worker's hosts may keep in all (0: no call-wide bound)
    stdin: bytes = b""  # every command's stdin, then end of file
    sudo: bool = False  # run each command through sudo, answering its prompt with sudo_password
    sudo_password: str | None = None

    def __repr__(self) -> str:  # msgspec's would show the password
        secret = ", sudo_password=***" if self.sudo_password is not None else ""
        return (f"Execute(req={self.req}, {len(self.commands)} commands, timeout={self.timeout}, "
                f"budget={self.budget}, stdin={len(self.stdin)} bytes, sudo={self.sudo}{secret})")


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
    budget: int = 0


class TailOpen(_Message):
    req: int
    paths: list[tuple[int, str]]


class TailRead(_Message):
    req: int
    indices: list[int]
    from_pos: int | None = None
    budget: int = 0


class TailClose(_Message):
    req: int
    indices: list[int]


class Close(_Message):
    req: int
    indices: list[int]


class Shutdown(_Message):
    """Close every connection politely and exit."""


class HostDone(_Message):
    """One host's outcome, and how long the worker spent on it (connect included).

    Output is the bytes received (the parent decodes it once, as it builds the result): text
    would take up to four bytes of memory a byte, in the worker and again in the frame."""

    req: int
    index: int
    stdout: bytes
    stderr: bytes
    status: int
    error: str = ""
    seconds: float = 0.0


class KeyLearned(_Message):
    """A host key accepted on first use (``accept-new``), for the parent to record in known_hosts.

    It names the host by its index and ``hop`` (0: the host itself, 1: its last bastion, 2: the
    bastion before that...), never by name or file: the parent records the key under the name and
    in the known_hosts file of its own spec for that hop, and only for a host of that worker's shard.
    """

    req: int
    index: int
    hop: int
    key: str


class Alive(_Message):
    """Sent while a call runs, so the parent can tell a long call from a stopped or stuck worker."""

    req: int


class CallDone(_Message):
    req: int


Request = Assign | Connect | Execute | WriteData | ReadFile | TailOpen | TailRead | TailClose | Close | Shutdown
Reply = HostDone | KeyLearned | Alive | CallDone
Call = Connect | Execute | WriteData | ReadFile | TailOpen | TailRead | TailClose | Close


M = TypeVar("M")  # Request in a worker, Reply in the parent


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def encode_frame(encoder: msgspec.msgpack.Encoder, message: object, size_hint: int = 0) -> bytearray:
    """``frame(encoder.encode(message))`` in one buffer: a large output is copied once, not twice.

    ``size_hint``: the bytes the message will take, so the buffer never grows (and briefly doubles)."""
    buffer = bytearray(HEADER.size + size_hint)
    encoder.encode_into(message, buffer, HEADER.size)
    HEADER.pack_into(buffer, 0, len(buffer) - HEADER.size)
    return buffer


class FrameDecoder(Generic[M]):
    """Splits one pipe's bytes into messages of ``kind``, holding at most one unfinished frame.

    A frame longer than ``limit`` or that does not decode as ``kind`` (garbage, an unknown tag)
    sets ``error``; from then on nothing more is decoded or kept: the other side is broken.
    """

    def __init__(self, kind: TypeForm[M], limit: int) -> None:  # a Struct type or a union of them
        self.decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(kind)
        self.limit = limit
        self.buffer = bytearray()
        self.error = ""

    def feed(self, chunk: bytes) -> list[M]:
        """The messages ``chunk`` completes, in order (those before a bad frame too; then see ``error``)."""
        if self.error:
            return []
        buffer = self.buffer
        buffer += chunk
        messages: list[M] = []
        while len(buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer)
            if size > self.limit:
                return self._fail(messages, f"a frame of {size} bytes, more than the {self.limit} allowed")
            end = HEADER.size + size
            if len(buffer) < end:
                break
            try:
                messages.append(self.decoder.decode(memoryview(buffer)[HEADER.size:end]))
            except msgspec.DecodeError as exc:
                return self._fail(messages, f"a malformed frame ({exc})")
            del buffer[:end]  # cheap: a bytearray drops its head by moving its start
        return messages

    def _fail(self, messages: list[M], error: str) -> list[M]:
        self.error = error
        self.buffer = bytearray()
        return messages
