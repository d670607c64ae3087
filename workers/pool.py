"""Parent side of the engine: forks the workers, shards hosts, sends calls, merges streamed results.

Host ``i`` always lives in worker ``i % N``, so its SSH connection stays open in one process across
calls. A call sends one request per involved worker, then waits on all result pipes at once. A
worker that dies, sends garbage or falls silent (stopped, stuck: no frame, not even its heartbeat,
for ``STALL_LIMIT`` seconds) turns its unfinished hosts into ``WorkerLost`` results and is replaced
(with its shard re-assigned) before the next call. Ctrl-C kills the workers at once.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import selectors
import signal
import sys
import time
from collections.abc import Callable, Iterable

import msgspec

from hussh._connector import prepare
from hussh._result import SSHResult
from hussh._spec import ConnectSpec
from hussh.errors import WorkerLost, describe

from . import protocol as p

log = logging.getLogger("hussh")

MIN_HOSTS_PER_WORKER = 64  # below this, another process costs more than it saves
SHUTDOWN_GRACE = 5.0  # seconds workers get to disconnect politely before SIGKILL
PROGRESS_EVERY = 5.0  # seconds between progress log lines on long calls
STALL_LIMIT = 10 * p.HEARTBEAT_EVERY  # seconds of silence after which a busy worker counts as lost

Progress = Callable[[int, int], None]


def default_worker_count(hosts: int) -> int:
    """One worker per CPU, but no more than the hosts justify, and enough for the fd limit."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = min(cpus, math.ceil(hosts / MIN_HOSTS_PER_WORKER))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:  # a worker holds about (hard limit - reserve) connections open
        count = max(count, math.ceil(hosts / max(1, hard - p.FD_RESERVE)))
    return count  # WorkerPool clamps it to the hosts and batch_size, like an explicit workers=


