"""MultiConnection semantics beyond the spec's examples: ordering, keys, timeouts, laziness, sharding."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from hussh import SSHResult
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection, MultiResult, PartialFailureException
from hussh.testing import PASSWORD, PASSWORD_USER
from hussh.workers.lanes import split_shares
from procs import marker, sleepers, wait_until


@pytest.fixture
def mc(fleet):
    conn = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port)
    yield conn
    conn.close()


def client_port(result: SSHResult) -> str:
    """The client's source port as the server saw it ($SSH_CLIENT): the same port means the same TCP connection."""
    return result.stdout.split()[1]


def test_results_keep_the_given_order_whatever_finishes_first(fleet, mc):
    hosts = list(reversed(fleet.addresses))
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=fleet.port)
    with mc:
        results = mc.execute_map({h: f"sleep 0.{3 - i}; echo {i}" for i, h in enumerate(hosts)})
    assert list(results) == hosts
    assert [r.stdout for r in results.values()] == ["0\n", "1\n", "2\n", "3\n"]


def test_multiresult_mapping_filters_and_repr():
    results = MultiResult({"a": SSHResult("x", "", 0), "b": SSHResult("", "bad", 2), "c": SSHResult("", "", -1)})
    assert repr(results) == "MultiResult(3 hosts: 1 succeeded, 2 failed)"
    assert [host for host in results] == ["a", "b", "c"]
    assert list(results.succeeded) == ["a"] and list(results.failed) == ["b", "c"]
    assert not MultiResult({"a": SSHResult()}).failed and len(MultiResult({"a": SSHResult()}).failed) == 0
    with pytest.raises(PartialFailureException, match=r"^Operation failed on 2 of 3 host\(s\)$") as info:
        results.raise_if_any_failed()
    assert list(info.value.succeeded) == ["a"] and list(info.value.failed) == ["b", "c"]
    MultiResult({"a": SSHResult()}).raise_if_any_failed()


def test_command_timeout_keeps_partial_output_stops_command_and_keeps_connection(mc, fleet, remote_dir):
    before = mc.execute("echo $SSH_CLIENT")
    token, touched = marker(), remote_dir / "touched"
    try:
        results = mc.execute(f"echo started; sleep {token}; touch {touched}", timeout=1)
        for result in results.values():
            assert result.status == -1
            assert result.stdout == "started\n"
            assert "CommandTimeout: command timed out after 1 seconds" in result.stderr
        wait_until(lambda: not sleepers(token), 3, "the timed-out commands to be stopped")
    finally:
        for pid in sleepers(token):
            os.kill(pid, signal.SIGKILL)
    assert not touched.exists()  # stopped, not left to finish
    after = mc.execute("echo $SSH_CLIENT")
    for host in fleet.addresses:
        assert after[host].status == 0, after[host]
        assert client_port(after[host]) == client_port(before[host])


def test_connection_stays_open_in_its_worker_between_calls(mc):
    first = mc.execute("echo $SSH_CLIENT")
    second = mc.execute("echo $SSH_CLIENT")
    assert [client_port(r) for r in first.values()] == [client_port(r) for r in second.values()]


def test_execute_connects_lazily_and_connect_returns_empty_success(fleet):
    mc = MultiConnection.from_shared_auth(fleet.addresses + ["127.0.0.1:1"], username=PASSWORD_USER,
                                          password=PASSWORD, port=fleet.port)
    try:
        results = mc.execute("whoami")
        assert [r.stdout for r in results.succeeded.values()] == ["hussh\n"] * 4
        assert "ConnectError" in results["127.0.0.1:1"].stderr and "refused" in results["127.0.0.1:1"].stderr
        connected = mc.connect()
        assert [connected[h] for h in fleet.addresses] == [SSHResult("", "", 0)] * 4
        assert connected["127.0.0.1:1"].status == -1
    finally:
        mc.close()


def test_prune_failures_drops_failed_hosts(fleet):
    mc = MultiConnection.from_shared_auth(["127.0.0.1:1"] + fleet.addresses, username=PASSWORD_USER,
                                          password=PASSWORD, port=fleet.port)
    with mc:
        assert mc.hosts == ["127.0.0.1:1"] + fleet.addresses
        mc.connect(prune_failures=True)
        assert mc.hosts == fleet.addresses
        assert list(mc.execute("true")) == fleet.addresses
        assert repr(mc) == "MultiConnection(4 hosts, batch_size=100)"
        with pytest.raises(ValueError, match="127.0.0.1:1"):
            mc.execute_map({"127.0.0.1:1": "true"})


def test_map_with_unknown_host_raises_before_anything_runs(mc, fleet):
    with pytest.raises(ValueError, match="'web9'"):
        mc.execute_map({fleet.addresses[0]: "true", "web9": "true"})
    with pytest.raises(ValueError, match="'web9'"):
        mc.tail_map({"web9": "/tmp/x"})
    assert mc.shards() == []  # nothing was started, let alone run


def test_map_runs_only_on_mapped_hosts(mc, fleet):
    results = mc.execute_map({fleet.addresses[2]: "echo two", fleet.addresses[0]: "echo zero"})
    assert list(results) == [fleet.addresses[0], fleet.addresses[2]]


