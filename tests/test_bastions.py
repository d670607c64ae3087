"""ProxyJump bastions against real sshd: targets the client cannot reach except through a bastion.

An iptables rule (removed afterwards) rejects every TCP connection to the targets' port except
those made by the bastions' login user, so only the sshd session of a bastion login can reach
them; the tests prove it by failing a direct connection first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TEST_PORT
from hussh import Connection
from hussh._bastions import pool
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses
from sshcheck import whoami

JUMP_PORT, HIDDEN_PORT = TEST_PORT + 101, TEST_PORT + 102  # conftest claimed both for this session


def iptables(action: str, rule: list[str]) -> None:
    subprocess.run(["iptables", action, "OUTPUT", *rule], check=True, capture_output=True, timeout=30)


def _hidden_rules(port: int, uids: list[int]) -> list[list[str]]:
    """Reject TCP to ``port`` unless it comes from one of ``uids`` (in insertion order: reject first)."""
    match = ["-o", "lo", "-p", "tcp", "--dport", str(port), "-m", "comment", "--comment", f"hussh-test-hidden-{port}"]
    reject = [*match, "-j", "REJECT", "--reject-with", "tcp-reset"]
    return [reject] + [[*match, "-m", "owner", "--uid-owner", str(uid), "-j", "ACCEPT"] for uid in uids]


def _remove_rules(port: int) -> None:
    """Drop every rule a test (this one or an interrupted one) left for ``port``."""
    listing = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True, timeout=30).stdout
    for line in listing.splitlines():
        if f"hussh-test-hidden-{port}" in line:
            subprocess.run(["iptables", "-D", *line.split()[1:]], capture_output=True, timeout=30)


class Network:
    """Bastion b1 (reachable), bastion b2 and six targets (reachable only from a bastion login)."""

    def __init__(self) -> None:
        self.b1 = LoopbackFleet(["127.75.0.1"], port=JUMP_PORT, per_process=1)
        self.b2 = LoopbackFleet(["127.76.1.1"], port=HIDDEN_PORT, per_process=1)
        self.targets = LoopbackFleet(loopback_addresses(6, second_octet=76), port=HIDDEN_PORT, per_process=3)

    def start(self) -> Network:
        for fleet in (self.b1, self.b2, self.targets):
            fleet.up(timeout=30)
        self.hide()
        return self

    def hide(self) -> None:
        """Only the bastions' login users may reach HIDDEN_PORT from now on."""
        _remove_rules(HIDDEN_PORT)
        for rule in _hidden_rules(HIDDEN_PORT, [self.b1.uid(KEY_USER), self.b2.uid(KEY_USER)]):
            iptables("-I", rule)

    def stop(self) -> None:
        _remove_rules(HIDDEN_PORT)
        for fleet in (self.b1, self.b2, self.targets):
            fleet.down()

    @property
    def hosts(self) -> list[str]:
        return self.targets.addresses

    def config(self, path: Path, *, target_jump: str = "b1", extra: str = "") -> Path:
        """An ssh config naming the bastions and the targets (t-0 .. t-5), as an operator writes one."""
        included = path.parent / "bastions.conf"
        included.write_text(
            f"Host b1\n    HostName 127.75.0.1\n    Port {JUMP_PORT}\n    User {KEY_USER}\n"
            f"    IdentityFile {self.b1.client_key}\n"
            f"Host b2\n    HostName 127.76.1.1\n    Port {HIDDEN_PORT}\n    User {KEY_USER}\n"
            f"    IdentityFile {self.b2.client_key}\n    ProxyJump b1\n"
        )
        names = "".join(f"Host t-{i}\n    HostName {address}\n" for i, address in enumerate(self.hosts))
        path.write_text(
            f"Include {included}\n{names}Host t-*\n    User {KEY_USER}\n    Port {HIDDEN_PORT}\n"
            f"    IdentityFile {self.targets.client_key}\n    ProxyJump {target_jump}\n{extra}"
        )
        return path


@pytest.fixture(scope="module")
def net(fleet):
    network = Network()
    try:
        yield network.start()
    finally:
        network.stop()


@pytest.fixture
def b1_key_as_default(net, isolated_home) -> None:
    """b1's login key as ~/.ssh/id_ed25519: a bastion named only by address logs in with the default key."""
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    (ssh_dir / "id_ed25519").write_bytes(Path(net.b1.client_key).read_bytes())
    (ssh_dir / "id_ed25519").chmod(0o600)


