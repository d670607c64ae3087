"""Parent side of the engine: starts the workers, shards hosts, sends calls, merges streamed results.

Host ``i`` always lives in worker ``i % N``, so its SSH connection stays open in one process across
calls. A call sends one request per involved worker, then waits on all result pipes at once. A
worker that dies, sends garbage or falls silent (stopped, stuck: no frame, not even its heartbeat,
for ``STALL_LIMIT`` seconds) turns its unfinished hosts into ``WorkerLost`` results and is replaced
(with its shard re-assigned) before the next call, unless it was lost ``MAX_LOSSES`` calls in a
row. Ctrl-C closes the request pipes, so workers stop their remote commands and exit, and kills
any still running after ``ABORT_WAIT``. One call runs at a time; other threads wait their turn.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import selectors
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

import asyncssh
import msgspec

from hussh import _credentials
from hussh._known_hosts import hashed_paths
from hussh._known_hosts import record as record_host_keys
from hussh._known_hosts import ship as ship_hashed
from hussh._result import SSHResult, text
from hussh._spec import ConnectSpec, finalized
from hussh.errors import WorkerLost, describe

from . import _spawn
from . import protocol as p

log = logging.getLogger("hussh")

MIN_HOSTS_PER_WORKER = 64  # below this, another process costs more than it saves
SHUTDOWN_GRACE = 5.0  # seconds workers get to disconnect politely before SIGKILL
ABORT_WAIT = 1.5  # seconds interrupted workers get to stop their remote commands before SIGKILL
PROGRESS_EVERY = 5.0  # seconds between progress log lines on long calls
STALL_LIMIT = 10 * p.HEARTBEAT_EVERY  # seconds of silence after which a busy worker counts as lost
MAX_LOSSES = 3  # consecutive lost calls after which a shard's worker is not started again
DEFAULT_RETRY = p.Retry()  # WorkerPool's default; frozen, so one shared instance is safe

IN_CALLBACK = ("{what} cannot run inside a progress or on_result callback: this MultiConnection is still "
               "running the call that called it (collect what you need, act after the call returns)")

Progress = Callable[[int, int], None]
OnHost = Callable[[int, SSHResult, float], None]

_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


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
    """One worker process and the parent's ends of its two pipes."""

    def __init__(self, process: _spawn.Process, to_worker: int, from_worker: int, max_reply: int) -> None:
        self.process, self.to_worker, self.from_worker = process, to_worker, from_worker
        self.frames = p.FrameDecoder(p.Reply, max_reply)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, payload: bytes) -> None:
        view = memoryview(p.frame(payload))
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


def shard_assign(hosts: list[tuple[int, ConnectSpec]], share: int, retry: p.Retry, *, ship_keys: bool = True,
                 cwd: str = "", env: dict[str, str] | None = None) -> p.Assign:
    """A shard's ``Assign``: its finished specs with the key material and the hashed known_hosts
    entries they need (keys left out for workers that read their own), whatever the engine."""
    keys = _credentials.ship(ref for _, spec in hosts for ref in _credentials.chain_key_refs(spec)) if ship_keys else []
    known = ship_hashed(path for _, spec in hosts for path in hashed_paths(spec))
    return p.Assign(hosts, share, keys, retry, cwd, env, known)


def learned_key(hosts: Mapping[int, ConnectSpec], message: p.KeyLearned) -> tuple[ConnectSpec, str]:
    """What a worker's ``KeyLearned`` may record: its key under the parent's own spec for that host
    and hop (``hosts``: the shard shipped to that worker), so it names no host or file of its own.

    Raises ``ValueError`` (a protocol violation) for a host not of the shard, a hop its chain does not
    have, or a key that is not exactly one public key in OpenSSH form (no comment, no second line).
    """
    spec = hosts.get(message.index)
    if spec is None:
        raise ValueError(f"it sent a host key for host {message.index}, which is not one of its hosts")
    for _ in range(message.hop):
        if spec is None:
            break
        spec = spec.jump
    if spec is None or message.hop < 0:
        raise ValueError(f"it sent a host key for hop {message.hop} of host {message.index}, "
                         "which has no such hop")
    try:
        key = asyncssh.import_public_key(message.key)
        key.set_comment(None)
        canonical = key.export_public_key("openssh").decode("ascii").strip()
    except (asyncssh.KeyImportError, ValueError):
        canonical = ""
    if canonical != message.key:
        raise ValueError(f"it sent a host key for host {message.index} that is not a public key")
    return spec, canonical