def test_duplicate_host_names_get_host_port_keys(fleet):
    host = fleet.addresses[0]
    connections = [
        AsyncConnection(host, username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
        AsyncConnection(host, username=PASSWORD_USER, password=PASSWORD, port=1),
        AsyncConnection(fleet.addresses[1], username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
    ]
    with MultiConnection(connections) as mc:
        results = mc.execute("true")
    assert list(results) == [f"{host}:{fleet.port}", f"{host}:1", fleet.addresses[1]]
    assert [r.status for r in results.values()] == [0, -1, 0]


def test_same_connection_twice_is_rejected(fleet):
    conn = AsyncConnection(fleet.addresses[0], username=PASSWORD_USER, password=PASSWORD, port=fleet.port)
    with pytest.raises(ValueError, match="more than once"):
        MultiConnection([conn, conn])


def test_bad_arguments_are_clear_errors(fleet):
    with pytest.raises(ValueError, match="batch_size"):
        MultiConnection.from_shared_auth(fleet.addresses, batch_size=0)
    with pytest.raises(TypeError, match="list of host names"):
        MultiConnection.from_shared_auth("server1")
    with pytest.raises(TypeError, match="Connection or AsyncConnection"):
        MultiConnection(["server1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="port"):
        MultiConnection.from_shared_auth(["a"], port=70000)


def test_sftp_write_reads_the_local_file_once(mc, fleet, tmp_path, remote_dir):
    fifo = tmp_path / "payload"
    os.mkfifo(fifo)
    payload = b"written once\n" * 1000
    writer = threading.Thread(target=fifo.write_bytes, args=(payload,), daemon=True)
    writer.start()  # a FIFO yields its data to one reader only: a second read would block
    results = mc.sftp_write(str(fifo), str(remote_dir / "payload"))
    writer.join(timeout=5)
    assert len(results.succeeded) == 4
    assert (remote_dir / "payload").read_bytes() == payload


def test_sftp_read_to_local_paths_needs_a_host_placeholder(mc, fleet, tmp_path, remote_dir):
    (remote_dir / "data").write_text("remote data\n")
    with pytest.raises(ValueError, match=r"\{host\}"):
        mc.sftp_read(str(remote_dir / "data"), str(tmp_path / "data"))
    results = mc.sftp_read(str(remote_dir / "data"), str(tmp_path / "data.{host}"))
    for host in fleet.addresses:
        assert results[host].stdout == str(tmp_path / f"data.{host}")
        assert (tmp_path / f"data.{host}").read_text() == "remote data\n"


def test_sftp_read_missing_file_is_a_per_host_error(mc, fleet, remote_dir):
    (remote_dir / "present").write_text("here\n")
    results = mc.execute_map({fleet.addresses[0]: f"rm -f {remote_dir}/present"})
    assert results[fleet.addresses[0]].status == 0
    results = mc.sftp_read(str(remote_dir / "present"))
    assert all("FileNotFoundError" in r.stderr and str(remote_dir) in r.stderr for r in results.values())


def test_tailers_read_only_new_bytes_and_survive_a_missing_file(mc, fleet, remote_dir):
    first, second, missing, fourth = fleet.addresses
    files = {h: remote_dir / f"{n}.log" for n, h in enumerate(fleet.addresses)}
    for host, path in files.items():
        if host != missing:
            path.write_text(f"old {host}\n")
            path.chmod(0o666)
    with mc.tail_map({h: str(p) for h, p in files.items()}) as tailer:
        assert "FileNotFoundError" in tailer.errors[missing]
        mc.execute_map({h: f"echo new >> {files[h]}" for h in (first, second)})
        assert tailer.read() == {first: "new\n", second: "new\n", missing: "", fourth: ""}
        assert tailer.read() == {first: "", second: "", missing: "", fourth: ""}
        assert tailer.read(from_pos=0)[first] == f"old {first}\nnew\n"
        mc.execute_map({fourth: f"echo later >> {files[fourth]}"})
    assert tailer.contents == {first: "new\n", second: "new\n", missing: "", fourth: "later\n"}
    assert list(tailer.errors) == [missing]


def test_binary_output_is_decoded_with_replacement(mc):
    results = mc.execute(r"printf 'ok\377\376\n'")
    assert all(r.stdout == "ok\ufffd\ufffd\n" and r.status == 0 for r in results.values())


def test_batch_size_bounds_concurrency_across_workers(fleet, remote_dir):
    hosts = [f"{a}:{fleet.port}" for a in fleet.addresses]
    running = remote_dir / "running"
    running.mkdir(mode=0o777)
    running.chmod(0o777)
    probe = f"touch {running}/$H; sleep 0.4; ls {running} | wc -l; rm {running}/$H"
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, batch_size=2,
                                          workers=2)
    with mc:
        results = mc.execute_map({h: f"H={i}; {probe}" for i, h in enumerate(hosts)})
    assert all(r.status == 0 for r in results.values()), results
    assert max(int(r.stdout) for r in results.values()) <= 2


def test_shares_sum_to_batch_size_and_never_zero():
    assert split_shares(100, [500, 500]) == [50, 50]
    assert split_shares(3, [1, 1, 1]) == [1, 1, 1]
    assert sum(split_shares(7, [10, 1])) == 7 and min(split_shares(7, [10, 1])) >= 1
    assert split_shares(2, [334, 333]) == [1, 1]


def test_small_fleets_use_one_worker_and_workers_overrides(fleet):
    mc = MultiConnection.from_shared_auth(fleet.addresses[:3], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port)
    with mc:
        assert len(mc.shards()) == 1
    mc = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, workers=3)
    with mc:
        shards = mc.shards()
        assert len(shards) == 3 and all(s.concurrency == min(100, len(s.hosts)) for s in shards)
        assert [s.hosts for s in shards] == [fleet.addresses[0::3], fleet.addresses[1::3], fleet.addresses[2::3]]
        assert len(mc.execute("true").succeeded) == 4


def test_progress_callback_counts_every_host(fleet):
    seen: list[tuple[int, int]] = []
    mc = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, progress=lambda done, total: seen.append((done, total)))
    with mc:
        seen.clear()
        mc.execute("true")
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