def connections_to(address: str, port: int) -> int:
    """Established TCP connections to ``address:port`` on this machine (client side)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", address, "dport", "=", f":{port}"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return len(out.splitlines())


def names(net) -> list[str]:
    return [f"t-{i}" for i in range(len(net.hosts))]


def test_targets_cannot_be_reached_directly(net):
    mc = MultiConnection.from_shared_auth(net.hosts, username=PASSWORD_USER, password=PASSWORD,
                                          port=HIDDEN_PORT, ssh_config=False)
    with mc:
        results = mc.execute("whoami")
    assert all(r.error == "ConnectError" and "refused" in r.stderr for r in results.values())


def test_proxy_jump_argument_carries_every_host_over_one_connection_per_worker(net, b1_key_as_default):
    mc = MultiConnection.from_shared_auth(net.hosts, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT,
                                          proxy_jump=f"{KEY_USER}@127.75.0.1:{JUMP_PORT}", workers=2)
    with mc:
        results = mc.execute("echo $(whoami) $SSH_CONNECTION")
        assert [r.stdout.split()[0] for r in results.values()] == [PASSWORD_USER] * len(net.hosts)
        assert [r.stdout.split()[3] for r in results.values()] == net.hosts
        assert connections_to("127.75.0.1", JUMP_PORT) == 2  # one per worker, not one per host
        again = mc.execute("true")  # the tunnels and the bastion connections are reused
        assert not again.failed and connections_to("127.75.0.1", JUMP_PORT) == 2
    assert connections_to("127.75.0.1", JUMP_PORT) == 0


def test_config_names_include_patterns_and_per_host_settings(net, tmp_path):
    config = net.config(tmp_path / "config")
    with MultiConnection.from_shared_auth(names(net), ssh_config=config) as mc:
        results = mc.execute("echo $(whoami) $SSH_CONNECTION")
    assert list(results) == names(net)
    assert [r.stdout.split()[3] for r in results.values()] == net.hosts
    assert {r.stdout.split()[0] for r in results.values()} == {KEY_USER}


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _sessions(fleet: LoopbackFleet) -> set[int]:
    return set().union(*(_descendants(pid) for pid in fleet.pids()))


def _peer_processes(port: int, dst: str) -> set[int]:
    """Pids of the processes holding established connections to ``dst:port``."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", dst, "dport", "=", f":{port}"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return {int(part.split("pid=")[1].split(",")[0]) for line in out.splitlines()
            for part in line.split("users:")[1:] if "pid=" in part}


def test_a_chain_of_two_bastions(net, tmp_path):
    config = net.config(tmp_path / "config", target_jump="b2")
    with MultiConnection.from_shared_auth(names(net), ssh_config=config, workers=1) as mc:
        results = mc.execute("whoami")
        assert [r.stdout for r in results.values()] == [f"{KEY_USER}\n"] * len(net.hosts)
        b1_sessions = _sessions(net.b1)
        b2_sessions = _sessions(net.b2)
        assert _peer_processes(HIDDEN_PORT, "127.76.1.1") <= b1_sessions  # b2 is reached from b1 ...
        assert _peer_processes(HIDDEN_PORT, "127.76.1.1")
        for address in net.hosts:  # ... and every target from b2
            assert _peer_processes(HIDDEN_PORT, address) and _peer_processes(HIDDEN_PORT, address) <= b2_sessions


def test_single_host_connections_through_a_bastion(net, b1_key_as_default):
    jump = f"{KEY_USER}@127.75.0.1:{JUMP_PORT}"
    with Connection(net.hosts[0], port=HIDDEN_PORT, username=PASSWORD_USER, password=PASSWORD,
                    proxy_jump=jump) as conn:
        assert conn.execute("whoami").stdout == f"{PASSWORD_USER}\n"
    bastion = AsyncConnection("127.75.0.1", username=KEY_USER, private_key=net.b1.client_key, port=JUMP_PORT)
    assert whoami(net.hosts[1], port=HIDDEN_PORT, username=PASSWORD_USER, password=PASSWORD,
                  proxy_jump=bastion) == PASSWORD_USER


