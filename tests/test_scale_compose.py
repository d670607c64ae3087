"""Scale suite: the spec's operations and fault drills across a docker compose fleet of sshd containers,
published on 127.0.0.1, then the same operations and a pause drill through a bastion container.

Run with ``pytest -m scale`` (``make scale-test``). Size: ``HUSSH_SCALE_ENDPOINTS`` (default 40) sshd
endpoints, ``HUSSH_SCALE_PER_CONTAINER`` (default 2) per container; the full run is 1000 endpoints,
10 per container. One fleet at a time: the published one is torn down before the bastion one starts.
Skipped when no Docker daemon answers.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from hussh.testing import ComposeFleet
from procs import sleepers, wait_until

pytestmark = pytest.mark.scale

ENDPOINTS = int(os.environ.get("HUSSH_SCALE_ENDPOINTS", "40"))
PER_CONTAINER = int(os.environ.get("HUSSH_SCALE_PER_CONTAINER", "2"))
# Right after a pause or restart, a container's sshd work through a backlog of queued logins; on
# 2 cores running 1000 endpoints that takes longer than a 40-endpoint fleet needs.
CONNECT_TIMEOUT = float(os.environ.get("HUSSH_SCALE_CONNECT_TIMEOUT", "5" if ENDPOINTS <= 100 else "30"))
# A login through the bastion waits for the bastion's own login first, and its bytes pass one relay
# process there, which a loaded 2-core machine starves sooner than 20 containers' sshd.
BASTION_CONNECT_TIMEOUT = max(CONNECT_TIMEOUT, 15.0)
COMMAND_TIMEOUT = 10.0
SLACK = 30.0  # scheduling slack on a loaded 2-core machine: past the bound plus this, the call hung
BATCH_SIZE = 100
WORKERS = 2
# Several runs may share the machine: the project follows HUSSH_TEST_PORT, host ports can be moved.
PROJECT = f"hussh-scale-{os.environ.get('HUSSH_TEST_PORT', '2222')}"
BASE_PORT = int(os.environ.get("HUSSH_SCALE_BASE_PORT", "24000"))
THROUGH_A_BASTION = pytest.mark.parametrize("compose_fleet", ["bastion"], indirect=True)


@pytest.fixture(scope="module")
def compose_fleet(request):
    """The published fleet, or with the ``bastion`` parameter the fleet behind a bastion."""
    docker = pytest.importorskip("docker")
    try:
        docker.from_env(timeout=10).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon here"
        pytest.skip(f"no Docker daemon answers: {exc}")
    fleet = ComposeFleet(ENDPOINTS, per_container=PER_CONTAINER, base_port=BASE_PORT, project=PROJECT,
                         bastion=getattr(request, "param", "") == "bastion")
    try:
        fleet.up()
        yield fleet, fleet.endpoints
    finally:
        fleet.down()
    assert fleet.leftovers() == []  # containers, both networks, files, record


@pytest.fixture(scope="module")
def mc(compose_fleet):
    _, endpoints = compose_fleet
    conn = MultiConnection.from_shared_auth([f"{h}:{p}" for h, p in endpoints], username="hussh",
                                            password="hussh", connect_timeout=CONNECT_TIMEOUT, batch_size=BATCH_SIZE)
    yield conn
    conn.close()


def key(endpoint: tuple[str, int]) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def expected_hostnames(fleet) -> dict[str, str]:
    """Each endpoint's container hostname (the short container id), as Docker reports it."""
    return {key(e): c.id[:12] for e, c in fleet.endpoint_map().items()}


def wrong_hosts(results, hostnames: dict[str, str]) -> dict[str, object]:
    """Hosts whose output is not their container's hostname, with their whole result (stderr says why)."""
    return {h: r for h, r in results.items() if r.stdout.strip() != hostnames[h]}


def five_percent_of_containers(fleet, offset: int) -> list[tuple[str, int]]:
    """One endpoint from each of ~5% of the containers (at least one), starting at ``offset``."""
    containers = fleet.containers()
    count = max(1, round(len(containers) * 0.05))
    chosen = containers[offset:offset + count]
    owners = fleet.endpoint_map()
    return [next(e for e, c in owners.items() if c.id == container.id) for container in chosen]


