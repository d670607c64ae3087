"""Faults: silent hosts, killed or corrupt workers, Ctrl-C, the caller killed, GC/exit clean-up, repeated losses.

Remote commands run on this machine (the loopback fleet), so tests find them as processes: a
``sleep <marker>`` per host shows when a call has started and, once gone, that it was stopped.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import hussh._spec
import hussh.workers.core
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from hussh.workers.engine import LocalEngine
from hussh.workers.pool import WorkerPool
from procs import alive, marker, run_script, sleepers, wait_until


def shared(fleet, **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, **kwargs)


SCRIPT_HEAD = """
    import json, os, sys, time
    from hussh.multi_conn import MultiConnection
    hosts = json.loads(os.environ["FLEET"])
    mc = MultiConnection.from_shared_auth(hosts, username="hussh", password="hussh", workers=2)
    mc.connect()
    print(json.dumps([s.pid for s in mc.shards()]), flush=True)
"""


@pytest.fixture
def fleet_env(fleet, monkeypatch):
    monkeypatch.setenv("FLEET", json.dumps([f"{a}:{fleet.port}" for a in fleet.addresses]))


def test_silent_host_is_bounded_by_the_default_connect_timeout(fleet, blackhole, monkeypatch):
    assert hussh._spec.ConnectSpec("h").connect_bound == hussh._spec.DEFAULT_CONNECT_TIMEOUT == 15.0
    monkeypatch.setattr(hussh._spec, "DEFAULT_CONNECT_TIMEOUT", 2.0)  # read by the parent, shipped to workers
    silent = f"{blackhole[0]}:{blackhole[1]}"
    hosts = [f"{a}:{fleet.port}" for a in fleet.addresses] + [silent]
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD)  # timeout=0
    started = time.monotonic()
    with mc:
        results = mc.execute("whoami")
    assert time.monotonic() - started < 15
    assert results[silent].status == -1
    assert results[silent].stderr.startswith("ConnectTimeout: ") and "after 2 seconds" in results[silent].stderr
    assert len(results.succeeded) == 4


class Gate:
    """Remote commands that say they started, then wait until the test opens the gate."""

    def __init__(self, directory) -> None:
        self.directory = directory

    def command(self, then: str = "echo done") -> str:
        return (f"touch {self.directory}/started.$$; "
                f"while [ ! -e {self.directory}/open ]; do sleep 0.05; done; {then}")

    def wait_started(self, count: int) -> None:
        wait_until(lambda: len(list(self.directory.glob("started.*"))) >= count, 10, "the commands to start")

    def open(self) -> None:
        (self.directory / "open").touch()


@pytest.fixture
def gate(remote_dir) -> Gate:
    return Gate(remote_dir)


def test_worker_killed_mid_call_fails_only_its_hosts_and_is_replaced(fleet, gate):
    mc = shared(fleet, workers=2)
    with mc:
        first_pids = [s.pid for s in mc.shards()]
        victim = first_pids[0]
        assert victim is not None

        def kill_then_open() -> None:
            gate.wait_started(4)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: not alive(victim), 10, "the worker to die")
            gate.open()

        killer = threading.Thread(target=kill_then_open)
        killer.start()
        results = mc.execute(gate.command(), timeout=20)
        killer.join()
        lost = [fleet.addresses[i] for i in (0, 2)]  # host i lives in worker i % 2
        kept = [fleet.addresses[i] for i in (1, 3)]
        for host in lost:
            assert results[host].status == -1
            assert results[host].stderr.startswith("WorkerLost: ") and "SIGKILL" in results[host].stderr
        assert all(results[h].stdout == "done\n" for h in kept)
        again = mc.execute("whoami")
        assert [r.stdout for r in again.values()] == ["hussh\n"] * 4
        pids = [s.pid for s in mc.shards()]
        assert pids[0] != victim and pids[1] == first_pids[1]
    assert not alive(victim)


class Recording(LocalEngine):
    """Keeps the pool it makes, for tests that reach a worker's pipe."""

    def pool(self, *args):
        made = super().pool(*args)
        assert isinstance(made, WorkerPool)
        self.made = made
        return made


