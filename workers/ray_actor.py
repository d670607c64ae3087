"""The Ray engine's node side: ``ShardActor``, one shard of hosts in a Ray async actor.

Its event loop (Ray's, uvloop when installed, in a thread that is not the main one) runs the local
engine's ``hussh.workers.main.Worker`` for its hosts, on the lanes the caller grants it (its first
ones with the call, more through ``grant``). A call is one streaming generator: the actor yields
batches of the local engine's frames (everything emitted in the last ``BATCH_WINDOW`` seconds as one
Ray object: an object costs 0.3-0.6 ms of CPU on each side, too much to spend per host) and the
files it saved for the caller, in pieces. ``hussh.workers.ray_engine`` is the caller's side.

Secrets never go into actor constructor arguments (Ray's control service keeps those to replay
restarts): the constructor takes only the shard's name; host specs (passwords included) and, with
``ship_keys``, key material travel in the ``assign`` method call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import glob
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import msgspec
import ray

from hussh.errors import describe

from . import protocol as p
from .main import ABORT_GRACE, Worker, raise_fd_limit

log = logging.getLogger("hussh")

BATCH_WINDOW = 0.05  # seconds of frames an actor gathers into one streamed object, at least; longer
BATCHES_PER_SECOND = 500  # with many shards, so that the caller takes in about this many at most
BATCH_BYTES = 8 << 20  # a batch goes at once when this much output waits; the most of saved files per batch
BATCHES_AHEAD = 2  # batches an actor may have streamed that the caller has not taken yet


def decode_frames(data: bytes, limit: int) -> list[Any]:
    """The messages of one streamed batch: whole frames, as on the local engine's pipes.

    Raises ``ValueError`` for a frame over ``limit`` bytes, a truncated or a malformed one.
    """
    frames = p.FrameDecoder(p.Reply, limit)
    messages = frames.feed(data)
    if frames.error or frames.buffer:
        raise ValueError(frames.error or "a truncated frame")
    return messages


@dataclass(eq=False)
class _Saved:
    """A file saved here for the caller, going back in pieces, and its host's result, which follows them."""

    done: p.HostDone
    temporary: str
    handle: BinaryIO | None = None
    sent: bool = False  # at least one piece went (an empty file is one empty piece)


