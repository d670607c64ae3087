"""The local engine: worker processes on this machine, an I/O adapter over the call core (``hussh.workers.core``).

Host ``i`` always lives in worker ``i % N``, so its SSH connection stays open in one process across
calls. A call sends one request per involved worker on its pipe, with its first lanes (``Grant``;
more follow as other workers free theirs: ``hussh.workers.lanes``), then waits on all result pipes at
once (a selector). The core's policy applies: a worker that dies, sends garbage or falls silent
turns its unfinished hosts into ``WorkerLost`` results and is replaced (with its shard re-assigned)
before the next call, unless it was lost ``MAX_LOSSES`` calls in a row. Ctrl-C closes the request
pipes, so workers stop their remote commands and exit, and kills any still running after
``ABORT_WAIT``.
"""

from __future__ import annotations

import math
import os
import resource
import selectors
import time
import weakref
from collections.abc import Collection, Mapping

import msgspec

from hussh._spec import ConnectSpec, Retry
from hussh._transport import finalized, shipment

from . import _spawn
from . import protocol as p
from .core import IN_CALLBACK, STALL_LIMIT, CallCore, Lost, ShardState

MIN_HOSTS_PER_WORKER = 64  # below this, another process costs more than it saves
SHUTDOWN_GRACE = 5.0  # seconds workers get to disconnect politely before SIGKILL
ABORT_WAIT = 1.5  # seconds interrupted workers get to stop their remote commands before SIGKILL
DEFAULT_RETRY = Retry()  # WorkerPool's default; frozen, so one shared instance is safe

_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def default_worker_count(hosts: int) -> int:
    """One worker per CPU, but no more than the hosts justify, and enough for the fd limit."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = min(cpus, math.ceil(hosts / MIN_HOSTS_PER_WORKER))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:  # a worker holds about (hard limit - reserve) connections open
        count = max(count, math.ceil(hosts / max(1, hard - p.FD_RESERVE)))
    return count  # WorkerPool clamps it to the hosts and batch_size, like an explicit workers=


class _Worker:
    """One worker process and the parent's ends of its two pipes."""

    def __init__(self, process: _spawn.Process, to_worker: int, from_worker: int, max_reply: int) -> None:
        self.process, self.to_worker, self.from_worker = process, to_worker, from_worker
        self.frames = p.FrameDecoder(p.Reply, max_reply)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, *payloads: bytes) -> None:
        """Write ``payloads`` as frames, in one write when they fit the pipe."""
        view = memoryview(b"".join(p.frame(payload) for payload in payloads))
        while view:
            view = view[os.write(self.to_worker, view):]

    def hang_up(self) -> None:
        """Close the request pipe: the worker stops what it runs and exits."""
        _close(self.to_worker)
        self.to_worker = -1

    def reap(self, kill: bool = False) -> str:
        """Close our pipe ends and collect the process (after SIGKILL if ``kill``); return its exit note."""
        if kill:
            self.process.kill()
        self.hang_up()
        _close(self.from_worker)
        self.from_worker = -1
        self.process.exited(timeout=5.0 if kill else 0.0)
        return self.process.reap()


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def shard_assign(hosts: list[tuple[int, ConnectSpec]], batch_size: int, retry: Retry, *, ship_keys: bool = True,
                 cwd: str = "", env: dict[str, str] | None = None) -> p.Assign:
    """A shard's ``Assign``: its finished specs with the key material and the hashed known_hosts
    entries they need (keys left out for workers that read their own), whatever the engine."""
    keys, known = shipment((spec for _, spec in hosts), keys=ship_keys)
    return p.Assign(hosts, batch_size, keys, retry, cwd, env, known)


