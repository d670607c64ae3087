"""Soak: 200 consecutive calls on 1000 loopback hosts, descriptors and memory watched (``make soak``).

Calls mix execute, sftp_write_data, sftp_read and tails; twice a node (16 hosts) is killed and
started again with the fleet's fault controls, then ``connect()`` brings its hosts back. Open
files, processes and memory of the caller and the workers are measured after calls 1, 100 and 200
(all hosts up each time) and must stay flat; after ``close()`` nothing of the pool is left.
Not part of the default run: it takes minutes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_PORT
from hussh import Retry
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses
from procs import alive, children, rss_kib

pytestmark = [pytest.mark.slow, pytest.mark.soak, pytest.mark.timeout(1800)]

CALLS = 200
CHECKPOINTS = (1, 100, 200)
KILLS = {40: 3, 140: 41}  # call number -> node to kill; it is started again 20 calls later


@pytest.fixture(scope="module")
def soak_fleet():
    with LoopbackFleet(loopback_addresses(1000, second_octet=72), port=TEST_PORT) as fleet:
        yield fleet


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(mc: MultiConnection) -> dict[str, object]:
    pids = [s.pid for s in mc.shards() if s.pid is not None]
    return {"caller_fds": fds(os.getpid()), "caller_rss_kib": rss_kib(os.getpid()),
            "worker_fds": [fds(pid) for pid in pids], "worker_rss_kib": [rss_kib(pid) for pid in pids],
            "worker_pids": pids, "children": len(children(os.getpid()))}


def test_two_hundred_calls_on_a_thousand_hosts_stay_flat(soak_fleet, remote_dir, tmp_path_factory):
    fleet = soak_fleet
    shared = remote_dir  # the fleet's users write here (this machine's disk)
    log = shared / "app.log"
    log.write_text("")
    log.chmod(0o666)
    baseline_fds, baseline_children = fds(os.getpid()), len(children(os.getpid()))
    mc = MultiConnection.from_shared_auth(fleet.hosts, username=PASSWORD_USER, password=PASSWORD,
                                          connect_timeout=60, retry=Retry(attempts=3))  # leaks, not latency
    figures: dict[int, dict[str, Any]] = {}
    down: set[str] = set()
    restart: dict[int, list] = {}
    started = time.monotonic()

    def check(results, expect=None) -> None:
        failed = set(results.failed)
        assert failed <= down, sorted({results[h].stderr[:120] for h in failed - down})[:5]
        if expect is not None:
            assert all(r.stdout == expect for h, r in results.items() if h not in down)

    try:
        for call in range(1, CALLS + 1):
            if call in KILLS:
                killed = fleet.kill(fleet.sample(1, offset=KILLS[call]))
                down |= {str(e) for e in killed}
                restart[call + 20] = killed
            if call in restart:
                fleet.start(restart.pop(call))
                connected = mc.connect()  # retries the hosts in their cool-down
                assert not connected.failed, sorted({r.stderr[:120] for r in connected.failed.values()})[:5]
                down.clear()
                continue
            kind = call % 5
            if kind == 0:
                check(mc.execute(f"echo {call}"), f"{call}\n")
            elif kind == 1:
                check(mc.sftp_write_data(f"data {call}\n", str(shared / "data")))
            elif kind == 2:
                check(mc.sftp_read(str(shared / "data")))
            elif kind == 3:
                with mc.tail(str(log)) as tailer:
                    with log.open("a") as handle:
                        handle.write(f"line {call}\n")
                    read = tailer.read()
                assert all(read[h] == f"line {call}\n" for h in read if h not in down and h not in tailer.errors)
            else:
                check(mc.execute("cat /proc/loadavg > /dev/null; echo ok"), "ok\n")
            if call in CHECKPOINTS:
                assert not down
                figures[call] = {**snapshot(mc), "seconds": round(time.monotonic() - started, 1)}
        pids = figures[CALLS]["worker_pids"]
    finally:
        mc.close()
    after = {"caller_fds": fds(os.getpid()), "children": len(children(os.getpid()))}
    report = {"calls": figures, "after_close": after, "baseline": {"caller_fds": baseline_fds,
                                                                   "children": baseline_children}}
    print("\nsoak figures:", json.dumps(report, indent=1))
    Path(os.environ.get("HUSSH_SOAK_REPORT", tmp_path_factory.getbasetemp() / "soak.json")).write_text(
        json.dumps(report, indent=1))

    first, middle, last = (figures[c] for c in CHECKPOINTS)
    assert middle["worker_pids"] == last["worker_pids"]  # no worker lost or replaced
    assert abs(last["caller_fds"] - middle["caller_fds"]) <= 2 and abs(last["caller_fds"] - first["caller_fds"]) <= 2
    for before, now in zip(middle["worker_fds"], last["worker_fds"]):
        assert abs(now - before) <= 4, (middle["worker_fds"], last["worker_fds"])
    assert last["caller_rss_kib"] <= middle["caller_rss_kib"] * 1.10 + 8192
    for before, now in zip(middle["worker_rss_kib"], last["worker_rss_kib"]):
        assert now <= before * 1.10 + 8192, (middle["worker_rss_kib"], last["worker_rss_kib"])
    assert after["caller_fds"] <= baseline_fds + 1  # a zygote's socket, if one was started, stays
    assert not any(alive(pid) for pid in pids)
    assert after["children"] <= baseline_children + 1  # the zygote, if this process needed one
