"""A command that times out, or that its caller gives up on, is ended on the host: checked in the
fleet's process table (the loopback fleet's commands are processes of this machine), not inferred."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import threading
import time

import pytest

from clirun import Running
from hussh.aio import AsyncConnection, stop_abandoned
from hussh.hostlist import fold
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER
from test_aio import run

GONE_WITHIN = 10.0  # seconds allowed for the fleet's kernels to reap what was signalled (a loaded machine)


def sleepers(token: str) -> dict[int, int]:
    """pid -> real uid of every process on this machine whose command line is ``sleep 300.<token>``."""
    found = {}
    wanted = f"sleep\x00300.{token}\x00".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                if handle.read() != wanted:
                    continue
            with open(f"/proc/{entry.name}/status") as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        found[int(entry.name)] = uid
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def token() -> str:
    return f"{random.randrange(10**6):06d}"


def fleet_uid(fleet, user: str = KEY_USER) -> int:
    with MultiConnection.from_shared_auth(fleet.addresses[:1], username=user, private_key=str(fleet.client_key),
                                          port=fleet.port, timeout=30) as mc:
        return int(next(iter(mc.execute("id -u").values())).stdout)


def by_key(fleet, **options) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=KEY_USER, private_key=str(fleet.client_key),
                                            port=fleet.port, **options)


@pytest.mark.hussh_fleet(100)
def test_timeout_on_100_hosts_leaves_no_sleep_on_any(hussh_fleet):
    tok = token()
    uid = fleet_uid(hussh_fleet)
    seen: list[dict[int, int]] = []

    def watch() -> None:  # while the call runs: the sleeps are there, as the fleet's user
        wait_for(lambda: len(sleepers(tok)) == 100, 30, "100 remote sleeps")
        seen.append(sleepers(tok))

    watcher = threading.Thread(target=watch)
    with by_key(hussh_fleet, timeout=60) as mc:
        watcher.start()
        results = mc.execute(f"sleep 300.{tok}", timeout=5)
        watcher.join()
        assert seen and set(seen[0].values()) == {uid}
        assert {r.error for r in results.values()} == {"CommandTimeout"}
        assert all(r.stderr.endswith("timed out after 5 seconds; stopped it") for r in results.values())
        wait_for(lambda: not sleepers(tok), GONE_WITHIN, "no remote sleep left")
        assert mc.execute("echo still usable").succeeded  # the connections survived the kills


@pytest.mark.parametrize("command", ["trap '' TERM; sleep 300.{tok}; echo after", "sleep 300.{tok} | cat",
                                     "(sleep 300.{tok}; echo x) & wait"],
                         ids=["ignores TERM", "pipeline", "background child"])
def test_kill_follows_and_the_whole_process_group_goes(fleet, command):
    """A command deaf to TERM gets KILL; a pipeline's or subshell's processes share the command's group."""
    tok = token()
    with by_key(fleet, timeout=60) as mc:
        results = mc.execute(command.format(tok=tok), timeout=2)
        assert {r.error for r in results.values()} == {"CommandTimeout"}
        assert "after" not in "".join(r.stdout for r in results.values())
        wait_for(lambda: not sleepers(tok), GONE_WITHIN, "no remote sleep left")


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
@pytest.mark.parametrize("command", ["sleep 300.{tok}", "trap '' TERM; sleep 300.{tok}"], ids=["plain", "ignores TERM"])
def test_timeout_under_sudo_ends_the_command_run_as_another_user(fleet, command):
    """The command runs as the other fleet user, out of reach of the login user's signals: sudo relays TERM
    to the wrapper (hussh._sudo._RELAY), which ends the command's process group, with KILL if need be."""
    tok = token()
    with by_key(fleet, timeout=60) as mc:
        results = mc.execute(command.format(tok=tok), timeout=3, sudo=True)
        assert {r.error for r in results.values()} == {"CommandTimeout"}, results
        wait_for(lambda: not sleepers(tok), GONE_WITHIN, "no remote sleep left")


def test_a_cancelled_execute_is_ended_on_the_host(fleet, key_creds):
    """The caller gives up (a cancelled task: Ctrl-C, an aborted wave); ``stop_abandoned`` waits for the kills."""
    tok = token()

    async def body() -> None:
        conn = AsyncConnection(fleet.addresses[0], **key_creds)
        await conn.connect()
        task = asyncio.create_task(conn.execute(f"sleep 300.{tok}"))
        while not sleepers(tok):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stop_abandoned(5)
        await conn.close()

    run(body())
    wait_for(lambda: not sleepers(tok), GONE_WITHIN, "no remote sleep left")


@pytest.mark.parametrize("remote", ["sleep 300.{tok}", "trap '' TERM; sleep 300.{tok}"], ids=["plain", "ignores TERM"])
def test_ctrl_c_of_hussh_run_leaves_no_remote_command(fleet, remote):
    """Deaf to TERM, the command needs the KILL that follows: workers wait for it before disconnecting."""
    tok = token()
    command = Running("run", "-w", fold(fleet.addresses), "-l", KEY_USER, "-i", str(fleet.client_key),
                      "--port", str(fleet.port), remote.format(tok=tok))
    try:
        wait_for(lambda: len(sleepers(tok)) == len(fleet.addresses), 30, "the remote sleeps")
        command.proc.send_signal(signal.SIGINT)
        assert command.finish(timeout=15) == 130
    finally:
        command.kill()
    wait_for(lambda: not sleepers(tok), GONE_WITHIN, "no remote sleep left")
