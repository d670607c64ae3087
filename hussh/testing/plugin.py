"""pytest plugin (entry point ``hussh``): real SSH fleets for scale tests, as a fixture.

    @pytest.mark.hussh_fleet(1000)                          # 1000 loopback endpoints
    def test_deploy(hussh_fleet): ...

    @pytest.mark.hussh_fleet(40, backend="compose", per_node=2)
    def test_on_containers(hussh_fleet): ...

    @pytest.mark.parametrize("hussh_fleet", [10, 100], indirect=True)
    def test_sizes(hussh_fleet): ...

    @pytest.mark.hussh_fleet(20, network=NetworkConditions(rtt=0.05))   # behind the network relay
    def test_over_a_wan(hussh_fleet): ...

One fleet per (backend, endpoints per node, behind the relay or not) serves the whole session, as
big as the largest size the collected tests ask for; each test sees its first N endpoints, with the
network conditions it asks for (one for all, or a map of host to conditions). After every test,
whatever it faulted is healed and its conditions cleared; at the end of the session (a failure,
Ctrl-C) every fleet is torn down.
Override the ``hussh_fleet_options`` fixture in a conftest.py to move ports and addresses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ._base import Fleet
from ._errors import FleetError
from ._relay import NetworkConditions
from ._view import FleetView
from .compose import PER_CONTAINER, ComposeFleet
from .loopback import LoopbackFleet, loopback_addresses

BACKENDS = ("loopback", "compose")
PLANNED = pytest.StashKey[dict[tuple[str | None, int | None, bool], int]]()


@dataclass(frozen=True)
class FleetSpec:
    """What a test asks for: a size, and optionally a backend, endpoints per node and network conditions."""

    size: int
    backend: str | None = None
    per_node: int | None = None
    network: NetworkConditions | dict[str, NetworkConditions] | None = None

    @property
    def relayed(self) -> bool:
        return self.network is not None

    @classmethod
    def of(cls, value: object) -> FleetSpec:
        """From a marker's or parameter's value: a size, a dict of the fields, or a FleetSpec."""
        if isinstance(value, FleetSpec):
            return value
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, dict):
            return cls(**value)
        raise FleetError(f"hussh_fleet wants a size, a dict or a FleetSpec, not {value!r}")


@dataclass(frozen=True)
class FleetOptions:
    """Where the session's fleets live; override the ``hussh_fleet_options`` fixture to change it."""

    backend: str = "loopback"  # for tests that name none
    port: int = 2222  # loopback: every endpoint's port
    second_octet: int = 76  # loopback: addresses 127.<second_octet>.x.y (the next fleet takes +1)
    base_port: int = 23000  # compose: host ports from here
    project: str = "hussh-pytest"  # compose: project name
    up_timeout: float | None = None  # bound on bringing a fleet up (None: the backend's default)

    def key(self, spec: FleetSpec) -> tuple[str, int, bool]:
        """The (backend, per_node, behind the relay) fleet that serves ``spec``."""
        backend = spec.backend or self.backend
        if backend not in BACKENDS:
            raise FleetError(f"unknown fleet backend {backend!r}: one of {', '.join(BACKENDS)}")
        return backend, spec.per_node or (1 if backend == "loopback" else PER_CONTAINER), spec.relayed


def _spec_of(item: pytest.Item) -> FleetSpec | None:
    """The fleet an item asks for through its parameter or marker (None: it names no size)."""
    if "hussh_fleet" not in getattr(item, "fixturenames", ()):
        return None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "hussh_fleet" in callspec.params:
        return FleetSpec.of(callspec.params["hussh_fleet"])
    marker = item.get_closest_marker("hussh_fleet")
    return None if marker is None else FleetSpec(*marker.args, **marker.kwargs)


