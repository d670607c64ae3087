"""``RayEngine``: the shards of a ``MultiConnection`` as Ray actors across a cluster (optional extra).

    pip install 'hussh-fleet[ray]'

    mc = MultiConnection.from_shared_auth(hosts, engine=RayEngine(address="auto",
                                          placement={"web1": "eu", "db1": "us"}))

Same API, results, error kinds and guarantees as the local engine (input order, per-host errors,
tails, ``WorkerLost`` for the hosts of a shard whose actor or node died). Importing this module
does not import Ray; making a pool does. See docs/beyond-one-machine.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hussh.workers.engine import Pool

    from ._spec import ConnectSpec, Retry

__all__ = ["DEFAULT_HOSTS_PER_SHARD", "RayEngine"]

INSTALL_HINT = "pip install 'hussh-fleet[ray]'"
DEFAULT_HOSTS_PER_SHARD = 500
"""Hosts per actor when neither ``hosts_per_shard`` nor ``workers=`` says otherwise (see the docs' cost model)."""

Placement = Callable[[str], "str | None"] | Mapping[str, str]


class RayEngine:
    """Run each shard of hosts in a Ray async actor (one process, one event loop) on a cluster node.

    ``address`` is given to ``ray.init`` (with ``init``'s extra keyword arguments) unless this
    process is already connected to Ray. ``placement`` maps a host name (as given, without
    ``user@`` or ``:port``) to a region, or is a dict host -> region: each region's hosts go to
    shards on nodes labelled ``{label: region}``; other hosts' shards are spread over the cluster.
    A region gets ``ceil(hosts / hosts_per_shard)`` shards (``workers=`` of the
    ``MultiConnection`` sets the total instead), at most ``batch_size`` in all.

    Credentials stay by reference by default: key files and ``~/.ssh`` identities are read on the
    node at the same paths, and no key material travels. ``ship_keys=True`` sends the decrypted
    keys read here with each shard's assignment instead (as the local engine does); passwords
    always travel that way. Either way secrets go in method calls, never in actor constructor
    arguments (which Ray's control service keeps to replay restarts): run the cluster with TLS.
    ``agent`` is an ssh-agent socket path valid on the nodes (the caller's own agent socket is
    not reachable from another machine): hosts that would use the caller's agent use that one,
    or none when it is ``None``.

    A new shard's actor has ``start_timeout`` seconds to be placed, start and answer before its
    hosts fail with ``WorkerLost`` (a region whose nodes are all gone never places it). A started
    actor that sends nothing for ``stall_limit`` seconds (default 10; busy actors send a heartbeat
    every second) is lost the same way.
    """

    def __init__(
        self,
        address: str | None = "auto",
        *,
        placement: Placement | None = None,
        label: str = "region",
        hosts_per_shard: int = DEFAULT_HOSTS_PER_SHARD,
        ship_keys: bool = False,
        agent: str | None = None,
        start_timeout: float = 60.0,
        init: Mapping[str, Any] | None = None,
        stall_limit: float | None = None,
    ) -> None:
        from hussh.workers.core import STALL_LIMIT  # noqa: PLC0415 - this module stays import-light
        from hussh.workers.engine import check_stall_limit  # noqa: PLC0415

        if not _ray_installed():
            raise ImportError(f"hussh.ray.RayEngine needs Ray: {INSTALL_HINT}")
        if placement is not None and not callable(placement) and not isinstance(placement, Mapping):
            raise TypeError(f"placement must be a callable host -> region or a dict, got {placement!r}")
        if not isinstance(label, str) or not label:
            raise ValueError(f"label must be a non-empty string, got {label!r}")
        if not isinstance(hosts_per_shard, int) or hosts_per_shard < 1:
            raise ValueError(f"hosts_per_shard must be a positive integer, got {hosts_per_shard!r}")
        if not start_timeout > 0:
            raise ValueError(f"start_timeout must be > 0 seconds, got {start_timeout!r}")
        self.address = address
        self.placement = placement
        self.label = label
        self.hosts_per_shard = hosts_per_shard
        self.ship_keys = bool(ship_keys)
        self.agent = agent
        self.start_timeout = float(start_timeout)
        self.init = dict(init or {})
        self.stall_limit = check_stall_limit(STALL_LIMIT if stall_limit is None else stall_limit)

    def region_of(self, host: str) -> str | None:
        """The region ``host``'s shard must run in, or ``None`` (anywhere)."""
        if self.placement is None:
            return None
        region = self.placement.get(host) if isinstance(self.placement, Mapping) else self.placement(host)
        if region is not None and not isinstance(region, str):
            raise TypeError(f"placement gave {region!r} for {host!r}: a region must be a string or None")
        return region

    def pool(self, specs: list[ConnectSpec], batch_size: int, workers: int | None, retry: Retry) -> Pool:
        try:
            from hussh.workers.ray_engine import RayPool  # noqa: PLC0415 - imports ray
        except ModuleNotFoundError as exc:
            if exc.name == "ray" or (exc.name or "").startswith("ray."):
                raise ImportError(f"hussh.ray.RayEngine needs Ray: {INSTALL_HINT}") from exc
            raise
        return RayPool(specs, batch_size, workers, retry, self)

    def __repr__(self) -> str:
        where = f", placement by {self.label!r}" if self.placement is not None else ""
        return f"RayEngine(address={self.address!r}{where}, hosts_per_shard={self.hosts_per_shard})"


def _ray_installed() -> bool:
    """Whether ``import ray`` can work, without importing it (a second or more)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False