class WorkerPool(CallCore):
    """N worker processes serving a fixed table of hosts; ``call`` (the core's) runs one operation on some."""

    def __init__(self, specs: list[ConnectSpec], batch_size: int, workers: int | None = None,
                 retry: Retry = DEFAULT_RETRY, stall_limit: float = STALL_LIMIT) -> None:
        self.specs = specs
        self.retry = retry
        self.stall_limit = stall_limit
        count = workers or default_worker_count(len(specs))
        self.count = max(1, min(count, len(specs), batch_size))
        self.batch_size = batch_size
        self.workers: list[_Worker | None] = [None] * self.count
        self.shipped: list[dict[int, ConnectSpec]] = [{} for _ in range(self.count)]  # the specs each worker was given
        self.owner = os.getpid()
        self.encoder = msgspec.msgpack.Encoder()
        self.max_reply = p.reply_limit(max((spec.max_output for spec in specs), default=1))
        self.selector: selectors.BaseSelector | None = None  # the current call's, on the pipes of its workers
        self._core_init()
        _pools.add(self)

    def shard(self, index: int) -> int:
        return index % self.count

    def shard_states(self) -> list[ShardState]:
        return [ShardState(number, None if worker is None else worker.pid, hosts, min(self.batch_size, len(hosts)))
                for number, worker in enumerate(self.workers)
                for hosts in [list(range(number, len(self.specs), self.count))]]

    def _open(self, number: int, call: p.Call, lanes: int) -> None:
        try:
            self._worker(number).send(self.encoder.encode(call), self.encoder.encode(p.Grant(call.req, lanes)))
        except OSError as exc:
            raise Lost(str(exc)) from None

    def _begin(self) -> None:
        self.selector = selectors.DefaultSelector()

    def _end(self) -> None:
        if self.selector is not None:
            self.selector.close()
            self.selector = None

    def _watch(self, numbers: Collection[int]) -> selectors.BaseSelector:
        """The selector, watching exactly the result pipes of ``numbers``."""
        selector = self.selector
        assert selector is not None
        watched = {key.data for key in selector.get_map().values()}
        for number in watched - set(numbers):
            selector.unregister(self._fd(number, selector))
        for number in set(numbers) - watched:
            selector.register(self._live(number).from_worker, selectors.EVENT_READ, number)
        return selector

    @staticmethod
    def _fd(number: int, selector: selectors.BaseSelector) -> int:
        return next(int(key.fd) for key in selector.get_map().values() if key.data == number)

    def _wait(self, numbers: Collection[int], timeout: float) -> list[tuple[int, list[p.Reply], str]]:
        got: list[tuple[int, list[p.Reply], str]] = []
        for key, _ in self._watch(numbers).select(timeout=timeout):
            worker = self._live(key.data)
            try:
                chunk = os.read(worker.from_worker, 1 << 20)
            except OSError as exc:
                got.append((key.data, [], f"its pipe failed ({exc})"))
                continue
            if not chunk:
                got.append((key.data, [], "it exited"))
                continue
            messages = worker.frames.feed(chunk)
            got.append((key.data, messages, f"it sent {worker.frames.error}" if worker.frames.error else ""))
        return got

    def _unread(self, numbers: Collection[int]) -> set[int]:
        return {key.data for key, _ in self._watch(numbers).select(timeout=0)}

    def _halt(self, number: int, message: p.Halt) -> None:
        self._tell(number, message)

    def _grant(self, number: int, message: p.Grant) -> None:
        self._tell(number, message)

    def _tell(self, number: int, message: p.Halt | p.Grant) -> None:
        """Send a message about the running call (best effort: a worker gone is seen on its pipe next)."""
        worker = self.workers[number]
        if worker is not None:
            try:
                worker.send(self.encoder.encode(message))
            except OSError:
                pass

    def _shipped(self, number: int) -> Mapping[int, ConnectSpec]:
        return self.shipped[number]

    def _drop(self, number: int, reason: str) -> str:
        worker = self.workers[number]
        self.workers[number] = None
        if worker is None:
            return reason
        if self.selector is not None and worker.from_worker >= 0 and \
                any(key.fd == worker.from_worker for key in self.selector.get_map().values()):
            self.selector.unregister(worker.from_worker)
        note = worker.reap(kill=True)
        return f"{reason}; process {worker.pid} {note}".rstrip()

    def _live(self, number: int) -> _Worker:
        worker = self.workers[number]
        assert worker is not None
        return worker

    def _worker(self, number: int) -> _Worker:
        """The live worker for shard ``number``, started (and given its shard) if needed."""
        worker = self.workers[number]
        if worker is None:
            hosts = [(i, finalized(self.specs[i])) for i in range(number, len(self.specs), self.count)]
            self.shipped[number] = dict(hosts)
            assign = shard_assign(hosts, self.batch_size, self.retry.shared_by(self.count), cwd=os.getcwd(),
                                  env=dict(os.environ))
            worker = self.workers[number] = self._start()
            worker.send(self.encoder.encode(assign))
        return worker

    def _start(self) -> _Worker:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        for fd in (to_child_w, from_child_r):
            os.set_inheritable(fd, False)
        try:
            process = _spawn.start(to_child_r, from_child_w)
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return _Worker(process, to_child_w, from_child_r, self.max_reply)

    def _owned(self) -> bool:
        return os.getpid() == self.owner

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Ask every worker to close its connections and exit; SIGKILL any still running after ``grace``.

        A call running in another thread finishes first; from inside a call's callback this raises.
        """
        if os.getpid() != self.owner:
            return  # a forked copy of the pool must never touch its siblings
        with self.lock:
            if self.calling:
                raise RuntimeError(IN_CALLBACK.format(what="close()"))
            live = [w for w in self.workers if w is not None]
            self.workers = [None] * self.count
            for worker in live:
                try:
                    worker.send(self.encoder.encode(p.Shutdown()))
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            for worker in live:
                exited = worker.process.exited(max(0.0, deadline - time.monotonic()))
                worker.reap(kill=not exited)

    def abort(self) -> None:
        """Stop now (Ctrl-C, errors): workers stop their remote commands and exit, or are killed
        after ``ABORT_WAIT``."""
        if os.getpid() != self.owner:
            return
        live = [w for w in self.workers if w is not None]
        self.workers = [None] * self.count
        for worker in live:
            worker.hang_up()
        deadline = time.monotonic() + ABORT_WAIT
        for worker in live:
            exited = worker.process.exited(max(0.0, deadline - time.monotonic()))
            worker.reap(kill=not exited)

    def close_inherited(self) -> None:
        """In a forked child of the caller: drop our pipe ends, so workers still see their parent leave."""
        for worker in self.workers:
            if worker is not None:
                _close(worker.to_worker)
                _close(worker.from_worker)
                _close(worker.process.pidfd)
        self.workers = [None] * self.count


def _close_inherited_pools() -> None:
    for pool in list(_pools):
        pool.close_inherited()


os.register_at_fork(after_in_child=_close_inherited_pools)
