"""Worker process: one uvloop event loop serving its shard of hosts for the life of the pool.

It keeps each host's SSH connection (and tailers) open between calls, runs a call's hosts on at
most ``concurrency`` lanes (its share of ``batch_size``), and streams one ``HostDone`` per host.
A host never brings the worker down: every failure becomes that host's ``status=-1`` result.

Descriptors: open connections plus those being closed stay within the budget left under the
open-file limit (idle ones are closed, least recently used first, and hosts wait for room), and
lanes are capped at half the budget because a lane may hold one local file (``sftp_read`` to disk).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import msgspec
import uvloop

from hussh._result import SSHResult
from hussh.aio import AsyncConnection, AsyncFileTailer
from hussh.errors import CommandTimeout, OutputLimitExceeded, describe

from . import protocol as p


Job = Callable[[AsyncConnection], Awaitable[SSHResult]]


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return how many connections fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return max(1, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - p.FD_RESERVE)


def run(read_fd: int, write_fd: int) -> None:
    """Entry point in the forked child: serve until Shutdown or until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.freeze()  # what the parent left behind is never garbage here: stop scanning it
    gc.set_threshold(50_000, 20, 20)  # asyncssh allocates a lot per packet; collect less often
    uvloop.run(Worker(raise_fd_limit()).serve(read_fd, write_fd))


