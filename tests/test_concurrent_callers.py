"""Several threads on one MultiConnection: calls run one at a time, each gets its own results; a callback
cannot call back into the MultiConnection that runs it; close() waits for a call of another thread."""

from __future__ import annotations

import threading

import pytest

from hussh.multi_conn import MultiConnection, MultiResult
from hussh.testing import PASSWORD, PASSWORD_USER
from hussh.workers.engine import LocalEngine
from procs import alive, wait_until


def shared(fleet, **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, workers=2, **kwargs)


class SlowToStart(LocalEngine):
    """An engine that takes its time to make a pool, so two first calls surely overlap there; counts them."""

    made = 0

    def pool(self, *args):
        threading.Event().wait(0.3)
        self.made += 1
        return super().pool(*args)


def test_two_threads_on_one_multiconnection_get_their_own_results(fleet):
    hosts = fleet.addresses
    engine = SlowToStart()
    mc = shared(fleet, engine=engine)  # not connected: both threads race to start its workers too
    start = threading.Barrier(2, timeout=10)
    outcomes: dict[str, list[MultiResult]] = {"a": [], "b": []}

    def thread_a() -> None:
        start.wait()
        for n in range(10):
            outcomes["a"].append(mc.execute(f"echo a{n} $SSH_CONNECTION"))

    def thread_b() -> None:
        start.wait()
        for n in range(10):
            outcomes["b"].append(mc.execute_map({hosts[1]: f"echo b{n}", hosts[2]: f"echo b{n}"}))

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a caller is stuck"
        assert engine.made == 1  # one set of workers, whichever thread came first
        for n, results in enumerate(outcomes["a"]):
            assert list(results) == hosts
            assert [r.stdout.split()[0] for r in results.values()] == [f"a{n}"] * 4
            assert [r.stdout.split()[3] for r in results.values()] == hosts
        for n, results in enumerate(outcomes["b"]):
            assert list(results) == hosts[1:3]
            assert [r.stdout for r in results.values()] == [f"b{n}\n"] * 2
        assert len(outcomes["a"]) == len(outcomes["b"]) == 10
    finally:
        mc.close()


@pytest.mark.parametrize("hook", ["on_result", "progress"])
def test_a_call_from_a_callback_is_a_clear_error(fleet, hook):
    refused: list[str] = []
    mc: MultiConnection

    def callback(*args: object) -> None:
        for nested in (lambda: mc.execute("true"), lambda: mc.sftp_read("/etc/hostname"), mc.close):
            try:
                nested()
            except RuntimeError as exc:
                refused.append(str(exc))

    if hook == "progress":
        mc = shared(fleet, progress=callback)
        call = lambda: mc.execute("echo outer")  # noqa: E731
    else:
        mc = shared(fleet)
        call = lambda: mc.execute("echo outer", on_result=callback)  # noqa: E731
    with mc:
        refused.clear()  # connect() reports progress too
        results = call()
        assert [r.stdout for r in results.values()] == ["outer\n"] * 4  # the outer call is unharmed
        assert len(refused) == 3 * 4
        assert refused[0].startswith("another call cannot run inside a progress or on_result callback")
        assert refused[2].startswith("close() cannot run inside a progress or on_result callback")
        assert not mc.execute("true").failed  # and the workers are still there


def test_an_uncaught_error_in_a_callback_ends_the_call_and_the_multiconnection_recovers(fleet):
    mc = shared(fleet)
    with mc:
        with pytest.raises(RuntimeError, match="inside a progress or on_result callback"):
            mc.execute("true", on_result=lambda host, result: mc.execute("true"))
        assert [r.stdout for r in mc.execute("echo back").values()] == ["back\n"] * 4


def test_close_from_another_thread_waits_for_the_running_call(fleet, remote_dir):
    opened = remote_dir / "open"
    command = f"touch {remote_dir}/started.$$; while [ ! -e {opened} ]; do sleep 0.05; done; echo done"
    mc = shared(fleet)
    mc.connect()
    pids = [s.pid for s in mc.shards() if s.pid is not None]
    outcome: list[MultiResult] = []
    caller = threading.Thread(target=lambda: outcome.append(mc.execute(command, timeout=30)))
    caller.start()
    wait_until(lambda: len(list(remote_dir.glob("started.*"))) == 4, 10, "the call to start")
    closer = threading.Thread(target=mc.close)
    closer.start()
    closer.join(timeout=0.5)
    assert closer.is_alive(), "close() did not wait for the call running in another thread"
    opened.touch()
    caller.join(timeout=20)
    closer.join(timeout=20)
    assert not caller.is_alive() and not closer.is_alive()
    assert [r.stdout for r in outcome[0].values()] == ["done\n"] * 4
    assert mc.shards() == [] and pids and not any(alive(pid) for pid in pids)