class FleetPool:
    """The session's fleets, one per (backend, per_node, relayed), each as big as the largest planned request."""

    def __init__(self, options: FleetOptions, planned: dict[tuple[str | None, int | None, bool], int]) -> None:
        self.options = options
        self.planned = planned
        self.fleets: dict[tuple[str, int, bool], Fleet] = {}
        self._started = dict.fromkeys(BACKENDS, 0)  # fleets made per backend: each gets its own addresses

    def get(self, spec: FleetSpec) -> FleetView:
        """A view of ``spec.size`` endpoints of the fleet for ``spec``, started on first use."""
        key = self.options.key(spec)
        fleet = self.fleets.get(key)
        if fleet is not None and len(fleet.endpoints) < spec.size:  # asked for more than planned
            self.discard(fleet)
            fleet = None
        if fleet is None:
            fleet = self._make(key, max([spec.size] + self._planned_for(key)))
            fleet.up(self.options.up_timeout)
            self.fleets[key] = fleet
        view = FleetView(fleet, spec.size)
        if isinstance(spec.network, NetworkConditions):
            view.set_network(spec.network)
        elif spec.network:
            for host, conditions in spec.network.items():
                view.set_network(conditions, [host])
        return view

    def _planned_for(self, key: tuple[str, int, bool]) -> list[int]:
        return [size for (backend, per_node, relayed), size in self.planned.items()
                if self.options.key(FleetSpec(1, backend, per_node, NetworkConditions() if relayed else None)) == key]

    def _make(self, key: tuple[str, int, bool], size: int) -> Fleet:
        backend, per_node, relayed = key
        offset = self._started[backend]
        self._started[backend] += 1
        network = NetworkConditions() if relayed else None  # each test sets its own
        if backend == "loopback":
            addresses = loopback_addresses(size, self.options.second_octet + offset)
            return LoopbackFleet(addresses, port=self.options.port, per_process=per_node, network=network)
        project = self.options.project + (f"-{offset}" if offset else "")
        return ComposeFleet(size, per_container=per_node, base_port=self.options.base_port + 2000 * offset,
                            project=project, network=network)

    def discard(self, fleet: Fleet) -> None:
        """Tear ``fleet`` down and forget it (the next request starts a fresh one)."""
        self.fleets = {k: f for k, f in self.fleets.items() if f is not fleet}
        fleet.down()

    def close(self) -> None:
        """Tear every fleet down; raise the first failure after trying them all."""
        errors = []
        for fleet in list(self.fleets.values()):
            try:
                self.discard(fleet)
            except Exception as error:  # noqa: BLE001 - every fleet gets its chance to go
                errors.append(error)
        if errors:
            raise errors[0]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("hussh").addoption(
        "--hussh-fleet-backend", choices=BACKENDS, default=None,
        help="backend of hussh_fleet for tests that name none (default: loopback)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hussh_fleet(size, backend=None, per_node=None, network=None): the hussh_fleet fixture's "
        "size, backend ('loopback' or 'compose'), endpoints per sshd process or container, and network "
        "conditions (hussh.testing.NetworkConditions, or a map of host to them)")
    config.stash[PLANNED] = {}


@pytest.hookimpl(trylast=True)  # after -k and -m deselected what will not run
def pytest_collection_modifyitems(items: list[pytest.Item], config: pytest.Config) -> None:
    """Plan each fleet's size from every selected test's request, so one start serves them all."""
    planned = config.stash[PLANNED]
    for item in items:
        spec = _spec_of(item)
        if spec is not None:
            key = (spec.backend, spec.per_node, spec.relayed)
            planned[key] = max(planned.get(key, 0), spec.size)


@pytest.fixture(scope="session")
def hussh_fleet_options(pytestconfig: pytest.Config) -> FleetOptions:
    """Where the session's fleets live; override this fixture in a conftest.py to change it."""
    return FleetOptions(backend=pytestconfig.getoption("hussh_fleet_backend") or "loopback")


@pytest.fixture(scope="session")
def hussh_fleet_pool(hussh_fleet_options: FleetOptions, pytestconfig: pytest.Config) -> Iterator[FleetPool]:
    """The session's fleets; every one is torn down at the end, also after failures and Ctrl-C."""
    pool = FleetPool(hussh_fleet_options, pytestconfig.stash[PLANNED])
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def hussh_fleet(request: pytest.FixtureRequest, hussh_fleet_pool: FleetPool) -> Iterator[Fleet]:
    """A fleet of the size the test asks for (marker or parameter); healed after the test."""
    spec = FleetSpec.of(request.param) if hasattr(request, "param") else _spec_of(request.node)
    if spec is None:
        raise FleetError(f"{request.node.nodeid} uses hussh_fleet without @pytest.mark.hussh_fleet(size)")
    if hussh_fleet_pool.options.key(spec)[0] == "compose":
        _skip_without_docker()
    view = hussh_fleet_pool.get(spec)
    yield view
    try:
        view.heal()
        if spec.relayed:
            view.set_network(NetworkConditions())
    except BaseException:
        hussh_fleet_pool.discard(view.fleet)
        raise


def _skip_without_docker() -> None:
    """Skip the test when the compose backend cannot work here (no docker package or daemon)."""
    docker = pytest.importorskip("docker")
    try:
        docker.from_env(timeout=10).ping()
    except Exception as error:  # noqa: BLE001 - any failure means "no daemon here"
        pytest.skip(f"no Docker daemon answers: {error}")
