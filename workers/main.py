"""Worker process: one uvloop event loop serving its shard of hosts for the life of the pool.

``Worker`` holds the shard (connections, tailers, failure memory) and runs calls; it knows
nothing of pipes, so another engine can drive it. ``serve`` is the local engine's side: frames in
from the parent, frames out. The worker keeps each host's SSH connection (and tailers) open
between calls, runs a call's hosts on the lanes the caller grants it (``Grant``: its part of
``batch_size``, which grows when other workers free lanes) and streams one ``HostDone`` per host.
A host never brings the worker down: every failure becomes that host's ``status=-1`` result with
its error kind.

Descriptors: open direct connections plus those being closed stay within the budget left under
the open-file limit (idle ones are closed, least recently used first, and hosts wait for room);
tunnelled hosts use none here. Lanes are capped at half the budget because a lane may hold one
local file (``sftp_read`` to disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import resource
import signal
import sys
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import uvloop

from hussh import _transport
from hussh._result import SKIPPED, STOPPED, RawResult
from hussh._spec import ConnectSpec, Retry
from hussh.aio import AsyncConnection, AsyncFileTailer, OutputBudget, stop_abandoned
from hussh.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    describe,
)

from . import protocol as p

Job = Callable[[AsyncConnection], Awaitable[RawResult]]
SKIPPED_RESULT = RawResult(b"", b"", -1, SKIPPED)  # a host the call never started (halted)

Emit = Callable[[p.HostDone | p.Started | p.Output | p.KeyLearned | p.Alive | p.CallDone], None]
Writable = Callable[[], Awaitable[object]]
"""Waits until the frames emitted so far are on their way (the caller reads them), so a followed tail
reads no further ahead of the caller than that."""
FOLLOW_READ = 1 << 20
"""The most bytes one read of a followed tail takes (another follows at once when it is full)."""

CONNECT_FAILURES = (ConnectError, ConnectTimeout, AuthenticationError, ConfigError)
"""Failures that happen before anything ran on the host: remembered for the cool-down."""
_TRANSIENT = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH}
ABORT_GRACE = 1.0  # seconds an aborting worker gives its connections to carry the remote kills out


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return how many connections fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return max(1, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - p.FD_RESERVE)


def run(read_fd: int, write_fd: int) -> None:
    """Entry point in a new worker process: serve until Shutdown, or until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    tune_gc()
    uvloop.run(serve(read_fd, write_fd))


