"""Network conditions of test fleets: the relay's delay, jitter, bandwidth cap, slow start, and the faults
it applies to live links (freeze, reset, refuse and kill through it), as hussh and a raw socket see them.

Times are only ever lower bounds (a delay the relay must add); upper bounds are hang guards."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clirun
from conftest import TEST_PORT
from hussh.multi_conn import MultiConnection
from hussh.testing import Fleet, FleetError, LoopbackFleet, NetworkConditions, State, loopback_addresses
from hussh.testing._relay import RelayProcess, _address, conditions_dict

RELAYED = pytest.mark.hussh_fleet(3, network=NetworkConditions())
GUARD = 60.0


def connect(fleet: Fleet, hosts: list[str]) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, **fleet.credentials.password_auth(), connect_timeout=10)


def banner(host: str, timeout: float = GUARD) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(_address(host), timeout=timeout)
    return sock, sock.recv(256)


@RELAYED
def test_delay_and_jitter_hold_bytes_back_but_never_reorder_them(hussh_fleet):
    host = hussh_fleet.hosts[0]
    hussh_fleet.set_network(NetworkConditions(rtt=0.2, jitter=0.09), [host])
    assert hussh_fleet.network(host).rtt == 0.2 and hussh_fleet.network(hussh_fleet.hosts[1]).rtt == 0
    script = "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done"  # many chunks, each jittered
    expected = "".join(f"line-{i}\n" for i in range(20000))
    with connect(hussh_fleet, [host]) as mc:
        started = time.monotonic()
        result = mc.execute(script)[host]
        elapsed = time.monotonic() - started
    assert result.status == 0 and hashlib.sha256(result.stdout.encode()).digest() == \
        hashlib.sha256(expected.encode()).digest()
    assert elapsed >= 2 * (0.2 - 2 * 0.09)  # channel open and exec: two round trips, at least rtt - 2 jitter each


@RELAYED
def test_bandwidth_caps_each_direction_of_a_connection(hussh_fleet):
    host = hussh_fleet.hosts[0]
    with connect(hussh_fleet, [host]) as mc:
        hussh_fleet.set_network(NetworkConditions(bandwidth=100_000), [host])  # a live connection too
        started = time.monotonic()
        written = mc.sftp_write_data(b"z" * 400_000, "capped.bin")
        elapsed = time.monotonic() - started
    assert not written.failed, written
    assert elapsed >= (400_000 - 16384) / 100_000 * 0.95  # at most the bucket's depth goes at once


@RELAYED
def test_slow_start_holds_a_new_connections_first_bytes(hussh_fleet):
    host = hussh_fleet.hosts[1]
    hussh_fleet.set_network(NetworkConditions(slow_start=1.5), [host])
    started = time.monotonic()
    sock, first = banner(host)
    sock.close()
    assert first.startswith(b"SSH-2.0-") and time.monotonic() - started >= 1.5


@RELAYED
def test_a_frozen_link_times_a_command_out_keeps_the_socket_and_thaws(hussh_fleet):
    frozen, other = hussh_fleet.hosts[:2]
    with connect(hussh_fleet, [frozen, other]) as mc:
        assert hussh_fleet.freeze([frozen]) == [hussh_fleet._endpoint(frozen)]
        assert hussh_fleet.state(frozen) is State.FROZEN
        during = mc.execute("echo hi", timeout=2)
        assert during[frozen].stderr.startswith("CommandTimeout: ") and during[other].stdout == "hi\n", during
        hussh_fleet.thaw([frozen])
        after = mc.execute("echo again", timeout=GUARD)
    assert {r.stdout for r in after.values()} == {"again\n"}, after  # the same connection: nothing was closed


@RELAYED
def test_reset_sends_rst_to_live_connections_and_new_ones_work(hussh_fleet):
    host = hussh_fleet.hosts[2]
    sock, first = banner(host)
    assert first.startswith(b"SSH-2.0-")
    hussh_fleet.reset([host])
    with pytest.raises(ConnectionResetError):
        sock.recv(256)
    sock.close()
    again, line = banner(host)
    again.close()
    assert line.startswith(b"SSH-2.0-")


@RELAYED
def test_kill_and_refuse_through_the_relay_still_refuse_new_connections(hussh_fleet):
    killed, refusing, fine = hussh_fleet.hosts
    hussh_fleet.kill([killed])
    hussh_fleet.refuse([refusing])
    for host in (killed, refusing):  # refused at TCP, as by a dead sshd: not accepted, then reset
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(_address(host), timeout=GUARD).close()
    results = connect(hussh_fleet, hussh_fleet.hosts).execute("true")
    assert results[killed].stderr.startswith("ConnectError: ") and results[refusing].stderr.startswith("ConnectError: ")
    assert results[fine].status == 0
    hussh_fleet.heal()
    assert not connect(hussh_fleet, hussh_fleet.hosts).execute("true").failed


@pytest.mark.hussh_fleet(1)
def test_freeze_needs_the_relay(hussh_fleet):
    with pytest.raises(FleetError, match="network relay"):
        hussh_fleet.freeze(hussh_fleet.hosts)
    with pytest.raises(FleetError, match="network relay"):
        hussh_fleet.set_network(NetworkConditions(rtt=0.1))
    assert hussh_fleet.state(hussh_fleet.hosts[0]) is State.UP


def test_conditions_parse_and_refuse_nonsense():
    assert NetworkConditions.parse("rtt=50ms,jitter=5ms,bandwidth=1M,slow_start=2s") == \
        NetworkConditions(rtt=0.05, jitter=0.005, bandwidth=1e6, slow_start=2.0)
    for bad in ("rtt=-1", "latency=5", "rtt=fast", "bandwidth=0"):
        with pytest.raises(FleetError):
            NetworkConditions.parse(bad)
    with pytest.raises(FleetError, match="not an endpoint"):
        LoopbackFleet(loopback_addresses(1, second_octet=86), network={"127.86.9.9:22": NetworkConditions()})


def test_one_relay_takes_thousands_of_links_in_one_request(tmp_path):
    """A fleet of thousands behind the relay sends every link in one control line (~130 bytes each):
    past asyncio's 64 KiB line limit the relay used to drop the request ("no answer")."""
    links = [f"{a}:{TEST_PORT}" for a in loopback_addresses(1500, second_octet=95)]
    relay = RelayProcess(tmp_path / "relay.sock", tmp_path / "relay.log", subprocess.Popen)
    try:
        relay.command("listen", links=[[link, f"{link.rpartition(':')[0]}:1", conditions_dict(NetworkConditions())]
                                       for link in links])
        relay.command("set", links=links, conditions=conditions_dict(NetworkConditions(rtt=0.02)))
        assert relay.command("stats")["links"] == len(links)
    finally:
        relay.stop()


CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))  # a relay then takes (400 - 64) // 3 = 112 links
from hussh.multi_conn import MultiConnection
from hussh.testing import LoopbackFleet, NetworkConditions, loopback_addresses
addresses = loopback_addresses(200, second_octet=84)
with LoopbackFleet(addresses, port=int(sys.argv[1]), per_process=16, network=NetworkConditions()) as fleet:
    relays = fleet.relay_pids()
    with MultiConnection.from_shared_auth(fleet.hosts, **fleet.credentials.password_auth(), connect_timeout=20,
                                          batch_size=200, workers=2) as mc:
        result = mc.execute("true")  # every host connected at once: 200 live connections through the relays
    print(len(relays), len(result) - len(result.failed), next(iter(result.failed.values()), None))
"""


def test_a_fleet_takes_as_many_relays_as_their_descriptors_need():
    """A relay holds a descriptor per link and two per live connection; past its limit it stops accepting
    (hosts then time out). A fleet splits its links over as many relays as that needs: here 200 endpoints,
    all connected at once, under a 400-descriptor limit (one relay would run out at ~100 connections)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(TEST_PORT)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    relays, succeeded, failure = done.stdout.split(maxsplit=2)
    assert (int(relays), int(succeeded)) == (2, 200), failure


def test_the_command_line_changes_the_links_of_every_relay_of_its_fleet(tmp_path):
    """``hussh fleet net`` sends each relay the hosts it serves (a fleet of 200 under a 400-descriptor limit
    has two): a host of the second relay freezes and thaws as one of the first."""
    fleet = [sys.executable, "-m", "hussh", "fleet"]
    environment = clirun.env(XDG_RUNTIME_DIR=str(tmp_path))

    def run(*arguments: str, limit: list[str] = []) -> str:  # noqa: B006 - never mutated
        done = subprocess.run([*limit, *fleet, *arguments], capture_output=True, text=True, timeout=180,
                              env=environment, stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    info = json.loads(run("up", "200", "--json", "--port", str(TEST_PORT), "--second-octet", "83", "--net", "rtt=0",
                          limit=["prlimit", "--nofile=400:400", "--"]))
    try:
        relays = json.loads((Path(info["hosts"]).parent / "relays.json").read_text())
        assert len(relays) == 2
        first, second = (links[-1] for links in relays.values())
        run("net", "--freeze", first, second)
        for host in (first, second):
            with socket.create_connection(_address(host), timeout=GUARD) as sock:
                sock.settimeout(1.0)
                with pytest.raises(TimeoutError):
                    sock.recv(256)  # frozen: the banner does not come
        run("net", "--thaw")
        for host in (first, second):
            sock, greeting = banner(host)
            sock.close()
            assert greeting.startswith(b"SSH-2.0-")
    finally:
        run("down")
