"""``MockEngine``: a ``MultiConnection`` answered by a function of yours instead of SSH hosts, for unit tests.

As httpx's ``MockTransport`` replaces only the transport, this replaces only the I/O: the call core
(results in input order, per-host errors, rollouts, canary waves, failure budgets and halting,
``status()``, progress, ``on_result``, the journal) and the worker's own logic (lanes of
``batch_size``, connecting before a host's first operation, a connect failure remembered for
``Retry.cooldown``, a halted run's hosts skipped or stopped, output bounds, ``WorkerLost`` for a shard
that falls silent) are the real ones. Each shard is a ``hussh.workers.main.Worker`` on an event loop
in a thread of this process, its hosts ``MockConnection`` objects. No process, socket or sshd.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Collection, Mapping

from hussh._spec import ConnectSpec, Retry
from hussh.errors import describe
from hussh.workers import protocol as p
from hussh.workers.core import IN_CALLBACK, STALL_LIMIT, CallCore, ShardState
from hussh.workers.engine import Pool, check_stall_limit
from hussh.workers.main import Worker

from ._mock_host import Handler, MockConnection, MockRequest, Reply

__all__ = ["Handler", "MockEngine", "MockRequest", "Reply"]

STOP_WAIT = 5.0  # seconds close() waits for each mock worker's thread to cancel what runs and end


class MockEngine:
    """Pass as ``MultiConnection(..., engine=MockEngine(handler))``: ``handler(request)`` answers every
    remote operation (a ``MockRequest``) with an ``SSHResult``, a ``str`` or ``bytes`` (stdout, or a
    file's contents) or ``None``, or raises: a hussh error (``ConnectTimeout``, ``CommandTimeout``...)
    or any other exception becomes that host's result exactly as a real failure would. ``handler``
    may be a coroutine function; an async command then also times out as a real one does.

    Handlers run on their shard's event loop thread, one request at a time unless they are async.
    ``requests`` lists every request, in the order asked. ``workers`` of the ``MultiConnection``
    (default 1) sets the shards; ``stall_limit`` as ``LocalEngine``'s (a synchronous handler that
    blocks that long makes its shard's hosts ``WorkerLost``).
    """

    def __init__(self, handler: Handler, *, stall_limit: float = STALL_LIMIT) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be a callable taking a hussh.testing.MockRequest, got {handler!r}")
        self.handler = handler
        self.stall_limit = check_stall_limit(stall_limit)
        self.requests: list[MockRequest] = []

    def pool(self, specs: list[ConnectSpec], batch_size: int, workers: int | None, retry: Retry) -> Pool:
        return MockPool(self, specs, batch_size, workers, retry)

    def __repr__(self) -> str:
        return f"MockEngine({getattr(self.handler, '__qualname__', self.handler)!r})"


class MockWorker(Worker):
    """One shard: the local engine's worker on an event loop thread of its own (a handler that blocks
    holds up its shard alone), its hosts mock connections, its messages to the pool's inbox."""

    def __init__(self, pool: MockPool, number: int, hosts: list[tuple[int, ConnectSpec]], batch_size: int) -> None:
        super().__init__(self._emit, 1 << 20)
        self.pool, self.number = pool, number
        self.max_lanes = max(1, batch_size)  # what it runs at once is what the call core grants it
        self.retry = pool.retry
        handler, record = pool.engine.handler, pool.engine.requests.append
        for index, spec in hosts:
            self.conns[index] = MockConnection(spec, index, handler, record)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=_serve, args=(self.loop,), name=f"hussh-mock-worker-{number}",
                                       daemon=True)
        self.thread.start()

    def _emit(self, message: p.HostDone | p.Started | p.Output | p.KeyLearned | p.Alive | p.CallDone) -> None:
        self.pool.deliver(self, message)

    def run(self, call: p.Call) -> concurrent.futures.Future[None]:
        return asyncio.run_coroutine_threadsafe(self.handle(call), self.loop)

    def soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on this worker's loop (not at all once it stopped)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(callback)

    def stop(self) -> None:
        """Stop the loop: what runs is cancelled and the thread ends (once a handler stuck in it returns)."""
        self.soon(self.loop.stop)


