"""Every message between the parent and a worker, as tagged msgspec Structs, and the frame format.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message; ``FrameDecoder``
reads them on both sides, refusing a frame longer than the receiver allows. The parent sends
``Request`` messages; a worker answers each call with a ``Started`` as each host begins and one
``HostDone`` per host as soon as it finishes (a followed tail sends its bytes as ``Output`` before
that), a ``KeyLearned`` per host key accepted on first use,
an ``Alive`` every ``HEARTBEAT_EVERY`` seconds while it works, then ``CallDone``. Host specs and
keys travel once, in ``Assign``. A call runs on the lanes ``Grant`` gives it: the first right after
the call, more while it runs (lanes other workers freed). ``Halt`` may come while a call runs (a
rollout stopping: start no new host). Closing the request pipe means "stop now": the worker stops the remote commands it
runs, disconnects and exits (that is how Ctrl-C and the parent's death reach it).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from hussh._result import RawResult
from hussh._spec import ConnectSpec, HashedHosts, Retry
from hussh._transport import ShippedKey

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
    """The worker's shard: (host index, resolved spec) pairs, the keys they use, and ``batch_size``: the
    most lanes it may ever be granted (it keeps a descriptor free for each)."""

    hosts: list[tuple[int, ConnectSpec]]
    concurrency: int
    keys: list[ShippedKey] = []
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
    """Write the same bytes to every listed host: the payload crosses the pipe once per worker. ``mode``:
    the 0777 bits a new remote file is created with (a copied local file's), else the server's default."""

    req: int
    indices: list[int]
    data: bytes
    remote_path: str
    mode: int | None = None


class ReadFile(_Message):
    """Read a remote file per host, returned as text or, with ``local_paths``, saved by the worker."""

    req: int
    indices: list[int]
    remote_path: str
    local_paths: list[str] | None = None
    budget: int = 0


class TailOpen(_Message):
    """Open a tailer per host: at the file's end, or (``since``, a POSIX time) where it was then if that can be
    known, else at its last ``lines`` lines (``AsyncFileTailer.seek_since``)."""

    req: int
    paths: list[tuple[int, str]]
    since: float | None = None
    lines: int = 0


class TailFollow(_Message):
    """Follow a file per host until the call is halted: each host's tail opens as with ``TailOpen``, then the
    bytes appended go out as ``Output`` as soon as they are read (every ``interval`` seconds, at once again
    after a full read), whatever the other hosts do. A host's ``HostDone`` comes when its tail fails, or
    (status 0) once the call is halted."""

    req: int
    paths: list[tuple[int, str]]
    since: float | None = None
    lines: int = 0
    interval: float = 0.5


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


class Halt(_Message):
    """Start no new host of call ``req`` (a rollout's budget ran out): each host not started is
    answered ``Skipped``; with ``stop_running``, the running ones are stopped too (``Stopped``).
    Sent while the call runs; a worker that finished ``req`` already ignores it."""

    req: int
    stop_running: bool = False


class Grant(_Message):
    """Call ``req`` may run ``lanes`` more hosts at once. The caller keeps ``batch_size`` over all workers:
    a worker keeps its lanes while it has hosts to start; once it has none, each lane freed is the
    caller's again (it sees that in ``Started`` and ``HostDone``), to grant to a worker with hosts waiting.
    May come before its call (kept until the call starts); one for an earlier call is ignored."""

    req: int
    lanes: int


class Shutdown(_Message):
    """Close every connection politely and exit."""


class HostDone(_Message):
    """One host's outcome as the worker had it (``RawResult``), and how long the worker spent on it
    (connect included).

    Output is the bytes received (the parent decodes it once, as it builds the result): text
    would take up to four bytes of memory a byte, in the worker and again in the frame."""

    req: int
    index: int
    result: RawResult
    seconds: float = 0.0


class Started(_Message):
    """Host ``index`` of call ``req`` has started (for the caller's live status)."""

    req: int
    index: int


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


class Output(_Message):
    """Bytes a running host produced (a followed file's new bytes), before its ``HostDone``; its first
    ``Output``, maybe empty, says that its tail is open."""

    req: int
    index: int
    data: bytes


class Alive(_Message):
    """Sent while a call runs, so the parent can tell a long call from a stopped or stuck worker."""

    req: int


class CallDone(_Message):
    req: int


class PutDir(_Message):
    """Upload a local directory tree (or one file) to every listed host; the worker reads the caller's files.

    Each host's ``HostDone``: ``stdout`` the local files sent, one a line; ``stderr`` one line per failure."""

    req: int
    indices: list[int]
    local_path: str
    remote_path: str
    follow_symlinks: bool = True
    preserve_permissions: bool = True


class GetDir(_Message):
    """Download a remote directory tree (or one file) per host into that host's ``local_paths`` entry.

    Each host's ``HostDone``: ``stdout`` the remote files saved, one a line; ``stderr`` one line per failure."""

    req: int
    indices: list[int]
    remote_path: str
    local_paths: list[str]
    follow_symlinks: bool = True
    preserve_permissions: bool = True


Request = (Assign | Connect | Execute | WriteData | ReadFile | TailOpen | TailFollow | TailRead | TailClose | Close
           | Halt | Grant | Shutdown | PutDir | GetDir)
Reply = HostDone | Started | Output | KeyLearned | Alive | CallDone
Call = (Connect | Execute | WriteData | ReadFile | TailOpen | TailFollow | TailRead | TailClose | Close | PutDir
        | GetDir)


M = TypeVar("M")  # Request in a worker, Reply in the parent


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def encode_frame(encoder: msgspec.msgpack.Encoder, message: object) -> list[bytes | bytearray]:
    """``frame(encoder.encode(message))`` as pieces to write in order, a host's output among them
    as it is: never copied per host, so outputs alike (one object, see hussh._shared_output) are
    held once while their frames wait to be written."""
    if type(message) is not HostDone or len(message.result.stdout) + len(message.result.stderr) < _SPLICE_FROM:
        payload = encoder.encode(message)
        return [HEADER.pack(len(payload)) + payload]
    stdout, stderr = message.result.stdout, message.result.stderr
    rest = encoder.encode(msgspec.structs.replace(message, result=msgspec.structs.replace(message.result, stdout=b"",
                                                                                          stderr=b"")))
    # the frame's array header, the tag, req and index, then the result's own array header
    at = 1 + sum(len(encoder.encode(field)) for field in (_HOST_DONE_TAG, message.req, message.index)) + 1
    assert rest[at:at + 4] == _TWO_EMPTY, "HostDone's fields moved: splice at the wrong place"
    stdout_head, stderr_head = _bin_header(len(stdout)), _bin_header(len(stderr))
    size = len(rest) - 4 + len(stdout_head) + len(stdout) + len(stderr_head) + len(stderr)
    return [HEADER.pack(size) + rest[:at] + stdout_head, stdout, stderr_head, stderr, rest[at + 4:]]


_SPLICE_FROM = 1 << 16  # smaller outputs: one piece, copied (cheaper than five writes)
_HOST_DONE_TAG = HostDone.__struct_config__.tag
_TWO_EMPTY = b"\xc4\x00\xc4\x00"  # msgpack bin8 of b"" twice: stdout and stderr left empty


def _bin_header(size: int) -> bytes:
    """The msgpack bin32 header of ``size`` bytes (valid for any size a frame may hold)."""
    return b"\xc6" + size.to_bytes(4, "big")


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