def test_bastion_and_target_host_keys_are_both_checked(net, tmp_path, b1_key_as_default):
    known = tmp_path / "known_hosts"
    known.write_text(net.b1.known_hosts_line("127.75.0.1")
                     + "".join(net.targets.known_hosts_line(a) for a in net.hosts))
    common = dict(username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT, known_hosts=known,
                  host_key_checking="strict", proxy_jump=f"{KEY_USER}@127.75.0.1:{JUMP_PORT}")
    with MultiConnection.from_shared_auth(net.hosts, **common) as mc:
        assert not mc.execute("true").failed
    known.write_text(f"[127.75.0.1]:{JUMP_PORT} {net.targets.host_public_key(net.hosts[0])}\n"
                     + "".join(net.targets.known_hosts_line(a) for a in net.hosts))
    with MultiConnection.from_shared_auth(net.hosts, **common) as mc:
        results = mc.execute("true")
    assert all("via bastion" in r.stderr and "HostKeyError" in r.stderr for r in results.values())
    known.write_text(net.b1.known_hosts_line("127.75.0.1"))
    with MultiConnection.from_shared_auth(net.hosts, **common) as mc:
        results = mc.execute("true")
    assert all(r.error == "HostKeyError" and "via bastion" not in r.stderr for r in results.values())


class CountingBlackhole:
    """Accepts TCP connections and never answers; counts them."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.server.close()
        for sock in self.accepted:
            sock.close()


@pytest.fixture
def silent_bastion():
    hole = CountingBlackhole()
    try:
        yield hole
    finally:
        hole.close()


def test_a_silent_bastion_fails_its_hosts_once_per_worker_not_once_per_host(net, silent_bastion,
                                                                            b1_key_as_default):
    port = silent_bastion.server.getsockname()[1]
    hosts = [f"127.76.5.{i}" for i in range(1, 25)]  # 24 hosts behind it: 3 rounds of 8 lanes
    mc = MultiConnection(
        [AsyncConnection(h, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT, connect_timeout=2,
                         proxy_jump=f"127.0.0.1:{port}") for h in hosts],
        batch_size=8, workers=2)
    with mc:
        results = mc.execute("true")
        assert len(results) == len(hosts) and not results.succeeded
        assert all(r.error == "ConnectError" and "via bastion root@127.0.0.1" in r.stderr
                   and "ConnectTimeout" in r.stderr for r in results.values())
        assert len(silent_bastion.accepted) == 2  # one attempt per worker for all 24 hosts
        again = mc.execute("true")  # within the cool-down: at once, saying so, nothing dialled
        assert all("not retried" in r.stderr for r in again.values()) and len(silent_bastion.accepted) == 2
        mc.connect()  # connect() always retries, once per worker again
        assert len(silent_bastion.accepted) == 4


@pytest.mark.parametrize("jump, expected", [
    (f"127.75.0.99:{JUMP_PORT}", "refused"),  # nothing listens there
    (f"nobody-here@127.75.0.1:{JUMP_PORT}", "AuthenticationError"),  # no key for that user
])
def test_a_bastion_that_refuses_fails_every_host_behind_it_naming_it(net, b1_key_as_default, jump, expected):
    with MultiConnection.from_shared_auth(net.hosts, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT,
                                          proxy_jump=jump) as mc:
        results = mc.execute("true")
    bastion = jump.rsplit("@", 1)[-1]
    assert all(r.error == "ConnectError" and "via bastion" in r.stderr and bastion in r.stderr
               and expected in r.stderr for r in results.values())


def test_a_dropped_bastion_is_reopened_on_the_next_call(net, b1_key_as_default):
    mc = MultiConnection.from_shared_auth(net.hosts, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT,
                                          proxy_jump=f"{KEY_USER}@127.75.0.1:{JUMP_PORT}", workers=1)
    with mc:
        assert not mc.execute("true").failed
        for pid in _sessions(net.b1):  # the bastion's side of our login dies
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while connections_to("127.75.0.1", JUMP_PORT) and time.monotonic() < deadline:
            time.sleep(0.05)
        lost = mc.execute("true")  # hosts whose tunnel died reconnect through a new bastion connection
        assert all(r.status == 0 or r.error == "ConnectionLost" for r in lost.values())
        assert not mc.execute("true").failed
        assert connections_to("127.75.0.1", JUMP_PORT) == 1


def test_the_pool_is_per_event_loop():
    import asyncio

    async def both() -> tuple[object, object]:
        return pool(), pool()

    first = asyncio.run(both())
    assert first[0] is first[1] and asyncio.run(both())[0] is not first[0]


@pytest.fixture(scope="module")
def hidden_thousand(net):
    _remove_rules(HIDDEN_PORT)  # the readiness probe connects from here: hide the fleet once it answers
    try:
        fleet = LoopbackFleet(loopback_addresses(1000, second_octet=74), port=HIDDEN_PORT).up(timeout=120)
    finally:
        net.hide()
    try:
        yield fleet
    finally:
        fleet.down()


@pytest.mark.slow
def test_a_thousand_hosts_through_one_bastion_use_one_connection_per_worker(net, hidden_thousand,
                                                                              b1_key_as_default):
    hosts = hidden_thousand.addresses
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT,
                                          proxy_jump=f"{KEY_USER}@127.75.0.1:{JUMP_PORT}", workers=2,
                                          batch_size=100)
    with mc:
        results = mc.execute("echo $SSH_CONNECTION")
        assert len(results.succeeded) == 1000, sorted({r.stderr for r in results.failed.values()})[:3]
        assert all(r.stdout.split()[2] == host for host, r in results.items())
        assert connections_to("127.75.0.1", JUMP_PORT) == 2  # 500 tunnels in each worker's one connection
        assert not mc.execute("true").failed
        assert connections_to("127.75.0.1", JUMP_PORT) == 2


@pytest.fixture
def hidden_hundred(net):
    _remove_rules(HIDDEN_PORT)
    try:
        fleet = LoopbackFleet(loopback_addresses(100, second_octet=73), port=HIDDEN_PORT).up(timeout=60)
    finally:
        net.hide()
    try:
        yield fleet
    finally:
        fleet.down()


@pytest.fixture
def bastion_short_of_descriptors(net):
    """b1's sshd (and so every session it forks from now on) may hold 48 descriptors."""
    def nofile(pid: int, value: str | None = None) -> list[str]:
        args = ["prlimit", f"--pid={pid}", "--nofile", "--output=SOFT,HARD", "--noheadings"]
        if value is not None:
            args = ["prlimit", f"--pid={pid}", f"--nofile={value}"]
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=10).stdout.split()
    saved = {pid: ":".join(nofile(pid)) for pid in net.b1.pids()}
    for pid in saved:
        nofile(pid, "48:48")
    try:
        yield
    finally:
        for pid, value in saved.items():
            with contextlib.suppress(subprocess.CalledProcessError):
                nofile(pid, value)


