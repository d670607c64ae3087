"""Rollouts (hussh.Rollout): a canary, waves, a failure budget and skipped hosts, on a real loopback fleet.

What ran where is read on the fleet itself: every command appends to a file named after the address
it ran on (the fleet shares this machine's disk), so "never started" is checked, not inferred.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from clirun import Running, hussh
from hussh import CallStatus, Journal, Rollout
from hussh.multi_conn import MultiConnection, PartialFailureException
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from hussh.testing.loopback import LoopbackFleet, loopback_addresses

ADDRESS = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"
HOSTS = 40


@pytest.fixture(scope="module")
def wide_fleet():
    with LoopbackFleet(loopback_addresses(HOSTS, second_octet=91),
                       port=int(os.environ.get("HUSSH_TEST_PORT", "2222"))) as fleet:
        yield fleet


def marking(directory: Path, then: str = "true") -> str:
    """Append the time to ``directory/<address>`` (the host started), then run ``then``."""
    return f"date +%s.%N >> {directory}/{ADDRESS} && {then}"


def touched(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def multi(fleet: LoopbackFleet, **options: object) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, **options)  # type: ignore[arg-type]


# --- the value object, no fleet needed ---

def test_waves_are_counts_or_percentages_and_the_last_repeats():
    assert Rollout(waves="1, 5%, 25%, 100%").plan(100) == [1, 5, 25, 69]
    assert Rollout(waves=[2, "10%"]).plan(40) == [2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2]
    assert Rollout(canary=3, waves=["50%"]).plan(10) == [3, 5, 2]
    assert Rollout().plan(7) == [7]
    assert Rollout(canary=9).plan(4) == [4]
    assert Rollout(max_failures="5%").failure_limit(1000) == 50
    assert Rollout(max_failures=3).failure_limit(1000) == 3


@pytest.mark.parametrize("options, message", [
    ({"waves": "0"}, "waves are positive"), ({"waves": "150%"}, "at most 100%"), ({"waves": []}, "at least one"),
    ({"max_failures": "x%"}, "max_failures must be"), ({"max_failures": -1}, "max_failures must be"),
    ({"canary": -1}, "canary must be"), ({"on_exceeded": "panic"}, "on_exceeded must be"),
    ({"pause": -1}, "pause must be"),
])
def test_a_bad_rollout_is_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        Rollout(**options)


# --- on the fleet ---

def test_a_failed_canary_starts_nothing_else(wide_fleet, tmp_path, remote_dir):
    hosts = wide_fleet.addresses
    commands = {host: marking(remote_dir) for host in hosts}
    commands[hosts[1]] = marking(remote_dir, "exit 3")
    with multi(wide_fleet, batch_size=10) as mc:
        results = mc.execute_map(commands, rollout=Rollout(canary=2, waves=["25%"]))
    assert touched(remote_dir) == {hosts[0], hosts[1]}  # the rest untouched, checked on the fleet
    assert results[hosts[0]].status == 0 and results[hosts[1]].status == 3
    skipped = results.skipped
    assert list(skipped) == hosts[2:]
    assert all(r.error == "Skipped" and r.status == -1 and "canary" in r.stderr for r in skipped.values())
    assert list(results.failed) == [hosts[1]] and list(results.succeeded) == [hosts[0]]
    assert repr(results) == f"MultiResult({HOSTS} hosts: 1 succeeded, 1 failed, {HOSTS - 2} skipped)"
    summary = results.summary()
    assert summary.counts == {"ok": 1, "exit 3": 1, "skipped": HOSTS - 2}
    assert (summary.failed, summary.skipped) == (1, HOSTS - 2)
    assert str(summary) == f"1 ok, 1 exit 3, {HOSTS - 2} skipped"
    lines = [json.loads(line) for line in results.json_lines()]
    assert [line.get("skipped", False) for line in lines] == [False, False] + [True] * (HOSTS - 2)
    groups = results.grouped()
    assert groups[0].hosts == hosts[2:] and groups[0].outcome == "skipped"
    with pytest.raises(PartialFailureException) as raised:
        results.raise_if_any_failed()
    assert len(raised.value.skipped) == HOSTS - 2 and len(raised.value.failed) == 1
    assert f"{HOSTS - 2} skipped" in str(raised.value)


def test_skipped_hosts_alone_still_raise(wide_fleet, remote_dir):
    hosts = wide_fleet.addresses[:4]
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD,
                                          port=wide_fleet.port) as mc:
        results = mc.execute(marking(remote_dir), rollout=Rollout(waves=[1], between_waves=lambda status: False))
    assert list(results.succeeded) == hosts[:1] and not results.failed and list(results.skipped) == hosts[1:]
    with pytest.raises(PartialFailureException):
        results.raise_if_any_failed()


def test_waves_run_in_order_and_the_journal_gets_each_hosts_wave(wide_fleet, tmp_path, remote_dir):
    path = tmp_path / "journal.db"
    seen: list[CallStatus] = []

    def check(status: CallStatus) -> bool:
        seen.append(status)
        return True

    with multi(wide_fleet, batch_size=10, journal=Journal(path)) as mc:
        results = mc.execute(marking(remote_dir), rollout=Rollout(waves=[1, "25%"], between_waves=check))
    assert len(results.succeeded) == HOSTS
    sizes = [1, 10, 10, 10, 9]
    assert [s.wave for s in seen] == [1, 2, 3, 4] and [s.done for s in seen] == [1, 11, 21, 31]
    assert all(s.waves == len(sizes) and not s.running for s in seen)
    hosts = wide_fleet.addresses
    starts = {host: float((remote_dir / host).read_text()) for host in hosts}
    bounds, at = [], 0
    for size in sizes:
        wave = hosts[at:at + size]
        bounds.append((min(starts[h] for h in wave), max(starts[h] for h in wave)))
        at += size
    assert all(earlier[1] < later[0] for earlier, later in zip(bounds, bounds[1:]))  # each wave after the last
    with sqlite3.connect(path) as db:
        waves = dict(db.execute("SELECT host, wave FROM hosts").fetchall())
    assert [waves[h] for h in hosts] == [w for w, size in enumerate(sizes) for _ in range(size)]


def broken_fleet_commands(hosts: list[str], directory: Path) -> dict[str, str]:
    """A tenth of the hosts broken (they fail a ``test``), spread over the list."""
    return {host: marking(directory, "test -e /nonexistent" if i % 10 == 3 else "true") for i, host in enumerate(hosts)}


def test_the_budget_stops_the_run_and_the_untouched_hosts_are_untouched(wide_fleet, tmp_path, remote_dir):
    hosts = wide_fleet.addresses
    path = tmp_path / "journal.db"
    with multi(wide_fleet, batch_size=5, journal=Journal(path)) as mc:
        results = mc.execute_map(broken_fleet_commands(hosts, remote_dir),
                                 rollout=Rollout(waves=[10], max_failures=1))
    # wave 0 (hosts 0-9) has 1 failure; wave 1 has the second: over budget, nothing new starts after it
    assert list(results.failed)[:2] == [hosts[3], hosts[13]]
    assert all(h not in results.failed for h in hosts[20:])
    skipped = set(results.skipped)
    assert set(hosts[20:]) <= skipped and len(skipped) >= 20
    assert touched(remote_dir) == set(hosts) - skipped  # every skipped host untouched, every other one run
    assert all("more than max_failures=1" in results[h].stderr for h in skipped)
    with sqlite3.connect(path) as db:
        recorded = dict(db.execute("SELECT host, status FROM hosts").fetchall())
    assert {h for h, s in recorded.items() if s == "skipped"} == skipped and len(recorded) == HOSTS


def test_connect_failures_count_unless_told_otherwise(wide_fleet, remote_dir):
    hosts = wide_fleet.addresses[:6] + ["127.0.0.1:1", "127.0.0.1:2"]  # refused
    with _open(hosts, wide_fleet) as mc:
        lenient = mc.execute(marking(remote_dir), rollout=Rollout(max_failures=0, count_connect_failures=False))
        strict = mc.execute(marking(remote_dir), rollout=Rollout(waves=[1], max_failures=0))
    assert len(lenient.succeeded) == 6 and len(lenient.failed) == 2 and not lenient.skipped
    assert len(strict.succeeded) == 6 and list(strict.failed) == ["127.0.0.1:1"]
    assert list(strict.skipped) == ["127.0.0.1:2"]


def _open(hosts: list[str], fleet: LoopbackFleet) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                                            batch_size=1, connect_timeout=5)


def test_stop_mode_stops_running_commands(wide_fleet, remote_dir):
    hosts = wide_fleet.addresses[:8]
    slow = {host: marking(remote_dir, f"sleep 30; echo late >> {remote_dir}/{ADDRESS}") for host in hosts}
    slow[hosts[0]] = f"sleep 1; {marking(remote_dir, 'exit 1')}"  # fails once every other host runs
    with MultiConnection.from_shared_auth(hosts + wide_fleet.addresses[8:12], username=PASSWORD_USER,
                                          password=PASSWORD, port=wide_fleet.port, batch_size=8) as mc:
        started = time.monotonic()
        results = mc.execute_map(slow | {h: marking(remote_dir) for h in wide_fleet.addresses[8:12]},
                                 rollout=Rollout(max_failures=0, on_exceeded="stop"))
        took = time.monotonic() - started
    assert results[hosts[0]].status == 1
    stopped = [h for h in hosts[1:] if results[h].error == "Stopped"]
    assert stopped == hosts[1:], {h: results[h] for h in hosts}
    assert all(r.status == -1 and "stopped" in r.stderr for h, r in results.items() if h in stopped)
    queued = wide_fleet.addresses[8:12]  # waiting for a lane; the failed host's lane may take one before the Halt
    skipped = set(results.skipped)
    assert skipped <= set(queued) and len(skipped) >= 3
    assert all(results[h].status == 0 or results[h].error == "Stopped" for h in set(queued) - skipped)
    assert set(hosts) <= touched(remote_dir) and not touched(remote_dir) & skipped
    assert took < 30  # the sleeps did not run out (a bound that only a broken stop reaches)
    assert not any("late" in (remote_dir / h).read_text() for h in hosts)


def test_finish_mode_lets_running_hosts_finish(wide_fleet, remote_dir):
    hosts = wide_fleet.addresses[:6]
    commands = {host: marking(remote_dir, "sleep 3") for host in hosts}
    commands[hosts[0]] = marking(remote_dir, "exit 1")
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD,
                                          port=wide_fleet.port, batch_size=4) as mc:
        results = mc.execute_map(commands, rollout=Rollout(max_failures=0))
    assert list(results.failed) == hosts[:1]
    assert set(hosts[1:4]) <= set(results.succeeded)  # running when the budget ran out: they finished
    assert hosts[5] in results.skipped  # the failed host's lane may have taken host 4 before the Halt came
    assert touched(remote_dir) == set(hosts) - set(results.skipped)


def test_between_waves_stops_the_run(wide_fleet, remote_dir):
    calls: list[CallStatus] = []

    def healthy(status: CallStatus) -> bool:
        calls.append(status)
        return status.wave < 2

    with multi(wide_fleet, batch_size=10) as mc:
        results = mc.execute(marking(remote_dir), rollout=Rollout(waves=[5], pause=0.1, between_waves=healthy))
    assert [c.wave for c in calls] == [1, 2] and calls[-1].succeeded == 10
    assert len(results.succeeded) == 10 and len(results.skipped) == HOSTS - 10
    assert all("between_waves stopped the run before wave 2" in r.stderr for r in results.skipped.values())
    assert touched(remote_dir) == set(wide_fleet.addresses[:10])


def test_a_running_calls_status_is_readable_from_another_thread_and_a_callback(wide_fleet, remote_dir):
    seen: list[CallStatus] = []
    from_thread: list[CallStatus] = []
    done = threading.Event()
    hosts = wide_fleet.addresses[:12]

    def progress(done: int, total: int) -> None:
        status = mc.status()
        assert status is not None, "no status inside the call's own callback"
        seen.append(status)

    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=wide_fleet.port,
                                          batch_size=4, progress=progress)

    def watch() -> None:
        while not done.is_set():
            status = mc.status()
            if status is not None and status.running:
                from_thread.append(status)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    with mc:
        assert mc.status() is None
        seen.clear()  # connect()'s
        watcher.start()
        try:
            mc.execute(marking(remote_dir, "sleep 0.5"), rollout=Rollout(waves=[6]))
        finally:
            done.set()
            watcher.join()
        assert mc.status() is None
    assert from_thread and all(0 < len(s.running) <= 4 for s in from_thread)
    assert all(set(s.running) <= set(hosts) and all(at <= time.time() for at in s.running.values())
               for s in from_thread)
    assert [s.done for s in seen] == list(range(1, 13)) and {s.wave for s in seen} == {0, 1}
    assert all(s.total == 12 and s.waves == 2 for s in seen)


# --- the command line ---

def cli_hosts(fleet: LoopbackFleet, count: int) -> str:
    return ",".join(f"{address}:{fleet.port}" for address in fleet.addresses[:count])


def test_the_command_line_rolls_out_in_waves_under_a_budget(wide_fleet, remote_dir, tmp_path):
    bad = wide_fleet.addresses[2]
    command = f"{marking(remote_dir)} && test $(echo $SSH_CONNECTION | cut -d' ' -f3) != {bad}"
    done = hussh("run", "-H", cli_hosts(wide_fleet, 10), "-l", PASSWORD_USER, "--no-journal", "--json",
                 "--canary", "1", "--serial", "1,50%", "--max-fail", "0", "--wave-pause", "0.1", command,
                 HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 1, done.stderr
    records = {json.loads(line)["host"].rsplit(":", 1)[0]: json.loads(line) for line in done.stdout.splitlines()}
    assert records[bad]["status"] == 1 and not records[bad].get("skipped")
    skipped = {host for host, record in records.items() if record.get("skipped")}
    # canary 0, then waves of 1 (host 1), 5 (hosts 2-6: host 2 fails, the others started with it) and 3 (never)
    assert skipped == set(wide_fleet.addresses[7:10])
    assert touched(remote_dir) == set(wide_fleet.addresses[:7])
    assert done.stderr.splitlines()[-1].startswith("6 ok, 1 exit 1, 3 skipped in ")
    refused = hussh("run", "-H", cli_hosts(wide_fleet, 2), "--max-fail", "lots", "true")
    assert refused.returncode == 2 and "max_failures must be" in refused.stderr and not refused.stdout


def test_sigusr1_lists_the_running_hosts_slowest_first(wide_fleet, remote_dir):
    hosts = cli_hosts(wide_fleet, 3)
    running = Running("run", "-H", hosts, "-l", KEY_USER, "-i", str(wide_fleet.client_key), "--no-journal",
                      "--serial", "2", f"{marking(remote_dir)} && sleep 3")
    try:
        running.wait_for(lambda: len(touched(remote_dir)) == 2, 30, "two hosts started")
        running.proc.send_signal(signal.SIGUSR1)
        running.wait_for(lambda: any("host(s) running, slowest first" in line for line in running.err), 10)
    finally:
        assert running.proc.wait(timeout=60) == 0
    at = next(i for i, line in enumerate(running.err) if "host(s) running" in line)
    assert running.err[at] == "hussh: 2 host(s) running, slowest first:\n"
    listed = [line.strip().rsplit(": ", 1) for line in running.err[at + 1:at + 3]]
    assert sorted(host for host, _ in listed) == hosts.split(",")[:2]
    seconds = [float(took.removesuffix(" s")) for _, took in listed]
    assert seconds == sorted(seconds, reverse=True) and all(0 <= s < 60 for s in seconds)