def test_malformed_frame_from_a_worker_is_a_clear_error_not_a_hang(fleet, gate):
    engine = Recording()
    mc = shared(fleet, workers=2, engine=engine)
    with mc:
        worker = engine.made.workers[1]
        assert worker is not None
        pipe = os.readlink(f"/proc/{os.getpid()}/fd/{worker.from_worker}")
        child_fd = next(fd for fd in os.listdir(f"/proc/{worker.pid}/fd")
                        if os.readlink(f"/proc/{worker.pid}/fd/{fd}") == pipe)

        def corrupt_then_open() -> None:
            gate.wait_started(4)
            with open(f"/proc/{worker.pid}/fd/{child_fd}", "wb") as into_parent:
                into_parent.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
            wait_until(lambda: not alive(worker.pid), 10, "the corrupt worker to be killed")
            gate.open()

        injector = threading.Thread(target=corrupt_then_open)
        injector.start()
        results = mc.execute(gate.command(), timeout=20)
        injector.join()
        for host in (fleet.addresses[1], fleet.addresses[3]):
            assert results[host].status == -1 and "malformed frame" in results[host].stderr
        assert results[fleet.addresses[0]].stdout == "done\n"
        assert len(mc.execute("true").succeeded) == 4
    assert not alive(worker.pid)


def test_stopped_worker_is_lost_after_the_stall_limit_and_replaced(fleet):
    mc = shared(fleet, workers=2, engine=LocalEngine(stall_limit=3.0))
    with mc:
        first_pids = [s.pid for s in mc.shards()]
        victim = first_pids[1]
        assert victim is not None
        os.kill(victim, signal.SIGSTOP)
        started = time.monotonic()
        results = mc.execute("whoami", timeout=20)
        elapsed = time.monotonic() - started
        for host in (fleet.addresses[1], fleet.addresses[3]):  # host i lives in worker i % 2
            assert results[host].status == -1
            assert results[host].stderr.startswith("WorkerLost: ")
            assert "sent nothing for 3 seconds" in results[host].stderr
        assert [results[fleet.addresses[i]].stdout for i in (0, 2)] == ["hussh\n"] * 2
        assert 3.0 <= elapsed < 10.0
        assert [r.stdout for r in mc.execute("whoami").values()] == ["hussh\n"] * 4
        pids = [s.pid for s in mc.shards()]
        assert pids[1] != victim and pids[0] == first_pids[0]
    assert not alive(victim)


def test_a_call_longer_than_the_stall_limit_is_not_a_stall(fleet):
    with shared(fleet, workers=2, engine=LocalEngine(stall_limit=2.0)) as mc:
        results = mc.execute("sleep 4; echo done", timeout=20)
    assert [r.stdout for r in results.values()] == ["done\n"] * 4


def test_a_parent_held_up_past_the_stall_limit_loses_no_worker(fleet):
    stall_limit = 2.0
    calls: list[int] = []

    def progress(done: int, total: int) -> None:  # the caller's callback blocks the parent, once
        calls.append(done)
        if len(calls) == 1:
            time.sleep(stall_limit + 1)  # not a wait for anything: the held-up caller itself

    with shared(fleet, workers=2, progress=progress, engine=LocalEngine(stall_limit=stall_limit)) as mc:
        pids = [s.pid for s in mc.shards()]
        results = mc.execute("echo done")
        assert [r.stdout for r in results.values()] == ["done\n"] * 4
        assert [s.pid for s in mc.shards()] == pids


