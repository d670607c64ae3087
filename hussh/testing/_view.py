"""A test's share of a fleet: its first N endpoints, so tests of several sizes can share one fleet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from . import _registry
from ._base import Credentials, Endpoint, EndpointLike, Fleet, State
from ._errors import FleetError
from ._relay import NetworkConditions, RelayProcess


class FleetView(Fleet):
    """The first ``size`` endpoints of ``fleet``; faults and states are the fleet's own.

    Anything backend-specific (``port``, ``uid()``, ``containers()``...) is read from the fleet.
    """

    def __init__(self, fleet: Fleet, size: int) -> None:
        if size > len(fleet.endpoints):
            raise FleetError(f"a view of {size} endpoints of a fleet of {len(fleet.endpoints)}")
        self.fleet = fleet
        self._endpoints = fleet.endpoints[:size]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    @property
    def addresses(self) -> list[str]:
        """The endpoints' hosts (loopback fleets: distinct addresses, all on ``port``)."""
        return [e.host for e in self._endpoints]

    @property
    def record(self) -> _registry.Record | None:  # type: ignore[override]
        return self.fleet.record

    @property
    def credentials(self) -> Credentials:
        return self.fleet.credentials

    def nodes(self) -> list[tuple[Endpoint, ...]]:
        """The fleet's nodes that start within the view."""
        mine = set(self._endpoints)
        return [node for node in self.fleet.nodes() if node[0] in mine]

    def host_public_key(self, endpoint: EndpointLike) -> str:
        return self.fleet.host_public_key(endpoint)

    def up(self, timeout: float | None = None) -> Self:
        raise FleetError("a shared fleet is started by its owner (the pytest plugin), not by a view")

    def down(self) -> None:
        raise FleetError("a shared fleet is torn down by its owner (the pytest plugin), not by a view")

    def state(self, endpoint: EndpointLike) -> State:
        return self.fleet.state(endpoint)

    def heal(self, endpoints: Iterable[EndpointLike] | None = None) -> list[Endpoint]:
        return self.fleet.heal(endpoints)

    def _apply(self, fault: str, endpoints: Iterable[EndpointLike], **options: Any) -> list[Endpoint]:
        return self.fleet._apply(fault, endpoints, **options)

    def _act(self, action: str, nodes: list[int], **options: Any) -> None:
        self.fleet._act(action, nodes, **options)

    def reset(self, endpoints: Iterable[EndpointLike]) -> list[Endpoint]:
        return self.fleet.reset(endpoints)

    def set_network(self, conditions: NetworkConditions, endpoints: Iterable[EndpointLike] | None = None,
                    ) -> list[Endpoint]:
        return self.fleet.set_network(conditions, self._endpoints if endpoints is None else endpoints)

    def _links(self, endpoints: list[Endpoint]) -> list[tuple[RelayProcess, list[str]]]:
        return self.fleet._links(endpoints)
