"""One call, whatever runs the shards: the call core both engines are I/O adapters over.

``CallCore`` owns what a call is: its hosts cut into waves (``hussh.Rollout``) and, per wave, into
shards with their share of the output budget and a request id; ``batch_size`` as one budget of
lanes over the wave's shards (``hussh.workers.lanes``: lanes freed in one shard go to shards with hosts
waiting); the reply dispatch and its checks (a shard answers only for the hosts it was asked
about, learns keys only for its own hosts' resolved names: ``learned_key``); results gathered in
input order, decoded once here with identical texts shared; the failure budget and halting (hosts
never started are *skipped*); the loss and stall policy (a shard silent for ``stall_limit`` seconds,
``STALL_LIMIT`` unless its engine says otherwise, is lost; one lost ``MAX_LOSSES`` calls in a row is
not started again); the re-entrancy guard;
``release``; a live ``status``.

An engine's pool subclasses it and says how to reach its shards: ``_open`` (send a call and its
first lanes to a shard, starting it if needed), ``_wait`` (what shards sent), ``_unread``,
``_stall``, ``_drop`` (kill a lost shard), ``_halt``, ``_grant`` (more lanes), ``_shipped`` (the
specs a shard was given), and ``shutdown`` / ``abort``; ``shard_states`` says which process serves which hosts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

import asyncssh

from hussh._result import SKIPPED, SSHResult, text
from hussh._spec import ConnectSpec
from hussh._transport import record_host_keys
from hussh.errors import WorkerLost, describe
from hussh.rollout import CallStatus, Rollout

from . import protocol as p
from .lanes import Lanes

log = logging.getLogger("hussh")

PROGRESS_EVERY = 5.0  # seconds between progress log lines on long calls
STALL_LIMIT = 10 * p.HEARTBEAT_EVERY  # seconds of silence after which a busy shard counts as lost
MAX_LOSSES = 3  # consecutive lost calls after which a shard is not started again

IN_CALLBACK = ("{what} cannot run inside a progress or on_result callback: this MultiConnection is still "
               "running the call that called it (collect what you need, act after the call returns)")

Progress = Callable[[int, int], None]
OnHost = Callable[[int, SSHResult, float, "int | None"], None]
"""``on_host(index, result, seconds, wave)``: each host's result as it is gathered (``wave``: ``None``
without a rollout)."""
OnOutput = Callable[[int, bytes], None]
"""``on_output(index, data)``: bytes a running host produced (a followed tail), as they arrive."""
Build = Callable[[int, list[int], int], p.Call]
"""``build(req, shard_indices, shard_budget)``: the message one shard receives for one call."""
Results = tuple[dict[int, SSHResult], dict[int, float]]


class ShardState(NamedTuple):
    """One shard as its pool sees it now: the process serving it (``None``: not started yet, or lost and
    not replaced yet), where (a Ray node; "" on this machine), its hosts and how many it may run at once."""

    number: int
    pid: int | None
    indices: list[int]
    concurrency: int
    node: str = ""


class Lost(Exception):
    """A shard cannot be reached, or broke the protocol: why, for its unfinished hosts' results."""