def test_a_bastion_out_of_descriptors_gets_another_connection(net, hidden_hundred, bastion_short_of_descriptors,
                                                               b1_key_as_default):
    """OpenSSH refuses a tunnel with a bare "open failed" once its session process runs out of
    descriptors: hussh opens another login to the bastion and carries on."""
    mc = MultiConnection.from_shared_auth(hidden_hundred.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=HIDDEN_PORT, proxy_jump=f"{KEY_USER}@127.75.0.1:{JUMP_PORT}",
                                          workers=1, batch_size=100)
    with mc:
        results = mc.execute("true")
        assert not results.failed, sorted({r.stderr for r in results.failed.values()})[:2]
        assert connections_to("127.75.0.1", JUMP_PORT) >= 3  # ~40 tunnels per login at 48 descriptors


def test_a_frozen_bastion_is_noticed_by_its_keepalives(net, b1_key_as_default):
    """Bastions get keepalives (15 s by default; 1 s here): a bastion that stops answering after the
    login fails every host behind it within a few keepalives, not each host's own command bound."""
    bastion = AsyncConnection("127.75.0.1", username=KEY_USER, port=JUMP_PORT, keepalive_interval=1)
    mc = MultiConnection.from_shared_auth(net.hosts, username=PASSWORD_USER, password=PASSWORD, port=HIDDEN_PORT,
                                          proxy_jump=bastion, workers=1)
    with mc:
        assert not mc.execute("true").failed
        with net.b1.fault("pause", net.b1.endpoints):
            results = mc.execute("true", timeout=60)
        # ConnectionLost, not CommandTimeout: three unanswered 1 s keepalives closed the bastion long before
        # the 60 s command bound
        assert all(r.error == "ConnectionLost" for r in results.values()), {r.stderr for r in results.values()}
        assert not mc.execute("true").failed  # a new bastion connection once it answers again
    default = MultiConnection.from_shared_auth(["t"], proxy_jump="127.75.0.1", ssh_config=False)
    jump = default.specs["t"].jump
    assert jump is not None and jump.keepalive_interval == 15.0