def check_operations(fleet, endpoints, mc, tmp_path) -> None:
    """execute, execute_map, sftp_write/read and tail, each host's result checked against its container."""
    hostnames = expected_hostnames(fleet)
    results = mc.execute("hostname")
    assert set(results) == set(hostnames) and not wrong_hosts(results, hostnames)

    mapped = mc.execute_map({key(e): f"echo {e[1]}" for e in endpoints[::2]})
    assert {h: r.stdout for h, r in mapped.items()} == {key(e): f"{e[1]}\n" for e in endpoints[::2]}

    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(256 * 1024))
    assert len(mc.sftp_write(str(local), "/tmp/payload.bin").succeeded) == len(endpoints)
    sums = mc.execute("md5sum < /tmp/payload.bin | cut -d' ' -f1")
    assert {r.stdout for r in sums.values()} == {hashlib.md5(local.read_bytes()).hexdigest() + "\n"}

    mc.sftp_write_data("first\n", "/tmp/app.log")
    read = mc.sftp_read("/tmp/app.log")
    assert {r.stdout for r in read.values()} == {"first\n"}

    logs = {key(e): f"/tmp/app-{e[1]}.log" for e in endpoints}  # sshd of one container share its /tmp
    assert not mc.execute_map({h: f"echo old > {path}" for h, path in logs.items()}).failed
    with mc.tail_map(logs) as tailer:
        mc.execute_map({h: f"hostname >> {path}" for h, path in logs.items()})
        contents = tailer.read()
    assert contents == {h: f"{name}\n" for h, name in hostnames.items()}
    assert tailer.contents == contents and not tailer.errors


def test_operations_have_correct_per_host_results(compose_fleet, mc, tmp_path):
    fleet, endpoints = compose_fleet
    check_operations(fleet, endpoints, mc, tmp_path)


def test_paused_containers_time_out_and_nothing_hangs_past_the_bounds(compose_fleet, mc):
    fleet, endpoints = compose_fleet
    hostnames = expected_hostnames(fleet)
    paused = fleet.pause(five_percent_of_containers(fleet, offset=0))
    try:
        started = time.monotonic()
        results = mc.execute("hostname", timeout=COMMAND_TIMEOUT)
        elapsed = time.monotonic() - started
        reconnect = MultiConnection.from_shared_auth([key(e) for e in paused], username="hussh", password="hussh",
                                                     connect_timeout=CONNECT_TIMEOUT)
        with reconnect:
            fresh = reconnect.execute("hostname")
    finally:
        fleet.unpause(paused)
    assert elapsed < COMMAND_TIMEOUT + 30  # the command bound plus scheduling slack, not a hang
    for endpoint in endpoints:
        result = results[key(endpoint)]
        if endpoint in paused:
            assert result.status == -1 and re.search(r"(timed out after|within) [\d.]+ seconds", result.stderr), result
        else:
            assert result.stdout.strip() == hostnames[key(endpoint)], result
    assert all(r.stderr.startswith("ConnectTimeout: ") for r in fresh.values()), fresh
    after = mc.execute("hostname", timeout=COMMAND_TIMEOUT)
    assert set(after) == set(hostnames) and not wrong_hosts(after, hostnames)


def test_killed_containers_lose_their_hosts_only_and_the_next_call_reconnects(compose_fleet, mc):
    fleet, endpoints = compose_fleet
    hostnames = expected_hostnames(fleet)
    victims = five_percent_of_containers(fleet, offset=1)
    lost: list[tuple[str, int]] = []
    token = f"4.{os.getpid()}{time.monotonic_ns() % 10**6:06d}"  # 4 s, and a command line of this test's own

    def kill_once_running() -> None:  # containers' processes are this machine's processes too
        wait_until(lambda: len(sleepers(token)) >= len(endpoints), COMMAND_TIMEOUT, "every command to start")
        lost.extend(fleet.kill(victims))

    killer = threading.Thread(target=kill_once_running)
    killer.start()
    results = mc.execute(f"sleep {token}; hostname", timeout=COMMAND_TIMEOUT + 20)
    killer.join()
    assert lost
    for endpoint in endpoints:
        result = results[key(endpoint)]
        if endpoint in lost:
            # mid-command: ConnectionLost; not yet started when its container died: refused on reconnect
            assert result.status == -1 and result.stderr.startswith(("ConnectionLost: ", "ConnectError: ")), result
        else:
            assert result.stdout.strip() == hostnames[key(endpoint)], result
    fleet.start(lost)
    again = mc.execute("hostname", timeout=COMMAND_TIMEOUT)
    assert set(again) == set(hostnames) and not wrong_hosts(again, hostnames)