def test_ctrl_c_raises_at_once_and_stops_the_remote_commands(fleet_env):
    token = marker()
    proc = run_script(SCRIPT_HEAD + f"""
    try:
        mc.execute("sleep {token}")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    """)
    assert proc.stdout is not None
    try:
        pids = json.loads(proc.stdout.readline())
        wait_until(lambda: len(sleepers(token)) == 4, 10, "the remote commands to start")
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert proc.stdout.readline() == "interrupted\n"
        raised = time.monotonic() - sent
        wait_until(lambda: not sleepers(token), max(0.0, 2.0 - (time.monotonic() - sent)),
                   "the remote sleeps to stop within 2 s of Ctrl-C", every=0.01)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        _kill(sleepers(token))
    assert proc.returncode == 3, err
    assert raised < 2.0
    assert pids and not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("start", ["direct", "zygote"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_caller_leaves_no_worker_and_no_remote_command(fleet_env, start, signum):
    """Workers see end of file on their request pipes (the zygote on its socket) and stop everything."""
    token = marker()
    proc = run_script("""
    import os, threading
    if os.environ["START"] == "zygote":
        threading.Thread(target=threading.Event().wait, daemon=True).start()  # not alone: workers by the zygote
    """ + SCRIPT_HEAD + f"""
    with open(f"/proc/{{mc.shards()[0].pid}}/stat") as stat:  # forked by the zygote, or by this process
        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
    print(json.dumps(parent if parent != os.getpid() else None), flush=True)
    mc.execute("sleep {token}")
    """, {"START": start})
    assert proc.stdout is not None
    try:
        workers_ = json.loads(proc.stdout.readline())
        zygote = json.loads(proc.stdout.readline())
        assert (zygote is not None) == (start == "zygote")
        wait_until(lambda: len(sleepers(token)) == 4, 10, "the remote commands to start")
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == -signum
        wait_until(lambda: not any(alive(pid) for pid in workers_ + [zygote] if pid), 5, "workers to exit")
        wait_until(lambda: not sleepers(token), 5, "the remote commands to stop")
    finally:
        proc.kill()
        proc.communicate()
        _kill(sleepers(token))


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("ending", ["close", "gc", "exit"])
def test_close_gc_and_interpreter_exit_stop_every_worker(fleet_env, ending):
    """Each ending stops the workers itself while the caller still runs. (Once the caller is gone they stop
    anyway, at end of file on their pipes: so for ``exit`` the last exit handler looks, not the test.)"""
    report = 'print(json.dumps([os.path.exists(f"/proc/{pid}") for pid in pids]), flush=True)'
    finish = {"close": f"mc.close(); {report}", "gc": f"import gc; del mc; gc.collect(); {report}",
              "exit": "sys.exit(0)"}[ending]
    proc = run_script(f"""
    import atexit, json, os
    pids = []
    atexit.register(lambda: {report})  # registered before hussh's own exit clean-up, so it runs after it
    """ + SCRIPT_HEAD + f"""
    pids += [s.pid for s in mc.shards()]
    {finish}
    """)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    pids = json.loads(lines[0])
    assert len(pids) == 2
    assert json.loads(lines[1]) == [False, False]  # gone (and reaped) before the interpreter is
    assert not any(alive(pid) for pid in pids)


def test_a_worker_lost_on_every_call_is_not_started_again(fleet):
    """After MAX_LOSSES losses in a row a shard's hosts fail at once; a call it finishes resets the count."""
    token = marker()
    mine = [fleet.addresses[i] for i in (0, 2)]  # worker 0's hosts
    commands = {h: f"sleep {token}" if h in mine else "echo ok" for h in fleet.addresses}
    killed: list[int] = []
    with shared(fleet, workers=2) as mc:
        def kill_worker_0(host: str, result: object) -> None:
            pid = mc.shards()[0].pid
            if host not in mine and pid is not None and pid not in killed:
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)

        def lose() -> None:
            results = mc.execute_map(commands, on_result=kill_worker_0)
            assert [results[h].error for h in mine] == ["WorkerLost"] * 2
            assert [results[h].stdout for h in fleet.addresses if h not in mine] == ["ok\n"] * 2

        try:
            lose()
            lose()
            assert not mc.execute("true").failed  # started again; a finished call resets the count
            for _ in range(hussh.workers.core.MAX_LOSSES):
                lose()
            assert len(set(killed)) == len(killed) == 2 + hussh.workers.core.MAX_LOSSES  # a new process each time
            before = time.monotonic()
            results = mc.execute("true")
            assert time.monotonic() - before < 2
            assert mc.shards()[0].pid is None  # not forked again
            for host in mine:
                assert results[host].stderr.startswith(
                    f"WorkerLost: the worker for these hosts was lost {hussh.workers.core.MAX_LOSSES} calls in a row, "
                    "so it is not started again (last: ")
            assert [results[h].status for h in fleet.addresses if h not in mine] == [0, 0]
        finally:
            _kill(sleepers(token))
