"""Everything has a deadline: SFTP, SCP, tails and remote_copy on a server that freezes mid-transfer.

The server is frozen with the fleet's ``pause`` fault: SIGSTOP of the node's sshd and of every
session process it serves (its sftp-server too), healed (SIGCONT) when the block ends. The tests
use a short ``stall_timeout`` (2 s) and bound their own waits (asyncio timeouts, else
pytest-timeout), so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

import hussh
from hussh import TransferStalled
from hussh._remote_copy import remote_copy
from hussh._scp import scp_read
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from procs import wait_until

STALL = 2.0
SLACK = 8.0  # the frozen host fails within STALL + SLACK seconds of the freeze, or the test fails
PROGRESS = 8 << 20  # bytes moved before the freeze: the transfer is under way

pytestmark = pytest.mark.timeout(90)


def run(coro: Coroutine[Any, Any, Any], within: float = 60) -> Any:
    """Run on uvloop, as the workers do; past ``within`` seconds the test fails instead of hanging."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, within))


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def read_offset(path: Path) -> int:
    """How far this process has read ``path`` (an upload's progress), 0 while it is not open."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return int(Path(f"/proc/self/fdinfo/{fd}").read_text().split()[1])  # "pos:\t<offset>"
        except OSError:
            continue
    return 0


def filled_file(path: Path, mib: int) -> Path:
    """A local file of real (non-zero) bytes: asyncssh skips the holes of a sparse one."""
    block = b"\x5a" * (1 << 20)
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(block)
    return path


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[0]


@pytest.fixture
def remote_name(request) -> str:
    return f"deadlines-{request.node.name[:40]}-{os.getpid()}"


def sh(host: str, creds: dict[str, object], command: str) -> None:
    """Run ``command`` on ``host`` over a connection of its own (every host shares the fleet's homes)."""
    async def body() -> None:
        async with AsyncConnection(host, **creds) as conn:  # type: ignore[arg-type]
            assert (await conn.execute(command)).status == 0
    run(body())


@pytest.fixture
def cleanup(fleet, creds, remote_name):
    """Remove the test's remote files once the fleet is healed."""
    yield
    sh(fleet.addresses[-1], creds, f"rm -f {remote_name}*")


def conn_of(host: str, creds: dict[str, object], **kwargs: object) -> AsyncConnection:
    return AsyncConnection(host, **{"stall_timeout": STALL, **creds, **kwargs})  # type: ignore[arg-type]


async def stalls(task: asyncio.Future[Any], freeze_started: float) -> TransferStalled:
    """``task``'s ``TransferStalled``, which must come within ``STALL + SLACK`` of the freeze."""
    with pytest.raises(TransferStalled) as info:
        async with asyncio.timeout(STALL + SLACK):
            await task
    elapsed = time.monotonic() - freeze_started
    assert STALL - 0.5 <= elapsed <= STALL + SLACK, elapsed
    return info.value


def test_sftp_read_of_a_large_file_fails_when_the_server_freezes_mid_transfer(
        fleet, host, creds, tmp_path, remote_name, cleanup):
    local = tmp_path / "big"

    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.execute(f"truncate -s 2G {remote_name}")
        task = asyncio.ensure_future(conn.sftp_read(remote_name, local))
        await until(lambda: size(local) >= PROGRESS or task.done(), 30, "the download to start")
        with fleet.fault("pause", [host]):
            error = await stalls(task, time.monotonic())
        assert str(error) == (f"SFTP read of {remote_name} on {host}:{fleet.port} stalled: nothing received "
                              f"for {STALL:g} seconds; closed the connection")
        assert not conn.connected
        assert (await conn.execute("echo again")).stdout == "again\n"  # the next call reconnects
        await conn.close()

    run(body())


def test_sftp_write_of_a_large_file_fails_when_the_server_freezes_mid_transfer(
        fleet, host, creds, tmp_path, remote_name, cleanup):
    source = filled_file(tmp_path / "payload", 512)

    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.connect()
        task = asyncio.ensure_future(conn.sftp_write(source, remote_name))
        await until(lambda: read_offset(source) >= PROGRESS or task.done(), 30, "the upload to start")
        with fleet.fault("pause", [host]):
            error = await stalls(task, time.monotonic())
        assert f"SFTP write of {remote_name} on {host}:{fleet.port} stalled: nothing received" in str(error)
        await conn.close()

    run(body())


def test_a_tail_read_fails_when_the_server_freezes_and_the_next_read_reconnects(
        fleet, host, creds, remote_name, cleanup):
    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.execute(f"echo first > {remote_name}")
        async with conn.tail(remote_name) as tailer:
            await conn.execute(f"echo second >> {remote_name}")
            with fleet.fault("pause", [host]):
                error = await stalls(asyncio.ensure_future(tailer.read()), time.monotonic())
            assert f"SFTP read of {remote_name} on {host}:{fleet.port} stalled" in str(error)
            assert await tailer.read() == "second\n"
        await conn.close()

    run(body())


def test_scp_read_fails_when_the_server_freezes_mid_transfer(fleet, host, creds, tmp_path, remote_name, cleanup,
                                                              monkeypatch):
    local = tmp_path / "big"
    staging = tmp_path / "staging"  # scp_read receives into a private directory here, then moves the file
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))

    def received() -> int:
        return sum(size(path) for path in staging.rglob("*") if path.is_file())

    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.execute(f"truncate -s 2G {remote_name}")
        task = asyncio.ensure_future(scp_read(conn, remote_name, local))
        await until(lambda: received() >= PROGRESS or task.done(), 30, "the download to start")
        with fleet.fault("pause", [host]):
            error = await stalls(task, time.monotonic())
        assert f"SCP of {remote_name} on {host}:{fleet.port} stalled: nothing received" in str(error)
        await conn.close()

    run(body())


