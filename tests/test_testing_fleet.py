"""hussh.testing's fleets, both backends: what they hand out, faults as hussh sees them, nothing left behind.

Fault tests run on the session's loopback fleet (one sshd per endpoint) and, marked ``scale``, on a
compose fleet of two containers with two sshd each, where a fault hits a whole container.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hussh
from conftest import TEST_PORT
from hussh.multi_conn import MultiConnection
from hussh.testing import (
    KEY_USER,
    PASSWORD,
    PASSWORD_USER,
    Fleet,
    FleetError,
    LoopbackFleet,
    State,
    _registry,
    loopback_addresses,
)
from hussh.testing._keys import write_ed25519
from hussh.testing._probe import wait_ready
from hussh.testing._users import PASSWORD_HASH
from sshcheck import whoami

BACKENDS = [
    pytest.param({"size": 4}, id="loopback"),
    pytest.param({"size": 4, "backend": "compose", "per_node": 2}, id="compose", marks=pytest.mark.scale),
]
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 3.0
SLACK = 15.0  # scheduling on two busy cores: a bound that still catches a hang


def connect(fleet: Fleet, hosts: list[str], **options: Any) -> MultiConnection:
    auth: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **fleet.credentials.password_auth(), **options}
    return MultiConnection.from_shared_auth(hosts, **auth)


def run_everywhere(fleet: Fleet, command: str = "hostname") -> dict[str, hussh.SSHResult]:
    """One fresh MultiConnection over every endpoint: connect, run ``command``, close."""
    with connect(fleet, fleet.hosts) as mc:
        return dict(mc.execute(command, timeout=COMMAND_TIMEOUT))


# ------------------------------------------------------------------------------------- what a fleet hands out

@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_logins_with_password_and_keys_and_strict_known_hosts(hussh_fleet, tmp_path):
    known = hussh_fleet.write_known_hosts(tmp_path / "known_hosts")
    assert len({hussh_fleet.host_public_key(e) for e in hussh_fleet.endpoints}) == 4  # a host key each
    creds = hussh_fleet.credentials
    for auth in (creds.password_auth(), creds.key_auth(),
                 {"username": creds.key_user, "private_key": str(creds.encrypted_client_key),
                  "password": creds.key_passphrase}):
        with MultiConnection.from_shared_auth(hussh_fleet.hosts, **auth, known_hosts=known,
                                              host_key_checking="strict", connect_timeout=10) as mc:
            results = mc.execute("id -un")
        assert {r.stdout for r in results.values()} == {f"{auth['username']}\n"}, results


def test_loopback_users_exist_only_inside_the_fleet(fleet):
    uid = fleet.uid(PASSWORD_USER)
    assert whoami(fleet.addresses[0], username=PASSWORD_USER, password=PASSWORD, port=fleet.port) == PASSWORD_USER
    with connect(fleet, fleet.hosts[:1]) as mc:
        inside = mc.execute(f"id -u; echo $HOME; getent passwd {KEY_USER} | cut -d: -f3")
    assert inside[fleet.hosts[0]].stdout.split() == [str(uid), f"/home/{PASSWORD_USER}", str(fleet.uid(KEY_USER))]
    for fleet_uid in (uid, fleet.uid(KEY_USER)):
        with pytest.raises(KeyError):
            pwd.getpwuid(fleet_uid)
    assert PASSWORD_HASH not in Path("/etc/shadow").read_text()


def test_the_machines_own_sshd_refuses_the_fleet_password(fleet, tmp_path):
    """A stock sshd outside the fleet's namespace, allowing passwords: the fleet's login opens nothing."""
    key = tmp_path / "host_key"
    write_ed25519(key, "stock")
    config = tmp_path / "sshd_config"
    config.write_text(f"ListenAddress 127.79.255.1\nPort {TEST_PORT}\nHostKey {key}\nPidFile none\nUsePAM no\n"
                      "PasswordAuthentication yes\nStrictModes no\n")
    stock = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_ready([("127.79.255.1", TEST_PORT)], 30)
        for user in (PASSWORD_USER, KEY_USER):
            host_accounts = [e.pw_name for e in pwd.getpwall()]
            assert user not in host_accounts, (
                f"this machine has an account {user!r} that hussh.testing did not make (older checkouts' "
                f"scale/sshd_fleet.py made {PASSWORD_USER!r} with password {PASSWORD!r}, and {KEY_USER!r}): "
                f"remove it with userdel -r {user}")
            with pytest.raises(hussh.AuthenticationError):
                whoami("127.79.255.1", username=user, password=PASSWORD, port=TEST_PORT, connect_timeout=10)
    finally:
        stock.terminate()
        stock.wait(timeout=10)


def test_host_account_changes_do_not_reach_the_fleet(fleet, tmp_path):
    """useradd and apt replace account files by renaming over them; the fleet's /etc overlay stays."""
    before = Path("/etc/nsswitch.conf").read_text()
    replacement = Path("/etc/.nsswitch.conf.hussh-test")
    replacement.write_text(before)
    replacement.rename("/etc/nsswitch.conf")
    assert Path("/etc/nsswitch.conf").read_text() == before
    with connect(fleet, fleet.hosts[:1]) as mc:
        result = mc.execute("grep '^passwd:' /etc/nsswitch.conf; id -un")
    assert result[fleet.hosts[0]].stdout == f"passwd: files\n{PASSWORD_USER}\n"