class WorkerPool:
    """N worker processes serving a fixed table of hosts; ``call`` runs one operation on some of them."""

    def __init__(self, specs: list[ConnectSpec], batch_size: int, workers: int | None = None,
                 retry: p.Retry = DEFAULT_RETRY) -> None:
        self.specs = specs
        self.retry = retry
        count = workers or default_worker_count(len(specs))
        self.count = max(1, min(count, len(specs), batch_size))
        self.shares = split_shares(batch_size, [len(range(w, len(specs), self.count)) for w in range(self.count)])
        self.workers: list[_Worker | None] = [None] * self.count
        self.losses = [0] * self.count
        self.shipped: list[dict[int, ConnectSpec]] = [{} for _ in range(self.count)]  # the specs each worker was given
        self.last_loss = [""] * self.count
        self.owner = os.getpid()
        self.next_req = 0
        self.encoder = msgspec.msgpack.Encoder()
        self.max_reply = p.reply_limit(max((spec.max_output for spec in specs), default=1))
        self.lock = threading.RLock()
        self.calling = False
        _pools.add(self)

    def shard(self, index: int) -> int:
        return index % self.count

    def call(
        self,
        build: Callable[[int, list[int], int], p.Call],
        indices: Iterable[int],
        progress: Progress | None = None,
        on_host: OnHost | None = None,
        budget: int = 0,
    ) -> tuple[dict[int, SSHResult], dict[int, float]]:
        """Run ``build(req, shard_indices, shard_budget)`` on each involved worker; return every index's
        result and seconds. ``budget`` (bytes of output for the whole call, 0: none) is split over the
        workers in proportion to their hosts."""
        with self.lock:
            if self.calling:
                raise RuntimeError(IN_CALLBACK.format(what="another call"))
            self.calling = True
            try:
                return self._call(build, indices, progress, on_host, budget)
            finally:
                self.calling = False

    def _call(self, build: Callable[[int, list[int], int], p.Call], indices: Iterable[int],
              progress: Progress | None, on_host: OnHost | None,
              budget: int) -> tuple[dict[int, SSHResult], dict[int, float]]:
        shards: dict[int, list[int]] = {}
        for index in indices:
            shards.setdefault(self.shard(index), []).append(index)
        self.next_req += 1
        req = self.next_req
        total = sum(len(v) for v in shards.values())
        gathered = _Gathered(total, progress, on_host)
        pending: dict[int, set[int]] = {}
        try:
            for number, shard_indices in shards.items():
                if self.losses[number] >= MAX_LOSSES:
                    gathered.fail(shard_indices, f"the worker for these hosts was lost {self.losses[number]} "
                                  f"calls in a row, so it is not started again (last: {self.last_loss[number]}); "
                                  "close and recreate the MultiConnection to try again")
                    continue
                try:
                    worker = self._worker(number)
                    share = max(1, budget * len(shard_indices) // total) if budget else 0
                    worker.send(self.encoder.encode(build(req, shard_indices, share)))
                    pending[number] = set(shard_indices)
                except OSError as exc:
                    self._lose(number, set(shard_indices), gathered, f"could not start or reach it ({exc})")
            self._gather(req, pending, gathered)
        except BaseException:
            self.abort()  # Ctrl-C or a bug: stop remote commands, leave no worker behind, never hang
            raise
        finally:
            if gathered.learned:
                record_host_keys(gathered.learned)
        return gathered.results, gathered.seconds

    def _gather(self, req: int, pending: dict[int, set[int]], gathered: _Gathered) -> None:
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
                    if not self._drain(number, req, pending, gathered):
                        selector.unregister(key.fileobj)
                now = time.monotonic()
                stalled = [n for n in pending if now - heard[n] > STALL_LIMIT]
                if stalled:  # frames still unread (the parent itself was held up) prove the worker alive
                    unread = {key.data for key, _ in selector.select(timeout=0)}
                    for number in (n for n in stalled if n not in unread):
                        selector.unregister(self._live(number).from_worker)
                        self._lose(number, pending.pop(number), gathered,
                                   f"it sent nothing for {STALL_LIMIT:g} seconds (stopped or stuck)")
                if now >= next_log:
                    log.info("hussh: %d/%d hosts done", len(gathered.results), gathered.total)
                    next_log += PROGRESS_EVERY
        finally:
            selector.close()

    def _drain(self, number: int, req: int, pending: dict[int, set[int]], gathered: _Gathered) -> bool:
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
            self._lose(number, pending.pop(number), gathered, reason)
            return False
        for message in worker.frames.feed(chunk):
            if message.req != req or isinstance(message, p.Alive):
                continue  # a straggler from an interrupted earlier call, or a heartbeat
            if isinstance(message, p.CallDone):
                self.losses[number] = 0
                missing = pending.pop(number)
                if missing:
                    gathered.fail(missing, "the worker finished the call without a result for this host")
                return False
            if isinstance(message, p.KeyLearned):
                try:
                    gathered.learned.append(learned_key(self.shipped[number], message))
                except ValueError as exc:
                    self._lose(number, pending.pop(number), gathered, str(exc))
                    return False
                continue
            if message.index not in pending[number]:
                self._lose(number, pending.pop(number), gathered, f"it answered for host {message.index}, "
                           "which it was not asked about")
                return False
            pending[number].discard(message.index)
            gathered.add(message)
        if worker.frames.error:
            self._lose(number, pending.pop(number), gathered, f"it sent {worker.frames.error}")
            return False
        return True

    def _lose(self, number: int, indices: set[int], gathered: _Gathered, reason: str) -> None:
        """Worker ``number`` is gone or broken: kill it, fail its unfinished hosts, replace it next call."""
        worker = self.workers[number]
        self.workers[number] = None
        if worker is not None:
            note = worker.reap(kill=True)
            reason = f"{reason}; process {worker.pid} {note}".rstrip()
        self.losses[number] += 1
        self.last_loss[number] = reason
        gathered.fail(indices, f"worker process lost before this host finished: {reason}")
        log.warning("hussh: worker %d lost (%s); %d host(s) failed, it is replaced on the next call",
                    number, reason, len(indices))

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
            assign = shard_assign(hosts, self.shares[number], self.retry.shared_by(self.count), cwd=os.getcwd(),
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

    def release(self) -> None:
        """``shutdown`` for garbage collection and interpreter exit, which never wait on a call still
        running in a (daemon) thread: that call is aborted instead."""
        if os.getpid() != self.owner:
            return
        if self.lock.acquire(blocking=False):
            try:
                if not self.calling:
                    self.shutdown()
                    return
            finally:
                self.lock.release()
        self.abort()

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


class _Gathered:
    """One call's results as they arrive, decoded as text here, once; identical outputs are kept once,
    not once per host."""

    def __init__(self, total: int, progress: Progress | None, on_host: OnHost | None) -> None:
        self.total = total
        self.progress = progress
        self.on_host = on_host
        self.results: dict[int, SSHResult] = {}
        self.seconds: dict[int, float] = {}
        self.learned: list[tuple[ConnectSpec, str]] = []
        self.texts: dict[str, str] = {}

    def add(self, done: p.HostDone) -> None:
        self._set(done.index, SSHResult(self._text(done.stdout), self._text(done.stderr), done.status, done.error),
                  done.seconds)

    def _text(self, output: bytes) -> str:
        """``output`` decoded, or the same text another host's result already holds."""
        decoded = text(output)
        return self.texts.setdefault(decoded, decoded)

    def fail(self, indices: Iterable[int], reason: str) -> None:
        error = describe(WorkerLost(reason))
        for index in indices:
            self._set(index, SSHResult("", error, -1, "WorkerLost"), 0.0)

    def _set(self, index: int, result: SSHResult, seconds: float) -> None:
        self.results[index] = result
        self.seconds[index] = seconds
        if self.on_host is not None:
            self.on_host(index, result, seconds)
        if self.progress is not None:
            self.progress(len(self.results), self.total)


def _close_inherited_pools() -> None:
    for pool in list(_pools):
        pool.close_inherited()


os.register_at_fork(after_in_child=_close_inherited_pools)
