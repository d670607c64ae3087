"""Output bounds: ``max_output`` per host, ``max_call_output`` for a whole call, reads in bounded pieces."""

from __future__ import annotations

import pytest

from hussh.multi_conn import DEFAULT_CALL_OUTPUT, MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, Fleet

ADDRESS = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"  # the host's own address: an output of its own
MB = 1_000_000
ALIKE = f"head -c {MB} /dev/zero | tr '\\0' s"  # the same output on every host


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
    """Four hosts print 5,000 bytes each, each its own, under a 10,000-byte call budget: 10,000 kept, the
    rest stopped."""
    with shared(fleet, max_call_output=10_000, workers=2) as mc:
        results = mc.execute(f"{{ echo {ADDRESS}; head -c 5000 /dev/zero | tr '\\0' y; }} | head -c 5000")
        kept = sum(len(r.stdout) for r in results.values())
        assert kept == 10_000
        stopped = [r for r in results.values() if r.status != 0]
        assert stopped and all(r.error == "OutputLimitExceeded" and "output budget" in r.stderr for r in stopped)
        again = mc.execute("echo small")  # the budget is per call: the next call has all of it
        assert [r.stdout for r in again.values()] == ["small\n"] * len(fleet.addresses)
    assert 0 < DEFAULT_CALL_OUTPUT <= 4 << 30
    with pytest.raises(ValueError, match="max_call_output"):
        shared(fleet, max_call_output=-1)


@pytest.mark.hussh_fleet(20)
def test_outputs_alike_are_charged_once_against_the_call_budget(hussh_fleet: Fleet):
    """20 hosts print the same 1 MB under a budget that holds a few copies per worker, not 10: all of
    it is kept (a worker holds outputs alike once, the caller too)."""
    with MultiConnection.from_shared_auth(hussh_fleet.hosts, **hussh_fleet.credentials.password_auth(),
                                          max_call_output=2 * 4 * MB, workers=2) as mc:
        mc.connect()  # every host's command starts at once, so they print alike at the same time
        results = mc.execute(ALIKE)
    assert [(r.status, len(r.stdout)) for r in results.values()] == [(0, MB)] * 20, results.summary()
    assert len({id(r.stdout) for r in results.values()}) == 1  # one string in the caller


def test_an_output_that_stops_matching_pays_for_what_it_shared(fleet):
    """stderr printing what stdout did costs nothing; once it differs, it holds a copy of its own: charged.

    One host: whether other hosts' outputs overlap in time (and so share a buffer) is the machine's timing."""
    with MultiConnection.from_shared_auth(fleet.addresses[:1], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, max_call_output=MB + 1000) as mc:
        alike = mc.execute(f"{ALIKE}; {ALIKE} >&2")
        apart = mc.execute(f"{ALIKE}; {{ head -c {MB // 2} /dev/zero | tr '\\0' s; echo own; }} >&2")
    assert {(r.status, len(r.stdout), len(r.stderr)) for r in alike.values()} == {(0, MB, MB)}, alike.summary()
    assert {r.error for r in apart.values()} == {"OutputLimitExceeded"}, apart.summary()


def test_outputs_of_other_lengths_from_one_shared_buffer_are_each_paid_for(fleet):
    """Hosts printing prefixes of one another share a buffer, but each output is held on its own (in the
    caller too): a budget of two outputs keeps two whole, never four."""
    commands = {host: f"head -c {MB + n} /dev/zero | tr '\\0' s" for n, host in enumerate(fleet.addresses)}
    with shared(fleet, max_call_output=2 * MB + 10, workers=1) as mc:
        results = mc.execute_map(commands)
    whole = [r for r in results.values() if r.status == 0]
    assert len(whole) <= 2 and sum(map(len, {r.stdout for r in results.values()})) <= 2 * MB + 10, results.summary()
    assert all(r.error == "OutputLimitExceeded" and "output budget" in r.stderr
               for r in results.values() if r.status != 0)


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
