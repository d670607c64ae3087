"""1000 real SSH endpoints (63 sshd processes on 1000 loopback addresses) through one MultiConnection:
batches, descriptor limits, and changed host keys among them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncssh
import pytest

from conftest import TEST_PORT
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses
from hussh.workers.protocol import FD_RESERVE

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_fleet():
    with LoopbackFleet(loopback_addresses(1000, second_octet=71), port=TEST_PORT) as fleet:
        yield fleet


def test_thousand_hosts_in_batches_of_fifty(big_fleet, capsys):
    hosts = big_fleet.addresses
    mc = MultiConnection.from_shared_auth(hosts=hosts, username=PASSWORD_USER, password=PASSWORD,
                                          port=big_fleet.port, batch_size=50)
    with mc:
        results = mc.execute("echo $SSH_CONNECTION")
        print(f"Succeeded: {len(results.succeeded)}")
        print(f"Failed: {len(results.failed)}")
        assert all(s.concurrency == min(50, len(s.hosts)) for s in mc.shards())
    assert capsys.readouterr().out == "Succeeded: 1000\nFailed: 0\n"
    assert list(results) == hosts
    assert all(result.stdout.split()[2] == host for host, result in results.items())


@pytest.mark.parametrize("limit, workers, calls", [(512, None, 2), (256, 1, 1)])
def test_thousand_hosts_under_a_low_descriptor_limit(big_fleet, limit, workers, calls):
    """Default workers split the hosts so each fits its own descriptor table; a single worker under
    the limit closes idle connections and queues hosts instead of failing them."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
        from hussh.multi_conn import MultiConnection
        hosts = json.loads(sys.stdin.read())
        with MultiConnection.from_shared_auth(hosts, username="hussh", password="hussh", port={big_fleet.port},
                                              batch_size=200, workers={workers}) as mc:
            results = [mc.execute("whoami") for _ in range({calls})]
            print(json.dumps([[len(r.succeeded) for r in results], len(mc.shards()),
                              sorted({{e.stderr for r in results for e in r.failed.values()}})[:3]]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(big_fleet.addresses), text=True,
                          capture_output=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr
    succeeded, count, errors = json.loads(proc.stdout)
    assert (succeeded, errors) == ([1000] * calls, [])
    if workers is None:  # however many CPUs: enough workers that each shard fits its descriptor table
        assert count >= math.ceil(1000 / (limit - FD_RESERVE)) == 3
        assert math.ceil(1000 / count) <= limit - FD_RESERVE
    else:
        assert count == 1


def changed_keys(fleet: LoopbackFleet) -> dict[str, str]:
    """Ten hosts, on ten different sshd processes, each with the key another process presents."""
    victims = fleet.addresses[5::100]
    wrong = {host: fleet.host_public_key(fleet.addresses[(i * 100 + 5 + 16) % 1000]) for i, host in enumerate(victims)}
    assert len(victims) == 10 and all(wrong[h] != fleet.host_public_key(h) for h in victims)
    return {f"[{host}]:{fleet.port}": key for host, key in wrong.items()}


@pytest.mark.parametrize("others", ["listed", "recorded"])
def test_ten_changed_host_keys_among_a_thousand_fail_exactly_those_hosts(big_fleet, tmp_path, others):
    wrong = changed_keys(big_fleet)
    known = tmp_path / "known_hosts"
    lines = [f"{name} {key}\n" for name, key in wrong.items()]
    if others == "listed":
        lines += [big_fleet.known_hosts_line(h) for h in big_fleet.addresses if f"[{h}]:{big_fleet.port}" not in wrong]
    known.write_text("".join(lines))
    mc = MultiConnection.from_shared_auth(big_fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=big_fleet.port, known_hosts=known, batch_size=200)
    with mc:
        results = mc.execute("echo $SSH_CONNECTION")
    failed = {f"[{h}]:{big_fleet.port}" for h in results.failed}
    assert failed == set(wrong)
    assert {r.error for r in results.failed.values()} == {"HostKeyError"}
    assert all("does not match its known_hosts entry" in r.stderr for r in results.failed.values())
    assert all(r.stdout.split()[2] == host for host, r in results.succeeded.items())
    after = known.read_text().splitlines()
    assert after[:len(lines)] == [line.rstrip("\n") for line in lines]  # what was there stays as it was
    if others == "listed":
        assert len(after) == len(lines)  # nothing new at all
    else:
        assert len(after) == 1000  # the 990 others were new: recorded once each (hashed, as the config says)
    listed = asyncssh.import_known_hosts("\n".join(after))
    for host in big_fleet.addresses:
        trusted = [key.export_public_key().decode().strip() for key in listed.match(host, "", big_fleet.port)[0]]
        name = f"[{host}]:{big_fleet.port}"
        assert trusted == [wrong.get(name, big_fleet.host_public_key(host))], host  # refused hosts: not recorded


def test_rounds_over_more_hosts_than_fit_reconnect_only_the_overflow(big_fleet):
    """A batch job's rounds over 1000 hosts with room for far fewer connections: each call keeps the
    hosts the previous one left connected and reconnects only those that do not fit (plain LRU
    would close each host just before the next round needs it, and reconnect all 1000 every time)."""
    limit, batch = 256, 50
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
        from hussh.multi_conn import MultiConnection
        hosts = json.loads(sys.stdin.read())
        with MultiConnection.from_shared_auth(hosts, username="hussh", password="hussh", port={big_fleet.port},
                                              batch_size={batch}, workers=1) as mc:
            rounds = [mc.execute("echo $SSH_CONNECTION") for _ in range(3)]
            print(json.dumps([[r[h].stdout.split()[1] if r[h].status == 0 else r[h].stderr for h in hosts]
                              for r in rounds]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(big_fleet.addresses), text=True,
                          capture_output=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr
    rounds = json.loads(proc.stdout)
    assert all(port.isdigit() for ports in rounds for port in ports), rounds  # every host answered, every round
    budget = limit - FD_RESERVE
    fits = budget - min(batch, budget // 2)  # connections a worker keeps open: its budget less its lanes
    for before, after in zip(rounds, rounds[1:]):
        reconnected = sum(a != b for a, b in zip(before, after))  # a new client port is a new connection
        assert 1000 - fits - 5 <= reconnected <= 1000 - fits + batch, (reconnected, fits)  # 5: a port reused
