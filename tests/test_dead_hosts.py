"""Dead hosts are not waited on twice: connect failures are remembered for ``Retry.cooldown`` and only
transient ones are retried (``Retry.attempts``); a command that started is never run again.

Dials are counted by a silent listener (a black-holed host) or a relay in front of a real sshd.
"""

from __future__ import annotations

import re
import time

import pytest

from hussh import Retry
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from procs import CountingRelay

BOUND = 1.0  # seconds: the connect bound of these tests' hosts


def shared(hosts: list[str], **options: object) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD,
                                            connect_timeout=BOUND, **options)  # type: ignore[arg-type]


@pytest.fixture
def relay(fleet):
    relay = CountingRelay((fleet.addresses[0], fleet.port))
    try:
        yield relay
    finally:
        relay.close()


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_black_holed_host_costs_one_bound_then_fails_at_once_until_connect_retries(fleet, silent_listener):
    silent = "{}:{}".format(*silent_listener.address)
    good = f"{fleet.addresses[0]}:{fleet.port}"
    with shared([good, silent], workers=1) as mc:  # connect() on enter: the one bound paid
        assert len(silent_listener.accepted) == 1
        results, took = timed(lambda: mc.execute("echo up"))
        assert took < BOUND / 2, "execute() waited on a host that failed to connect a moment ago"
        assert results[good].stdout == "up\n"
        failed = results[silent]
        assert failed.status == -1 and failed.error == "ConnectTimeout"
        assert failed.stderr.startswith(f"ConnectTimeout: connecting to {silent} timed out after 1 seconds")
        when = re.search(r"not retried: this host failed to connect \d+ s ago, at (\d\d:\d\d:\d\d)", failed.stderr)
        assert when, failed.stderr
        hours, minutes, seconds = map(int, when[1].split(":"))
        now = time.localtime()
        ago = (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec - hours * 3600 - minutes * 60 - seconds) % 86400
        assert ago < 60  # the local time of the failure, a moment ago (midnight included)
        assert len(silent_listener.accepted) == 1  # nothing dialled
        connected, took = timed(mc.connect)  # connect() always tries again: one bound more
        assert connected[silent].error == "ConnectTimeout" and "not retried" not in connected[silent].stderr
        assert BOUND <= took < BOUND + 3
        assert len(silent_listener.accepted) == 2


def test_a_zero_cooldown_dials_the_host_on_every_call(silent_listener):
    silent = "{}:{}".format(*silent_listener.address)
    with shared([silent], retry=Retry(cooldown=0)) as mc:
        again, took = timed(lambda: mc.execute("true"))
        assert again[silent].error == "ConnectTimeout" and "not retried" not in again[silent].stderr
        assert took >= BOUND and len(silent_listener.accepted) == 2


def test_attempts_retry_a_black_holed_host_with_backoff(silent_listener):
    silent = "{}:{}".format(*silent_listener.address)
    mc = shared([silent], retry=Retry(attempts=3, backoff=0.1, jitter=0))
    try:
        results, took = timed(mc.connect)
    finally:
        mc.close()
    assert results[silent].error == "ConnectTimeout"
    assert len(silent_listener.accepted) == 3
    assert 3 * BOUND + 0.1 + 0.2 <= took < 3 * BOUND + 3  # three bounds and the backoffs between them


def test_a_refused_login_is_not_retried(relay):
    mc = MultiConnection.from_shared_auth([relay.host], username=PASSWORD_USER, password="not-the-password",
                                          retry=Retry(attempts=3, backoff=0))
    try:
        results = mc.connect()
    finally:
        mc.close()
    assert results[relay.host].error == "AuthenticationError"
    assert relay.accepted == 1


def test_a_refused_host_key_is_not_retried(relay, fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{relay.host.rsplit(':', 1)[1]} {fleet.host_public_key(fleet.addresses[1])}\n")
    mc = shared([relay.host], known_hosts=known, retry=Retry(attempts=3, backoff=0))
    try:
        results = mc.connect()
    finally:
        mc.close()
    assert results[relay.host].error == "HostKeyError"
    assert relay.accepted == 1
    assert len(known.read_text().splitlines()) == 1


@pytest.mark.parametrize("ending, error, dials, timeout", [("kill -9 $PPID; sleep 15", "ConnectionLost", 2, 12),
                                                           ("sleep 15", "CommandTimeout", 1, 5)])
def test_a_command_that_started_is_never_run_again(relay, remote_dir, ending, error, dials, timeout):
    ran = remote_dir / "ran"
    with shared([relay.host], retry=Retry(attempts=3, backoff=0)) as mc:
        # the loss ends the call at once; the deadline only bounds how late a loaded machine may notice it
        results = mc.execute(f"echo once >> {ran}; {ending}", timeout=timeout)
        assert results[relay.host].error == error
        assert ran.read_text() == "once\n"
        assert mc.execute("true").succeeded  # the next call reconnects if it must, and runs nothing twice
    assert ran.read_text() == "once\n"
    assert relay.accepted == dials  # connect()'s, and after a lost connection the next call's
