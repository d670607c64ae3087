"""The Ray engine's caller side: ``RayPool``, shards as Ray async actors (``hussh.workers.ray_actor``).

Each shard is one ``ShardActor`` on some node, running the local engine's worker for its hosts on
the lanes the caller grants it (``hussh.workers.lanes``). A call is one streaming generator per
shard; the pool multiplexes shards with ``ray.wait`` on the generators; the call core
(``hussh.workers.core``) does the rest, as for the local engine: checks, gathering, the stall limit
(heartbeats are in the frames), rollouts.

Failures are the local engine's: a generator that fails (actor or node died, the actor could not
be placed within ``start_timeout``, garbage) or falls silent turns its shard's unfinished hosts
into ``WorkerLost`` results; the actor is killed and re-created on the next call. Actors have
``max_restarts=0`` and ``max_task_retries=0``: Ray never re-runs a call, so a command never runs
twice. Ctrl-C cancels the in-flight generators (the worker's cancellation KILLs the remote
commands), lets the actors disconnect within ``ABORT_GRACE`` and kills them all.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hussh._local_files import create
from hussh._spec import ConnectSpec, Retry
from hussh._transport import finalized
from hussh.errors import describe

from . import protocol as p
from .core import CallCore, Lost, ShardState
from .main import ABORT_GRACE
from .pool import ABORT_WAIT, SHUTDOWN_GRACE, shard_assign
from .ray_actor import BATCH_WINDOW, BATCHES_PER_SECOND, RemoteShard, decode_frames

log = logging.getLogger("hussh")

MAX_PLACEMENTS = 3  # actors tried per shard and call when they die before taking their hosts


# ---------------------------------------------------------------------------------------------
# Parent side


@dataclass(eq=False)
class _Shard:
    """One shard's hosts and placement, and its actor while it has one."""

    number: int
    indices: list[int]
    region: str | None
    hosts: dict[int, ConnectSpec] = field(default_factory=dict)  # the specs its actor was given
    actor: Any = None
    assigned: Any = None  # ObjectRef of the actor's assign(): (node id, pid, code directory)
    fresh: bool = True  # nothing heard from this actor yet: it may still be placed and starting
    avoid: set[str] = field(default_factory=set)  # nodes its lost actors ran on (Ray may not know yet they are dead)


@dataclass(eq=False)
class _Stream:
    """One shard's part of a call: its generator, when it started, its files."""

    shard: _Shard
    payload: bytes  # the encoded call, sent again if its actor died before it took its hosts
    generator: Any
    lanes: int  # granted so far, given again with the call to a new actor
    born: float = field(default_factory=time.monotonic)
    placed: int = 1  # actors tried for this call
    written: set[int] = field(default_factory=set)  # hosts whose file (sftp_read to local paths) is begun
    refused: dict[int, OSError] = field(default_factory=dict)  # hosts whose file could not be written here


def _write_piece(stream: _Stream, index: int, path: str, data: bytes) -> None:
    """Write the next piece of host ``index``'s file (the first creates it, owner-only: the remote mode
    does not travel through the actor); a failure is its result."""
    if index in stream.refused:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC) if index in stream.written else create(path, 0o600)
        with open(fd, "ab") as handle:
            handle.write(data)
    except OSError as exc:
        stream.refused[index] = exc
    stream.written.add(index)


class RaySettings(Protocol):
    """What the Ray pool reads of the ``hussh.ray.RayEngine`` that made it (the api layer's options)."""

    address: str | None
    init: dict[str, Any]
    label: str
    hosts_per_shard: int
    ship_keys: bool
    agent: str | None
    start_timeout: float
    stall_limit: float

    def region_of(self, host: str) -> str | None: ...


def plan(specs: list[ConnectSpec], batch_size: int, workers: int | None, engine: RaySettings) -> list[_Shard]:
    """Shards by region: ``ceil(region hosts / per shard)`` each, host ``j`` of a region in its shard ``j mod k``.

    ``per shard`` is ``engine.hosts_per_shard``, or ``ceil(hosts / workers)`` when ``workers`` is
    given; the total is cut to ``batch_size`` (every shard starts a call with a lane), largest regions first.
    """
    regions: dict[str | None, list[int]] = {}
    for index, spec in enumerate(specs):
        regions.setdefault(engine.region_of(spec.host), []).append(index)
    if len(regions) > batch_size:
        raise ValueError(f"batch_size={batch_size} is less than the {len(regions)} placements its hosts need "
                         "(each placement's shard needs at least one lane)")
    per_shard = math.ceil(len(specs) / workers) if workers else engine.hosts_per_shard
    counts = {region: math.ceil(len(indices) / per_shard) for region, indices in regions.items()}
    while sum(counts.values()) > batch_size:
        largest = max(counts, key=lambda r: counts[r])
        counts[largest] -= 1
    shards: list[_Shard] = []
    for region, indices in regions.items():
        count = counts[region]
        for offset in range(count):
            shards.append(_Shard(len(shards), indices[offset::count], region))
    return shards


