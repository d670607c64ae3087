"""Rollouts and the journal on the MockEngine: canaries, waves, failure budgets and halting, resume and
retry bookkeeping. What ran where is the engine's request log. tests/test_rollouts.py and
tests/test_journal.py prove the same on real sshd."""

from __future__ import annotations

import asyncio
import threading

import pytest

import hussh
from hussh import CallStatus, Journal, Rollout, SSHResult
from hussh.multi_conn import MultiConnection
from hussh.testing import MockEngine, MockRequest

HOSTS = [f"web{n:02d}" for n in range(20)]


def failing(*broken: str, connect: tuple[str, ...] = ()) -> MockEngine:
    """Hosts in ``broken`` exit 1, those in ``connect`` cannot be reached; the others print ``ok``."""
    def handler(request: MockRequest) -> SSHResult | str | None:
        if request.kind == "connect" and request.host in connect:
            raise hussh.ConnectError(f"{request.host}:22: connection refused")
        if request.kind == "execute":
            return SSHResult("", "broken\n", 1) if request.host in broken else "ok\n"
        return None
    return MockEngine(handler)


def ran(engine: MockEngine) -> list[str]:
    return [r.host for r in engine.requests if r.kind == "execute"]


def multi(engine: MockEngine, hosts: list[str] = HOSTS, **options: object) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, engine=engine, ssh_config=False, **options)  # type: ignore[arg-type]


def test_a_failed_canary_starts_nothing_else():
    engine = failing("web01")
    with multi(engine, batch_size=5) as mc:
        results = mc.execute("deploy", rollout=Rollout(canary=2, waves=["25%"]))
    assert ran(engine) == HOSTS[:2]
    assert list(results.succeeded) == ["web00"] and list(results.failed) == ["web01"]
    assert list(results.skipped) == HOSTS[2:]
    assert all(r.error == "Skipped" and "canary" in r.stderr for r in results.skipped.values())
    assert repr(results) == "MultiResult(20 hosts: 1 succeeded, 1 failed, 18 skipped)"


def test_waves_run_in_order_and_the_journal_gets_each_hosts_wave(tmp_path):
    engine = failing()
    seen: list[CallStatus] = []
    journal = Journal(tmp_path / "journal.db")

    def between(status: CallStatus) -> bool:
        seen.append(status)
        return True

    with multi(engine, batch_size=3, journal=journal) as mc:
        rollout = Rollout(waves=[1, "25%"], between_waves=between)
        results = mc.execute("deploy", rollout=rollout)
    assert len(results.succeeded) == 20 and ran(engine) == HOSTS
    assert [s.wave for s in seen] == [1, 2, 3, 4] and [s.done for s in seen] == [1, 6, 11, 16]
    assert results.run_id is not None
    run = journal.run(results.run_id)
    sizes = [1, 5, 5, 5, 4]
    assert [run.entries[h].wave for h in HOSTS] == [w for w, size in enumerate(sizes) for _ in range(size)]
    assert run.options["rollout"]["waves"] == [1, "25%"]  # type: ignore[index]


def test_the_budget_stops_the_run_and_skipped_hosts_are_recorded(tmp_path):
    hosts = [f"web{n:02d}" for n in range(30)]
    engine = failing("web03", "web13", "web23")
    journal = Journal(tmp_path / "journal.db")
    with multi(engine, hosts, batch_size=2, journal=journal) as mc:
        results = mc.execute("deploy", rollout=Rollout(waves=[10], max_failures=1))
    # wave 0 has 1 failure; wave 1 the second, over budget: wave 1's lanes may start a few more hosts before
    # the halt reaches them (as real workers' lanes do), wave 2 starts none
    assert list(results.failed) == ["web03", "web13"]
    assert ran(engine) == hosts[:len(ran(engine))] and set(ran(engine)) >= set(hosts[:14])
    assert set(results.skipped) == set(hosts) - set(ran(engine)) >= set(hosts[20:])
    assert all("more than max_failures=1" in r.stderr for r in results.skipped.values())
    assert results.run_id is not None
    run = journal.run(results.run_id)
    assert {h for h, e in run.entries.items() if e.status == "skipped"} == set(results.skipped)