# ---------------------------------------------------------------- through a bastion


@pytest.fixture(scope="module")
def login(compose_fleet, tmp_path_factory) -> dict[str, Any]:
    """Password login to the targets, every host key (the bastion's too) checked against the fleet's own list."""
    fleet, _ = compose_fleet
    known_hosts = fleet.write_known_hosts(tmp_path_factory.mktemp("fleet") / "known_hosts")
    return dict(**fleet.credentials.password_auth(), known_hosts=str(known_hosts), host_key_checking="strict",
                connect_timeout=BASTION_CONNECT_TIMEOUT)


def through_bastion(fleet, login: dict[str, Any], hosts: list[str] | None = None) -> MultiConnection:
    """Every endpoint (or ``hosts``) through the fleet's bastion, which hussh logs in to with the fleet's key."""
    bastion = fleet.bastion
    jump = AsyncConnection(bastion.endpoint.host, port=bastion.endpoint.port, **bastion.credentials.key_auth(),
                           known_hosts=login["known_hosts"], host_key_checking="strict",
                           connect_timeout=BASTION_CONNECT_TIMEOUT)
    return MultiConnection.from_shared_auth(hosts or fleet.hosts, **login, proxy_jump=jump, batch_size=BATCH_SIZE,
                                            workers=WORKERS)


@pytest.fixture(scope="module")
def jump_mc(compose_fleet, login):
    fleet, _ = compose_fleet
    conn = through_bastion(fleet, login)  # connects on first use
    yield conn
    conn.close()


def bastion_name(fleet) -> str:
    """The bastion as hussh's failures name it."""
    return f"{fleet.bastion.credentials.key_user}@{fleet.bastion.endpoint}"


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(0.05)


