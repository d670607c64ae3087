"""Output bounds: ``max_output`` per host, ``max_call_output`` for a whole call, reads in bounded pieces."""

from __future__ import annotations

import pytest

from hussh.multi_conn import DEFAULT_CALL_OUTPUT, MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER


def shared(fleet, **options) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, **options)


def test_max_output_is_an_argument_and_keeps_the_first_bytes(fleet):
    with shared(fleet, max_output=1000) as mc:
        results = mc.execute("head -c 5000 /dev/zero | tr '\\0' x; echo done >&2")
    for result in results.values():
        assert (result.status, result.error) == (-1, "OutputLimitExceeded")
        assert result.stdout == "x" * 1000 and "exceeded 1000 bytes" in result.stderr
    with pytest.raises(ValueError, match="max_output"):
        shared(fleet, max_output=0)


def test_one_call_keeps_at_most_its_output_budget(fleet):
    """Four hosts print 5,000 bytes each under a 10,000-byte call budget: 10,000 kept, the rest stopped."""
    with shared(fleet, max_call_output=10_000, workers=2) as mc:
        results = mc.execute("head -c 5000 /dev/zero | tr '\\0' y")
        kept = sum(len(r.stdout) for r in results.values())
        assert kept == 10_000
        stopped = [r for r in results.values() if r.status != 0]
        assert stopped and all(r.error == "OutputLimitExceeded" and "output budget" in r.stderr for r in stopped)
        again = mc.execute("echo small")  # the budget is per call: the next call has all of it
        assert [r.stdout for r in again.values()] == ["small\n"] * len(fleet.addresses)
    assert 0 < DEFAULT_CALL_OUTPUT <= 4 << 30
    with pytest.raises(ValueError, match="max_call_output"):
        shared(fleet, max_call_output=-1)


def test_a_file_read_into_memory_is_bounded_too(fleet, remote_dir):
    path = remote_dir / "big.txt"
    path.write_text("z" * 3000)
    with shared(fleet, max_output=1000) as mc:
        results = mc.sftp_read(str(path))
    assert all(r.error == "OutputLimitExceeded" and r.stdout == "z" * 1000 for r in results.values())
    with shared(fleet, max_call_output=4000, workers=1) as mc:
        results = mc.sftp_read(str(path))
    assert sum(len(r.stdout) for r in results.values()) == 4000
    assert sum(r.status == 0 for r in results.values()) == 1


def test_a_tail_moves_at_most_max_output_per_read_and_the_rest_next_time(fleet, remote_dir):
    hosts = fleet.addresses[:1]
    log = remote_dir / "app.log"
    log.write_text("")
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                                          max_output=1000)
    with mc, mc.tail(str(log)) as tailer:
        log.write_text("a" * 2500)
        assert [tailer.read()[hosts[0]] for _ in range(4)] == ["a" * 1000, "a" * 1000, "a" * 500, ""]