def test_remote_copy_names_the_host_that_froze(fleet, creds, remote_name, cleanup):
    source_host, dest_host = fleet.addresses[:2]

    async def body() -> None:
        source, dest = conn_of(source_host, creds), conn_of(dest_host, creds)
        await source.execute(f"truncate -s 2G {remote_name}")
        await dest.connect()
        task = asyncio.ensure_future(remote_copy(source, remote_name, dest, f"{remote_name}.copy"))
        while not task.done() and await _size(dest, f"{remote_name}.copy") < PROGRESS:  # the copy is under way
            await asyncio.sleep(0.01)
        with fleet.fault("pause", [source_host]):
            error = await stalls(task, time.monotonic())
        assert f"SFTP read of {remote_name} on {source_host}:{fleet.port} stalled" in str(error)
        assert dest.connected
        await source.close()
        await dest.close()

    run(body())


async def _size(conn: AsyncConnection, path: str) -> int:
    try:
        return await conn.sftp_size(path)
    except FileNotFoundError:
        return 0


@pytest.mark.timeout(45)  # without the bound the call never returns: fail here rather than hang
def test_multiconnection_read_one_host_freezes_it_fails_in_time_and_the_others_finish(
        fleet, creds, tmp_path, remote_name, cleanup):
    hosts, victim = fleet.addresses, fleet.addresses[1]
    sh(hosts[0], creds, f"head -c {256 << 20} /dev/zero > {remote_name}")
    victim_file, call_done, frozen_at = tmp_path / f"{victim}.out", threading.Event(), []

    def freeze_mid_transfer() -> None:
        wait_until(lambda: size(victim_file) >= 1 << 20 or call_done.is_set(), 30, "the victim's download")
        if not call_done.is_set():
            fleet.pause([victim])
            frozen_at.append(time.monotonic())

    with MultiConnection([conn_of(h, creds) for h in hosts]) as mc:
        assert len(mc.connect().succeeded) == 4
        freezer = threading.Thread(target=freeze_mid_transfer)
        freezer.start()
        try:
            results = mc.sftp_read(remote_name, tmp_path / "{host}.out")
            returned = time.monotonic()
        finally:
            call_done.set()
            freezer.join()
            if frozen_at:
                fleet.unpause([victim])
    assert frozen_at, "the victim finished before it could be frozen"
    assert returned - frozen_at[0] <= STALL + SLACK
    failed = results[victim]
    assert failed.status == -1 and failed.error == "TransferStalled", failed
    assert failed.stderr.startswith(f"TransferStalled: SFTP read of {remote_name} on {victim}:{fleet.port} stalled: "
                                    f"nothing received for {STALL:g} seconds"), failed.stderr
    for host in hosts:
        if host != victim:
            assert results[host].status == 0, results[host]
            assert size(tmp_path / f"{host}.out") == 256 << 20