def test_connect_failures_count_unless_told_otherwise():
    hosts = HOSTS[:6]
    with multi(failing(connect=("web02", "web04")), hosts, batch_size=1) as mc:
        lenient = mc.execute("x", rollout=Rollout(max_failures=0, count_connect_failures=False))
    with multi(failing(connect=("web02", "web04")), hosts, batch_size=1) as mc:
        strict = mc.execute("x", rollout=Rollout(waves=[1], max_failures=0))
    assert len(lenient.failed) == 2 and not lenient.skipped
    assert list(strict.failed) == ["web02"] and list(strict.skipped) == hosts[3:]


@pytest.mark.parametrize("on_exceeded", ["stop", "finish"])
def test_halting_stops_or_lets_the_running_hosts_finish(on_exceeded):
    started = threading.Event()

    async def handler(request: MockRequest) -> SSHResult | str | None:
        if request.kind != "execute":
            return None
        if request.host == "web00":
            await asyncio.to_thread(started.wait, 10)  # fails once the others run
            return SSHResult("", "", 1)
        if request.index == 3:
            started.set()
        await asyncio.sleep(0.3)
        return "done\n"

    with multi(MockEngine(handler), HOSTS[:6], batch_size=4) as mc:
        results = mc.execute("x", rollout=Rollout(max_failures=0, on_exceeded=on_exceeded))
    assert results["web00"].status == 1
    running = HOSTS[1:4]
    if on_exceeded == "stop":
        assert [results[h].error for h in running] == ["Stopped"] * 3
        assert all("its command was stopped" in results[h].stderr for h in running)
    else:
        assert list(results.failed) == ["web00"]
        assert [results[h].stdout for h in running] == ["done\n"] * 3
    assert "web05" in results.skipped  # web00's lane may have taken web04 before the halt


def test_between_waves_stops_the_run():
    engine = failing()
    with multi(engine, batch_size=5) as mc:
        results = mc.execute("x", rollout=Rollout(waves=[5], between_waves=lambda status: status.wave < 2))
    assert ran(engine) == HOSTS[:10] and list(results.skipped) == HOSTS[10:]
    assert all("between_waves stopped the run before wave 2" in r.stderr for r in results.skipped.values())


def test_resume_runs_only_hosts_without_a_result_and_retry_only_the_failed(tmp_path):
    broken = {"web02", "web03"}

    def handler(request: MockRequest) -> SSHResult | str | None:
        if request.kind == "execute":
            return SSHResult("", "not ready\n", 1) if request.host in broken else "ok\n"
        return None

    journal = Journal(tmp_path / "journal.db")
    engine = MockEngine(handler)
    seen: list[str] = []

    def crash_after_four(host: str, result: object) -> None:
        seen.append(host)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with multi(engine, HOSTS[:6], batch_size=1, journal=journal) as mc:
        with pytest.raises(KeyboardInterrupt):
            mc.execute("migrate", on_result=crash_after_four, input="plan")
        [first] = journal.runs()
        assert (first.succeeded, first.failed, first.unfinished) == (2, 2, 2)
        with pytest.raises(ValueError, match="pass the same data= again"):
            mc.resume(first.id)
        resumed = mc.resume(first.id, data="plan")
        assert list(resumed) == HOSTS[4:6] and resumed.run_id == first.id + 1
        broken.discard("web02")
        retried = mc.retry_failed(first.id, data="plan")
        assert list(retried) == ["web02", "web03"] and list(retried.failed) == ["web03"]
        assert list(mc.retry_failed(first.id, data="plan")) == ["web03"]
        assert mc.resume(first.id, data="plan") == {}
    executed = [r for r in engine.requests if r.kind == "execute"]
    # a host with a result never ran twice; web04 and web05 may have run before the interrupt stopped the
    # call (their results unrecorded), as a real run's may
    assert [sum(r.host == h for r in executed) for h in HOSTS[:4]] == [1, 1, 2, 3]
    assert {r.stdin for r in executed} == {b"plan"}
    assert [(r.resumes, r.how) for r in journal.runs()][::-1] == [
        (None, None), (first.id, "resume"), (first.id, "retry-failed"), (first.id, "retry-failed")]
