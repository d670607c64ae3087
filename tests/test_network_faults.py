"""A vanished network is noticed: links frozen by the relay mid-command, mid-transfer, mid-tail and under a
bastion's hosts fail those hosts within their bound while the others finish; a host reset during the key
exchange is connected again (the connection only); connections opened at once to one server stay under its
``MaxStartups``; keepalives are on by default and ``ServerAlive*`` from the ssh config are honoured.

Bounds are asserted as hang guards (generous upper limits), never as speed."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import TEST_PORT
from hussh import ConnectOptions, Retry
from hussh._make_spec import make_spec
from hussh._spec import DEFAULT_KEEPALIVE_COUNT_MAX, DEFAULT_KEEPALIVE_INTERVAL
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection, MultiResult
from hussh.testing import Fleet, LoopbackFleet, NetworkConditions, loopback_addresses
from procs import marker, sleepers, wait_until

RELAYED = pytest.mark.hussh_fleet(3, network=NetworkConditions())
KEEPALIVE = 1.0  # seconds: a frozen link is noticed after (3 + 1) of them
GUARD = 60.0  # a call still running after this long is hung


def in_thread(call: Callable[[], MultiResult]) -> tuple[threading.Thread, dict[str, MultiResult]]:
    """Run ``call`` in a thread, so the test can act while it runs; its result lands in the dict."""
    out: dict[str, MultiResult] = {}
    thread = threading.Thread(target=lambda: out.__setitem__("result", call()), daemon=True)
    thread.start()
    return thread, out


def finished(thread: threading.Thread, out: dict[str, MultiResult], fleet: Fleet) -> MultiResult:
    """The call's result; a call still running after GUARD seconds is hung (thawed so it can end)."""
    thread.join(GUARD)
    if thread.is_alive():
        fleet.heal()
        thread.join(GUARD)
        pytest.fail(f"the call was still running {GUARD:g} s later: a frozen link was never noticed")
    return out["result"]


def keyed(fleet: Fleet, hosts: list[str], **options: object) -> MultiConnection:
    known = fleet.write_known_hosts(Path(fleet.workdir) / "known_hosts")  # type: ignore[attr-defined]
    return MultiConnection.from_shared_auth(hosts, **fleet.credentials.key_auth(), known_hosts=str(known),
                                            host_key_checking="strict", connect_timeout=20, **options)  # type: ignore[arg-type]


@RELAYED
def test_a_link_frozen_mid_command_fails_its_host_by_keepalives_and_the_others_finish(hussh_fleet):
    frozen, *others = hussh_fleet.hosts
    token = marker()
    with keyed(hussh_fleet, hussh_fleet.hosts, keepalive_interval=KEEPALIVE) as mc:
        assert not mc.connect().failed
        # no command timeout: only the keepalives can notice the frozen host
        thread, out = in_thread(lambda: mc.execute(f"sleep {token} & pid=$!; sleep 4; kill $pid; echo done"))
        wait_until(lambda: len(sleepers(token)) == 3, 30, "the commands to start")
        hussh_fleet.freeze([frozen])
        try:
            results = finished(thread, out, hussh_fleet)
        finally:
            hussh_fleet.heal([frozen])
    assert results[frozen].status == -1 and results[frozen].stderr.startswith("ConnectionLost: "), results[frozen]
    assert "keepalive" in results[frozen].stderr
    assert all(results[h].stdout == "done\n" for h in others), results


@RELAYED
def test_a_link_frozen_mid_tail_and_mid_transfer_fails_by_the_stall_bound(hussh_fleet):
    frozen, other = hussh_fleet.hosts[:2]
    first, second = hussh_fleet.endpoints[:2]
    creds = hussh_fleet.credentials.key_auth()
    conns = [AsyncConnection(e.host, port=e.port, **creds, host_key_checking="off", stall_timeout=2)
             for e in (first, second)]
    with MultiConnection(conns) as mc:
        assert not mc.execute("head -c 3000000 /dev/zero > big.bin; echo line > tailed.log").failed
        with mc.tail("tailed.log") as tail:
            mc.execute("echo more >> tailed.log")
            hussh_fleet.freeze([frozen])
            try:
                tailed = tail.read()
            finally:
                hussh_fleet.heal([frozen])
        assert tail.errors[first.host].startswith("TransferStalled: "), tail.errors
        assert tailed[second.host].endswith("more\n"), tailed  # the hosts share one home: one line or two
        hussh_fleet.set_network(NetworkConditions(bandwidth=300_000), [frozen, other])  # ~10 s per read
        try:
            before = hussh_fleet.relay_stats()["bytes"]
            thread, out = in_thread(lambda: mc.sftp_read("big.bin"))
            wait_until(lambda: hussh_fleet.relay_stats()["bytes"] > before + 600_000, 30, "the reads to be under way")
            hussh_fleet.freeze([frozen])
            try:
                read = finished(thread, out, hussh_fleet)
            finally:
                hussh_fleet.heal([frozen])
        finally:
            hussh_fleet.set_network(NetworkConditions())
    assert read[first.host].stderr.startswith("TransferStalled: "), read[first.host]
    assert read[second.host].status == 0 and len(read[second.host].stdout) == 3_000_000