@pytest.mark.timeout(45)
def test_multiconnection_tail_one_host_freezes_its_read_fails_in_time(fleet, creds, remote_name, cleanup):
    hosts, victim = fleet.addresses, fleet.addresses[2]
    sh(hosts[0], creds, f"echo first > {remote_name}")
    with MultiConnection([conn_of(h, creds) for h in hosts]) as mc, mc.tail(remote_name) as tailer:
        assert not tailer.errors
        sh(hosts[0], creds, f"echo second >> {remote_name}")  # one file: every host shares the homes
        with fleet.fault("pause", [victim]):
            frozen_at = time.monotonic()
            texts = tailer.read()
            assert time.monotonic() - frozen_at <= STALL + SLACK
        assert texts == {host: "" if host == victim else "second\n" for host in hosts}
        assert tailer.errors[victim].startswith(f"TransferStalled: SFTP read of {remote_name} on {victim}:"), \
            tailer.errors


def test_a_transfer_longer_than_the_bound_that_keeps_receiving_is_not_a_stall(fleet, creds, tmp_path, remote_name,
                                                                             cleanup):
    host = fleet.addresses[3]
    source = filled_file(tmp_path / "payload", 8)  # 8 round trips at least: 16 x 64 KiB in flight
    delay, bound = 0.25, 1.5  # each way: a round trip takes 0.5 s, well under the bound

    async def body() -> float:
        conn = conn_of(host, creds, stall_timeout=bound)
        started = time.monotonic()
        await conn.sftp_write(source, remote_name)
        took = time.monotonic() - started
        assert await conn.sftp_size(remote_name) == 8 << 20
        await conn.close()
        return took

    with fleet.fault("slow", [host], delay=delay):
        took = run(body())
    assert took > bound  # the whole write took longer than the bound, and that is fine


def test_an_idle_connection_outlives_the_bound_between_operations(fleet, host, creds, remote_name, cleanup):
    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.sftp_write_data("x", remote_name)
        opened = conn._conn
        await asyncio.sleep(STALL + 1)  # idle: no operation waits, so nothing arms the bound
        assert conn.connected and conn._conn is opened
        assert await conn.sftp_read(remote_name) == "x"
        await conn.close()

    run(body())


def test_a_server_that_dies_mid_transfer_is_a_lost_connection_not_a_stall(fleet, creds, tmp_path, remote_name,
                                                                          cleanup):
    host, local = fleet.addresses[3], tmp_path / "big"

    async def body() -> None:
        conn = conn_of(host, creds)
        await conn.execute(f"truncate -s 2G {remote_name}")
        task = asyncio.ensure_future(conn.sftp_read(remote_name, local))
        await until(lambda: size(local) >= PROGRESS or task.done(), 30, "the download to start")
        with fleet.fault("kill", [host]), pytest.raises(hussh.ConnectionLost) as info:
            async with asyncio.timeout(STALL + SLACK):
                await task
        assert not isinstance(info.value, TransferStalled)
        assert f"connection lost during SFTP read of {remote_name} on {host}:{fleet.port}" in str(info.value)

    run(body())