class MockPool(CallCore):
    """The ``MockEngine``'s pool: shards are ``MockWorker`` objects, each on an event loop thread, started on
    first use; the call core waits on their inbox as the local engine waits on worker pipes."""

    def __init__(self, engine: MockEngine, specs: list[ConnectSpec], batch_size: int, workers: int | None,
                 retry: Retry) -> None:
        self.engine, self.specs, self.retry = engine, specs, retry
        self.stall_limit = engine.stall_limit
        self.count = max(1, min(workers or 1, len(specs), batch_size))
        self.batch_size = batch_size
        self.workers: list[MockWorker | None] = [None] * self.count
        self.shipped: list[dict[int, ConnectSpec]] = [{} for _ in range(self.count)]
        self.tasks: dict[int, concurrent.futures.Future[None]] = {}
        self.inbox: list[list[p.Reply]] = [[] for _ in range(self.count)]
        self.lost: dict[int, str] = {}
        self.ready = threading.Condition()
        self.owner = os.getpid()
        self._core_init()

    def shard(self, index: int) -> int:
        return index % self.count

    def shard_states(self) -> list[ShardState]:
        """Live mock shards run in this process: their ``pid`` is this process's."""
        return [ShardState(n, None if worker is None else self.owner, hosts, min(self.batch_size, len(hosts)))
                for n, worker in enumerate(self.workers) for hosts in [list(range(n, len(self.specs), self.count))]]

    def deliver(self, worker: MockWorker, message: p.Reply) -> None:
        """A message from ``worker`` (on its thread); one from a shard since dropped is not heard."""
        with self.ready:
            if self.workers[worker.number] is worker:
                self.inbox[worker.number].append(message)
                self.ready.notify_all()

    def _open(self, number: int, call: p.Call, lanes: int) -> None:
        worker = self.workers[number]
        if worker is None:
            hosts = [(i, self.specs[i]) for i in range(number, len(self.specs), self.count)]
            self.shipped[number] = dict(hosts)
            worker = self.workers[number] = MockWorker(self, number, hosts, self.batch_size)
        self._grant(number, p.Grant(call.req, lanes))  # first on the worker's loop: the call starts with them
        task = worker.run(call)
        task.add_done_callback(lambda done: self._ended(worker, done))
        self.tasks[number] = task

    def _ended(self, worker: MockWorker, task: concurrent.futures.Future[None]) -> None:
        """A shard's call that raised (a bug, not a host's failure) loses the shard, as a crashed worker."""
        if task.cancelled() or task.exception() is None:
            return
        with self.ready:
            if self.workers[worker.number] is worker:
                self.lost[worker.number] = f"it crashed ({describe(task.exception())})"  # type: ignore[arg-type]
                self.ready.notify_all()

    def _wait(self, numbers: Collection[int], timeout: float) -> list[tuple[int, list[p.Reply], str]]:
        def heard() -> bool:
            return any(self.inbox[n] or n in self.lost for n in numbers)

        with self.ready:
            self.ready.wait_for(heard, timeout)
            got = []
            for number in numbers:
                if self.inbox[number] or number in self.lost:
                    messages, self.inbox[number] = self.inbox[number], []
                    got.append((number, messages, self.lost.pop(number, "")))
            return got

    def _unread(self, numbers: Collection[int]) -> set[int]:
        with self.ready:
            return {number for number in numbers if self.inbox[number]}

    def _halt(self, number: int, message: p.Halt) -> None:
        worker = self.workers[number]
        if worker is not None:
            worker.soon(lambda: worker.halt(message))

    def _grant(self, number: int, message: p.Grant) -> None:
        worker = self.workers[number]
        if worker is not None:
            worker.soon(lambda: worker.grant(message))

    def _shipped(self, number: int) -> Mapping[int, ConnectSpec]:
        return self.shipped[number]

    def _drop(self, number: int, reason: str) -> str:
        with self.ready:
            worker, self.workers[number] = self.workers[number], None
            self.inbox[number] = []
            self.lost.pop(number, None)
        self.tasks.pop(number, None)
        if worker is not None:
            worker.stop()  # its thread ends once its handler returns, if it is stuck in one
        return reason

    def _owned(self) -> bool:
        return os.getpid() == self.owner

    def shutdown(self) -> None:
        """Stop the mock workers; a call running in another thread finishes first (inside its callback: raises)."""
        with self.lock:
            if self.calling:
                raise RuntimeError(IN_CALLBACK.format(what="close()"))
            self.abort()

    def abort(self) -> None:
        """Cancel what the mock workers run and stop their threads (waiting ``STOP_WAIT`` seconds at most)."""
        if not self._owned():
            return
        if any(w is not None and w.thread is threading.current_thread() for w in self.workers):
            raise RuntimeError("a MockEngine handler cannot close or stop the MultiConnection it answers for")
        with self.ready:
            live = [w for w in self.workers if w is not None]
            self.workers = [None] * self.count
            self.inbox = [[] for _ in range(self.count)]
            self.lost = {}
        self.tasks = {}
        for worker in live:
            worker.stop()
        for worker in live:
            worker.thread.join(STOP_WAIT)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """A mock worker's thread: run ``loop`` until stopped, then cancel what is left and close it."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