@pytest.fixture(scope="module")
def relayed() -> Iterator[LoopbackFleet]:
    """One endpoint behind the relay, for this module's own counts of the connections it accepts."""
    with LoopbackFleet(loopback_addresses(1, second_octet=91), port=TEST_PORT, per_process=1,
                       network=NetworkConditions()) as fleet:
        yield fleet


def test_a_reset_during_the_key_exchange_is_connected_again_and_runs_the_command_once(relayed, tmp_path):
    host = relayed.hosts[0]
    relayed.set_network(NetworkConditions(rtt=0.4))  # a handshake of several seconds
    counter = tmp_path.name + ".runs"
    mc = keyed(relayed, [host], retry=Retry(backoff=0.2))  # not entered: that would connect
    with contextlib.closing(mc):
        before = relayed.relay_stats()["accepted"]
        thread, out = in_thread(lambda: mc.execute(f"echo x >> {counter}; wc -l < {counter}"))
        wait_until(lambda: relayed.relay_stats()["accepted"] > before or not thread.is_alive(), 30,
                   "the client to dial")
        relayed.reset([host])  # before the login can have finished: TCP alone takes 0.6 s, then 4 round trips
        results = finished(thread, out, relayed)
        accepted = relayed.relay_stats()["accepted"] - before
    assert results[host].status == 0 and results[host].stdout.strip() == "1", results  # ran once
    assert accepted == 2  # the reset connection, then the one that logged in


# ------------------------------------------------------------------------------------------ a bastion frozen

@pytest.fixture(scope="module")
def targets() -> Iterator[LoopbackFleet]:
    """150 target endpoints (10 sshd), reached only through the bastion in these tests."""
    with LoopbackFleet(loopback_addresses(150, second_octet=87), port=TEST_PORT, per_process=15) as fleet:
        yield fleet


@RELAYED
def test_a_bastion_frozen_under_150_hosts_fails_them_all_and_direct_hosts_finish(hussh_fleet, targets):
    bastion = hussh_fleet.hosts[0]
    first, second = hussh_fleet.endpoints[:2]
    jump = AsyncConnection(first.host, port=first.port, **hussh_fleet.credentials.key_auth(),
                           host_key_checking="off", keepalive_interval=KEEPALIVE)
    tunnelled = [AsyncConnection(e.host, port=e.port, **targets.credentials.key_auth(), host_key_checking="off",
                                 proxy_jump=jump, keepalive_interval=0)  # only the bastion's keepalives can notice
                 for e in targets.endpoints]
    plain = AsyncConnection(second.host, port=second.port, **hussh_fleet.credentials.key_auth(),
                            host_key_checking="off")
    token = marker()
    with MultiConnection([*tunnelled, plain], batch_size=200) as mc:
        assert not mc.connect().failed
        thread, out = in_thread(lambda: mc.execute(f"sleep {token} & pid=$!; sleep 5; kill $pid; echo done"))
        wait_until(lambda: len(sleepers(token)) == 151, 60, "the commands to start")
        hussh_fleet.freeze([bastion])
        try:
            results = finished(thread, out, hussh_fleet)
        finally:
            hussh_fleet.heal([bastion])
    lost = [r for r in results.values() if r.stderr.startswith("ConnectionLost: ")]
    assert len(lost) == 150, [r for r in results.values() if r not in lost][:3]
    assert results[second.host].stdout == "done\n"


# ------------------------------------------------------------------------------------------ MaxStartups

@pytest.fixture(scope="module")
def crowded() -> Iterator[LoopbackFleet]:
    """One endpoint whose sshd drops every unauthenticated connection beyond 4 (``MaxStartups 5:100:5``)."""
    fleet = LoopbackFleet(loopback_addresses(1, second_octet=88), port=TEST_PORT, per_process=1)
    write = fleet._write_config

    def strict(node, port):
        path = write(node, port)
        path.write_text(path.read_text().replace("MaxStartups 100000", "MaxStartups 5:100:5"))
        return path

    fleet._write_config = strict  # type: ignore[method-assign]
    with fleet:
        yield fleet


