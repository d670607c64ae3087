"""``hussh.testing.MockEngine``'s contract: what a handler is asked, what its replies and errors become."""

from __future__ import annotations

import asyncio
import threading

import pytest

import hussh
from hussh import SSHResult
from hussh.multi_conn import MultiConnection
from hussh.testing import MockEngine, MockRequest


def test_a_handler_sees_each_operation_as_a_typed_request(fleet, tmp_path):
    mc, engine = fleet(hosts=["alice@web1:2201", "web2"], timeout=7)
    mc.execute("cat", input="hello", timeout=3)
    mc.execute("id", sudo=True, sudo_password="s3cret")
    mc.sftp_write_data("data", "/etc/motd")
    mc.sftp_read("/etc/hostname")
    connects = [r for r in engine.requests if r.kind == "connect"]
    assert [(r.host, r.port, r.user, r.index) for r in connects] == [("web1", 2201, "alice", 0),
                                                                     ("web2", 22, "root", 1)]
    cat, sudo, write, read = (r for r in engine.requests if r.index == 0 and r.kind != "connect")
    assert (cat.kind, cat.command, cat.stdin, cat.timeout, cat.sudo) == ("execute", "cat", b"hello", 3, False)
    assert (sudo.sudo, sudo.sudo_password, sudo.timeout) == (True, "s3cret", 7)  # the host's timeout
    assert "s3cret" not in repr(sudo)
    assert (write.kind, write.path, write.data) == ("sftp_write", "/etc/motd", b"data")
    assert (read.kind, read.path) == ("sftp_read", "/etc/hostname")


def test_replies_become_results():
    replies = {"a": "text\n", "b": b"\xff bytes", "c": None, "d": SSHResult("out", "err\n", 3)}
    engine = MockEngine(lambda r: replies[r.host] if r.kind == "execute" else None)
    with MultiConnection.from_shared_auth(list(replies), engine=engine, ssh_config=False) as mc:
        results = mc.execute("x")
    assert results["a"] == SSHResult("text\n", "", 0)
    assert results["b"] == SSHResult("\ufffd bytes", "", 0)
    assert results["c"] == SSHResult("", "", 0)
    assert results["d"] == SSHResult("out", "err\n", 3) and results["d"] in results.failed.values()


def test_raised_errors_become_that_hosts_result_as_real_failures_do():
    def handler(request: MockRequest) -> None:
        if request.kind != "execute":
            return None
        raise {"lost": hussh.ConnectionLost("connection to lost:22 lost during the command"),
               "slow": hussh.CommandTimeout("command timed out after 5 seconds", SSHResult("partial\n", "", -1)),
               "sudo": hussh.SudoError("sudo on sudo:22 refused the password", SSHResult()),
               "bug": KeyError("nope")}[request.host]

    with MultiConnection.from_shared_auth(["lost", "slow", "sudo", "bug"], engine=MockEngine(handler),
                                          ssh_config=False) as mc:
        results = mc.execute("x")
    assert results["lost"] == SSHResult("", "ConnectionLost: connection to lost:22 lost during the command", -1,
                                        "ConnectionLost")
    assert results["slow"] == SSHResult("partial\n", "CommandTimeout: command timed out after 5 seconds", -1,
                                        "CommandTimeout")  # the output so far kept, as a real timeout keeps it
    assert results["sudo"].error == "SudoError" and results["sudo"].stderr.startswith("SudoError: sudo on sudo:22")
    assert results["bug"] == SSHResult("", "KeyError: 'nope'", -1, "KeyError")


def test_a_connect_failure_is_remembered_for_the_cooldown_and_connect_retries(fleet):
    down = {"db1"}

    def handler(request: MockRequest) -> object:
        if request.kind == "connect" and request.host in down:
            raise hussh.ConnectTimeout(f"{request.host}:22: no answer within 15 seconds")
        return "ok\n" if request.kind == "execute" else None

    mc, engine = fleet(handler)
    first = mc.execute("true")
    assert first["db1"].error == "ConnectTimeout" and len(first.succeeded) == 5
    asked = len(engine.requests)
    again = mc.execute("true")  # within Retry.cooldown: the failure is returned, the host not asked
    assert "not retried: this host failed to connect" in again["db1"].stderr
    assert [r.host for r in engine.requests[asked:]] == [h for h in mc.hosts if h != "db1"]
    down.clear()
    assert not mc.connect().failed  # connect() always tries again
    assert not mc.execute("true").failed


def test_a_lost_connection_connects_again_on_the_next_operation(fleet):
    calls = {"n": 0}

    def handler(request: MockRequest) -> object:
        if request.kind == "execute":
            calls["n"] += 1
            if calls["n"] == 1:
                raise hussh.ConnectionLost("connection to web1:22 lost")
        return None

    mc, engine = fleet(handler, hosts=["web1"])
    assert mc.execute("true")["web1"].error == "ConnectionLost"
    assert not mc.execute("true").failed
    assert [r.kind for r in engine.requests] == ["connect", "execute", "connect", "execute"]


