"""``batch_size`` is one budget over all workers: lanes a worker frees go to workers with hosts waiting.

What ran at once is read on the fleet (``lanecheck``); the caller's ledger (``hussh.workers.lanes``) alone below.
"""

from __future__ import annotations

import os
import random

import pytest

from hussh import Rollout
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from hussh.testing.loopback import LoopbackFleet, loopback_addresses
from hussh.workers.lanes import Lanes
from lanecheck import counting, dirs, most_at_once, slow_first

HOSTS = 40


@pytest.fixture(scope="module")
def lanes_fleet():
    with LoopbackFleet(loopback_addresses(HOSTS, second_octet=93),
                       port=int(os.environ.get("HUSSH_TEST_PORT", "2222"))) as fleet:
        yield fleet


def multi(fleet: LoopbackFleet, **options: object) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, **options)  # type: ignore[arg-type]


def test_lanes_freed_by_finished_workers_run_a_slow_workers_waiting_hosts(lanes_fleet, remote_dir):
    """A tenth of the hosts are slow, all of them in worker 0, and the first of its queue: they wait
    until every fast host has finished. With 2 lanes each (the old fixed shares of batch_size=8 over
    4 workers) worker 0's fast hosts would queue behind its slow ones until these gave up; with one
    budget the lanes the other workers free run them, and the slow hosts see every fast one done."""
    commands, slow, fast = slow_first(lanes_fleet.addresses, remote_dir, 4)
    with multi(lanes_fleet, batch_size=8, workers=4) as mc:
        assert not mc.connect().failed
        results = mc.execute_map(commands)
    assert not results.failed, dict(results.failed)
    assert [int(results[lanes_fleet.addresses[i]].stdout) for i in slow] == [fast] * len(slow)
    assert most_at_once(remote_dir / "seen") <= 8
    assert most_at_once(remote_dir / "seen", slow) > 2  # worker 0 ran more than a fixed share's 2 at once


def test_batch_size_bounds_what_runs_at_once_across_workers_and_waves(lanes_fleet, remote_dir):
    """Hosts of uneven lengths over 3 workers, in waves: lanes move between workers all the time, and
    never more than ``batch_size`` commands run at once."""
    _, seen, _ = dirs(remote_dir)
    lengths = random.Random(7).choices([0, 0.05, 0.1, 0.3, 0.8], k=HOSTS)
    commands = {host: counting(remote_dir, i, f"sleep {lengths[i]}; ls {remote_dir}/running | wc -l >> {seen}/{i}")
                for i, host in enumerate(lanes_fleet.addresses)}
    with multi(lanes_fleet, batch_size=5, workers=3) as mc:
        assert not mc.connect().failed
        plain = mc.execute_map(commands)
        waves = mc.execute_map(commands, rollout=Rollout(waves=[7, "50%"]))
    assert not plain.failed and not waves.failed, (dict(plain.failed), dict(waves.failed))
    assert most_at_once(seen) <= 5


# --- the caller's ledger, no fleet needed ---

def test_a_shard_keeps_its_lanes_while_it_has_hosts_to_start_then_frees_them_one_by_one():
    lanes = Lanes(4, {0: 2, 1: 6})  # first shares: 1 and 3
    assert lanes.granted == {0: 1, 1: 3} and lanes.grants() == {}
    lanes.started(0)
    lanes.answered(0, started=True)  # shard 0 still has a host to start: its lane is still its own
    assert lanes.held(0) == 1 and lanes.grants() == {}
    lanes.started(0)  # its last host: from now on it holds only what runs
    assert lanes.held(0) == 1 and lanes.grants() == {}
    for _ in range(3):
        lanes.started(1)
    lanes.answered(0, started=True)
    assert lanes.held(0) == 0 and lanes.grants() == {1: 1}  # shard 1 has 3 hosts waiting: the lane is its
    assert lanes.held(1) == 4


def test_lanes_go_to_the_shard_with_the_most_hosts_no_lane_of_its_will_take():
    lanes = Lanes(6, {0: 3, 1: 10, 2: 5})
    assert lanes.granted == {0: 1, 1: 4, 2: 1}  # in proportion, none below 1
    for number, count in ((0, 1), (1, 4), (2, 1)):
        for _ in range(count):
            lanes.started(number)
    lanes.gone(0)  # shard 0 lost: its lane is free; shard 1 has 6 hosts waiting, shard 2 has 4
    assert lanes.grants() == {1: 1}
    assert lanes.grants() == {}  # given already, though shard 1 was not seen to use it yet
    lanes.started(1)
    lanes.answered(1, started=True)
    lanes.started(1)  # a lane goes on to its shard's next host: nothing comes back
    assert lanes.grants() == {} and lanes.held(1) == 5


def test_no_shard_gets_more_lanes_than_it_has_hosts():
    lanes = Lanes(10, {0: 2, 1: 3})
    assert lanes.granted == {0: 2, 1: 3} and lanes.grants() == {}


def test_hosts_answered_without_starting_free_nothing_twice():
    lanes = Lanes(2, {0: 3, 1: 1})
    lanes.started(0)
    lanes.answered(0, started=False)  # skipped (a Halt): it never held a lane
    lanes.answered(0, started=False)
    assert lanes.held(0) == 1  # the running host
    lanes.answered(0, started=True)
    assert lanes.held(0) == 0