class ConnectionWatch:
    """Samples this machine's TCP connections to 127.0.0.1:``port`` every 50 ms; ``seen`` holds their client ports."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self.stopping.wait(0.05):
            out = subprocess.run(["ss", "-Htn", "dst", "127.0.0.1", "dport", "=", f":{self.port}"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            self.seen.update(line.split()[3] for line in out.splitlines())  # local address:port

    def __enter__(self) -> ConnectionWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=15)


def running(token: str) -> int:
    """Processes on this machine (containers' included) whose command line holds ``token``."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            count += token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
    return count


def open_gate(fleet, gate: str) -> None:
    """Create ``gate`` in every target container, through its root as this machine sees it."""
    for container in {c.id: c for c in fleet.endpoint_map().values()}.values():
        container.reload()
        Path(f"/proc/{container.attrs['State']['Pid']}/root{gate}").touch()


@THROUGH_A_BASTION
def test_behind_the_bastion_targets_are_not_reachable_directly(compose_fleet, login):
    fleet, endpoints = compose_fleet
    published = {c.name: [b for bindings in (c.ports or {}).values() for b in bindings or []]
                 for c in fleet.containers()}
    assert {name for name, bindings in published.items() if bindings} == {f"{fleet.project}_bastion_1"}
    assert published[f"{fleet.project}_bastion_1"] == [{"HostIp": "127.0.0.1", "HostPort": str(BASE_PORT)}]
    assert fleet.client.networks.get(f"{fleet.project}_fleet").attrs["Internal"] is True
    assert not any(e.host.startswith("127.") for e in endpoints)
    with MultiConnection.from_shared_auth(fleet.hosts, **login, batch_size=BATCH_SIZE) as direct:
        results = direct.execute("hostname")
    assert all(r.error == "ConnectError" and "refused" in r.stderr for r in results.values()), results


@THROUGH_A_BASTION
def test_operations_through_the_bastion_share_one_connection_per_worker(compose_fleet, jump_mc, tmp_path):
    fleet, endpoints = compose_fleet
    with ConnectionWatch(fleet.bastion.endpoint.port) as watch:
        check_operations(fleet, endpoints, jump_mc, tmp_path)
        peers = jump_mc.execute("echo $SSH_CONNECTION | cut -d' ' -f1")
    assert {r.stdout for r in peers.values()} == {f"{fleet.bastion.internal_address}\n"}
    assert len(watch.seen) == WORKERS, watch.seen


@THROUGH_A_BASTION
def test_a_paused_bastion_fails_every_host_naming_it_and_the_next_call_succeeds(compose_fleet, jump_mc, login):
    fleet, endpoints = compose_fleet
    hostnames = expected_hostnames(fleet)
    bastion = fleet.bastion.endpoint
    token = uuid.uuid4().hex
    gate = f"/tmp/gate-{token}"  # the commands finish only once the bastion is paused: none can get through
    command = f"for i in $(seq 600); do [ -e {gate} ] && break; sleep 0.05; done; hostname"
    rounds = -(-len(endpoints) // BATCH_SIZE)  # hosts run BATCH_SIZE at a time
    fresh = through_bastion(fleet, login)
    try:
        with ThreadPoolExecutor(1) as caller:
            started = time.monotonic()
            call = caller.submit(jump_mc.execute, command, timeout=COMMAND_TIMEOUT)
            try:
                wait_for(lambda: call.done() or running(token) >= min(len(endpoints), BATCH_SIZE),
                         BASTION_CONNECT_TIMEOUT + SLACK, "every lane's command running")
                assert not call.done(), sorted({r.stderr for r in call.result().values()})[:3]
                fleet.pause([bastion])
                open_gate(fleet, gate)
                results = call.result(timeout=rounds * (COMMAND_TIMEOUT + SLACK))
                elapsed = time.monotonic() - started
                connect_started = time.monotonic()
                refused = fresh.connect()  # a new client meets the paused bastion
                connect_elapsed = time.monotonic() - connect_started
            finally:
                fleet.heal()
        named = f"via bastion {bastion_name(fleet)}"
        assert all(r.status == -1 and named in r.stderr and r.error in ("CommandTimeout", "ConnectionLost")
                   for r in results.values()), sorted({r.stderr for r in results.values()})[:3]
        assert max(results.seconds.values()) < COMMAND_TIMEOUT + SLACK, max(results.seconds.values())
        assert elapsed < rounds * (COMMAND_TIMEOUT + SLACK)
        assert all(r.error == "ConnectError" and named in r.stderr for r in refused.values()), refused
        assert connect_elapsed < BASTION_CONNECT_TIMEOUT + SLACK  # one bound per worker, not one per host
        after = jump_mc.execute("hostname", timeout=COMMAND_TIMEOUT)
        assert set(after) == set(hostnames) and not wrong_hosts(after, hostnames)
        assert not fresh.connect().failed  # connect() retries the bastion at once, cool-down or not
        assert not wrong_hosts(fresh.execute("hostname", timeout=COMMAND_TIMEOUT), hostnames)
    finally:
        fresh.close()


@THROUGH_A_BASTION
def test_faults_act_on_containers_behind_the_bastion_and_on_the_bastion(compose_fleet, jump_mc, login):
    fleet, _ = compose_fleet
    hostnames = expected_hostnames(fleet)
    restarted, refusing = ([key(e) for e in node] for node in fleet.nodes()[:2])
    fleet.kill(restarted)
    fleet.start(restarted)  # a new network namespace: this machine must be kept out of it again
    with MultiConnection.from_shared_auth(restarted, **login) as direct:
        assert all("refused" in r.stderr for r in direct.execute("true").values())
    with fleet.fault("refuse", refusing), through_bastion(fleet, login, refusing) as fresh:
        assert all(r.error == "ConnectError" and f"via bastion {bastion_name(fleet)}" in r.stderr
                   for r in fresh.execute("true").values())
    fleet.kill([fleet.bastion.endpoint])
    fleet.start([fleet.bastion.endpoint])  # same host key: strict checking lets hussh back in
    first = jump_mc.execute("hostname", timeout=COMMAND_TIMEOUT)  # tunnels of the killed bastion are gone
    assert all(r.status == 0 or r.error == "ConnectionLost" for r in first.values()), first
    after = jump_mc.execute("hostname", timeout=COMMAND_TIMEOUT)
    assert set(after) == set(hostnames) and not wrong_hosts(after, hostnames)
