"""Faults: silent hosts, killed or corrupt workers, Ctrl-C, GC/exit clean-up, descriptor limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import hussh._spec
import workers.pool
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared(fleet, **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, **kwargs)


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run_script(body: str, *, timeout: float = 60, **popen) -> subprocess.Popen:
    """Start ``body`` in a fresh interpreter with the repo importable and the fleet's details in env."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(body)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


SCRIPT_HEAD = """
    import json, os, sys, time
    from hussh.multi_conn import MultiConnection
    hosts = json.loads(os.environ["FLEET"])
    mc = MultiConnection.from_shared_auth(hosts, username="hussh", password="hussh", workers=2)
    mc.connect()
    print(json.dumps([w.pid for w in mc._pool.workers]), flush=True)
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


def test_worker_killed_mid_call_fails_only_its_hosts_and_is_replaced(fleet):
    mc = shared(fleet, workers=2)
    with mc:
        first_pids = [w.pid for w in mc._pool.workers]
        victim = first_pids[0]
        killer = threading.Timer(1.0, os.kill, (victim, signal.SIGKILL))
        killer.start()
        results = mc.execute("sleep 3; echo done", timeout=20)
        killer.join()
        lost = [fleet.addresses[i] for i in (0, 2)]  # host i lives in worker i % 2
        kept = [fleet.addresses[i] for i in (1, 3)]
        for host in lost:
            assert results[host].status == -1
            assert results[host].stderr.startswith("WorkerLost: ") and "SIGKILL" in results[host].stderr
        assert all(results[h].stdout == "done\n" for h in kept)
        again = mc.execute("whoami")
        assert [r.stdout for r in again.values()] == ["hussh\n"] * 4
        assert mc._pool.workers[0].pid != victim and mc._pool.workers[1].pid == first_pids[1]
    assert not alive(victim)


def test_malformed_frame_from_a_worker_is_a_clear_error_not_a_hang(fleet):
    mc = shared(fleet, workers=2)
    with mc:
        worker = mc._pool.workers[1]
        pipe = os.readlink(f"/proc/{os.getpid()}/fd/{worker.from_worker}")
        child_fd = next(fd for fd in os.listdir(f"/proc/{worker.pid}/fd")
                        if os.readlink(f"/proc/{worker.pid}/fd/{fd}") == pipe)

        def corrupt() -> None:
            with open(f"/proc/{worker.pid}/fd/{child_fd}", "wb") as into_parent:
                into_parent.write(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack

        injector = threading.Timer(0.5, corrupt)
        injector.start()
        results = mc.execute("sleep 2; echo done", timeout=20)
        injector.join()
        for host in (fleet.addresses[1], fleet.addresses[3]):
            assert results[host].status == -1 and "malformed frame" in results[host].stderr
        assert results[fleet.addresses[0]].stdout == "done\n"
        assert len(mc.execute("true").succeeded) == 4
    assert not alive(worker.pid)


def test_stopped_worker_is_lost_after_the_stall_limit_and_replaced(fleet, monkeypatch):
    monkeypatch.setattr(workers.pool, "STALL_LIMIT", 3.0)
    mc = shared(fleet, workers=2)
    with mc:
        first_pids = [w.pid for w in mc._pool.workers]
        victim = first_pids[1]
        os.kill(victim, signal.SIGSTOP)
        started = time.monotonic()
        results = mc.execute("whoami", timeout=20)
        elapsed = time.monotonic() - started
        for host in (fleet.addresses[1], fleet.addresses[3]):  # host i lives in worker i % 2
            assert results[host].status == -1
            assert results[host].stderr.startswith("WorkerLost: ") and "sent nothing for 3 seconds" in results[host].stderr
        assert [results[fleet.addresses[i]].stdout for i in (0, 2)] == ["hussh\n"] * 2
        assert 3.0 <= elapsed < 10.0
        assert [r.stdout for r in mc.execute("whoami").values()] == ["hussh\n"] * 4
        assert mc._pool.workers[1].pid != victim and mc._pool.workers[0].pid == first_pids[0]
    assert not alive(victim)


def test_a_call_longer_than_the_stall_limit_is_not_a_stall(fleet, monkeypatch):
    monkeypatch.setattr(workers.pool, "STALL_LIMIT", 2.0)
    with shared(fleet, workers=2) as mc:
        results = mc.execute("sleep 4; echo done", timeout=20)
    assert [r.stdout for r in results.values()] == ["done\n"] * 4


def test_a_parent_held_up_past_the_stall_limit_loses_no_worker(fleet, monkeypatch):
    monkeypatch.setattr(workers.pool, "STALL_LIMIT", 2.0)
    calls: list[int] = []

    def progress(done: int, total: int) -> None:  # the caller's callback blocks the parent, once
        calls.append(done)
        if len(calls) == 1:
            time.sleep(3.0)

    with shared(fleet, workers=2, progress=progress) as mc:
        pids = [w.pid for w in mc._pool.workers]
        results = mc.execute("echo done")
        assert [r.stdout for r in results.values()] == ["done\n"] * 4
        assert [w.pid for w in mc._pool.workers] == pids


def test_ctrl_c_interrupts_a_long_call_quickly_and_leaves_no_worker(fleet_env):
    proc = run_script(SCRIPT_HEAD + """
    try:
        mc.execute("sleep 30")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
    """)
    try:
        pids = json.loads(proc.stdout.readline())
        time.sleep(1.0)  # let the long call start
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert out == "interrupted\n"
    assert elapsed < 2.0
    assert pids and not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("ending", ["close", "gc", "exit"])
def test_close_gc_and_interpreter_exit_stop_every_worker(fleet_env, ending):
    finish = {"close": "mc.close()", "gc": "import gc; del mc; gc.collect()", "exit": "sys.exit(0)"}[ending]
    proc = run_script(SCRIPT_HEAD + f"""
    pids = json.loads(json.dumps([w.pid for w in mc._pool.workers]))
    {finish}
    print(json.dumps([os.path.exists(f"/proc/{{pid}}") for pid in pids]), flush=True)
    """)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    pids = json.loads(lines[0])
    assert len(pids) == 2
    if ending != "exit":
        assert json.loads(lines[1]) == [False, False]  # gone before the interpreter even exits
    assert not any(alive(pid) for pid in pids)