def test_an_async_handler_runs_hosts_concurrently_and_times_out_like_a_command(fleet):
    running, most = set(), [0]

    async def handler(request: MockRequest) -> object:
        if request.kind != "execute":
            return None
        running.add(request.host)
        most[0] = max(most[0], len(running))
        await asyncio.sleep(30 if request.host == "db2" else 0.05)
        running.discard(request.host)
        return "done\n"

    mc, _ = fleet(handler, batch_size=3)
    results = mc.execute("work", timeout=0.5)
    assert most[0] == 3  # batch_size lanes, no more
    assert results["db2"] == SSHResult("", "CommandTimeout: command timed out after 0.5 seconds; stopped it", -1,
                                       "CommandTimeout")
    assert len(results.succeeded) == 5


def test_output_bounds_apply_as_to_real_commands(fleet):
    mc, _ = fleet(lambda r: "x" * 100 if r.kind in ("execute", "sftp_read") else None, hosts=["web1"], max_output=10)
    result = mc.execute("yes")["web1"]
    assert (result.stdout, result.error) == ("x" * 10, "OutputLimitExceeded")
    assert result.stderr == "OutputLimitExceeded: command output exceeded 10 bytes; stopped it"
    read = mc.sftp_read("/big")["web1"]
    assert read.error == "OutputLimitExceeded" and read.stdout == "x" * 10


def test_files_read_to_local_paths_and_tails(fleet, tmp_path):
    log = {"web1": "one\n", "web2": "one\n"}
    mc, _ = fleet(lambda r: log[r.host] if r.kind == "sftp_read" else None, hosts=["web1", "web2"])
    saved = mc.sftp_read("/etc/hostname", tmp_path / "{host}.txt")
    assert (tmp_path / "web1.txt").read_text() == "one\n" and saved["web2"].stdout == str(tmp_path / "web2.txt")
    with mc.tail("/var/log/app.log") as tailer:
        log["web1"] += "two\n"
        assert tailer.read() == {"web1": "two\n", "web2": ""}
        log["web2"] += "three\n"
        assert tailer.read() == {"web1": "", "web2": "three\n"}
    assert tailer.contents == {"web1": "two\n", "web2": "three\n"}


def test_a_tail_of_a_file_that_shrank_reads_it_again_from_its_start(fleet):
    """As on a real host (``tail -F``): a file shorter than where the tail stands was truncated."""
    log = {"web1": "one\ntwo\n"}
    mc, _ = fleet(lambda r: log[r.host] if r.kind == "sftp_read" else None, hosts=["web1"])
    with mc.tail("/var/log/app.log") as tailer:
        log["web1"] = "new\n"
        assert tailer.read() == {"web1": "new\n"}
        log["web1"] += "more\n"
        assert tailer.read() == {"web1": "more\n"}


def test_a_bad_reply_is_that_hosts_error_naming_the_fix(fleet):
    mc, _ = fleet(lambda r: 42 if r.kind == "execute" else None, hosts=["web1"])
    assert mc.execute("x")["web1"].stderr.startswith("TypeError: the MockEngine handler returned int for a command")
    mc, _ = fleet(lambda r: SSHResult("", "", -1, "ConnectTimeout") if r.kind == "execute" else None, hosts=["w"])
    assert "raise that error instead" in mc.execute("x")["w"].stderr


def test_a_handler_stuck_past_the_stall_limit_loses_its_shard(fleet):
    release = threading.Event()

    def handler(request: MockRequest) -> None:
        if request.kind == "execute" and request.host == "web2":
            release.wait(30)  # a synchronous handler blocks its mock worker: no heartbeat goes out
        return None

    engine = MockEngine(handler, stall_limit=1.1)
    mc = MultiConnection.from_shared_auth(["web1", "web2", "web3"], engine=engine, workers=3, ssh_config=False)
    try:
        results = mc.execute("true")
        assert results["web2"].error == "WorkerLost" and "sent nothing for 1.1 seconds" in results["web2"].stderr
        assert [results[h].status for h in ("web1", "web3")] == [0, 0]
    finally:
        release.set()
        mc.close()


def test_shards_close_and_the_mock_thread(fleet):
    mc, _ = fleet(workers=2, batch_size=5)
    assert mc.shards() == []
    mc.execute("true")
    shards = mc.shards()
    assert [(s.number, s.hosts, s.concurrency) for s in shards] == [
        (0, ["web1", "web3", "db1"], 3), (1, ["web2", "web4", "db2"], 3)]  # batch_size=5 bounds the sum
    assert all(s.pid is not None for s in shards)
    assert any(t.name.startswith("hussh-mock-worker") for t in threading.enumerate())
    mc.close()
    assert mc.shards() == [] and not any(t.name.startswith("hussh-mock-worker") for t in threading.enumerate())


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="handler must be a callable"):
        MockEngine("echo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stall_limit must be"):
        MockEngine(print, stall_limit=0.5)
    with pytest.raises(ValueError, match="local engine only"):
        MultiConnection.from_shared_auth(["a"], engine=MockEngine(print), ssh_config=False).sftp_put_dir(".", "/x")
