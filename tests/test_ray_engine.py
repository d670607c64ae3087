"""The Ray engine: the same MultiConnection with its shards as Ray actors on a local 3-node cluster.

One ``ray.cluster_utils.Cluster`` per module (tests/raycluster.py): three nodes labelled ``region`` a,
b and c (no CPUs to hand out: shard actors take ``num_cpus=0``), 100 MB object stores, its own HOME,
no dashboard, on 127.0.0.1 only, with the session's token (conftest.py).
Hosts are the session's loopback fleet, logged in with an explicit key (or an explicit password),
so nothing reads or writes the real ``~/.ssh``. Every wait is bounded.

Ray's state API needs the dashboard (``ray[default]``); without it, ``ray_records`` reads the same
GCS tables the dashboard would (the actor table and task events).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import hussh.workers.core
import hussh.workers.pool
from hussh import Rollout
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_PASSPHRASE, KEY_USER, PASSWORD, PASSWORD_USER
from hussh.testing.loopback import LoopbackFleet, loopback_addresses
from lanecheck import counting, dirs, most_at_once, slow_first
from raycluster import REPO_ROOT, local_ray_cluster, ray_module

REGIONS = ("a", "b", "c")
ray_test = pytest.mark.ray


def recording(**options: object):
    """A ``RayEngine`` that keeps the pool it makes (``engine.made``), for tests that look at its actors."""
    from hussh.ray import RayEngine

    class Recording(RayEngine):
        made = None

        def pool(self, *args):
            self.made = super().pool(*args)
            return self.made

    return Recording(**options)  # type: ignore[arg-type]

pytestmark = pytest.mark.timeout(300)  # cluster start-up on a loaded machine, then bounded waits


def _ray():
    return ray_module()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    with local_ray_cluster(tmp_path_factory, REGIONS) as cluster:
        yield cluster


@pytest.fixture
def hosts(fleet) -> list[str]:
    return [f"{address}:{fleet.port}" for address in fleet.addresses]


@pytest.fixture(scope="module")
def wide_fleet():
    """40 hosts: enough for waves, and for lanes to move between shards."""
    with LoopbackFleet(loopback_addresses(40, second_octet=95),
                       port=int(os.environ.get("HUSSH_TEST_PORT", "2222"))) as fleet:
        yield fleet


def with_password(fleet: LoopbackFleet, hosts: list[str], **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                                            **kwargs)


def with_key(fleet, hosts: list[str], **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, username=KEY_USER, private_key=str(fleet.client_key), **kwargs)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(what: str, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


def ray_records() -> str:
    """Everything Ray's state API says about actors and tasks, as text (the GCS tables behind it
    when the dashboard is not running)."""
    from ray.util.state import list_actors, list_tasks
    from ray.util.state.exception import RayStateApiException

    try:
        return repr(list_actors(detail=True, limit=10_000)) + repr(list_tasks(detail=True, limit=10_000))
    except (RayStateApiException, ConnectionError):
        from ray._private.state import state

        accessor = state._connect_and_get_accessor()
        raw = list(accessor.get_actor_table(None, None)) + [e.SerializeToString() for e in state._get_all_task_events()]
        return repr(state.actor_table(None)) + repr(raw)


# ---------------------------------------------------------------------------------------------- parity


def scenario(fleet, hosts: list[str], engine, remote: Path, local: Path) -> list:
    """Every MultiConnection operation, with per-host errors; results as comparable tuples."""
    remote.mkdir(mode=0o777)
    remote.chmod(0o777)
    local.mkdir()
    payload = bytes(range(256)) * 300
    (local / "app.bin").write_bytes(payload)
    log = remote / "app.log"
    log.write_text("before\n")
    log.chmod(0o666)
    progress: list[tuple[int, int]] = []
    seen: list[str] = []
    out: list = []

    def rows(results) -> list:
        return [(h, r.stdout.replace(str(remote), "R").replace(str(local), "L"),
                 r.stderr.replace(str(remote), "R").replace(str(local), "L"), r.status, r.error)
                for h, r in results.items()] + [sorted(results.seconds) == sorted(results)]

    refused = "127.0.0.1:1"
    mc = with_key(fleet, hosts + [refused], engine=engine, progress=lambda d, t: progress.append((d, t)),
                  connect_timeout=10)
    try:
        out.append(rows(mc.connect(prune_failures=True)))
        out.append(mc.hosts)
        out.append(rows(mc.execute("whoami; echo err >&2; exit 3", on_result=lambda h, r: seen.append(h))))
        out.append(sorted(seen))
        first, second, third, _ = hosts
        out.append(rows(mc.execute_map({first: "echo zero", second: "sleep 5", third: "echo two >&2"}, timeout=1)))
        out.append(rows(mc.sftp_write(str(local / "app.bin"), str(remote / "app.bin"))))
        out.append((remote / "app.bin").read_bytes() == payload)
        out.append(rows(mc.sftp_write_data("config=1\n", str(remote / "cfg"))))
        out.append(rows(mc.sftp_read(str(remote / "cfg"))))
        out.append(rows(mc.sftp_read(str(remote / "app.bin"), str(local / "copies" / "{host}.bin"))))
        out.append(sorted((p.name, p.read_bytes() == payload) for p in (local / "copies").iterdir()))
        out.append(rows(mc.sftp_read(str(remote / "missing"))))
        with mc.tail(str(log)) as tailer:
            mc.execute(f"echo line >> {log}")
            out.append(tailer.read())
        out.append(tailer.contents)
        with mc.tail_map({first: str(log), second: str(remote / "absent.log")}) as tailer:
            mc.execute_map({first: f"echo again >> {log}"})
            out.append(tailer.read())
        out.append((tailer.contents, sorted(tailer.errors)))
        followed = remote / "followed.log"
        followed.write_text("")
        followed.chmod(0o666)
        texts: list[tuple[str, str]] = []

        def on_text(host: str, text: str) -> None:
            texts.append((host, text))
            if text == "":  # open: append, to be read back
                with followed.open("a") as handle:
                    handle.write("followed\n")

        tailer = mc.tail_map({first: str(followed), second: str(remote / "absent.log")})
        out.append(rows(tailer.follow(on_text, interval=0.1, until=lambda: (first, "followed\n") in texts)))
        out.append((texts, sorted(tailer.errors)))
        out.append(progress[-1])
    finally:
        mc.close()
    return out


@ray_test
def test_every_operation_gives_the_local_engines_results(ray_cluster, fleet, hosts, remote_dir, tmp_path):
    from hussh.ray import RayEngine
    from hussh.workers.engine import LocalEngine

    expected = scenario(fleet, hosts, LocalEngine(), remote_dir / "local", tmp_path / "local")
    got = scenario(fleet, hosts, RayEngine(hosts_per_shard=2), remote_dir / "ray", tmp_path / "ray")
    for number, (want, have) in enumerate(zip(expected, got)):
        assert have == want, f"step {number} differs"
    assert len(got) == len(expected)
    assert expected[0][-2][3] == -1 and "ConnectError" in expected[0][-2][2]  # the refused host, kept as local
    assert any(row[4] == "CommandTimeout" for row in expected[4][:-1])


def listening(pids: set[int]) -> set[str]:
    """The addresses that processes ``pids`` listen on (TCP)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()
            if any(f"pid={pid}," in line for pid in pids)}