def aliases(fleet: LoopbackFleet, tmp_path: Path, count: int) -> tuple[list[str], Path]:
    """``count`` names in an ssh config for the fleet's one server (many names, one address)."""
    host, _, port = fleet.hosts[0].rpartition(":")
    names = [f"alias{i}" for i in range(count)]
    config = tmp_path / "ssh_config"
    config.write_text(f"Host alias*\n  HostName {host}\n  Port {port}\n")
    return names, config


def spellings(address: str) -> list[str]:
    """Ways to write one IPv4 address that the C library reads as it, with no lookup (octets in decimal,
    octal or hex): as many names for one server as a test wants, without DNS."""
    forms = [(str(n), f"0{n:o}", f"0x{n:x}") for n in map(int, address.split("."))]
    return [".".join(octets) for octets in itertools.product(*forms)]


def spelled(fleet: LoopbackFleet, tmp_path: Path, count: int) -> tuple[list[str], Path]:
    """``count`` names in an ssh config, each with a ``HostName`` of its own, all one address and port."""
    host, _, port = fleet.hosts[0].rpartition(":")
    names = [f"spelled{i}" for i in range(count)]
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host {name}\n  HostName {form}\n  Port {port}\n"
                              for name, form in zip(names, spellings(host), strict=False)))
    return names, config


def crowd(fleet: LoopbackFleet, tmp_path: Path, retry: Retry, named: Callable[..., tuple[list[str], Path]] = aliases
          ) -> MultiResult:
    names, config = named(fleet, tmp_path, 40)
    with MultiConnection.from_shared_auth(names, **fleet.credentials.key_auth(), host_key_checking="off",
                                          ssh_config=str(config), retry=retry, workers=2,
                                          batch_size=40) as mc:
        return mc.execute("true")


def test_connections_to_one_server_are_capped_below_its_max_startups(crowded, tmp_path):
    # 2 workers x 1, below 5 with room for sshd's lag in counting a login done (it learns it from the session)
    capped = crowd(crowded, tmp_path, Retry(per_server=2, handshake_attempts=1))
    assert not capped.failed, dict(list(capped.failed.items())[:3])


def test_the_cap_is_per_address_whatever_host_names_lead_there(crowded, tmp_path):
    """40 names with 40 different ``HostName`` spellings of one address: one server, one cap."""
    assert len(set(spellings(crowded.addresses[0]))) == 81
    capped = crowd(crowded, tmp_path, Retry(per_server=2, handshake_attempts=1), spelled)
    assert not capped.failed, dict(list(capped.failed.items())[:3])


def test_the_crowded_server_really_drops_connections_past_max_startups(crowded, tmp_path):
    """The control of the test above: uncapped and without retries, 40 logins at once are dropped."""
    uncapped = crowd(crowded, tmp_path, Retry(per_server=100, handshake_attempts=1))
    assert uncapped.failed
    assert all("closed the SSH handshake" in r.stderr or "reset" in r.stderr for r in uncapped.failed.values()), \
        dict(list(uncapped.failed.items())[:3])


# ------------------------------------------------------------------------------------------ settings

def test_keepalives_are_on_by_default_and_the_ssh_config_and_arguments_set_them(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host off\n  ServerAliveInterval 0\nHost zero\n  ServerAliveCountMax 0\n"
                      "Host set\n  ServerAliveInterval 7\n  ServerAliveCountMax 5\n")
    spec = make_spec("plain", ConnectOptions(ssh_config=False))
    assert (spec.keepalive_interval, spec.keepalive_count_max) == (DEFAULT_KEEPALIVE_INTERVAL,
                                                                   DEFAULT_KEEPALIVE_COUNT_MAX) == (15.0, 3)
    from_config = ConnectOptions(ssh_config=config)
    assert make_spec("off", from_config).keepalive_interval == 0
    assert make_spec("zero", from_config).keepalive_count_max == 0  # one silent interval closes it
    assert (make_spec("set", from_config).keepalive_interval,
            make_spec("set", from_config).keepalive_count_max) == (7.0, 5)
    assert make_spec("set", from_config.replace(keepalive_interval=2)).keepalive_interval == 2  # argument first
    assert make_spec("set", from_config.replace(keepalive_interval=0)).keepalive_interval == 0  # 0: off
    jump = make_spec("plain", ConnectOptions(ssh_config=False, proxy_jump="bastion")).jump
    assert jump is not None and jump.keepalive_interval == 15.0


def test_the_per_server_cap_is_shared_by_the_workers():
    assert Retry().per_server == 8 and Retry().shared_by(2).per_server == 4
    assert Retry().shared_by(16).per_server == 1 and Retry(per_server=30).shared_by(3).per_server == 10
    with pytest.raises(ValueError):
        Retry(per_server=0)
