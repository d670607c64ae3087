"""Host names at scale, against a resolver of the test's own in a private network namespace.

Each test runs a script under ``unshare --net --mount`` (``scale.dns_namespace``): loopback only,
/etc/resolv.conf and nsswitch.conf point at a responder on 127.0.0.1:53 there, so no query leaves
the machine. ``ip-127-A-B-C.<zone>`` names resolve to 127.A.B.C, every other name is NXDOMAIN, and
the responder can also answer late or never. The fleet test starts its sshd fleet inside the same
namespace, where the host's loopback fleet cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clirun import REPO, env
from conftest import TEST_PORT
from scale import dns_namespace

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "ip")),
    reason="a private network namespace needs root, unshare and ip")

CONNECT_TIMEOUT = 2.0


def in_namespace(script: str, tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (Python, ``args`` in ``sys.argv``) in a new namespace with the test's resolver."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    argv = dns_namespace.command([sys.executable, "-c", textwrap.dedent(script), *args], tmp_path)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL,
                          env=env(HOME=str(home)))


def last_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


FLEET_SCRIPT = """
    import json, sys
    from pathlib import Path
    from scale.dns_namespace import start_server
    from hussh.multi_conn import MultiConnection
    from hussh.testing import LoopbackFleet, loopback_addresses

    port, log, config = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    server = start_server(log=log)
    try:
        with LoopbackFleet(loopback_addresses(2), port=port) as fleet:
            hosts = ["ip-127-77-0-1.test", "alias-a", "alias-b", "nosuch-1.test", "nosuch-2.test"]
            mc = MultiConnection.from_shared_auth(hosts, port=port, ssh_config=config, host_key_checking="off",
                                                  workers=1, **fleet.credentials.password_auth())
            try:
                results = mc.execute("echo ok")
            finally:
                mc.close()
    finally:
        server.kill()
        server.wait()
    print(json.dumps({host: [r.status, r.error, r.stdout, r.stderr] for host, r in results.items()}))
"""


def test_names_resolve_to_the_fleet_and_unknown_names_fail_as_resolve_errors(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host alias-a alias-b\n    HostName ip-127-77-0-2.test\n")
    log = tmp_path / "queries"
    results = last_json(in_namespace(FLEET_SCRIPT, tmp_path, str(TEST_PORT), str(log), str(config)))
    for host in ("ip-127-77-0-1.test", "alias-a", "alias-b"):
        assert results[host][:3] == [0, "", "ok\n"], results[host]
    for name in ("nosuch-1.test", "nosuch-2.test"):
        status, kind, _, stderr = results[name]
        assert (status, kind) == (-1, "ResolveError"), results[name]
        assert stderr.startswith(f"ResolveError: cannot resolve host '{name}': "), stderr
    asked = log.read_text().splitlines()
    assert asked.count("ip-127-77-0-2.test 1") == 1, asked  # one lookup for the two hosts of one call


SILENT_SCRIPT = """
    import json, os, subprocess, sys, time
    from scale.dns_namespace import start_server

    client = '''
    import json, sys, time
    from hussh import Connection, ResolveError
    from hussh.multi_conn import MultiConnection

    bound = float(sys.argv[1])
    hosts = [f"silent-{i}.test" for i in range(40)] + ["127.0.0.9"]  # nothing listens there
    mc = MultiConnection.from_shared_auth(hosts, username="nobody", password="x", connect_timeout=bound, workers=2)
    start = time.monotonic()
    results = mc.execute("true")
    mc.close()
    try:
        Connection("silent-single.test", username="nobody", password="x", connect_timeout=bound)
        single = "connected?"
    except ResolveError as exc:
        single = str(exc)
    named = [r for host, r in results.items() if host != "127.0.0.9"]
    print(json.dumps({"call": time.monotonic() - start, "single": single, "numeric": results["127.0.0.9"].stderr,
                      "kinds": sorted({r.error for r in named}), "stderr": sorted({r.stderr for r in named})[:2]}),
          flush=True)
    '''
    server = start_server(silent=True)
    try:
        # one lookup at a time per process: the first silent name holds it, the others queue behind it
        proc = subprocess.Popen([sys.executable, "-c", client, sys.argv[1]], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "HUSSH_DNS_CONCURRENCY": "1"})
        line = proc.stdout.readline()
        returned = time.monotonic()
        proc.wait(timeout=60)
        exited = time.monotonic() - returned
    finally:
        server.kill()
        server.wait()
    print(json.dumps({**json.loads(line), "exit_after_return": exited, "status": proc.returncode}))
"""


def test_a_silent_resolver_ends_the_call_within_the_bound_and_holds_up_no_exit(tmp_path):
    """Lookups that never end fail each host within its bound; then nothing waits for them at exit.
    A numeric address never waits for the resolver.

    Before: the event loop's own lookups held each worker's exit until it was killed (5 s later),
    and the caller's interpreter until libuv's threads gave up (10 s a lookup)."""
    figures = last_json(in_namespace(SILENT_SCRIPT, tmp_path, str(CONNECT_TIMEOUT)))
    assert figures["status"] == 0
    assert figures["kinds"] == ["ResolveError"], figures
    assert "cannot resolve host 'silent-" in figures["stderr"][0]
    assert f"no answer from the resolver within {CONNECT_TIMEOUT:g} seconds" in figures["stderr"][0]
    assert figures["single"] == ("cannot resolve host 'silent-single.test': no answer from the resolver "
                                 f"within {CONNECT_TIMEOUT:g} seconds")
    assert figures["numeric"] == "ConnectError: connection refused by 127.0.0.9:22", figures
    assert figures["call"] < 2 * CONNECT_TIMEOUT + 10, figures  # one host each, then the single one
    assert figures["exit_after_return"] < 4.0, figures  # a condition with slack, not a speed: the old way took 5+


CLI_SCRIPT = """
    import json, subprocess, sys
    from scale.dns_namespace import start_server

    server = start_server(delay=1.5)  # every answer (NXDOMAIN) comes after the host's connect bound
    try:
        done = subprocess.run([sys.executable, "-m", "hussh", "run", "-q", "--connect-timeout", "1",
                               "-w", "nosuch[1-500].test", "true"], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        server.kill()
        server.wait()
    print(json.dumps({"status": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
"""


@pytest.mark.slow
def test_quiet_run_over_unresolvable_names_prints_only_its_summary(tmp_path):
    """No "Future exception was never retrieved" block for a lookup its host stopped waiting for."""
    done = last_json(in_namespace(CLI_SCRIPT, tmp_path, timeout=180))
    assert done["status"] == 1, done
    assert "never retrieved" not in done["stderr"] and "Traceback" not in done["stderr"], done["stderr"][:3000]
    assert done["stderr"].startswith("500 ResolveError in "), done["stderr"][:3000]
    assert len(done["stderr"].splitlines()) == 1, done["stderr"][:3000]