def descendants(pid: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
    found = {pid}
    while grown := {child for child, parent in parents.items() if parent in found} - found:
        found |= grown
    return found


@ray_test
def test_the_suites_cluster_listens_on_loopback_only_and_wants_the_token(ray_cluster):
    ray = _ray()
    ray.get(ray.remote(num_cpus=0)(lambda: os.getpid()).remote(), timeout=60)  # a worker process listens too
    addresses = listening(descendants(os.getpid()))  # Ray's processes, and the fleet's sshd
    assert "127.0.0.1" in {address.removeprefix("[::ffff:").rstrip("]") for address in addresses}
    assert all(ipaddress.ip_address(address.removeprefix("[::ffff:").strip("[]")).is_loopback
               for address in addresses), addresses
    code = f"import ray; ray.init(address={ray_cluster.address!r}, log_to_driver=False); print(len(ray.nodes()))"
    for token, joins in (("0" * 64, False), (os.environ["RAY_AUTH_TOKEN"], True)):
        env = dict(os.environ, RAY_AUTH_TOKEN=token)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert (done.returncode == 0) is joins, done.stderr[-2000:]
        if not joins:
            assert "InvalidAuthToken" in done.stderr


@ray_test
def test_files_read_to_local_paths_come_back_whole_in_bounded_pieces(ray_cluster, fleet, hosts, remote_dir, tmp_path):
    """Sizes around a batch's share of file data (``BATCH_BYTES``): empty, one byte short of it, exactly
    it, two and a half times it; each host's file whole, its result after it."""
    from hussh.ray import RayEngine
    from hussh.workers.ray_actor import BATCH_BYTES

    sizes = {"empty": 0, "short": BATCH_BYTES - 1, "exact": BATCH_BYTES, "long": BATCH_BYTES * 5 // 2}
    for name, size in sizes.items():
        (remote_dir / name).write_bytes(os.urandom(size))
        (remote_dir / name).chmod(0o644)
    with with_key(fleet, hosts, engine=RayEngine(), workers=1) as mc:  # one actor sends every file
        for name in sizes:
            results = mc.sftp_read(str(remote_dir / name), str(tmp_path / name / "{host}"))
            assert not results.failed and len(results) == len(hosts)
            for host, result in results.items():
                assert result.stdout == str(tmp_path / name / host)
                assert Path(result.stdout).read_bytes() == (remote_dir / name).read_bytes(), (name, host)


def spools(name: str) -> list[Path]:
    """The spool directories of the actor called ``name`` (the nodes are this machine)."""
    import tempfile

    return list(Path(tempfile.gettempdir()).glob(f"hussh-shard-{name}-*"))


@ray_test
def test_a_killed_actors_saved_files_are_removed_by_the_next_actor_on_its_node(ray_cluster, fleet, hosts,
                                                                               remote_dir, tmp_path):
    """``ray.kill`` is a SIGKILL (and Ray kills what the actor started): no code of the actor runs. The
    next actor started on that node removes the spool that no live actor holds, and only that one."""
    ray = _ray()
    from hussh.ray import RayEngine

    (remote_dir / "data").write_bytes(b"x" * 1000)
    (remote_dir / "data").chmod(0o644)
    first, second = recording(), recording()
    with with_key(fleet, hosts, engine=first, workers=1) as survivor, \
            with_key(fleet, hosts, engine=second, workers=1) as killed:
        for mc in (survivor, killed):
            assert not mc.sftp_read(str(remote_dir / "data"), str(tmp_path / "{host}")).failed
        (kept,) = spools(f"{first.made.tag}-0")
        (spool,) = spools(f"{second.made.tag}-0")
        (spool / "partial").write_bytes(b"as a transfer cut short leaves it")
        pid = killed.shards()[0].pid
        assert pid is not None  # an actor on this machine
        ray.kill(second.made.shards[0].actor, no_restart=True)
        wait_until("the killed actor's process gone", lambda: not alive(pid), 30)
        with with_key(fleet, hosts, engine=RayEngine(), workers=1) as next_one:
            assert not next_one.connect().failed  # its actor starts, on one of these nodes (all this machine's)
        wait_until("the killed actor's spool removed", lambda: not spool.exists(), 30)
        assert kept.exists()  # a live actor's spool stays


@ray_test
def test_proxy_command_and_bastions_work_off_the_main_thread(ray_cluster, fleet, tmp_path):
    """Ray runs the actor's event loop in a thread that is not the main one: a ProxyCommand (a
    subprocess of that loop) and a ProxyJump bastion work there, with the key read on the node."""
    from hussh.ray import RayEngine
    from test_ssh_config import RELAY

    script, log = tmp_path / "relay.py", tmp_path / "relay.log"
    script.write_text(RELAY)
    config = tmp_path / "config"
    config.write_text(
        f"Host viacommand\n    HostName {fleet.addresses[0]}\n"
        f"    ProxyCommand {sys.executable} {script} %h %p {log}\n"
        f"Host bastion\n    HostName {fleet.addresses[1]}\n"
        f"Host behind-*\n    ProxyJump bastion\n"
        f"Host behind-2\n    HostName {fleet.addresses[2]}\n"
        f"Host behind-3\n    HostName {fleet.addresses[3]}\n"
        f"Host *\n    User {KEY_USER}\n    Port {fleet.port}\n    IdentityFile {fleet.client_key}\n")
    names = ["viacommand", "behind-2", "behind-3"]
    with MultiConnection.from_shared_auth(names, ssh_config=config, engine=RayEngine(hosts_per_shard=1)) as mc:
        results = mc.execute("whoami")
    assert [r.stdout for r in results.values()] == [f"{KEY_USER}\n"] * 3, results.values()
    assert log.read_text() == f"{fleet.addresses[0]}:{fleet.port}\n"
    config.write_text(config.read_text().replace(f"HostName {fleet.addresses[1]}", "HostName 127.0.0.1\n    Port 1"))
    with MultiConnection.from_shared_auth(names[1:], ssh_config=config, engine=RayEngine()) as mc:
        results = mc.execute("whoami")  # the bastion refuses: its hosts fail naming it
    assert all(r.status == -1 and "127.0.0.1:1" in r.stderr for r in results.values()), results.values()


# ---------------------------------------------------------------------------------------------- placement


@ray_test
def test_each_regions_hosts_run_on_its_labelled_nodes_and_the_rest_spread(ray_cluster, fleet, hosts):
    regions = {fleet.addresses[0]: "c", fleet.addresses[1]: "c", fleet.addresses[2]: "b"}  # the 4th: anywhere
    engine = recording(placement=regions.get, hosts_per_shard=1)
    with with_key(fleet, hosts, engine=engine) as mc:
        results = mc.execute("whoami")
        assert len(results.succeeded) == 4
        pool = engine.made
        assert pool.count == 4  # one shard per host
        where = pool.where()
        node_region = ray_cluster.node_ids()
        ran_in = {fleet.addresses[i]: node_region[where[pool.shard_of[i]][0]] for i in range(3)}
        assert ran_in == regions
        assert where[pool.shard_of[3]][0] in node_region
        assert {code for _, _, code in where.values()} == {str(REPO_ROOT / "hussh" / "workers")}  # this checkout's


@ray_test
def test_placement_dict_and_shard_sizes(ray_cluster, fleet, hosts):
    engine = recording(placement={fleet.addresses[0]: "a", fleet.addresses[1]: "a"}, hosts_per_shard=1)
    with with_key(fleet, hosts, engine=engine, batch_size=3) as mc:  # 4 wanted, batch_size allows 3
        pool = engine.made
        assert pool.count == 3
        assert pool.batch_size == 3
        node_region = ray_cluster.node_ids()
        where = pool.where()
        assert {node_region[where[pool.shard_of[i]][0]] for i in (0, 1)} == {"a"}
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * 4


@ray_test
def test_lanes_freed_by_finished_shards_run_a_slow_shards_waiting_hosts(ray_cluster, wide_fleet, remote_dir):
    """As tests/test_lanes.py's with local workers: a tenth of the hosts slow, all in shard 0 and first in
    its queue, waiting for every fast host; the lanes the other shards' actors free run shard 0's fast
    hosts (by the old fixed shares it had 2 of batch_size=8, both held by slow hosts)."""
    commands, slow, fast = slow_first(wide_fleet.addresses, remote_dir, 4)
    engine = recording(hosts_per_shard=10)
    with with_password(wide_fleet, wide_fleet.addresses, engine=engine, batch_size=8) as mc:
        assert not mc.connect().failed
        addresses = wide_fleet.addresses  # host i: shard i % 4
        assert [s.hosts[:2] for s in mc.shards()] == [[addresses[i], addresses[i + 4]] for i in range(4)]
        results = mc.execute_map(commands)
    assert not results.failed, dict(results.failed)
    assert [int(results[wide_fleet.addresses[i]].stdout) for i in slow] == [fast] * len(slow)
    assert most_at_once(remote_dir / "seen") <= 8
    assert most_at_once(remote_dir / "seen", slow) > 2


@ray_test
def test_batch_size_bounds_what_runs_at_once_across_shard_actors_and_waves(ray_cluster, wide_fleet, remote_dir):
    """As tests/test_lanes.py's with local workers: hosts of uneven lengths over 3 actors, in waves, lanes
    moving between actors all the time (their frames reach the caller in batches, late); the fleet never
    sees more than ``batch_size`` commands at once."""
    from hussh.ray import RayEngine

    _, seen, _ = dirs(remote_dir)
    lengths = random.Random(7).choices([0, 0.05, 0.1, 0.3, 0.8], k=len(wide_fleet.addresses))
    commands = {host: counting(remote_dir, i, f"sleep {lengths[i]}; ls {remote_dir}/running | wc -l >> {seen}/{i}")
                for i, host in enumerate(wide_fleet.addresses)}
    with with_password(wide_fleet, wide_fleet.addresses, engine=RayEngine(), workers=3, batch_size=5) as mc:
        assert not mc.connect().failed
        plain = mc.execute_map(commands)
        waves = mc.execute_map(commands, rollout=Rollout(waves=[7, "50%"]))
    assert not plain.failed and not waves.failed, (dict(plain.failed), dict(waves.failed))
    assert most_at_once(seen) <= 5


def marking(directory: Path, then: str = "true") -> str:
    """Append the time to ``directory/<address>`` (the host started), then run ``then``."""
    return f"date +%s.%N >> {directory}/$(echo $SSH_CONNECTION | cut -d' ' -f3) && {then}"


@ray_test
def test_a_rollout_stops_at_its_failure_budget_on_ray(ray_cluster, wide_fleet, remote_dir):
    """Waves of 10 over 6 shard actors, one failure allowed: the second failure (wave 1) halts the run,
    the hosts never started are skipped and untouched, the next wave never begins."""
    hosts = wide_fleet.addresses[:24]
    commands = {h: marking(remote_dir, "test -e /nonexistent" if i % 10 == 3 else "true") for i, h in enumerate(hosts)}
    engine = recording(hosts_per_shard=4)
    with with_password(wide_fleet, hosts, engine=engine, batch_size=6) as mc:
        results = mc.execute_map(commands, rollout=Rollout(waves=[10], max_failures=1))
        assert len(mc.shards()) == 6
    assert list(results.failed)[:2] == [hosts[3], hosts[13]]
    skipped = set(results.skipped)
    assert set(hosts[20:]) <= skipped
    assert {p.name for p in remote_dir.iterdir()} == set(hosts) - skipped  # skipped: untouched; the rest: run
    assert all("more than max_failures=1" in results[h].stderr for h in skipped)


@ray_test
def test_a_halt_with_stop_stops_the_running_commands_on_ray(ray_cluster, wide_fleet, remote_dir):
    """``on_exceeded="stop"`` on the Ray engine: the Halt reaches every actor, their running commands are
    stopped (none runs to its end) and the hosts queued behind them are skipped."""
    from hussh.ray import RayEngine

    hosts = wide_fleet.addresses[:10]  # 5 shards: host i in shard i % 5; 6 lanes: hosts 0-5 run, 6-9 wait
    commands = {h: marking(remote_dir, f"sleep 30; echo late >> {remote_dir}/late") for h in hosts}
    commands[hosts[0]] = f"sleep 1; {marking(remote_dir, 'exit 1')}"
    with with_password(wide_fleet, hosts, engine=RayEngine(hosts_per_shard=2), batch_size=6) as mc:
        assert not mc.connect().failed
        results = mc.execute_map(commands, rollout=Rollout(max_failures=0, on_exceeded="stop"))
    assert results[hosts[0]].status == 1
    assert [results[h].error for h in hosts[1:6]] == ["Stopped"] * 5, {h: results[h] for h in hosts}
    skipped = set(results.skipped)
    assert skipped <= set(hosts[6:]) and len(skipped) >= 3
    assert all(results[h].error in ("Skipped", "Stopped") for h in hosts[6:])
    assert {p.name for p in remote_dir.iterdir()} == set(hosts) - skipped
    assert not (remote_dir / "late").exists()


# ---------------------------------------------------------------------------------------------- failures


@ray_test
def test_a_node_removed_mid_call_fails_exactly_its_hosts_and_the_next_call_succeeds(ray_cluster, fleet, hosts):
    engine = recording(hosts_per_shard=1)
    with with_key(fleet, hosts, engine=engine) as mc:  # 4 shards spread over 3 nodes
        pool = engine.made
        where = pool.where()
        removable = {node for region, node in ray_cluster.nodes.items() if region != "a"}  # the driver's is "a"
        by_id = {node.node_id: node for node in removable}
        victims = {number for number, (node_id, _, _) in where.items() if node_id in by_id}
        if not victims:
            pytest.fail(f"SPREAD put every shard on the head node: {where}")
        victim_id = where[min(victims)][0]
        lost = {i for i in range(4) if where[pool.shard_of[i]][0] == victim_id}
        remover = threading.Timer(1.5, ray_cluster.cluster.remove_node, (by_id[victim_id],),
                                  {"allow_graceful": False})
        remover.start()
        started = time.monotonic()
        try:
            results = mc.execute("sleep 4; echo done", timeout=30)
        finally:
            remover.join()
        assert time.monotonic() - started < 4 + hussh.workers.core.STALL_LIMIT
        for i, host in enumerate(hosts):
            if i in lost:
                assert results[host].status == -1 and results[host].error == "WorkerLost", results[host]
                assert results[host].stderr.startswith("WorkerLost: shard actor lost before this host finished")
            else:
                assert results[host].stdout == "done\n", results[host]
        again = mc.execute("whoami")
        assert [r.stdout for r in again.values()] == [f"{KEY_USER}\n"] * 4
        assert all(node_id != victim_id for node_id, _, _ in pool.where().values())
    # A new pool while Ray still lists the dead node alive (SPREAD favours it: it runs no actor):
    # an actor placed there dies before it takes its hosts and is placed again; nothing fails.
    with with_key(fleet, hosts, engine=recording(hosts_per_shard=1)) as mc:
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * 4
    region = next(r for r, node in ray_cluster.nodes.items() if node.node_id == victim_id)
    ray_cluster.add(region)  # whole again for later tests
    wait_until("Ray sees the removed node dead", lambda: victim_id not in ray_cluster.node_ids(), 120)


@ray_test
def test_an_actor_that_dies_before_taking_its_hosts_is_placed_again(ray_cluster, fleet, hosts, monkeypatch):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from hussh.ray import RayEngine
    from hussh.workers.ray_engine import RayPool

    placed = RayPool._placement
    tries: list[int] = []

    def nowhere_first(self, shard):  # as if its node had died: Ray gives up on the actor
        tries.append(shard.number)
        if tries.count(shard.number) == 1:
            return {"scheduling_strategy": NodeAffinitySchedulingStrategy("ab" * 28, soft=False)}
        return placed(self, shard)

    monkeypatch.setattr(RayPool, "_placement", nowhere_first)
    mc = with_key(fleet, hosts, engine=RayEngine(hosts_per_shard=2))
    try:
        assert [r.status for r in mc.connect().values()] == [0] * 4
        assert sorted(tries) == [0, 0, 1, 1]
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * 4
    finally:
        mc.close()


@ray_test
def test_a_stopped_actor_is_lost_after_the_stall_limit_and_re_created(ray_cluster, fleet, hosts):
    engine = recording(hosts_per_shard=2, stall_limit=3.0)
    with with_key(fleet, hosts, engine=engine) as mc:
        pool = engine.made
        victim = pool.where()[1][1]
        os.kill(victim, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = mc.execute("whoami", timeout=20)
            elapsed = time.monotonic() - started
        finally:
            os.kill(victim, signal.SIGCONT)
        stalled = [hosts[i] for i in pool.shards[1].indices]
        for host in hosts:
            if host in stalled:
                assert "sent nothing for 3 seconds" in results[host].stderr, results[host]
            else:
                assert results[host].stdout == f"{KEY_USER}\n"
        assert 3.0 <= elapsed < 10.0
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * 4
        assert pool.where()[1][1] != victim
    wait_until("the stopped actor killed", lambda: not alive(victim), 30)


CTRL_C_SCRIPT = """
    import json, os, sys, time
    import ray
    from hussh.multi_conn import MultiConnection
    from hussh.ray import RayEngine
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    hosts, key, user, marks = json.loads(os.environ["FLEET"])
    mc = MultiConnection.from_shared_auth(hosts, username=user, private_key=key,
                                          engine=RayEngine(hosts_per_shard=2))
    mc.connect()
    print(json.dumps({"job": ray.get_runtime_context().get_job_id(),
                      "pids": [s.pid for s in mc.shards() if s.pid]}), flush=True)
    try:
        mc.execute_map({h: f"echo $$ > {marks}/{n}; exec sleep 60" for n, h in enumerate(hosts)})
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    sys.stdin.readline()  # the test looks at actors and commands while this driver still runs
"""


@ray_test
def test_ctrl_c_stops_remote_commands_and_leaves_no_actor_running(ray_cluster, fleet, hosts, remote_dir):
    from ray._private.state import actors

    env = dict(os.environ, **ray_cluster.env, RAY_ADDRESS=ray_cluster.address,
               FLEET=json.dumps([hosts, str(fleet.client_key), KEY_USER, str(remote_dir)]))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CTRL_C_SCRIPT)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    assert proc.stdin is not None
    reader = _Lines(proc)
    try:
        started = json.loads(reader.next(180))
        wait_until("every remote command started", lambda: len(list(remote_dir.iterdir())) == 4, 30)
        commands = [int(p.read_text()) for p in remote_dir.iterdir()]
        assert all(alive(pid) for pid in commands)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert reader.next(30) == "interrupted"
        elapsed = time.monotonic() - sent
        assert elapsed < hussh.workers.pool.ABORT_WAIT + 1.0  # cancel, disconnect within ABORT_GRACE, kill (0.9 s here)
        wait_until("remote commands killed", lambda: not any(alive(pid) for pid in commands), 5)
        job = started["job"]

        def states() -> dict[str, str]:
            return {a["ActorID"]: a["State"] for a in actors().values()
                    if a["JobID"] == job and a["ActorClassName"].endswith("ShardActor")}

        assert states(), "no shard actor of the interrupted driver found"
        wait_until("every actor dead while its driver still runs",
                   lambda: set(states().values()) == {"DEAD"} and not any(alive(p) for p in started["pids"]), 15)
        assert proc.poll() is None
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        reader.close()


ENDING_SCRIPT = """
    import json, os, sys
    import ray
    from hussh.multi_conn import MultiConnection
    from hussh.ray import RayEngine
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    hosts, key, user, _ = json.loads(os.environ["FLEET"])
    mc = MultiConnection.from_shared_auth(hosts, username=user, private_key=key, engine=RayEngine(hosts_per_shard=2))
    mc.connect()
    pids = [s.pid for s in mc.shards() if s.pid]
    print(json.dumps({"job": ray.get_runtime_context().get_job_id(), "pids": pids}), flush=True)
    {ending}
    print(json.dumps([os.path.exists(f"/proc/{{pid}}") for pid in pids]), flush=True)
"""


@ray_test
@pytest.mark.parametrize("ending", ["close", "gc", "exit"])
def test_close_gc_and_exit_leave_no_actor(ray_cluster, fleet, hosts, ending):
    from ray._private.state import actors

    finish = {"close": "mc.close()", "gc": "import gc; del mc; gc.collect()", "exit": "sys.exit(0)"}[ending]
    env = dict(os.environ, **ray_cluster.env, RAY_ADDRESS=ray_cluster.address,
               FLEET=json.dumps([hosts, str(fleet.client_key), KEY_USER, ""]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(ENDING_SCRIPT).replace("{ending}", finish)],
                          env=env, text=True, capture_output=True, cwd=REPO_ROOT, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    started = json.loads(lines[0])
    assert len(started["pids"]) == 2
    if ending != "exit":
        assert json.loads(lines[1]) == [False, False]  # gone before the driver even exits
    wait_until("the actors' processes gone", lambda: not any(alive(pid) for pid in started["pids"]), 30)
    states = [a["State"] for a in actors().values()
              if a["JobID"] == started["job"] and a["ActorClassName"].endswith("ShardActor")]
    assert states == ["DEAD", "DEAD"]


class _Lines:
    """Lines of a child's stdout, each waited for with a bound."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str | None] = []  # None: the end
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def next(self, timeout: float) -> str:
        with self.cond:
            if not self.cond.wait_for(lambda: self.lines, timeout):
                pytest.fail(f"no line from the child within {timeout:g} s")
            line = self.lines.pop(0)
        if line is None:
            assert self.proc.stderr is not None
            pytest.fail(f"the child exited {self.proc.wait()}: {self.proc.stderr.read()[-3000:]}")
        return line

    def close(self) -> None:
        """Once the child has ended: its pipes closed (this reader's after it read them to their end)."""
        self.thread.join(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


# ---------------------------------------------------------------------------------------------- secrets


@ray_test
def test_secrets_travel_in_method_calls_never_in_actor_creation_arguments(ray_cluster, fleet, hosts, monkeypatch):
    ray = _ray()
    from ray.actor import ActorClass, ActorMethod

    from hussh import _credentials
    from hussh.ray import RayEngine

    created: list[bytes] = []
    called: list[bytes] = []
    real_create, real_call = ActorClass._remote, ActorMethod._remote

    def create(self, args=None, kwargs=None, **options):
        created.append(pickle.dumps((args, kwargs, options)))
        return real_create(self, args=args, kwargs=kwargs, **options)

    def call(self, args=None, kwargs=None, **options):
        called.append(pickle.dumps((args, kwargs)))
        return real_call(self, args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(ActorClass, "_remote", create)
    monkeypatch.setattr(ActorMethod, "_remote", call)
    key = str(fleet.encrypted_client_key)
    material = _credentials.material(key, KEY_PASSPHRASE).private  # the decrypted key: ship_keys sends it
    secret_key = material.splitlines()[3]  # a line of the key's body
    assert len(secret_key) > 40

    engine = RayEngine(hosts_per_shard=2, ship_keys=True)
    mc = MultiConnection.from_shared_auth(hosts, username=KEY_USER, private_key=key, password=KEY_PASSPHRASE,
                                          engine=engine)
    with mc:
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * 4
        records = ray_records()

    assert len(created) == 2  # two shards
    for secret in (KEY_PASSPHRASE.encode(), secret_key):
        assert not any(secret in args for args in created), "a secret in an actor's creation arguments"
        assert secret.decode() not in records, "a secret in what Ray's state API shows"
        assert any(secret in args for args in called)  # where it does travel: the assign() method call
    assert not any(b"passphrase" in args for args in created)

    class Probe:  # the checks above can see a secret when there is one
        def __init__(self, secret: str) -> None:
            self.size = len(secret)

        def ping(self) -> int:
            return self.size

    probe = ray.remote(num_cpus=0)(Probe).remote(KEY_PASSPHRASE)
    assert ray.get(probe.ping.remote(), timeout=60) == len(KEY_PASSPHRASE)
    assert KEY_PASSPHRASE.encode() in created[-1]
    ray.kill(probe)


# ---------------------------------------------------------------------------------------------- no cluster


def test_importing_hussh_ray_does_not_import_ray():
    code = "import sys, hussh.ray; e = hussh.ray.RayEngine(address='auto'); print('ray' in sys.modules)"
    if not _has_ray():
        code = "import sys, hussh.ray; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_ray_the_error_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError("No module named 'ray'", name="ray")
        sys.meta_path.insert(0, NoRay())
        from hussh.ray import RayEngine
        try:
            RayEngine()
        except ImportError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "pip install 'hussh-fleet[ray]'" in done.stdout, done.stdout + done.stderr


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def test_plan_shards_by_region_size_and_batch_size():
    _ray()
    from hussh._spec import ConnectSpec
    from hussh.ray import RayEngine
    from hussh.workers.ray_engine import plan

    specs = [ConnectSpec(f"h{i}") for i in range(10)]
    regions = {"h0": "x", "h1": "x", "h2": "x", "h3": "y"}
    shards = plan(specs, 100, None, RayEngine(placement=regions, hosts_per_shard=2))
    assert [(s.region, s.indices) for s in shards] == [
        ("x", [0, 2]), ("x", [1]), ("y", [3]), (None, [4, 7]), (None, [5, 8]), (None, [6, 9])]
    assert [len(s.indices) for s in plan(specs, 100, 2, RayEngine())] == [5, 5]  # workers= sets the count
    assert len(plan(specs, 3, None, RayEngine(placement=regions, hosts_per_shard=1))) == 3
    with pytest.raises(ValueError, match="batch_size=1 is less than the 3 placements"):
        plan(specs, 1, None, RayEngine(placement=regions))


def test_an_actors_batches_carry_files_in_bounded_pieces_each_before_its_result(tmp_path):
    """The actor's outbox alone (no cluster): saved files of several sizes, results in between; no batch
    holds more than ``BATCH_BYTES`` of file data, each file is whole before its result, the end is last."""
    _ray()
    import msgspec

    from hussh._result import RawResult
    from hussh.workers import protocol as p
    from hussh.workers.ray_actor import BATCH_BYTES, _Outbox

    sizes = [0, 1, BATCH_BYTES - 1, BATCH_BYTES, 3 * BATCH_BYTES + 5]
    box = _Outbox(msgspec.msgpack.Encoder())
    call = box.spool(p.ReadFile(1, list(range(len(sizes))), "/r", [f"/wanted/{i}" for i in range(len(sizes))]),
                     str(tmp_path))
    contents = {}
    for index, (size, temporary) in enumerate(zip(sizes, call.local_paths or [])):
        contents[index] = os.urandom(size)
        Path(temporary).write_bytes(contents[index])
        box.emit(p.HostDone(1, index, RawResult(b"", b"", 0)))
        box.emit(p.Alive(1))
    box.emit(p.CallDone(1))
    received: dict[int, bytes] = {}
    order = []
    while box:
        pieces, frames = box.take()
        assert sum(len(data) for _, data in pieces) <= BATCH_BYTES
        for index, data in pieces:
            received[index] = received.get(index, b"") + data
        for message in p.FrameDecoder(p.Reply, 1 << 20).feed(frames):
            if isinstance(message, p.HostDone):
                assert received.get(message.index) == contents[message.index]  # whole before its result
                assert message.result.stdout == f"/wanted/{message.index}".encode()
            order.append(type(message).__name__)
    assert received == contents and order[-1] == "CallDone" and order.count("HostDone") == len(sizes)
    assert list(tmp_path.iterdir()) == []  # each saved file removed once it is open for sending