def learned_key(hosts: Mapping[int, ConnectSpec], message: p.KeyLearned) -> tuple[ConnectSpec, str]:
    """What a shard's ``KeyLearned`` may record: its key under the caller's own spec for that host
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


class Gathering:
    """One call's results as they arrive (decoded here, once: identical outputs are kept once, not once
    per host), the hosts running, and its rollout's count of failures."""

    def __init__(self, indices: Sequence[int], progress: Progress | None, on_host: OnHost | None,
                 rollout: Rollout | None, on_output: OnOutput | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        self.total = len(indices)
        self.progress = progress
        self.on_host = on_host
        self.on_output = on_output
        self.stop = stop
        self.rollout = rollout
        self.results: dict[int, SSHResult] = {}
        self.seconds: dict[int, float] = {}
        self.learned: list[tuple[ConnectSpec, str]] = []
        self.texts: dict[str, str] = {}
        self.running: dict[int, float] = {}  # started and not finished: index -> time.time() it started
        self.succeeded = self.failed = self.skipped = 0
        self.counted = 0  # failures counted against the budget
        self.limit = rollout.failure_limit(self.total) if rollout is not None else None
        self.waves = [list(indices)]
        if rollout is not None:
            sizes, at = rollout.plan(self.total), 0
            self.waves = []
            for size in sizes:
                self.waves.append(list(indices[at:at + size]))
                at += size
        self.wave = 0
        self.canary = rollout is not None and rollout.canary > 0
        self.halted = ""  # why no new host starts ("" while the run goes on)

    def add(self, done: p.HostDone) -> None:
        result = done.result
        if result.error == SKIPPED:
            self.skip([done.index])
            return
        self._set(done.index, SSHResult(self._text(result.stdout), self._text(result.stderr), result.status,
                                        result.error), done.seconds)

    def _text(self, output: bytes) -> str:
        """``output`` decoded, or the same text another host's result already holds."""
        decoded = text(output)
        return self.texts.setdefault(decoded, decoded)

    def start(self, index: int) -> None:
        self.running[index] = time.time()

    def fail(self, indices: Iterable[int], reason: str) -> None:
        error = describe(WorkerLost(reason))
        for index in indices:
            self._set(index, SSHResult("", error, -1, "WorkerLost"), 0.0)

    def skip(self, indices: Iterable[int]) -> None:
        """Hosts never started: ``Skipped``, saying why the run stopped."""
        error = f"{SKIPPED}: never started: {self.halted or 'the run stopped'}"
        error = self.texts.setdefault(error, error)
        for index in indices:
            self._set(index, SSHResult("", error, -1, SKIPPED), 0.0)

    def _set(self, index: int, result: SSHResult, seconds: float) -> None:
        self.results[index] = result
        self.seconds[index] = seconds
        self.running.pop(index, None)
        if result.status == 0:
            self.succeeded += 1
        elif result.error == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1
            if self.rollout is not None and (self.rollout.counts(result.error) or self.wave == 0 and self.canary):
                self.counted += 1
        if self.on_host is not None:
            self.on_host(index, result, seconds, self.wave if self.rollout is not None else None)
        if self.progress is not None:
            self.progress(len(self.results), self.total)

    def exceeded(self) -> str:
        """Why no new host may start now ("" if the run goes on)."""
        if self.halted:
            return self.halted
        if self.stop is not None and self.stop():
            return "the caller stopped the call"
        if self.rollout is None:
            return ""
        if self.canary and self.wave == 0 and self.failed:
            return f"{self.failed} of the {len(self.waves[0])} canary host(s) failed"
        if self.limit is not None and self.counted > self.limit:
            return f"{self.counted} host(s) failed, more than max_failures={self.rollout.max_failures}"
        return ""

    def status(self, names: Callable[[int], str] = str) -> CallStatus:
        """A snapshot (safe from another thread: the dicts are copied whole, under the GIL)."""
        running = self.running.copy()
        return CallStatus(self.total, len(self.results), self.succeeded, self.failed, self.skipped,
                          {names(i): at for i, at in sorted(running.items(), key=lambda item: item[1])},
                          self.wave, len(self.waves), self.halted)


class CallCore:
    """A pool's calls: one at a time (other threads wait their turn), each gathered as described above.

    Subclasses set ``count`` (shards) and ``batch_size`` (lanes over all shards) before calling
    ``_core_init``, and implement the adapter methods below.
    """

    count: int
    stall_limit = STALL_LIMIT  # seconds of silence after which a busy shard is lost (engines take it as an option)
    batch_size: int
    noun = "worker"  # what a shard is called in its hosts' errors ("worker", "actor")
    noun_lost = "worker process lost"

    def _core_init(self) -> None:
        self.next_req = 0
        self.losses = [0] * self.count
        self.last_loss = [""] * self.count
        self.lock = threading.RLock()
        self.calling = False
        self.current: Gathering | None = None
        self.pending: dict[int, set[int]] = {}  # the current wave's: shard -> hosts it has not answered
        self.lanes = Lanes(self.batch_size, {})  # the current wave's

    # --------------------------------------------------------------------- the adapter's part

    def shard(self, index: int) -> int:
        """The shard that owns host ``index``."""
        raise NotImplementedError

    def _open(self, number: int, call: p.Call, lanes: int) -> None:
        """Send ``call`` to shard ``number`` with ``lanes`` to run it on (hosts at once), starting the shard
        (with its hosts) if needed; ``Lost`` if it cannot."""
        raise NotImplementedError

    def _wait(self, numbers: Collection[int], timeout: float) -> list[tuple[int, list[p.Reply], str]]:
        """What the shards ``numbers`` sent within ``timeout`` seconds: ``(shard, messages, lost)``
        where ``lost`` says why the shard is gone or broken after those messages ("" if it is not)."""
        raise NotImplementedError

    def _unread(self, numbers: Collection[int]) -> set[int]:
        """Those of ``numbers`` with something waiting to be read now (alive, however silent they seemed)."""
        raise NotImplementedError

    def _stall(self, number: int, silent: float) -> str:
        """Why shard ``number``, silent for ``silent`` seconds, counts as lost ("" if it does not yet)."""
        limit = self.stall_limit
        return f"it sent nothing for {limit:g} seconds (stopped or stuck)" if silent > limit else ""

    def _drop(self, number: int, reason: str) -> str:
        """Kill lost shard ``number`` (replaced on the next call); ``reason`` with what is known of it."""
        raise NotImplementedError

    def _halt(self, number: int, message: p.Halt) -> None:
        """Tell shard ``number`` to start no new host of the call (best effort: a lost shard is seen anyway)."""
        raise NotImplementedError

    def _grant(self, number: int, message: p.Grant) -> None:
        """Give shard ``number`` more lanes for the running call (a lost shard is seen anyway)."""
        raise NotImplementedError

    def _shipped(self, number: int) -> Mapping[int, ConnectSpec]:
        """The specs shard ``number`` was given: the only hosts it may learn keys for."""
        raise NotImplementedError

    def _check(self, number: int, done: p.HostDone) -> p.HostDone:
        """An engine's own checks of a host's result (``Lost`` to refuse it); the result to keep."""
        return done

    def _begin(self) -> None:
        """A call starts (an engine's per-call state)."""

    def _end(self) -> None:
        """A call ended, whichever way."""

    def _interrupted(self) -> None:
        """Ctrl-C or a bug in the middle of a call: stop everything, leave nothing running, never hang."""
        self.abort()

    def shard_states(self) -> list[ShardState]:
        """Every shard now: which process serves which hosts (for operators, and tests)."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    # --------------------------------------------------------------------- the call

    def call(self, build: Build, indices: Iterable[int], progress: Progress | None = None,
             on_host: OnHost | None = None, budget: int = 0, rollout: Rollout | None = None,
             on_output: OnOutput | None = None, stop: Callable[[], bool] | None = None) -> Results:
        """Run ``build(req, shard_indices, shard_budget)`` on the shards owning ``indices`` (in waves, under
        ``rollout``); return every index's result and seconds. ``budget`` (bytes of output for the whole
        call, 0: none) is split over the shards in proportion to their hosts. ``on_output`` takes what
        running hosts stream (a call that streams nothing may not send any); once ``stop()`` is true
        (asked at least every second), no new host starts and running ones are asked to end."""
        with self.lock:
            if self.calling:
                raise RuntimeError(IN_CALLBACK.format(what="another call"))
            self.calling = True
            try:
                return self._call(build, Gathering(list(indices), progress, on_host, rollout, on_output, stop), budget)
            finally:
                self.calling = False

    def status(self, names: Callable[[int], str] = str) -> CallStatus | None:
        """The running call's snapshot (``None`` between calls); callable from any thread."""
        gathering = self.current
        return None if gathering is None else gathering.status(names)

    def _call(self, build: Build, gathering: Gathering, budget: int) -> Results:
        self.current = gathering
        rollout = gathering.rollout
        self._begin()
        try:
            for number, wave in enumerate(gathering.waves):
                gathering.wave = number
                if number and not gathering.halted and rollout is not None:
                    self._between(rollout, gathering)
                if gathering.halted:
                    gathering.skip(wave)
                    continue
                self._wave(build, wave, gathering, budget)
        except BaseException:
            self._interrupted()
            raise
        finally:
            self._end()
            self.current = None
            if gathering.learned:
                record_host_keys(gathering.learned)
        return gathering.results, gathering.seconds

    @staticmethod
    def _between(rollout: Rollout, gathering: Gathering) -> None:
        """The pause and the user's check before a wave; either may halt the run."""
        if rollout.pause:
            time.sleep(rollout.pause)
        if rollout.between_waves is not None and rollout.between_waves(gathering.status()) is not True:
            gathering.halted = f"between_waves stopped the run before wave {gathering.wave}"

    def _wave(self, build: Build, indices: list[int], gathering: Gathering, budget: int) -> None:
        """Send one wave's hosts to their shards with their first lanes, then gather their answers."""
        shards: dict[int, list[int]] = {}
        for index in indices:
            shards.setdefault(self.shard(index), []).append(index)
        self.next_req += 1
        req = self.next_req
        pending = self.pending = {}
        for number, shard_indices in list(shards.items()):
            if self.losses[number] >= MAX_LOSSES:
                gathering.fail(shard_indices, f"the {self.noun} for these hosts was lost {self.losses[number]} "
                               f"calls in a row, so it is not started again (last: {self.last_loss[number]}); "
                               "close and recreate the MultiConnection to try again")
                del shards[number]
        lanes = self.lanes = Lanes(self.batch_size, {number: len(hosts) for number, hosts in shards.items()})
        for number, shard_indices in shards.items():
            share = max(1, budget * len(shard_indices) // gathering.total) if budget else 0
            try:
                self._open(number, build(req, shard_indices, share), lanes.granted[number])
            except Lost as exc:
                self._lose(number, set(shard_indices), gathering, f"could not start or reach it ({exc})")
                continue
            pending[number] = set(shard_indices)
        self._gather(req, pending, gathering)

    def _gather(self, req: int, pending: dict[int, set[int]], gathering: Gathering) -> None:
        heard = dict.fromkeys(pending, time.monotonic())  # shard -> when it last sent something
        next_log = time.monotonic() + PROGRESS_EVERY
        halted = False
        while pending:
            for number, messages, lost in self._wait(list(pending), min(1.0, self.stall_limit)):
                heard[number] = time.monotonic()
                if number in pending:
                    self._dispatch(number, req, messages, pending, gathering)
                if lost and number in pending:
                    self._lose(number, pending.pop(number), gathering, lost)
            if not halted and (reason := gathering.exceeded()):
                halted = True
                self._halt_all(req, pending, gathering, reason)
            if not halted:
                for number, more in self.lanes.grants().items():
                    self._grant(number, p.Grant(req, more))
            now = time.monotonic()
            stalled = {n: why for n in pending if (why := self._stall(n, now - heard[n]))}
            if stalled:  # something still unread (the caller itself was held up) proves the shard alive
                unread = self._unread(list(stalled))
                for number, why in stalled.items():
                    if number not in unread:
                        self._lose(number, pending.pop(number), gathering, why)
            if now >= next_log:
                log.info("hussh: %d/%d hosts done", len(gathering.results), gathering.total)
                next_log += PROGRESS_EVERY

    def _halt_all(self, req: int, pending: dict[int, set[int]], gathering: Gathering, why: str) -> None:
        """The budget ran out, or the caller stopped the call (``why``): no new host starts anywhere (running
        ones finish, or stop if asked; followed tails end)."""
        gathering.halted = why
        rollout = gathering.rollout
        if rollout is not None:
            log.warning("hussh: %s; no new host starts", gathering.halted)
        message = p.Halt(req, rollout is not None and rollout.on_exceeded == "stop")
        for number in pending:
            self._halt(number, message)

    def _dispatch(self, number: int, req: int, messages: list[p.Reply], pending: dict[int, set[int]],
                  gathering: Gathering) -> None:
        """Take shard ``number``'s messages; it leaves ``pending`` once it finished the call or was lost."""
        asked = pending[number]
        for message in messages:
            if message.req != req or isinstance(message, p.Alive):
                continue  # a straggler from an interrupted earlier call, or a heartbeat
            if isinstance(message, p.CallDone):
                self.losses[number] = 0
                self.lanes.gone(number)
                missing = pending.pop(number)
                if missing:
                    gathering.fail(missing, "the worker finished the call without a result for this host")
                return
            if isinstance(message, p.KeyLearned):
                try:
                    gathering.learned.append(learned_key(self._shipped(number), message))
                except ValueError as exc:
                    self._lose(number, pending.pop(number), gathering, str(exc))
                    return
                continue
            if message.index not in asked:
                self._lose(number, pending.pop(number), gathering, f"it answered for host {message.index}, "
                           "which it was not asked about")
                return
            if isinstance(message, p.Started):
                if message.index not in gathering.running:
                    self.lanes.started(number)
                gathering.start(message.index)
                continue
            if isinstance(message, p.Output):
                if gathering.on_output is None:
                    self._lose(number, pending.pop(number), gathering, f"it sent output for host {message.index} "
                               "in a call that streams none")
                    return
                gathering.on_output(message.index, message.data)
                continue
            try:
                if message.result.error == SKIPPED and not gathering.halted:
                    raise Lost(f"it skipped host {message.index}, which it was not told to skip")
                message = self._check(number, message)
            except Lost as exc:
                self._lose(number, pending.pop(number), gathering, str(exc))
                return
            asked.discard(message.index)
            self.lanes.answered(number, message.index in gathering.running)
            gathering.add(message)

    def _lose(self, number: int, indices: set[int], gathering: Gathering, reason: str) -> None:
        """Shard ``number`` is gone or broken: kill it, fail its unfinished hosts, replace it next call."""
        reason = self._drop(number, reason)
        self.lanes.gone(number)
        self.losses[number] += 1
        self.last_loss[number] = reason
        gathering.fail(indices, f"{self.noun_lost} before this host finished: {reason}")
        log.warning("hussh: %s %d lost (%s); %d host(s) failed, it is replaced on the next call",
                    self.noun, number, reason, len(indices))

    def release(self) -> None:
        """``shutdown`` for garbage collection and interpreter exit, which never wait on a call still
        running in a (daemon) thread: that call is aborted instead."""
        if not self._owned():
            return
        if self.lock.acquire(blocking=False):
            try:
                if not self.calling:
                    self.shutdown()
                    return
            finally:
                self.lock.release()
        self.abort()

    def _owned(self) -> bool:
        """Whether this process made the pool (a forked copy must never touch its shards)."""
        return True