def split_shares(batch_size: int, sizes: list[int]) -> list[int]:
    """Split ``batch_size`` over shards in proportion to their sizes; shares sum to it, none below 1."""
    total = sum(sizes)
    shares = [max(1, batch_size * size // total) for size in sizes]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    i = 0
    while sum(shares) != batch_size:
        j = order[i % len(order)]
        if sum(shares) < batch_size:
            shares[j] += 1
        elif shares[j] > 1:
            shares[j] -= 1
        i += 1
    return shares


class _Worker:
    """One forked worker and the parent's ends of its two pipes."""

    def __init__(self, pid: int, to_worker: int, from_worker: int) -> None:
        self.pid, self.to_worker, self.from_worker = pid, to_worker, from_worker
        self.buffer = bytearray()
        self.exit_note = ""

    def send(self, payload: bytes) -> None:
        view = memoryview(p.frame(payload))
        while view:
            view = view[os.write(self.to_worker, view):]

    def reap(self, kill: bool = False) -> None:
        """Close our pipe ends and collect the process (after SIGKILL if ``kill``)."""
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return
        if os.WIFSIGNALED(status):
            self.exit_note = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            self.exit_note = f"exit status {os.WEXITSTATUS(status)}"


class WorkerPool:
    """N worker processes serving a fixed table of hosts; ``call`` runs one operation on some of them."""

    def __init__(self, specs: list[ConnectSpec], batch_size: int, workers: int | None = None) -> None:
        self.specs = specs
        prepare(specs)  # keys decrypted and known_hosts parsed once, here: the forked workers inherit them
        count = workers or default_worker_count(len(specs))
        self.count = max(1, min(count, len(specs), batch_size))
        self.shares = split_shares(batch_size, [len(range(w, len(specs), self.count)) for w in range(self.count)])
        self.workers: list[_Worker | None] = [None] * self.count
        self.owner = os.getpid()
        self.next_req = 0
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(p.Reply)

    def shard(self, index: int) -> int:
        return index % self.count

    def call(
        self,
        build: Callable[[int, list[int]], p.Call],
        indices: Iterable[int],
        progress: Progress | None = None,
    ) -> dict[int, SSHResult]:
        """Run ``build(req, shard_indices)`` on each involved worker; return every index's result."""
        shards: dict[int, list[int]] = {}
        for index in indices:
            shards.setdefault(self.shard(index), []).append(index)
        self.next_req += 1
        req = self.next_req
        results: dict[int, SSHResult] = {}
        pending: dict[int, set[int]] = {}
        total = sum(len(v) for v in shards.values())
        try:
            for number, shard_indices in shards.items():
                worker = self._worker(number)
                try:
                    worker.send(self.encoder.encode(build(req, shard_indices)))
                    pending[number] = set(shard_indices)
                except OSError as exc:
                    self._lose(number, set(shard_indices), results, f"could not send the call ({exc})")
            self._gather(req, pending, results, total, progress)
        except BaseException:
            self.terminate()  # Ctrl-C or a bug: leave no worker behind, never hang
            raise
        return results

    def _gather(self, req: int, pending: dict[int, set[int]], results: dict[int, SSHResult],
                total: int, progress: Progress | None) -> None:
        selector = selectors.DefaultSelector()
        heard: dict[int, float] = {}  # worker -> when it last sent a frame
        for number in pending:
            selector.register(self._live(number).from_worker, selectors.EVENT_READ, number)
            heard[number] = time.monotonic()
        next_log = time.monotonic() + PROGRESS_EVERY
        try:
            while pending:
                for key, _ in selector.select(timeout=min(1.0, STALL_LIMIT)):
                    number = key.data
                    heard[number] = time.monotonic()
                    if not self._drain(number, req, pending, results, progress, total):
                        selector.unregister(key.fileobj)
                now = time.monotonic()
                stalled = [n for n in pending if now - heard[n] > STALL_LIMIT]
                if stalled:  # frames still unread (the parent itself was held up) prove the worker alive
                    unread = {key.data for key, _ in selector.select(timeout=0)}
                    for number in (n for n in stalled if n not in unread):
                        selector.unregister(self._live(number).from_worker)
                        self._lose(number, pending.pop(number), results,
                                   f"it sent nothing for {STALL_LIMIT:g} seconds (stopped or stuck)")
                if now >= next_log:
                    log.info("hussh: %d/%d hosts done", len(results), total)
                    next_log += PROGRESS_EVERY
        finally:
            selector.close()

    def _drain(self, number: int, req: int, pending: dict[int, set[int]], results: dict[int, SSHResult],
               progress: Progress | None, total: int) -> bool:
        """Read what worker ``number`` sent; return False once it is finished or lost."""
        worker = self._live(number)
        try:
            chunk = os.read(worker.from_worker, 1 << 20)
        except OSError as exc:
            chunk = b""
            reason = f"its pipe failed ({exc})"
        else:
            reason = "it exited"
        if not chunk:
            self._lose(number, pending.pop(number), results, reason)
            return False
        buffer = worker.buffer
        buffer += chunk
        while len(buffer) >= p.HEADER.size:
            (size,) = p.HEADER.unpack_from(buffer)
            if len(buffer) < p.HEADER.size + size:
                break
            try:
                message = self.decoder.decode(memoryview(buffer)[p.HEADER.size:p.HEADER.size + size])
            except msgspec.DecodeError as exc:
                self._lose(number, pending.pop(number), results, f"it sent a malformed frame ({exc})")
                return False
            del buffer[:p.HEADER.size + size]
            if message.req != req or isinstance(message, p.Alive):
                continue  # a straggler from an interrupted earlier call, or a heartbeat
            if isinstance(message, p.CallDone):
                for index in pending.pop(number):
                    results[index] = SSHResult("", "WorkerLost: the worker finished without a result for this host", -1)
                return False
            results[message.index] = message.result
            pending[number].discard(message.index)
            if progress is not None:
                progress(len(results), total)
        return True

    def _lose(self, number: int, indices: set[int], results: dict[int, SSHResult], reason: str) -> None:
        """Worker ``number`` is gone or broken: kill it, fail its unfinished hosts, replace it next call."""
        worker = self.workers[number]
        self.workers[number] = None
        if worker is not None:
            worker.reap(kill=True)
            reason = f"{reason}; process {worker.pid} {worker.exit_note}"
        error = describe(WorkerLost(f"worker process lost before this host finished: {reason}"))
        for index in indices:
            results[index] = SSHResult("", error, -1)
        log.warning("hussh: worker %d lost (%s); %d host(s) failed, it is replaced on the next call",
                    number, reason, len(indices))

    def _live(self, number: int) -> _Worker:
        worker = self.workers[number]
        assert worker is not None
        return worker

    def _worker(self, number: int) -> _Worker:
        """The live worker for shard ``number``, forked (and given its shard) if needed."""
        worker = self.workers[number]
        if worker is None:
            worker = self.workers[number] = self._fork(number)
            hosts = [(i, self.specs[i]) for i in range(number, len(self.specs), self.count)]
            worker.send(self.encoder.encode(p.Assign(hosts, self.shares[number])))
        return worker

    def _fork(self, number: int) -> _Worker:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # child: keep only its own pipe ends, serve, never return into the caller's code
            code = 0
            try:
                for other in self.workers:
                    if other is not None:
                        os.close(other.to_worker)
                        os.close(other.from_worker)
                os.close(to_child_w)
                os.close(from_child_r)
                from .main import run  # noqa: PLC0415 - only the child needs the event loop machinery

                run(to_child_r, from_child_w)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        return _Worker(pid, to_child_w, from_child_r)

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Ask every worker to close its connections and exit; SIGKILL any still running after ``grace``."""
        if os.getpid() != self.owner:
            return  # a forked copy of the pool must never touch its siblings
        live = [w for w in self.workers if w is not None]
        self.workers = [None] * self.count
        for worker in live:
            try:
                worker.send(self.encoder.encode(p.Shutdown()))
            except OSError:
                pass
        deadline = time.monotonic() + grace
        for worker in live:
            while time.monotonic() < deadline and _running(worker.pid):
                time.sleep(0.01)
            worker.reap(kill=_running(worker.pid))

    def terminate(self) -> None:
        """Kill every worker now (Ctrl-C, errors): their hosts' connections simply drop."""
        if os.getpid() != self.owner:
            return
        live = [w for w in self.workers if w is not None]
        self.workers = [None] * self.count
        for worker in live:
            worker.reap(kill=True)


def _running(pid: int) -> bool:
    """True while ``pid`` has not exited (it is our child, so a zombie means exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return not done