def tune_gc() -> None:
    """What a worker inherits is never garbage here (stop scanning it), and asyncssh allocates a lot
    per packet: collect young objects less often."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


class _Failure(msgspec.Struct, gc=False):
    kind: str
    message: str
    at: float  # monotonic
    wall: float  # time.time(), for the message


class Worker:
    """A shard of hosts and what it remembers between calls; ``handle`` runs one call."""

    def __init__(self, emit: Emit, fd_budget: int, writable: Writable | None = None) -> None:
        self.emit = emit
        self.writable = writable or _at_once
        self.conns: dict[int, AsyncConnection] = {}
        self.tailers: dict[int, AsyncFileTailer] = {}
        self.failures: dict[int, _Failure] = {}
        self.retry = Retry()
        self.max_lanes = 1  # the most hosts run at once, whatever is granted
        self.granted = 0  # lanes of the current call: hosts it may run at once
        self.credit: dict[int, int] = {}  # lanes granted to a call not started yet: req -> lanes
        self.active = 0  # hosts of the current call started and not finished
        self.wake = asyncio.Event()  # set when a host finishes, lanes come, or a Halt: the call may start more
        self.fd_budget = fd_budget
        self.max_open = fd_budget
        self.open_lru: OrderedDict[int, None] = OrderedDict()  # directly connected hosts, least recently used first
        self.closing = 0  # evicted connections whose sockets are not closed yet
        self.busy: set[int] = set()
        self.served: set[int] = set()  # hosts the current call is done with: the first to close for room
        self.released = asyncio.Event()
        self.hops: dict[ConnectSpec, tuple[int, int]] = {}  # each assigned spec and bastion -> (host index, hop)
        self.halted: p.Halt | None = None  # the last Halt received: no new host of its call starts
        self.running: dict[int, asyncio.Task[RawResult]] = {}  # the current call's hosts being run
        self.woken: asyncio.Event | None = None  # set by a Halt of the call following tails: they end
        self.req = -1  # the current (or last) call's request id

    def assign(self, message: p.Assign) -> None:
        if message.cwd:
            os.chdir(message.cwd)
        if message.env is not None:
            os.environ.clear()
            os.environ.update(message.env)
        self.max_lanes = max(1, min(message.concurrency, self.fd_budget // 2))
        self.max_open = max(1, self.fd_budget - self.max_lanes)
        self.retry = message.retry
        _transport.install(message.keys, message.known, message.retry)
        for index, spec in message.hosts:
            self.conns[index] = AsyncConnection.from_spec(spec, record_keys=False)
            number, hop = 0, spec  # type: tuple[int, ConnectSpec | None]
            while hop is not None:
                self.hops.setdefault(hop, (index, number))
                number, hop = number + 1, hop.jump

    def owns(self, call: p.Call) -> bool:
        """Whether every host ``call`` names belongs to this worker's shard."""
        named = call.paths if isinstance(call, p.TailFollow) else self.jobs(call)
        return all(index in self.conns for index, _ in named)

    async def handle(self, call: p.Call) -> None:
        """Run ``call`` on its hosts, in order, as many at once as it has lanes (``grant``), emitting each
        host's result as it finishes."""
        self.served = set()
        self.req = call.req
        self.granted, self.active = self.credit.pop(call.req, 0), 0
        self.credit.clear()
        if isinstance(call, p.TailFollow):
            heartbeat = asyncio.create_task(self.beat(call.req))
            try:
                with _transport.per_call(retry_bastions=False):
                    await self.follow(call)
            finally:
                heartbeat.cancel()
            self.emit(p.CallDone(call.req))
            return
        jobs = deque(self.jobs(call))

        async def host(index: int, job: Job) -> None:
            started = time.monotonic()
            try:
                result = await self.run_host(index, job, retry_failed=isinstance(call, p.Connect))
                self.report_keys(call.req, index)
                self.emit(p.HostDone(call.req, index, result, time.monotonic() - started))
            finally:
                self.active -= 1
                self.wake.set()

        heartbeat = asyncio.create_task(self.beat(call.req))
        try:
            with _transport.per_call(retry_bastions=isinstance(call, p.Connect)):
                async with asyncio.TaskGroup() as hosts:
                    while jobs:
                        if self.halted is not None and self.halted.req == call.req:
                            for index, _ in jobs:
                                self.emit(p.HostDone(call.req, index, SKIPPED_RESULT))
                            break
                        if self.active < min(self.granted, self.max_lanes):
                            index, job = jobs.popleft()
                            self.active += 1
                            self.emit(p.Started(call.req, index))
                            hosts.create_task(host(index, job))
                            continue
                        self.wake.clear()
                        await self.wake.wait()
        finally:
            heartbeat.cancel()
        self.emit(p.CallDone(call.req))

    def grant(self, message: p.Grant) -> None:
        """More lanes for call ``message.req``: kept for it if it has not started yet, ignored if it is over."""
        lanes = max(0, message.lanes)
        if message.req == self.req:
            self.granted += lanes
            self.wake.set()
        elif message.req > self.req:
            self.credit[message.req] = self.credit.get(message.req, 0) + lanes

    async def run_host(self, index: int, job: Job, retry_failed: bool) -> RawResult:
        """``guarded`` as a task of its own, so that a ``Halt`` with ``stop_running`` can stop this host alone."""
        task = asyncio.ensure_future(self.guarded(index, job, retry_failed))
        self.running[index] = task
        try:
            return await task  # cancelling this lane (the whole call: Ctrl-C) cancels the host's task and waits for it
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise
            return RawResult(b"", f"{STOPPED}: the run was halted (its failure budget was exceeded) while "
                             "this host ran; its command was stopped".encode(), -1, STOPPED)
        finally:
            del self.running[index]

    def halt(self, message: p.Halt) -> None:
        """Start no new host of call ``message.req``; with ``stop_running``, stop those running (their
        remote commands get a KILL signal, as on a timeout)."""
        self.halted = message
        self.wake.set()
        if message.req == self.req and self.woken is not None:
            self.woken.set()
        if message.stop_running and message.req == self.req:  # a late Halt never touches the next call
            for task in self.running.values():
                task.cancel()

    async def beat(self, req: int) -> None:
        """Tell the parent every ``HEARTBEAT_EVERY`` seconds that this worker still runs ``req``."""
        while True:
            await asyncio.sleep(p.HEARTBEAT_EVERY)
            self.emit(p.Alive(req))

    def report_keys(self, req: int, index: int) -> None:
        """Send the keys accepted on first use, each named by a host of this shard and hop of its chain
        whose spec it is (a bastion's key may come through another host: bastions are shared)."""
        conn = self.conns[index]
        for spec, key in conn.learned:
            where = self.hops.get(spec)
            if where is not None:
                self.emit(p.KeyLearned(req, *where, key))
        conn.learned.clear()

    async def follow(self, call: p.TailFollow) -> None:
        """Follow each host's file from the moment its own tail is open, whatever the other hosts do (one
        still connecting, or never answering, holds no other back); opens and reads take the lanes the
        call came with at a time (its followed hosts hold them all: none is freed until the halt)."""
        self.woken = asyncio.Event()
        lanes = asyncio.Semaphore(max(1, min(self.granted, self.max_lanes)))
        try:
            await asyncio.gather(*(self._follow_host(call, lanes, index, path) for index, path in call.paths))
        finally:
            self.woken = None

    async def _follow_host(self, call: p.TailFollow, lanes: asyncio.Semaphore, index: int, path: str) -> None:
        async with lanes:
            if self.halted is not None and self.halted.req == call.req:
                self.emit(p.HostDone(call.req, index, SKIPPED_RESULT))
                return
            self.emit(p.Started(call.req, index))
            started = time.monotonic()
            tailer = self.conns[index].tail(path)
            result = await self.run_host(index, _tail_start(tailer, call.since, call.lines), retry_failed=False)
            self.report_keys(call.req, index)
        try:
            if result.status == 0:
                result = await self._stream(call, lanes, index, tailer)
        finally:
            tailer.close()  # the file held open for it (also when the call is cancelled)
        self.emit(p.HostDone(call.req, index, result, time.monotonic() - started))

    async def _stream(self, call: p.TailFollow, lanes: asyncio.Semaphore, index: int,
                      tailer: AsyncFileTailer) -> RawResult:
        """Send what is appended to host ``index``'s file until the call is halted (its result then: status
        0), or a read fails (that failure); never more than the caller takes in."""
        woken = self.woken
        assert woken is not None
        self.emit(p.Output(call.req, index, b""))  # following
        while not woken.is_set():
            await self.writable()
            room = OutputBudget(FOLLOW_READ)
            async with lanes:
                result = await self.run_host(index, _tail_chunk(tailer, room), retry_failed=False)
            if result.status != 0:
                return result
            if result.stdout:
                self.emit(p.Output(call.req, index, result.stdout))
            if room.left:  # all there was: wait for more
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(call.interval):
                        await woken.wait()
        return RawResult()

    def jobs(self, call: p.Call) -> list[tuple[int, Job]]:
        """One job per host of the call; each returns that host's result or raises."""
        match call:
            case p.Execute(commands=commands, timeout=timeout, budget=budget):
                shared = OutputBudget(budget) if budget else None
                return [(i, _execute(command, timeout, shared, call)) for i, command in commands]
            case p.Connect(indices=indices, timeout=timeout):
                return [(i, _connect(timeout)) for i in indices]
            case p.WriteData(indices=indices, data=data, remote_path=remote_path, mode=mode):
                return [(i, _write_data(data, remote_path, mode)) for i in indices]
            case p.ReadFile(indices=indices, remote_path=remote_path, local_paths=local_paths, budget=budget):
                locals_: Sequence[str | None] = local_paths or [None] * len(indices)
                shared = OutputBudget(budget) if budget else None
                return [(i, _read_file(remote_path, local, shared)) for i, local in zip(indices, locals_)]
            case p.TailOpen(paths=paths, since=since, lines=lines):
                return [(i, self._tail_open(i, path, since, lines)) for i, path in paths]
            case p.TailRead(indices=indices, from_pos=from_pos, budget=budget):
                shared = OutputBudget(budget) if budget else None
                return [(i, self._tail_read(i, from_pos, shared)) for i in indices]
            case p.TailClose(indices=indices):
                return [(i, self._tail_close(i)) for i in indices]
            case p.Close(indices=indices):
                return [(i, self._close(i)) for i in indices]
            case p.PutDir(indices=indices):
                return [(i, _put_tree(call)) for i in indices]
            case p.GetDir(indices=indices, local_paths=local_paths):
                return [(i, _get_tree(call, local)) for i, local in zip(indices, local_paths)]
        raise TypeError(f"unknown call {type(call).__name__}")

    async def guarded(self, index: int, job: Job, retry_failed: bool) -> RawResult:
        """Run one host's job; any failure becomes its ``status=-1`` result, output kept where there is some.

        A host that failed to connect within the cool-down is not tried again (unless this is
        ``connect()``); connect failures worth it are retried with backoff and jitter, and only
        those: nothing had started on the host.
        """
        conn = self.conns[index]
        skipped = None if retry_failed or conn.connected else self._still_cooling(index)
        if skipped is not None:
            return skipped
        self.busy.add(index)
        try:
            attempt = 0
            while True:
                try:
                    await self.make_room(index)
                    result = await job(conn)
                except CONNECT_FAILURES as exc:
                    attempt += 1
                    if attempt >= self.retry.attempts or not _transient(exc):
                        raise
                    await asyncio.sleep(self.retry.pause(attempt - 1))
                    continue
                self.failures.pop(index, None)
                return result.noted() if result.error else result  # stopped, its output kept
        except CONNECT_FAILURES as exc:
            self.failures[index] = _Failure(type(exc).__name__, str(exc), time.monotonic(), time.time())
            return _failed(exc)
        except Exception as exc:  # noqa: BLE001 - one host's failure must never end the call
            return _failed(exc)
        finally:
            self.busy.discard(index)
            self.served.add(index)
            if conn.connected and conn.spec.jump is None:
                self.open_lru[index] = None
                self.open_lru.move_to_end(index)
            else:
                self.open_lru.pop(index, None)
            self.released.set()

    def _still_cooling(self, index: int) -> RawResult | None:
        """The remembered failure of a host that failed to connect less than ``cooldown`` seconds ago."""
        failure = self.failures.get(index)
        if failure is None:
            return None
        ago = time.monotonic() - failure.at
        if ago >= self.retry.cooldown:
            return None
        when = time.strftime("%H:%M:%S", time.localtime(failure.wall))
        note = (f" (not retried: this host failed to connect {ago:.0f} s ago, at {when}; it is tried again "
                f"{self.retry.cooldown:g} s after the failure, or at once by connect())")
        return RawResult(b"", f"{failure.kind}: {failure.message}{note}".encode(), -1, failure.kind)

    async def make_room(self, index: int) -> None:
        """Before ``index`` opens a direct connection, close idle ones to stay under the fd budget.

        The one closed is the most recently used host this call is done with, else the least
        recently used idle one. Calls that sweep more hosts than fit (a batch job's rounds) then keep
        the same hosts connected from call to call and reconnect only the overflow each time, where
        plain LRU would close each host just before the next call needs it and reconnect them all.
        """
        conn = self.conns[index]
        if conn.connected or conn.spec.jump is not None:
            return
        while len(self.open_lru) + self.closing >= self.max_open:
            idle = next((i for i in reversed(self.open_lru) if i in self.served and i not in self.busy), None)
            if idle is None:
                idle = next((i for i in self.open_lru if i not in self.busy), None)
            if idle is None:
                self.released.clear()
                await self.released.wait()
                continue
            del self.open_lru[idle]
            self._drop_tailer(idle)
            self.closing += 1
            try:
                await _close_quietly(self.conns[idle])
            finally:
                self.closing -= 1
                self.released.set()
        self.open_lru[index] = None

    def _tail_open(self, index: int, path: str, since: float | None, lines: int) -> Job:
        async def job(conn: AsyncConnection) -> RawResult:
            self._drop_tailer(index)  # a tail opened again: the earlier one lets its file go
            tailer = conn.tail(path)
            await _tail_start(tailer, since, lines)(conn)
            self.tailers[index] = tailer
            return RawResult()
        return job

    def _tail_read(self, index: int, from_pos: int | None, budget: OutputBudget | None) -> Job:
        async def job(conn: AsyncConnection) -> RawResult:
            return RawResult(await self._tailer(index).read_bytes(from_pos, budget=budget))
        return job

    def _tail_close(self, index: int) -> Job:
        async def job(conn: AsyncConnection) -> RawResult:
            tailer = self._tailer(index)
            self._drop_tailer(index)
            return RawResult(await tailer.contents_bytes())
        return job

    def _tailer(self, index: int) -> AsyncFileTailer:
        try:
            return self.tailers[index]
        except KeyError:
            raise LookupError(
                "no open tailer for this host (its tail failed to start or its connection was recycled)") from None

    def _drop_tailer(self, index: int) -> None:
        """Forget host ``index``'s tailer, letting go of the file it holds open."""
        tailer = self.tailers.pop(index, None)
        if tailer is not None:
            tailer.close()

    def _close(self, index: int) -> Job:
        async def job(conn: AsyncConnection) -> RawResult:
            self._drop_tailer(index)
            await _close_quietly(conn)
            return RawResult()
        return job

    async def close_all(self, grace: float | None = None) -> None:
        """Disconnect every host, then the bastions and the agent; within ``grace`` seconds if given."""
        async def close() -> None:
            await asyncio.gather(*(_close_quietly(conn) for conn in self.conns.values()))
            await _transport.close()

        try:
            async with asyncio.timeout(grace):
                await close()
        except TimeoutError:
            pass