def _on_node(spec: ConnectSpec, agent: str | None) -> ConnectSpec:
    """``spec`` (and its hops) as the node uses it: the caller's agent socket is not there."""
    return msgspec.structs.replace(spec, agent=agent if spec.agent is not None else None,
                                   jump=_on_node(spec.jump, agent) if spec.jump is not None else None)


def _reason(exc: BaseException) -> str:
    """A Ray error in one line (its traceback stays in Ray's logs)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(exc, ray.exceptions.RayActorError):
        exc = cause
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class RayPool(CallCore):
    """The Ray engine's ``Pool``: one actor per shard, created on first use and after a loss; an I/O
    adapter over the call core (``hussh.workers.core``)."""

    noun = "actor"
    noun_lost = "shard actor lost"

    def __init__(self, specs: list[ConnectSpec], batch_size: int, workers: int | None, retry: Retry,
                 engine: RaySettings) -> None:
        if not ray.is_initialized():
            ray.init(address=engine.address, **engine.init)
        self.specs = specs
        self.retry = retry
        self.engine = engine
        self.stall_limit = engine.stall_limit
        self.shards = plan(specs, batch_size, workers, engine)
        self.count = len(self.shards)
        self.batch_size = batch_size
        self.shard_of = [0] * len(specs)
        for shard in self.shards:
            for index in shard.indices:
                self.shard_of[index] = shard.number
        self.tag = uuid.uuid4().hex[:8]
        self.owner = os.getpid()
        self.encoder = msgspec.msgpack.Encoder()
        self.max_reply = p.reply_limit(max((spec.max_output for spec in specs), default=1))
        self.window = max(BATCH_WINDOW, self.count / BATCHES_PER_SECOND)
        self.saving: dict[int, str] = {}  # host index -> the caller's file, for sftp_read to local paths
        self.streams: dict[int, _Stream] = {}  # the current wave's, by shard
        self._core_init()

    def shard(self, index: int) -> int:
        return self.shard_of[index]

    def _begin(self) -> None:
        self.saving = {}
        self.streams = {}

    def _end(self) -> None:
        self.saving = {}
        self.streams = {}

    def _open(self, number: int, call: p.Call, lanes: int) -> None:
        shard = self.shards[number]
        if isinstance(call, p.ReadFile) and call.local_paths:
            self.saving.update(zip(call.indices, call.local_paths))
        payload = self.encoder.encode(call)
        try:
            self._ensure(shard)
            generator = shard.actor.handle.remote(payload, shard.assigned, self.window, lanes)
        except ray.exceptions.RayError as exc:
            raise Lost(_reason(exc)) from None
        self.streams[number] = _Stream(shard, payload, generator, lanes)

    def _wait(self, numbers: Collection[int], timeout: float) -> list[tuple[int, list[p.Reply], str]]:
        streams = [self.streams[n] for n in numbers]
        generators = [s.generator for s in streams]
        ready, _ = ray.wait(generators, num_returns=1, timeout=timeout)
        if ready and len(generators) > 1:  # every shard with a batch waiting, not only the first
            ready, _ = ray.wait(generators, num_returns=len(generators), timeout=0)
        by_generator = {id(s.generator): s for s in streams}
        return [self._receive(by_generator[id(generator)]) for generator in ready]

    def _receive(self, stream: _Stream) -> tuple[int, list[p.Reply], str]:
        """The next batch of ``stream``: its messages, after writing its file pieces; or why it is lost."""
        shard = stream.shard
        try:
            files, frames = ray.get(next(stream.generator))
            shard.fresh = False
            messages = decode_frames(frames, self.max_reply)
        except StopIteration:
            return shard.number, [], "its call ended without finishing"
        except ray.exceptions.RayError as exc:
            if shard.fresh and stream.placed < MAX_PLACEMENTS and self._never_started(shard) \
                    and self._place_again(stream, exc):
                return shard.number, [], ""
            return shard.number, [], _reason(exc)
        except (ValueError, TypeError) as exc:
            return shard.number, [], f"it sent {exc}"
        asked = self.pending.get(shard.number, set())
        for index, data in files:
            if index not in self.saving or index not in asked:
                return shard.number, [], f"it sent a file for host {index}, which it was not asked for"
            _write_piece(stream, index, self.saving[index], data)
        return shard.number, messages, ""

    def _check(self, number: int, done: p.HostDone) -> p.HostDone:
        stream = self.streams[number]
        if done.index in self.saving and done.result.status == 0 and done.index not in stream.written:
            raise Lost(f"it finished host {done.index} without its file")
        error = stream.refused.get(done.index)
        if error is not None:
            done = msgspec.structs.replace(done, stdout=b"", stderr=describe(error).encode(errors="replace"),
                                           status=-1, error=type(error).__name__)
        return done

    def _unread(self, numbers: Collection[int]) -> set[int]:
        streams = [self.streams[n] for n in numbers]
        unread, _ = ray.wait([s.generator for s in streams], num_returns=len(streams), timeout=0)
        ids = {id(g) for g in unread}
        return {s.shard.number for s in streams if id(s.generator) in ids}

    def _stall(self, number: int, silent: float) -> str:
        stream = self.streams[number]
        shard = stream.shard
        if not shard.fresh:
            return super()._stall(number, silent)
        if time.monotonic() - stream.born <= self.engine.start_timeout:
            return ""
        where = f" on a node labelled {self.engine.label}={shard.region}" if shard.region is not None else ""
        return f"its Ray actor did not start{where} within {self.engine.start_timeout:g} seconds"

    def _halt(self, number: int, message: p.Halt) -> None:
        actor = self.shards[number].actor
        if actor is not None:
            with contextlib.suppress(Exception):
                actor.halt.remote(self.encoder.encode(message))

    def _grant(self, number: int, message: p.Grant) -> None:
        self.streams[number].lanes += message.lanes
        actor = self.shards[number].actor
        if actor is not None:
            with contextlib.suppress(Exception):
                actor.grant.remote(self.encoder.encode(message))

    def _shipped(self, number: int) -> Mapping[int, ConnectSpec]:
        return self.shards[number].hosts

    def _interrupted(self) -> None:
        for stream in self.streams.values():
            _cancel(stream.generator)
        self.abort()

    def _owned(self) -> bool:
        return os.getpid() == self.owner

    def _never_started(self, shard: _Shard) -> bool:
        """Whether ``shard``'s actor died before it took its hosts (``handle`` waits for ``assign``,
        so then nothing of the call ran)."""
        try:
            ready, _ = ray.wait([shard.assigned], timeout=0)
            if ready:
                ray.get(ready[0], timeout=1)
        except ray.exceptions.RayError:
            return True
        return False

    def _place_again(self, stream: _Stream, exc: BaseException) -> bool:
        """Send ``stream``'s call to a new actor: its first one never started (placed on a node that
        had just died, for instance). Nothing ran, so nothing runs twice; ``start_timeout`` still
        counts from the first attempt."""
        shard = stream.shard
        log.info("hussh: shard %d's actor died before it started (%s); placing it again", shard.number,
                 _reason(exc))
        self._kill(shard)
        try:
            self._ensure(shard)
            stream.generator = shard.actor.handle.remote(stream.payload, shard.assigned, self.window, stream.lanes)
        except ray.exceptions.RayError:
            return False
        stream.placed += 1
        return True

    def _ensure(self, shard: _Shard) -> None:
        """Give ``shard`` an actor (placed by its region, else spread) and its hosts, if it has none."""
        if shard.actor is not None:
            return
        engine = self.engine
        hosts = [(i, _on_node(finalized(self.specs[i]), engine.agent)) for i in shard.indices]
        shard.hosts = dict(hosts)
        assign = shard_assign(hosts, self.batch_size, self.retry.shared_by(self.count), ship_keys=engine.ship_keys)
        shard.actor = RemoteShard.options(**self._placement(shard)).remote(f"{self.tag}-{shard.number}")
        shard.assigned = shard.actor.assign.remote(self.encoder.encode(assign))
        shard.fresh = True

    def _placement(self, shard: _Shard) -> dict[str, Any]:
        """Where ``shard``'s next actor goes: its region's nodes (by label), else anywhere (SPREAD).

        After a loss, a node its lost actor ran on is avoided while another can take the shard:
        a node that just died is listed alive for several seconds (until Ray's health checks give
        up on it) and both SPREAD and label selectors still send actors there, so the actor goes
        to a chosen live node instead (the one running fewest of this pool's shards).
        """
        label = self.engine.label
        if shard.avoid:
            alive = {n["NodeID"]: n.get("Labels") or {} for n in ray.nodes() if n.get("Alive")}
            shard.avoid &= alive.keys()
            candidates = [node for node, labels in alive.items() if node not in shard.avoid
                          and (shard.region is None or labels.get(label) == shard.region)]
            if shard.avoid and candidates:
                load = Counter(self._node_of(s) for s in self.shards if s.actor is not None)
                node = min(candidates, key=lambda n: (load[n], n))
                return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
        if shard.region is None:
            return {"scheduling_strategy": "SPREAD"}
        return {"label_selector": {label: shard.region}}

    def _drop(self, number: int, reason: str) -> str:
        """Kill lost shard ``number``'s actor; it is re-created on the next call (elsewhere if another
        node can take it)."""
        shard = self.shards[number]
        stream = self.streams.get(number)
        if stream is not None:
            _cancel(stream.generator)
        node = self._node_of(shard)
        if node:
            shard.avoid.add(node)
        reason = f"{reason}{self._where(shard)}"
        self._kill(shard)
        return reason

    @staticmethod
    def _node_of(shard: _Shard) -> str:
        """The node ``shard``'s actor runs on, if it has told us."""
        if shard.assigned is None:
            return ""
        try:
            ready, _ = ray.wait([shard.assigned], timeout=0)
            return ray.get(ready[0], timeout=1)[0] if ready else ""
        except Exception:  # noqa: BLE001 - the actor died before it said
            return ""

    def _where(self, shard: _Shard) -> str:
        """`` (actor ... on node ..., pid ...)`` when the actor had told us, else ''."""
        if shard.assigned is None:
            return ""
        try:
            ready, _ = ray.wait([shard.assigned], timeout=0)
            if not ready:
                return f" (actor hussh-shard-{self.tag}-{shard.number}, not started)"
            node, pid, _ = ray.get(shard.assigned, timeout=1)
        except Exception:  # noqa: BLE001 - only a note in a message
            return f" (actor hussh-shard-{self.tag}-{shard.number})"
        return f" (actor hussh-shard-{self.tag}-{shard.number} on node {node[:12]}, pid {pid})"

    def where(self) -> dict[int, tuple[str, int, str]]:
        """Live shards -> (Ray node id, pid, directory of the ``workers`` code they run)."""
        live = [s for s in self.shards if s.assigned is not None]
        found = ray.get([s.assigned for s in live], timeout=30)
        return {s.number: tuple(info) for s, info in zip(live, found)}

    def shard_states(self) -> list[ShardState]:
        """Each shard's actor process and node, where it has told them."""
        where = {number: (node, pid) for number, (node, pid, _) in self.where().items()}
        return [ShardState(s.number, where[s.number][1] if s.number in where else None, list(s.indices),
                           min(self.batch_size, len(s.indices)), where[s.number][0] if s.number in where else "")
                for s in self.shards]

    def actors(self) -> list[Any]:
        """The live shards' actor handles."""
        return [s.actor for s in self.shards if s.actor is not None]

    @staticmethod
    def _kill(shard: _Shard) -> None:
        actor, shard.actor, shard.assigned = shard.actor, None, None
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def _stop(self, grace: float | None, wait: float) -> None:
        live = [s for s in self.shards if s.actor is not None]
        if os.getpid() != self.owner or not live:
            return
        if not ray.is_initialized():  # Ray went first (interpreter exit): the actors died with this driver
            for shard in live:
                shard.actor = shard.assigned = None
            return
        closing = []
        for shard in live:
            with contextlib.suppress(Exception):
                closing.append(shard.actor.close.remote(grace))
        with contextlib.suppress(Exception):
            ray.wait(closing, num_returns=len(closing), timeout=wait)
        for shard in live:
            self._kill(shard)

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Ask every actor to disconnect its hosts, then kill it (after ``grace`` seconds at most)."""
        self._stop(None, grace)

    def abort(self) -> None:
        """Stop now: calls in progress are cancelled (remote commands get KILL), actors killed after ``ABORT_WAIT``."""
        self._stop(ABORT_GRACE, ABORT_WAIT)


def _cancel(generator: Any) -> None:
    with contextlib.suppress(Exception):
        ray.cancel(generator)