# ------------------------------------------------------------------------------------- faults seen from hussh

@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_paused_endpoints_hit_the_timeout_bounds_then_come_back(hussh_fleet):
    with connect(hussh_fleet, hussh_fleet.hosts) as mc:
        paused = hussh_fleet.pause(hussh_fleet.hosts[:1])
        started = time.monotonic()
        connected = mc.execute("hostname", timeout=COMMAND_TIMEOUT)
        fresh = connect(hussh_fleet, [str(e) for e in paused])
        with fresh:
            new = fresh.execute("hostname")
        elapsed = time.monotonic() - started
        assert all(hussh_fleet.state(e) is State.PAUSED for e in paused)
        hussh_fleet.unpause(paused)
        after = mc.execute("hostname", timeout=COMMAND_TIMEOUT)
    assert elapsed < COMMAND_TIMEOUT + CONNECT_TIMEOUT + SLACK
    for host, result in connected.items():
        if host in {str(e) for e in paused}:
            assert result.status == -1 and "timed out after" in result.stderr, result
        else:
            assert result.status == 0, result
    assert all(r.stderr.startswith("ConnectTimeout: ") for r in new.values()), new
    assert not after.failed, after


@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_killed_endpoints_lose_their_connection_mid_command_then_start_again(hussh_fleet):
    victim = hussh_fleet.hosts[0]
    killed: list = []
    running = False

    def kill_when_only_the_victim_runs(done: int, total: int) -> None:
        if running and done == total - 1 and not killed:
            killed.extend(hussh_fleet.kill([victim]))

    with connect(hussh_fleet, hussh_fleet.hosts, progress=kill_when_only_the_victim_runs) as mc:
        commands = {h: "sleep 60" if h == victim else "echo ok" for h in hussh_fleet.hosts}
        running, started = True, time.monotonic()
        results = mc.execute_map(commands, timeout=60)
        elapsed = time.monotonic() - started
    assert elapsed < 60 and killed
    lost = {str(e) for e in killed}
    for host, result in results.items():
        if host == victim:
            assert result.status == -1 and result.stderr.startswith("ConnectionLost: "), result
        elif host not in lost:
            assert result.stdout == "ok\n", result
    refused = run_everywhere(hussh_fleet)
    assert all(refused[h].stderr.startswith("ConnectError: ") for h in lost), refused
    hussh_fleet.start(killed)
    assert not [h for h, r in run_everywhere(hussh_fleet).items() if r.status != 0]


@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_blackholed_endpoints_time_out_connecting(hussh_fleet):
    holed = {str(e) for e in hussh_fleet.blackhole(hussh_fleet.hosts[:1])}
    started = time.monotonic()
    results = run_everywhere(hussh_fleet)
    assert time.monotonic() - started < CONNECT_TIMEOUT + SLACK
    for host, result in results.items():
        expected = result.stderr.startswith("ConnectTimeout: ") if host in holed else result.status == 0
        assert expected, (host, result)