def _tail_start(tailer: AsyncFileTailer, since: float | None, lines: int) -> Job:
    """Open ``tailer`` (its file held open) at the file's end or, with ``since``, where it was then."""
    async def job(conn: AsyncConnection) -> RawResult:
        await tailer.start(since, lines)
        return RawResult()
    return job


def _tail_chunk(tailer: AsyncFileTailer, room: OutputBudget) -> Job:
    async def job(conn: AsyncConnection) -> RawResult:
        return RawResult(await tailer.read_bytes(budget=room))
    return job


async def _at_once() -> None:
    """``Writable`` of a worker whose frames never wait (nothing to pace)."""


def _execute(command: str, timeout: float | None, budget: OutputBudget | None, call: p.Execute) -> Job:
    return lambda conn: conn.execute_raw(command, timeout, budget=budget, input=call.stdin, sudo=call.sudo,
                                         sudo_password=call.sudo_password)


def _connect(timeout: float | None) -> Job:
    async def job(conn: AsyncConnection) -> RawResult:
        await conn.connect(timeout)
        return RawResult()
    return job


def _write_data(data: bytes, remote_path: str, mode: int | None) -> Job:
    async def job(conn: AsyncConnection) -> RawResult:
        await conn.sftp_write_data(data, remote_path, mode=mode)
        return RawResult()
    return job


