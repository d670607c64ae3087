"""MultiConnection's own semantics on the MockEngine: order, per-host errors, maps, callbacks, workers and
batch_size, threads, pruning. The real-sshd tests (tests/test_multi_semantics.py...) stay the proof."""

from __future__ import annotations

import asyncio
import threading

import pytest

import hussh
from conftest import HOSTS
from hussh import SSHResult
from hussh.multi_conn import MultiConnection
from hussh.testing import MockEngine, MockRequest


def test_results_keep_the_given_order_whatever_finishes_first(fleet):
    async def handler(request: MockRequest) -> object:
        if request.kind == "execute":
            await asyncio.sleep(0.02 * (len(HOSTS) - request.index))  # the last host finishes first
            return request.host
        return None

    mc, _ = fleet(handler)
    finished: list[str] = []
    results = mc.execute("hostname", on_result=lambda host, result: finished.append(host))
    assert finished == HOSTS[::-1]
    assert list(results) == HOSTS and [r.stdout for r in results.values()] == HOSTS
    assert set(results.seconds) == set(HOSTS)


def test_per_host_errors_are_kept_beside_the_others_results(fleet):
    def handler(request: MockRequest) -> object:
        if request.host == "web2" and request.kind == "connect":
            raise hussh.AuthenticationError("web2:22 refused the password")
        if request.host == "db1" and request.kind == "execute":
            return SSHResult("", "no such table\n", 1)
        return "ok\n" if request.kind == "execute" else None

    mc, _ = fleet(handler)
    results = mc.execute("migrate")
    assert list(results.failed) == ["web2", "db1"]
    assert results["web2"].error == "AuthenticationError" and results["db1"] == SSHResult("", "no such table\n", 1)
    assert str(results.summary()) == "4 ok, 1 AuthenticationError, 1 exit 1"
    with pytest.raises(hussh.multi_conn.PartialFailureException) as raised:
        results.raise_if_any_failed()
    assert list(raised.value.failed) == ["web2", "db1"] and len(raised.value.succeeded) == 4


def test_maps_run_only_their_hosts_and_unknown_hosts_start_nothing(fleet):
    mc, engine = fleet()
    results = mc.execute_map({"db2": "vacuum", "web1": "reload"})
    assert list(results) == ["web1", "db2"]  # the MultiConnection's order, not the map's
    assert [r.stdout for r in results.values()] == ["web1: reload\n", "db2: vacuum\n"]
    before = len(engine.requests)
    with pytest.raises(ValueError, match="'web9'"):
        mc.execute_map({"web1": "true", "web9": "true"})
    with pytest.raises(ValueError, match="'web9'"):
        mc.tail_map({"web9": "/tmp/x"})
    assert len(engine.requests) == before


def test_nothing_starts_before_the_first_call_and_bad_input_starts_nothing(fleet, tmp_path):
    mc, engine = fleet()
    with pytest.raises(FileNotFoundError):
        mc.sftp_write(tmp_path / "missing", "/x")
    with pytest.raises(ValueError, match="must contain '{host}'"):
        mc.sftp_read("/etc/hostname", tmp_path / "one-file")
    assert mc.shards() == [] and engine.requests == []


def test_duplicate_names_get_host_port_keys():
    engine = MockEngine(lambda r: f"{r.port}" if r.kind == "execute" else None)
    with MultiConnection.from_shared_auth(["web1:2201", "web1:2202", "db1"], engine=engine, ssh_config=False) as mc:
        assert mc.hosts == ["web1:2201", "web1:2202", "db1"]
        assert [r.stdout for r in mc.execute("port").values()] == ["2201", "2202", "22"]
        assert {h: (s.username, s.port) for h, s in mc.specs.items()} == {
            "web1:2201": ("root", 2201), "web1:2202": ("root", 2202), "db1": ("root", 22)}


def test_prune_failures_drops_the_hosts_that_failed_to_connect(fleet):
    def handler(request: MockRequest) -> object:
        if request.kind == "connect" and request.host.startswith("db"):
            raise hussh.ConnectError(f"{request.host}:22: connection refused")
        return None

    mc, _ = fleet(handler)
    assert list(mc.connect(prune_failures=True).failed) == ["db1", "db2"]
    assert mc.hosts == HOSTS[:4] and list(mc.execute("true")) == HOSTS[:4]


def test_progress_and_timed_callbacks_see_every_host(fleet):
    counts: list[tuple[int, int]] = []
    mc, _ = fleet(progress=lambda done, total: counts.append((done, total)))
    timed: list[tuple[str, float]] = []
    mc.execute("true", on_timed_result=lambda host, result, seconds: timed.append((host, seconds)))
    assert counts[-len(HOSTS):] == [(n, len(HOSTS)) for n in range(1, len(HOSTS) + 1)]
    assert sorted(host for host, _ in timed) == sorted(HOSTS) and all(s >= 0 for _, s in timed)


def test_a_call_from_a_callback_is_a_clear_error_and_the_connection_recovers(fleet):
    mc, _ = fleet()
    with pytest.raises(RuntimeError, match="inside a progress or on_result callback"):
        mc.execute("true", on_result=lambda host, result: mc.execute("true"))
    assert not mc.execute("true").failed


def test_two_threads_get_their_own_results(fleet):
    mc, _ = fleet()
    outcomes: dict[str, list[list[str]]] = {"a": [], "b": []}
    start = threading.Barrier(2, timeout=10)

    def caller(name: str, hosts: list[str]) -> None:
        start.wait()
        for n in range(20):
            results = mc.execute_map({h: f"{name}{n}" for h in hosts})
            outcomes[name].append([r.stdout for r in results.values()])

    threads = [threading.Thread(target=caller, args=("a", HOSTS)),
               threading.Thread(target=caller, args=("b", HOSTS[2:4]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes["a"] == [[f"{h}: a{n}\n" for h in HOSTS] for n in range(20)]
    assert outcomes["b"] == [[f"{h}: b{n}\n" for h in HOSTS[2:4]] for n in range(20)]


def test_workers_and_batch_size_split_the_hosts_and_bound_concurrency(fleet):
    running, most = [0], [0]

    async def handler(request: MockRequest) -> object:
        if request.kind == "execute":
            running[0] += 1  # one thread per shard: count under the GIL, as the shards overlap
            most[0] = max(most[0], running[0])
            await asyncio.sleep(0.05)
            running[0] -= 1
        return None

    mc, _ = fleet(handler, workers=3, batch_size=4)
    mc.execute("work")
    shards = mc.shards()
    assert [s.hosts for s in shards] == [["web1", "web4"], ["web2", "db1"], ["web3", "db2"]]
    assert [s.concurrency for s in shards] == [2, 2, 2]  # each may run all its hosts: batch_size bounds the sum
    assert most[0] <= 4


def test_status_is_readable_from_a_callback(fleet):
    seen: list[hussh.CallStatus | None] = []
    mc, _ = fleet()
    mc.execute("true", on_result=lambda host, result: seen.append(mc.status()))
    assert mc.status() is None
    assert [s.done for s in seen if s is not None] == list(range(1, len(HOSTS) + 1))
    assert all(s is not None and s.total == len(HOSTS) for s in seen)