@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_refusing_endpoints_fail_to_connect_at_once(hussh_fleet):
    refusing = {str(e) for e in hussh_fleet.refuse(hussh_fleet.hosts[:1])}
    results = run_everywhere(hussh_fleet)
    for host, result in results.items():
        expected = result.stderr.startswith("ConnectError: ") if host in refusing else result.status == 0
        assert expected, (host, result)


@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_slow_endpoints_still_answer_correctly_only_later(hussh_fleet):
    delay = 0.1
    slow = hussh_fleet.slow(hussh_fleet.hosts[:1], delay=delay)
    started = time.monotonic()
    with connect(hussh_fleet, [str(e) for e in slow]) as mc:
        results = mc.execute("echo $SSH_CONNECTION; hostname")
    elapsed = time.monotonic() - started
    assert not results.failed, results
    # the handshake, login, channel and command take at least three round trips, each held back twice
    assert elapsed >= 3 * 2 * delay


@pytest.mark.parametrize("hussh_fleet", BACKENDS, indirect=True)
def test_faults_need_the_right_state_and_heal_restores_every_node(hussh_fleet):
    first, last = hussh_fleet.hosts[0], hussh_fleet.hosts[-1]
    paused = hussh_fleet.pause([first])
    with pytest.raises(FleetError, match="heal them first"):
        hussh_fleet.blackhole([first])
    with pytest.raises(FleetError, match="not endpoints of this fleet"):
        hussh_fleet.kill(["127.0.0.2:1"])
    refusing = hussh_fleet.refuse([last])
    assert sorted(hussh_fleet.heal()) == sorted(paused + refusing)
    with hussh_fleet.fault("blackhole", [last]) as holed:
        assert {hussh_fleet.state(e) for e in holed} == {State.BLACKHOLED}
    assert {hussh_fleet.state(h) for h in hussh_fleet.hosts} == {State.UP}
    assert not [h for h, r in run_everywhere(hussh_fleet).items() if r.status != 0]


# ------------------------------------------------------------------------------------- nodes and teardown

def test_a_fault_hits_every_endpoint_of_a_shared_sshd_process():
    with LoopbackFleet(loopback_addresses(6, second_octet=79), port=TEST_PORT, per_process=2) as shared:
        assert [len(node) for node in shared.nodes()] == [2, 2, 2]
        paused = shared.pause([shared.addresses[0]])
        assert [e.host for e in paused] == shared.addresses[:2]
        assert [e.host for e in shared.sample(0.34)] == shared.addresses[:2]
        assert [e.host for e in shared.sample(1, offset=2)] == shared.addresses[4:]
        results = run_everywhere(shared)
        assert {h.split(":")[0] for h, r in results.items() if r.status != 0} == set(shared.addresses[:2])
    assert shared.leftovers() == []


def test_login_records_go_to_the_fleets_own_files():
    """A pty login and a failed one: the machine's lastlog, wtmp and btmp are not the files the fleet writes."""
    records = [p for p in ("/var/log/lastlog", "/var/log/wtmp", "/var/log/btmp") if Path(p).exists()]
    with LoopbackFleet(loopback_addresses(1, second_octet=80), port=TEST_PORT) as fleet:
        with pytest.raises(hussh.AuthenticationError):
            whoami(fleet.addresses[0], username=PASSWORD_USER, password="wrong", port=fleet.port)
        with hussh.Connection(fleet.addresses[0], username=PASSWORD_USER, password=PASSWORD, port=fleet.port) as conn:
            with conn.shell(pty=True) as shell:
                shell.send(f"stat -c %d:%i {' '.join(records)}")
            ids = conn.execute(f"stat -c %d:%i {' '.join(records)}").stdout.split()
        uid = fleet.uid(PASSWORD_USER)
    assert shell.result is not None and shell.result.status == 0 and len(ids) == len(records)
    assert not {f"{os.stat(p).st_dev}:{os.stat(p).st_ino}" for p in records} & set(ids)
    assert os.stat("/var/log/lastlog").st_size < uid * 292  # its record would sit at uid * 292 bytes