def _read_file(remote_path: str, local_path: str | None, budget: OutputBudget | None) -> Job:
    async def job(conn: AsyncConnection) -> RawResult:
        if local_path is None:
            return await conn.sftp_read_raw(remote_path, budget=budget)
        await conn.sftp_read(remote_path, local_path)
        return RawResult(os.fsencode(local_path))  # saved: the result names the file
    return job


def _put_tree(call: p.PutDir) -> Job:
    """Upload the caller's directory (or file) to one host; its result lists what was sent and what failed."""
    async def job(conn: AsyncConnection) -> RawResult:
        if not os.path.isdir(call.local_path):
            await conn.sftp_write(call.local_path, call.remote_path)
            return RawResult(os.fsencode(call.local_path) + b"\n")
        failures: list[OSError] = []
        sent, _ = await conn.sftp_put_dir(call.local_path, call.remote_path, call.follow_symlinks,
                                          call.preserve_permissions, failures=failures)
        return _tree_result(sent, failures)
    return job


def _get_tree(call: p.GetDir, local_path: str) -> Job:
    """Download one host's directory (or file) to ``local_path``; its result lists what was saved and what failed."""
    async def job(conn: AsyncConnection) -> RawResult:
        failures: list[OSError] = []
        saved, failed = await conn.sftp_get_dir(call.remote_path, local_path, call.follow_symlinks,
                                                call.preserve_permissions, failures=failures)
        if failed == [call.remote_path] and isinstance(failures[0], NotADirectoryError):  # a file: fetch it
            await conn.sftp_read(call.remote_path, local_path)
            return RawResult(call.remote_path.encode(errors="surrogateescape") + b"\n")
        return _tree_result(saved, failures)
    return job


