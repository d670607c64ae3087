"""Scale suite: the spec's operations and fault drills across a docker compose fleet of sshd containers.

Run with ``pytest -m scale`` (``make scale-test``). Size: ``HUSSH_SCALE_ENDPOINTS`` (default 40) sshd
endpoints, ``HUSSH_SCALE_PER_CONTAINER`` (default 2) per container; the full run is 1000 endpoints,
10 per container. Skipped when no Docker daemon answers.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time

import pytest

from hussh.multi_conn import MultiConnection
from hussh.testing import ComposeFleet
from procs import sleepers, wait_until

pytestmark = pytest.mark.scale

ENDPOINTS = int(os.environ.get("HUSSH_SCALE_ENDPOINTS", "40"))
PER_CONTAINER = int(os.environ.get("HUSSH_SCALE_PER_CONTAINER", "2"))
# Right after a pause or restart, a container's sshd work through a backlog of queued logins; on
# 2 cores running 1000 endpoints that takes longer than a 40-endpoint fleet needs.
CONNECT_TIMEOUT = float(os.environ.get("HUSSH_SCALE_CONNECT_TIMEOUT", "5" if ENDPOINTS <= 100 else "30"))
COMMAND_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def compose_fleet():
    docker = pytest.importorskip("docker")
    try:
        docker.from_env(timeout=10).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon here"
        pytest.skip(f"no Docker daemon answers: {exc}")
    fleet = ComposeFleet(ENDPOINTS, per_container=PER_CONTAINER, base_port=24000, project="hussh-scale-test")
    try:
        fleet.up()
        yield fleet, fleet.endpoints
    finally:
        fleet.down()


@pytest.fixture(scope="module")
def mc(compose_fleet):
    _, endpoints = compose_fleet
    conn = MultiConnection.from_shared_auth([f"{h}:{p}" for h, p in endpoints], username="hussh",
                                            password="hussh", connect_timeout=CONNECT_TIMEOUT, batch_size=100)
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


def test_operations_have_correct_per_host_results(compose_fleet, mc, tmp_path):
    fleet, endpoints = compose_fleet
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