def test_down_leaves_nothing_behind_whatever_was_running():
    """Sessions with a background command, a paused node, a blackhole proxy, a slow relay: down removes all."""
    fleet = LoopbackFleet(loopback_addresses(3, second_octet=80), port=TEST_PORT, per_process=1).up()
    mc = connect(fleet, fleet.hosts)
    try:
        mc.connect()
        mc.execute("sleep 600 </dev/null >/dev/null 2>&1 &")
        fleet.pause(fleet.hosts[:1])
        fleet.blackhole(fleet.hosts[1:2])
        fleet.slow(fleet.hosts[2:])
        assert fleet.record is not None  # up() registered the fleet
        record = dict(fleet.record)
        assert fleet.leftovers() != [] and fleet.pids()
    finally:
        fleet.down()
    mc.close()
    assert fleet.leftovers() == [] and _registry.leftovers(record) == []


def test_a_fleet_whose_owner_died_is_torn_down_by_the_next_one(tmp_path):
    script = textwrap.dedent(f"""
        import json, os, signal
        from hussh.testing import LoopbackFleet, loopback_addresses
        fleet = LoopbackFleet(loopback_addresses(2, second_octet=81), port={TEST_PORT}).up()
        print(json.dumps(fleet.record), flush=True)
        fleet.watcher.kill()  # killed with its owner, as by a whole cgroup at once
        fleet.watcher.wait()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    owner = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    record = json.loads(owner.stdout)
    assert _registry.orphaned(record) and _registry.leftovers(record)
    with LoopbackFleet(loopback_addresses(1, second_octet=81), port=TEST_PORT + 1) as fleet:
        assert fleet.record is not None and fleet.record["id"] != record["id"]
    assert _registry.leftovers(record) == []


OWNER = textwrap.dedent("""
    import json, sys
    import hussh
    from hussh.testing import ComposeFleet, LoopbackFleet, loopback_addresses
    fleet = {fleet}.up()
    host, port = fleet.hosts[0].rsplit(":", 1)
    conn = hussh.Connection(host, port=int(port), **fleet.credentials.password_auth())
    conn.execute("sleep 600 </dev/null >/dev/null 2>&1 &")  # an orphan of a session
    print(json.dumps([fleet.record, fleet.hosts]), flush=True)
    sys.stdin.read()  # until killed, its connection open
""")


def killed_owner(fleet: str, death: signal.Signals) -> list[str]:
    """Start ``fleet`` (an expression) in a child process and kill the child with ``death``; return the
    fleet's hosts once nothing of it is left (its watcher acts within seconds: the bound only stops a hang)."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER.replace("{fleet}", fleet)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        record, hosts = json.loads(owner.stdout.readline() or "[null, []]")  # type: ignore[union-attr]
        assert record is not None and _registry.leftovers(record)
        owner.send_signal(death)
        assert owner.wait(timeout=60) == -death
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()  # type: ignore[union-attr]
        owner.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while _registry.leftovers(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _registry.leftovers(record) == []
    return hosts


def banner(host: str) -> bytes:
    """The first bytes sent on a new connection to ``host:port`` (ConnectionRefusedError once nothing listens)."""
    address, port = host.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        return sock.recv(8)


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM])
def test_an_owned_fleet_goes_with_its_owner_however_it_dies_a_detached_one_stays(tmp_path, death):
    """The owner killed (SIGTERM: Python's default handler, no cleanup): its watcher tears the fleet down,
    sessions and orphans included; a fleet from ``fleet up``, whose starter exited first, stays up."""
    cli_state = tmp_path / "cli"  # the command line's registry, apart from the suite's (and the machine's)
    cli_state.mkdir(mode=0o700)
    cli = {**os.environ, "XDG_RUNTIME_DIR": str(cli_state)}
    detached = subprocess.run([sys.executable, "-m", "hussh.testing", "up", "2", "--json", "--port", str(TEST_PORT),
                               "--second-octet", "83"], capture_output=True, text=True, timeout=120, env=cli)
    assert detached.returncode == 0, detached.stderr
    try:
        for host in killed_owner(f"LoopbackFleet(loopback_addresses(3, second_octet=82), port={TEST_PORT}, "
                                 "per_process=1)", death):
            with pytest.raises(ConnectionRefusedError):
                banner(host)
        hosts = Path(json.loads(detached.stdout)["hosts"]).read_text().split()
        assert [banner(host) for host in hosts] == [b"SSH-2.0-"] * 2
    finally:
        down = subprocess.run([sys.executable, "-m", "hussh.testing", "down"], capture_output=True, text=True,
                              timeout=120, env=cli)
        assert down.returncode == 0, down.stderr