class Worker:
    def __init__(self, fd_budget: int) -> None:
        self.conns: dict[int, AsyncConnection] = {}
        self.tailers: dict[int, AsyncFileTailer] = {}
        self.lanes = 1
        self.fd_budget = fd_budget
        self.max_open = fd_budget
        self.open_lru: OrderedDict[int, None] = OrderedDict()  # connected hosts, least recently used first
        self.closing = 0  # evicted connections whose sockets are not closed yet
        self.busy: set[int] = set()
        self.released = asyncio.Event()
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(p.Request)
        self.outbox: list[bytes] = []
        self.heartbeat: asyncio.TimerHandle | None = None  # the pending Alive of the call being served

    async def serve(self, read_fd: int, write_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        self.out, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_fd, "wb", 0))
        try:
            while True:
                try:
                    (size,) = p.HEADER.unpack(await reader.readexactly(p.HEADER.size))
                    message = self.decoder.decode(await reader.readexactly(size))
                except asyncio.IncompleteReadError:
                    return  # the parent closed the pipe or died
                if isinstance(message, p.Shutdown):
                    return
                if isinstance(message, p.Assign):
                    self.assign(message)
                else:
                    await self.handle(message)
        finally:
            await self.close_all()

    def assign(self, message: p.Assign) -> None:
        self.lanes = max(1, min(message.concurrency, self.fd_budget // 2))
        self.max_open = max(1, self.fd_budget - self.lanes)
        for index, spec in message.hosts:
            self.conns[index] = AsyncConnection.from_spec(spec)

    def send(self, message: p.HostDone | p.CallDone) -> None:
        """Queue a frame; frames queued in one loop turn go out in one write (fewer parent wake-ups)."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outbox.append(p.frame(self.encoder.encode(message)))

    def flush(self) -> None:
        self.out.write(b"".join(self.outbox))
        self.outbox.clear()

    async def handle(self, call: p.Call) -> None:
        jobs = self.jobs(call)
        lanes = iter(jobs)

        async def lane() -> None:
            for index, job in lanes:
                self.send(p.HostDone(call.req, index, await self.guarded(index, job)))

        self.heartbeat = asyncio.get_running_loop().call_later(p.HEARTBEAT_EVERY, self.beat, call.req)
        try:
            await asyncio.gather(*(lane() for _ in range(min(self.lanes, len(jobs)))))
        finally:
            if self.heartbeat is not None:
                self.heartbeat.cancel()
                self.heartbeat = None
        self.send(p.CallDone(call.req))

    def beat(self, req: int) -> None:
        """Tell the parent this worker still runs ``req`` (its loop turns), then again in a while."""
        self.send(p.Alive(req))
        self.heartbeat = asyncio.get_running_loop().call_later(p.HEARTBEAT_EVERY, self.beat, req)

    def jobs(self, call: p.Call) -> list[tuple[int, Job]]:
        """One job per host of the call; each returns that host's result or raises."""
        match call:
            case p.Execute(commands=commands, timeout=timeout):
                return [(i, _execute(command, timeout)) for i, command in commands]
            case p.Connect(indices=indices, timeout=timeout):
                return [(i, _connect(timeout)) for i in indices]
            case p.WriteData(indices=indices, data=data, remote_path=remote_path):
                return [(i, _write_data(data, remote_path)) for i in indices]
            case p.ReadFile(indices=indices, remote_path=remote_path, local_paths=local_paths):
                locals_ = local_paths or [None] * len(indices)
                return [(i, _read_file(remote_path, local)) for i, local in zip(indices, locals_)]
            case p.TailOpen(paths=paths):
                return [(i, self._tail_open(i, path)) for i, path in paths]
            case p.TailRead(indices=indices, from_pos=from_pos):
                return [(i, self._tail_read(i, from_pos)) for i in indices]
            case p.TailClose(indices=indices):
                return [(i, self._tail_close(i)) for i in indices]
            case p.Close(indices=indices):
                return [(i, self._close(i)) for i in indices]
        raise TypeError(f"unknown call {type(call).__name__}")

    async def guarded(self, index: int, job: Job) -> SSHResult:
        """Run one host's job; any failure becomes its ``status=-1`` result, output kept where there is some."""
        conn = self.conns[index]
        self.busy.add(index)
        try:
            await self.make_room(index)
            return await job(conn)
        except (CommandTimeout, OutputLimitExceeded) as exc:
            partial = exc.result
            stderr = f"{partial.stderr}{describe(exc)}" if not partial.stderr or partial.stderr.endswith("\n") \
                else f"{partial.stderr}\n{describe(exc)}"
            return SSHResult(partial.stdout, stderr, -1)
        except Exception as exc:  # noqa: BLE001 - one host's failure must never end the call
            return SSHResult("", describe(exc), -1)
        finally:
            self.busy.discard(index)
            if conn.connected:
                self.open_lru[index] = None
                self.open_lru.move_to_end(index)
            else:
                self.open_lru.pop(index, None)
            self.released.set()

    async def make_room(self, index: int) -> None:
        """Before ``index`` opens a connection, close idle ones (least recently used) to stay under the fd budget."""
        if self.conns[index].connected:
            return
        while len(self.open_lru) + self.closing >= self.max_open:
            idle = next((i for i in self.open_lru if i not in self.busy), None)
            if idle is None:
                self.released.clear()
                await self.released.wait()
                continue
            del self.open_lru[idle]
            self.tailers.pop(idle, None)
            self.closing += 1
            try:
                await _close_quietly(self.conns[idle])
            finally:
                self.closing -= 1
                self.released.set()
        self.open_lru[index] = None

    def _tail_open(self, index: int, path: str) -> Job:
        async def job(conn: AsyncConnection) -> SSHResult:
            tailer = await conn.tail(path).__aenter__()
            self.tailers[index] = tailer
            return SSHResult(status=0)
        return job

    def _tail_read(self, index: int, from_pos: int | None) -> Job:
        async def job(conn: AsyncConnection) -> SSHResult:
            return SSHResult(await self._tailer(index).read(from_pos))
        return job

    def _tail_close(self, index: int) -> Job:
        async def job(conn: AsyncConnection) -> SSHResult:
            tailer = self._tailer(index)
            del self.tailers[index]
            await tailer.__aexit__(None, None, None)
            return SSHResult(tailer.contents or "")
        return job

    def _tailer(self, index: int) -> AsyncFileTailer:
        try:
            return self.tailers[index]
        except KeyError:
            raise LookupError("no open tailer for this host (its tail failed to start or its connection was recycled)")

    def _close(self, index: int) -> Job:
        async def job(conn: AsyncConnection) -> SSHResult:
            self.tailers.pop(index, None)
            await _close_quietly(conn)
            return SSHResult(status=0)
        return job

    async def close_all(self) -> None:
        await asyncio.gather(*(_close_quietly(conn) for conn in self.conns.values()))


def _execute(command: str, timeout: float | None) -> Job:
    return lambda conn: conn.execute(command, timeout)


def _connect(timeout: float | None) -> Job:
    async def job(conn: AsyncConnection) -> SSHResult:
        await conn.connect(timeout)
        return SSHResult(status=0)
    return job


def _write_data(data: bytes, remote_path: str) -> Job:
    async def job(conn: AsyncConnection) -> SSHResult:
        await conn.sftp_write_data(data, remote_path)
        return SSHResult(status=0)
    return job


def _read_file(remote_path: str, local_path: str | None) -> Job:
    async def job(conn: AsyncConnection) -> SSHResult:
        text = await conn.sftp_read(remote_path, local_path)
        return SSHResult(local_path if text is None else text)
    return job


async def _close_quietly(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except OSError:
        pass
