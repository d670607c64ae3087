"""The seam between ``MultiConnection`` and whatever runs its shards: an ``Engine`` makes a ``Pool``.

``MultiConnection`` only ever talks to a ``Pool``: ``call`` runs one operation on some hosts and
returns every host's result (per-host errors, ``WorkerLost`` for the hosts of a shard that died,
progress and ``on_host`` callbacks as hosts finish; both engines' pools are adapters over the one
call core of ``hussh.workers.core``, which owns all of that), ``shutdown``
disconnects politely, ``abort`` stops now (Ctrl-C). ``LocalEngine`` (the default) is the fork
pool of ``hussh.workers.pool``; ``hussh.ray.RayEngine`` runs the same ``hussh.workers.main.Worker`` code in
Ray actors (``hussh.workers.ray_engine``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from hussh._spec import ConnectSpec, Retry
from hussh.rollout import CallStatus, Rollout

from .core import STALL_LIMIT, Build, OnHost, OnOutput, Progress, Results, ShardState
from .protocol import HEARTBEAT_EVERY

__all__ = ["Build", "Engine", "LocalEngine", "OnHost", "OnOutput", "Pool", "Progress", "ShardState",
           "check_stall_limit"]


@runtime_checkable
class Pool(Protocol):
    """Shards serving a fixed table of hosts (indices into the specs it was made with)."""

    count: int  # how many shards (worker processes or actors) the hosts are spread over

    def call(self, build: Build, indices: Iterable[int], progress: Progress | None = None,
             on_host: OnHost | None = None, budget: int = 0, rollout: Rollout | None = None,
             on_output: OnOutput | None = None, stop: Callable[[], bool] | None = None) -> Results:
        """Run ``build(...)`` on the shards owning ``indices`` (in waves, under ``rollout``); every
        index's result and seconds (``on_output`` and ``stop``: see ``hussh.workers.core.CallCore.call``)."""
        ...

    def status(self, names: Callable[[int], str] = str) -> CallStatus | None:
        """The running call's snapshot, hosts named by ``names(index)`` (``None`` between calls)."""
        ...

    def shutdown(self) -> None:
        """Disconnect every host and stop every shard (bounded)."""
        ...

    def abort(self) -> None:
        """Stop now: running remote commands are killed, no shard is left running (bounded)."""
        ...

    def release(self) -> None:
        """On garbage collection and interpreter exit: ``shutdown``, or ``abort`` if a call still runs."""
        ...

    def shard_states(self) -> list[ShardState]:
        """Every shard now: the process serving it (if one does), its hosts and its share of ``batch_size``."""
        ...


@runtime_checkable
class Engine(Protocol):
    """Makes the pool of one ``MultiConnection`` (called on its first operation)."""

    def pool(self, specs: list[ConnectSpec], batch_size: int, workers: int | None, retry: Retry) -> Pool:
        ...


def check_stall_limit(stall_limit: float) -> float:
    """An engine's ``stall_limit`` option, checked: seconds, more than the interval of a busy shard's heartbeats."""
    if isinstance(stall_limit, bool) or not isinstance(stall_limit, int | float) or not stall_limit > HEARTBEAT_EVERY:
        raise ValueError(f"stall_limit must be a number of seconds above the {HEARTBEAT_EVERY:g} s between a busy "
                         f"worker's heartbeats, got {stall_limit!r}")
    return float(stall_limit)


class LocalEngine:
    """Worker processes on this machine, one per CPU (``hussh.workers.pool.WorkerPool``): the default.

    ``stall_limit``: seconds a busy worker may send nothing (it sends a heartbeat every second) before
    it counts as lost, its unfinished hosts fail with ``WorkerLost`` and it is replaced.
    """

    def __init__(self, *, stall_limit: float = STALL_LIMIT) -> None:
        self.stall_limit = check_stall_limit(stall_limit)

    def pool(self, specs: list[ConnectSpec], batch_size: int, workers: int | None, retry: Retry) -> Pool:
        from .pool import WorkerPool  # noqa: PLC0415 - keeps this module import-light

        return WorkerPool(specs, batch_size, workers, retry, self.stall_limit)

    def __repr__(self) -> str:
        return "LocalEngine()" if self.stall_limit == STALL_LIMIT else f"LocalEngine(stall_limit={self.stall_limit:g})"
