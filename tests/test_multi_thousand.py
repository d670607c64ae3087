"""1000 real SSH endpoints (63 sshd processes on 1000 loopback addresses) through one MultiConnection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_fleet():
    port = int(os.environ.get("HUSSH_TEST_PORT", "2222"))
    with LoopbackFleet(loopback_addresses(1000, second_octet=78), port=port) as fleet:
        yield fleet


def test_thousand_hosts_in_batches_of_fifty(big_fleet, capsys):
    hosts = big_fleet.addresses
    mc = MultiConnection.from_shared_auth(hosts=hosts, username=PASSWORD_USER, password=PASSWORD,
                                          port=big_fleet.port, batch_size=50)
    with mc:
        results = mc.execute("echo $SSH_CONNECTION")
        print(f"Succeeded: {len(results.succeeded)}")
        print(f"Failed: {len(results.failed)}")
        assert sum(mc._pool.shares) == 50
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
            print(json.dumps([[len(r.succeeded) for r in results], mc._pool.count,
                              sorted({{e.stderr for r in results for e in r.failed.values()}})[:3]]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(big_fleet.addresses), text=True,
                          capture_output=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr
    succeeded, count, errors = json.loads(proc.stdout)
    assert (succeeded, errors) == ([1000] * calls, [])
    assert count == (3 if workers is None else 1)