def _tree_result(done: list[str], failures: list[OSError]) -> RawResult:
    """A tree transfer's result: the files done, one a line; with failures, one line each (kind: message),
    then (``noted``) a count under the first one's kind, which is the host's error."""
    listed = "".join(f"{path}\n" for path in done).encode(errors="surrogateescape")
    if not failures:
        return RawResult(listed)
    lines = "".join(f"{describe(exc)}\n" for exc in failures).encode(errors="replace")
    count = f"{len(failures)} of {len(done) + len(failures)} entries failed (each named above)"
    return RawResult(listed, lines, -1, type(failures[0]).__name__, count)


def _failed(exc: Exception) -> RawResult:
    """A host's failure as its result: nothing kept, stderr saying which kind and why."""
    return RawResult(b"", describe(exc).encode(errors="replace"), -1, type(exc).__name__)


async def _close_quietly(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except OSError:
        pass


def _transient(exc: BaseException) -> bool:
    """A connect failure worth retrying (timeouts, refused, reset, unreachable), never a login or key refused."""
    if isinstance(exc, ConnectTimeout):
        return True
    return type(exc) is ConnectError and exc.errno in _TRANSIENT


class _Paced(asyncio.Protocol):
    """The pipe to the parent: ``drained`` waits while the transport holds more than its high-water mark
    (the parent is not reading)."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()

    def pause_writing(self) -> None:
        self.ready.clear()

    def resume_writing(self) -> None:
        self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready.set()  # nothing to wait for any more: the call ends on the request pipe's end of file

    async def drained(self) -> None:
        await self.ready.wait()


async def serve(read_fd: int, write_fd: int) -> None:
    """The local engine's worker: requests from ``read_fd``, frames to ``write_fd``, until told to stop.

    End of file on the request pipe (the parent was interrupted, closed the pool or died) stops
    the call in progress: its remote commands get TERM then KILL, as on a timeout, then the worker
    disconnects within ``ABORT_GRACE`` and exits. So do bytes that are not a request of ours
    (garbage, a frame over ``MAX_REQUEST``, a call naming hosts this worker was not given) and a
    call that crashed: the parent sees end of file and reports the worker lost.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
    out, pipe = await loop.connect_write_pipe(_Paced, os.fdopen(write_fd, "wb", 0))
    encoder = msgspec.msgpack.Encoder()
    frames = p.FrameDecoder(p.Request, p.MAX_REQUEST)
    outbox: list[bytes | bytearray] = []

    def flush() -> None:
        out.writelines(outbox)  # not joined first: that would copy a host's output once per host
        outbox.clear()

    def emit(message: p.HostDone | p.Started | p.Output | p.KeyLearned | p.Alive | p.CallDone) -> None:
        """Queue a frame; frames queued in one loop turn go out together (fewer parent wake-ups)."""
        if not outbox:
            loop.call_soon(flush)
        outbox.extend(p.encode_frame(encoder, message))

    def stop_if_crashed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            traceback.print_exception(task.exception(), file=sys.stderr)  # a bug here: say where
            reader.feed_eof()

    worker = Worker(emit, raise_fd_limit(), pipe.drained)
    current: asyncio.Task[None] | None = None
    try:
        while True:
            chunk = await reader.read(1 << 20)
            stray = False  # a call for hosts this worker was not given: not our parent speaking
            for message in frames.feed(chunk):
                if isinstance(message, p.Halt):
                    worker.halt(message)  # at once: the call it halts is running
                    continue
                if isinstance(message, p.Grant):
                    worker.grant(message)  # at once: its call is running, or kept until it starts
                    continue
                if isinstance(message, p.Shutdown):
                    if current is not None:
                        await current
                    await worker.close_all()
                    return
                if current is not None and not current.done():
                    await current  # the parent sends one call at a time; never interleave
                if isinstance(message, p.Assign):
                    worker.assign(message)
                elif not worker.owns(message):
                    stray = True
                    break
                else:
                    current = asyncio.create_task(worker.handle(message))
                    current.add_done_callback(stop_if_crashed)
            if not chunk or frames.error or stray:
                if current is not None and not current.done():
                    current.cancel()  # stops remote commands (TERM, then KILL), as a timeout does
                    with contextlib.suppress(BaseException):
                        await current
                    await stop_abandoned(ABORT_GRACE)  # before the connections close under the signals
                await worker.close_all(ABORT_GRACE)
                return
    finally:
        if outbox:
            flush()