class _Outbox:
    """One call's frames and saved files waiting to go back, in the order they were emitted.

    A batch carries at most ``BATCH_BYTES`` of file data: a saved file goes back piece by piece,
    read from the node's disk as it is sent, and its result and what was emitted after it (the
    call's end) wait behind it, so the caller has written a file whole when it reads its result.
    """

    def __init__(self, encoder: msgspec.msgpack.Encoder) -> None:
        self.encoder = encoder
        self.queue: deque[bytes | _Saved] = deque()  # frames, and files with the result that follows them
        self.waiting = 0  # bytes in queued frames
        self.full = asyncio.Event()  # set while a batch should go at once (output piling up, files to send)
        self.saving: dict[int, tuple[str, str]] = {}  # host index -> (file here, the caller's path)

    def __bool__(self) -> bool:
        return bool(self.queue)

    def emit(self, message: p.HostDone | p.Started | p.Output | p.KeyLearned | p.Alive | p.CallDone) -> None:
        if type(message) is p.HostDone and message.index in self.saving:
            temporary, wanted = self.saving.pop(message.index)
            result = message.result
            if result.status == 0:
                saved = msgspec.structs.replace(result, stdout=os.fsencode(wanted))
                self.queue.append(_Saved(msgspec.structs.replace(message, result=saved), temporary))
                self.full.set()
                return
            _unlink(temporary)
            here, there = os.fsencode(temporary), os.fsencode(wanted)
            named = msgspec.structs.replace(result, stdout=result.stdout.replace(here, there),
                                            stderr=result.stderr.replace(here, there))
            message = msgspec.structs.replace(message, result=named)
        self._frame(p.frame(self.encoder.encode(message)))

    def _frame(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.waiting += len(frame)
        if self.waiting >= BATCH_BYTES:
            self.full.set()

    def take(self) -> tuple[list[tuple[int, bytes]], bytes]:
        """The next batch: file pieces (``BATCH_BYTES`` at most) and the frames queued up to the first
        file not sent whole (the parent writes the pieces before it reads the frames)."""
        pieces: list[tuple[int, bytes]] = []
        frames: list[bytes] = []
        room = BATCH_BYTES
        while self.queue:
            item = self.queue[0]
            if isinstance(item, _Saved):
                if room <= 0:
                    break
                piece = self._piece(item, room)
                if piece is not None:
                    pieces.append((item.done.index, piece))
                    room -= len(piece)
                if item.handle is not None:  # more of it in the next batch
                    break
                item = p.frame(self.encoder.encode(item.done))
                self.waiting += len(item)
            frames.append(item)
            self.waiting -= len(item)
            self.queue.popleft()
        if not any(isinstance(item, _Saved) for item in self.queue) and self.waiting < BATCH_BYTES:
            self.full.clear()
        return pieces, b"".join(frames)

    @staticmethod
    def _piece(saved: _Saved, room: int) -> bytes | None:
        """Up to ``room`` more bytes of ``saved`` (None: nothing more), closing it at its end; a file
        that cannot be read turns its result into that error."""
        try:
            if saved.handle is None:
                if saved.sent:
                    return None
                saved.handle = open(saved.temporary, "rb")  # noqa: SIM115 - open across batches
                _unlink(saved.temporary)  # the open file is all that is left: gone with this actor
            piece = saved.handle.read(room)
        except OSError as exc:
            _unlink(saved.temporary)
            saved.done = msgspec.structs.replace(saved.done, stdout=b"", stderr=describe(exc).encode(errors="replace"),
                                                 status=-1, error=type(exc).__name__)
            piece = b""
        if len(piece) < room and saved.handle is not None:
            saved.handle.close()
            saved.handle = None
        if (saved.sent and not piece) or saved.done.result.status != 0:
            return None
        saved.sent = True
        return piece

    def spool(self, call: p.ReadFile, directory: str) -> p.ReadFile:
        """``sftp_read`` to the caller's files: save them in ``directory`` first, then send each back."""
        temporaries = []
        for index, wanted in zip(call.indices, call.local_paths or ()):
            temporary = os.path.join(directory, f"{call.req}-{index}")
            self.saving[index] = (temporary, wanted)
            temporaries.append(temporary)
        return msgspec.structs.replace(call, local_paths=temporaries)

    def discard(self) -> None:
        """Drop what was not sent (a cancelled call's leftovers are nobody's), files here included."""
        for temporary, _ in self.saving.values():
            _unlink(temporary)
        self.saving.clear()
        for item in self.queue:
            if isinstance(item, _Saved):
                if item.handle is not None:
                    item.handle.close()
                _unlink(item.temporary)
        self.queue.clear()
        self.waiting = 0


class ShardActor:
    """One shard on a node: the local engine's ``Worker``, its frames streamed back in batches."""

    def __init__(self, name: str) -> None:
        self.name = name
        gc.set_threshold(50_000, 20, 20)  # as local workers: asyncssh allocates a lot per packet
        self.encoder = msgspec.msgpack.Encoder()
        self.requests = msgspec.msgpack.Decoder(p.Request)
        self.outbox = _Outbox(self.encoder)  # the current call's
        sweep_spools()  # a killed actor's files on this node go when the next one starts here
        self.spool = ""
        self.spool_lock = -1
        self.current: asyncio.Task[None] | None = None
        self.worker = Worker(lambda message: self.outbox.emit(message), raise_fd_limit(), self._drained)
        gc.freeze()  # what Ray and the imports made is never garbage: stop scanning it

    async def _drained(self) -> None:
        """``Writable``: a followed tail reads on once less than a batch of frames waits to go."""
        while self.outbox.waiting >= BATCH_BYTES:
            await asyncio.sleep(BATCH_WINDOW)

    def __repr__(self) -> str:  # what Ray's state API shows (repr_name): nothing secret
        return f"hussh-shard-{self.name}"

    async def assign(self, payload: bytes) -> tuple[str, int, str]:
        """Take the shard (an encoded ``Assign``); return where this actor runs: node id, pid, code."""
        message = self.requests.decode(payload)
        if not isinstance(message, p.Assign):
            raise TypeError(f"expected Assign, got {type(message).__name__}")
        self.worker.assign(message)
        return self.where()

    def where(self) -> tuple[str, int, str]:
        import hussh.workers  # noqa: PLC0415

        return ray.get_runtime_context().get_node_id(), os.getpid(), os.path.dirname(hussh.workers.__file__ or "")

    @ray.method(num_returns="streaming", _generator_backpressure_num_objects=BATCHES_AHEAD)  # type: ignore[untyped-decorator]  # ray is Any here
    async def handle(self, payload: bytes, assigned: object = None, window: float = BATCH_WINDOW,
                     lanes: int = 1) -> AsyncIterator[tuple[list[tuple[int, bytes]], bytes]]:
        """Run one call (an encoded ``p.Call``) on ``lanes`` (more come through ``grant``), yielding
        ``(file pieces, frames)`` batches until ``CallDone``.

        A batch is what was emitted in the last ``window`` seconds (or ``BATCH_BYTES``), and at most
        ``BATCH_BYTES`` of saved files; the end of the call and files go at once, no more than
        ``BATCHES_AHEAD`` batches ahead of the caller. ``assigned`` is the ``assign`` call's result, passed so that Ray
        runs this after it (and not at all if the actor died before it took its hosts).

        Cancelled (``ray.cancel``: Ctrl-C), it cancels the worker's call, which sends a KILL
        signal to the remote commands still running, as a timeout does. The parent sends the
        next call as soon as it has this one's ``CallDone``, maybe before this generator has
        returned: everything of the call lives in its own outbox.
        """
        call = cast(p.Call, self.requests.decode(payload))  # the others: Worker.handle raises TypeError
        self.worker.grant(p.Grant(call.req, lanes))
        box = self.outbox = _Outbox(self.encoder)
        if isinstance(call, p.ReadFile) and call.local_paths:
            if not self.spool:
                self.spool, self.spool_lock = _spool(self.name)
            call = box.spool(call, self.spool)
        task = self.current = asyncio.create_task(self.worker.handle(call))
        try:
            while not task.done():
                full = asyncio.ensure_future(box.full.wait())
                await asyncio.wait((task, full), timeout=window, return_when=asyncio.FIRST_COMPLETED)
                full.cancel()
                if box:
                    yield box.take()
            task.result()
            while box:  # the files still going back, and the call's end behind them
                yield box.take()
        except BaseException:
            task.cancel()
            await asyncio.wait((task,), timeout=ABORT_GRACE)
            raise
        finally:
            box.discard()  # a cancelled call's leftovers are nobody's

    async def halt(self, payload: bytes) -> None:
        """Start no new host of the running call (an encoded ``p.Halt``): a second method call, run on
        this async actor's loop while ``handle`` streams."""
        message = self.requests.decode(payload)
        if not isinstance(message, p.Halt):
            raise TypeError(f"expected Halt, got {type(message).__name__}")
        self.worker.halt(message)

    async def grant(self, payload: bytes) -> None:
        """More lanes for a call (an encoded ``p.Grant``), as ``halt``; one that comes before its call
        (Ray may run this before ``handle``, which waits for ``assign``) is kept until it starts."""
        message = self.requests.decode(payload)
        if not isinstance(message, p.Grant):
            raise TypeError(f"expected Grant, got {type(message).__name__}")
        self.worker.grant(message)

    async def close(self, grace: float | None = None) -> None:
        """Stop the call in progress (if any), then disconnect every host (within ``grace`` if given)."""
        task = self.current
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=ABORT_GRACE)
        await self.worker.close_all(grace)
        if self.spool:
            shutil.rmtree(self.spool, ignore_errors=True)
            os.close(self.spool_lock)
            self.spool, self.spool_lock = "", -1


SPOOL_PREFIX = "hussh-shard-"
SPOOL_LOCK = ".alive"  # locked by the actor that owns the spool for as long as it runs


def _spool(name: str) -> tuple[str, int]:
    """A private directory for the files this actor saves, and the descriptor of its lock (held until
    the process ends, whichever way: the kernel lets go of it)."""
    path = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{name}-")
    fd = os.open(os.path.join(path, SPOOL_LOCK), os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return path, fd


def sweep_spools() -> None:
    """Remove the spools of this user's actors that ended without removing theirs (``ray.kill`` is a
    SIGKILL, and Ray kills what such an actor started): those whose lock nobody holds."""
    for path in glob.glob(os.path.join(glob.escape(tempfile.gettempdir()), f"{SPOOL_PREFIX}*")):
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(path, SPOOL_LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not a spool of ours, or one being made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its actor runs
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


RemoteShard = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(ShardActor)