@pytest.mark.scale
def test_an_owned_compose_fleet_goes_with_its_owner():
    """Its containers, with the fleet's password, are removed when its owner is SIGKILLed."""
    base_port = 26000 + TEST_PORT % 300 * 20 + 10  # above the session's compose fleet
    for host in killed_owner(f"ComposeFleet(2, per_container=2, base_port={base_port}, "
                             f"project='hussh-owner-{TEST_PORT}')", signal.SIGKILL):
        with pytest.raises(ConnectionRefusedError):
            banner(host)


def test_a_fleet_whose_watcher_cannot_start_fails_up_and_leaves_nothing():
    script = textwrap.dedent(f"""
        import json, sys
        from hussh.testing import FleetError, LoopbackFleet
        sys.executable = "/bin/false"  # what the watcher runs: it exits at once, never watching
        fleet = LoopbackFleet(["127.84.0.1"], port={TEST_PORT})
        try:
            fleet.up()
        except FleetError as error:
            print(json.dumps([fleet.record, str(error)]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    record, error = json.loads(done.stdout or "[null, null]")
    assert record is not None and error == "the fleet's watcher did not start: no output", done.stderr
    assert _registry.leftovers(record) == []


def test_importing_the_package_starts_nothing():
    script = textwrap.dedent("""
        import glob, json, sys
        import hussh.testing, hussh.testing.plugin, hussh.testing.cli
        children = [pid for path in glob.glob("/proc/self/task/*/children") for pid in open(path).read().split()]
        print(json.dumps([children, "docker" in sys.modules]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": ""})
    assert json.loads(done.stdout) == [[], False], done.stderr


def test_an_endpoint_already_taken_fails_up_with_sshds_reason_and_leaves_nothing():
    with socket.create_server(("127.86.0.2", TEST_PORT)):
        fleet = LoopbackFleet(["127.86.0.1", "127.86.0.2"], port=TEST_PORT, per_process=1)
        with pytest.raises(FleetError, match="sshd of 127.86.0.2 exited with 255: Cannot bind any address"):
            fleet.up(timeout=60)
    assert fleet.record is not None and fleet.leftovers() == []


def test_an_address_that_another_server_answers_fails_up_naming_it():
    """sshd starts when it binds some of its addresses: another SSH server on one of them must not pass for it."""
    with socket.create_server(("127.86.0.4", TEST_PORT)) as impostor:
        stop = threading.Event()

        def answer() -> None:
            impostor.settimeout(0.1)
            while not stop.is_set():
                with contextlib.suppress(OSError):  # a timeout to look at ``stop``, a prober gone
                    client, _ = impostor.accept()
                    with client:
                        client.sendall(b"SSH-2.0-impostor\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        fleet = LoopbackFleet(["127.86.0.3", "127.86.0.4"], port=TEST_PORT, per_process=2)
        try:
            taken = rf"127\.86\.0\.4:{TEST_PORT}: Bind to port {TEST_PORT} on 127\.86\.0\.4 failed: Address already"
            with pytest.raises(FleetError, match=rf"sshd of 127\.86\.0\.3 could not listen on {taken}"):
                fleet.up(timeout=60)
        finally:
            fleet.down()  # up() left nothing when it failed; when it passed, its fleet goes here
            stop.set()
            thread.join()
    assert fleet.record is not None and fleet.leftovers() == []
