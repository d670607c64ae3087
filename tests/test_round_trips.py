"""Round trips per operation, pinned: a change that adds one to an operation fails here.

Counted, not timed: each operation runs on two hosts behind the relay with no delay and at a
0.5 s round trip, the fastest of two runs each; ``(wall at 0.5 s - wall at 0) / 0.5`` is rounded.
CPU and scheduling noise only add time and stay far below half a round trip (0.25 s) for these
few hosts, while one more round trip adds 0.5 s: the count is exact or off by a whole trip.
The table with the protocol's minimum and OpenSSH's: ``python -m scale.bench_round_trips``.
"""

from __future__ import annotations

import pytest

from conftest import TEST_PORT
from scale.bench_round_trips import HUSSH, bench_fleet, round_trips

RTT = 0.5
PINNED = {  # measured on this branch; see scale/bench_round_trips.py's MINIMUM for what each could be
    "connect, unknown host (accept-new)": 4,  # was 7: no "none" probe, no key query, auth pipelined
    "connect, known host, key": 4,  # was 7
    "connect, known host, password": 4,  # was 5: auth pipelined with the service request
    "execute on a live connection": 2,
    "connect + execute + close": 6,  # was 9
    "sftp_write 1 KiB, first": 5,  # was 7: channel, subsystem, INIT, limits with OPEN, WRITE+CLOSE
    "sftp_write 1 KiB, session open": 2,  # was 3: WRITE and CLOSE pipelined
    "sftp_read 1 KiB, first": 5,  # was 8: the limits request with the OPEN
    "sftp_read 1 KiB, session open": 2,  # was 4: OPEN+STAT, READ+CLOSE
    "tail read": 1,  # was 3: the file held open between reads (READ, FSTAT and STATs in one burst)
    "connect(prune_failures=True), one host refused": 4,  # was 7
}


@pytest.fixture(scope="module")
def bench():
    with bench_fleet(2, TEST_PORT, second_octet=85) as made:
        yield made


def test_every_operation_is_pinned():
    assert set(PINNED) == set(HUSSH)


@pytest.mark.slow
@pytest.mark.parametrize("operation", list(PINNED))
def test_round_trips_of(bench, operation):
    count, exact = round_trips(bench, HUSSH[operation], RTT, repeat=2)
    assert count == PINNED[operation], f"{operation}: {exact:.2f} round trips, pinned {PINNED[operation]}"
