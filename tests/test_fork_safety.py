"""Fork safety: workers are forked only from a single-threaded caller (else by the zygote), hold nothing
of the caller's, and a process forked from one that used a blocking ``Connection`` can make its own.

Scripts run in fresh interpreters so the start path (direct fork or zygote) is known; every wait is
bounded, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import subprocess

import pytest

from hussh import Connection
from hussh.testing import PASSWORD, PASSWORD_USER
from procs import fd_targets, run_script

HANG = 90  # seconds: a script that has not finished by then is stuck


@pytest.fixture
def fleet_env(fleet) -> dict[str, str]:
    return {"FLEET": json.dumps([f"{a}:{fleet.port}" for a in fleet.addresses])}


def finish(proc: subprocess.Popen[str], timeout: float = HANG) -> str:
    """The script's stdout once it exited with status 0; a script still running after ``timeout`` is a hang."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"hung: still running after {timeout:g} s\n{out}\n{err}") from None
    assert proc.returncode == 0, err
    return out


STRESS = """
    import concurrent.futures, json, logging, os, threading, time
    from hussh import Connection
    from hussh.multi_conn import MultiConnection

    hosts = json.loads(os.environ["FLEET"])
    auth = dict(username="hussh", password="hussh")

    def round_trip(i):
        mc = MultiConnection.from_shared_auth(hosts, workers=2, **auth)
        results = mc.execute(f"echo {i}")
        assert [r.stdout for r in results.values()] == [f"{i}\\n"] * len(hosts), results.failed.items()
        with open(f"/proc/{mc.shards()[0].pid}/stat") as stat:  # forked by the zygote, or by this process
            zygote = int(stat.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
        mc.close()
        return zygote

    paths = [round_trip(i) for i in range(5)]  # nothing else runs yet: forked directly

    stop = threading.Event()
    conn = Connection(hosts[0].split(":")[0], port=int(hosts[0].split(":")[1]), **auth)  # a loop thread

    def use_connection():
        while not stop.is_set():
            assert conn.execute("true").status == 0

    logging.getLogger("busy").addHandler(logging.StreamHandler(open(os.devnull, "w")))
    logging.getLogger("busy").setLevel(logging.DEBUG)

    def hammer_logging():  # getLogger takes logging's module lock, which every new asyncssh connection needs
        n = 0
        while not stop.is_set():
            n += 1
            logging.getLogger(f"busy.{n % 100}").debug("%s", "x" * 200)

    lock = threading.Lock()

    def hold_and_release():
        while not stop.is_set():
            with lock:
                time.sleep(0.0002)

    busy = concurrent.futures.ThreadPoolExecutor(6)
    running = [busy.submit(f) for f in (use_connection, hammer_logging, hammer_logging, hammer_logging,
                                        hold_and_release, hold_and_release)]
    paths += [round_trip(i) for i in range(5, 35)]
    stop.set()
    for future in running:
        future.result(timeout=30)
    busy.shutdown()
    conn.close()
    print(json.dumps(paths))
"""


def test_pools_start_and_stop_while_busy_threads_hold_locks(fleet_env):
    paths = json.loads(finish(run_script(STRESS, fleet_env)))
    assert paths == [False] * 5 + [True] * 30  # direct fork while alone, the zygote once threads run


FDS = """
    import json, os, socket, sys, tempfile, threading
    from hussh.multi_conn import MultiConnection
    from hussh.workers.engine import LocalEngine

    if os.environ["PATH_KIND"] == "zygote":
        threading.Thread(target=threading.Event().wait, daemon=True).start()  # not alone: no direct fork
    held = tempfile.TemporaryFile()
    listener = socket.create_server(("127.0.0.1", 0))
    pair = socket.socketpair()
    pipe = os.pipe()
    ours = [held.fileno(), listener.fileno(), *(s.fileno() for s in pair), *pipe]
    class Recording(LocalEngine):  # keeps its pool, to name the caller's pipe ends
        def pool(self, *args):
            self.made = super().pool(*args)
            return self.made

    engine = Recording()
    mc = MultiConnection.from_shared_auth(json.loads(os.environ["FLEET"]), username="hussh", password="hussh",
                                          workers=2, engine=engine)
    mc.connect()
    workers = engine.made.workers
    zygote = workers[0].process.zygote
    print(json.dumps({"caller": [os.readlink(f"/proc/self/fd/{fd}") for fd in ours],
                      "workers": [s.pid for s in mc.shards()],
                      "pipes": [[w.to_worker, w.from_worker] for w in workers],
                      "zygote": zygote.process.pid if zygote else None}), flush=True)
    sys.stdin.readline()
    mc.close()
"""


@pytest.mark.parametrize("path_kind", ["direct", "zygote"])
def test_workers_hold_nothing_of_the_caller(fleet_env, path_kind):
    proc = run_script(FDS, {**fleet_env, "PATH_KIND": path_kind}, stdin=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen = json.loads(line)
        assert (seen["zygote"] is not None) == (path_kind == "zygote")
        caller = set(seen["caller"])
        own = [{os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in pair} for pair in seen["pipes"]]
        for pid in seen["workers"] + ([seen["zygote"]] if seen["zygote"] else []):
            held = set(fd_targets(pid).values())
            assert not held & caller, f"process {pid} holds the caller's {held & caller}"
        for pid, pipes in zip(seen["workers"], own):
            assert set(fd_targets(pid).values()) & set().union(*own) == pipes  # its own two pipes, no sibling's
        proc.stdin.write("done\n")
        proc.stdin.flush()
        finish(proc, 30)
    finally:
        proc.kill()
        proc.wait()


def _whoami_in_child(host: str, port: int) -> str:
    with Connection(host, port=port, username=PASSWORD_USER, password=PASSWORD, timeout=10_000) as conn:
        return conn.execute("whoami").stdout.strip()


def test_a_forked_child_makes_its_own_blocking_connection(fleet):
    host, port = fleet.addresses[0], fleet.port
    assert _whoami_in_child(host, port) == PASSWORD_USER  # this process now has the loop thread
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.write(write_end, _whoami_in_child(host, port).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    pidfd = os.pidfd_open(pid)
    try:
        exited = select.select([pidfd], [], [], 30)[0]
        if not exited:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert exited, "Connection() in the forked child hung on its parent's event loop"
        assert os.read(read_end, 100).decode() == PASSWORD_USER
    finally:
        os.close(pidfd)
        os.close(read_end)
    assert _whoami_in_child(host, port) == PASSWORD_USER  # the parent's loop is untouched


def test_a_fork_pool_makes_blocking_connections(fleet):
    assert _whoami_in_child(fleet.addresses[0], fleet.port) == PASSWORD_USER
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pending = pool.starmap_async(_whoami_in_child, [(address, fleet.port) for address in fleet.addresses])
        try:
            names = pending.get(timeout=30)
        except multiprocessing.TimeoutError:
            pool.terminate()
            raise AssertionError("Connection() in the pool's forked workers hung") from None
    assert names == [PASSWORD_USER] * len(fleet.addresses)
