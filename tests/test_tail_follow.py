"""An open tail holds its file between reads (one round trip per read, pinned in tests/test_round_trips.py)
and follows it as ``tail -F``: a file truncated is read again from its start, one rotated away is read
to its end and then the new one from its start, one removed is read to its end and then fails until it
is created again. The handle is let go at exit, on a failed or cancelled read, and by the workers when
a tail ends; the fleet's sftp-servers run on this machine, so ``/proc`` shows what they hold open.
Servers that lie about sizes: tests/test_hostile_paths.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import append
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER


@pytest.fixture
def conn(connect, fleet, creds):
    return connect(fleet.addresses[0], **creds)




def holders(path: Path) -> int:
    """How many descriptors of this machine's processes are open on ``path`` (also once it is removed)."""
    names = {str(path), f"{path} (deleted)"}
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or not ours to see
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") in names
            except OSError:
                continue
    return count


def settled(path: Path, expected: int) -> int:
    """``holders(path)`` once it is ``expected`` (a CLOSE sent unawaited is done by the server soon after),
    or what it still is after 10 seconds."""
    for _ in range(200):
        count = holders(path)
        if count == expected:
            return count
        time.sleep(0.05)
    return holders(path)


def test_an_open_tail_holds_its_file_once_and_lets_it_go_at_exit(conn, log):
    assert holders(log) == 0
    with conn.tail(str(log)) as tf:
        assert holders(log) == 1
        for line in ("a\n", "b\n"):
            append(log, line)
            assert tf.read() == line
        assert holders(log) == 1  # the same handle, read after read
    assert tf.contents == "a\nb\n"
    assert settled(log, 0) == 0


def test_a_truncated_file_is_read_again_from_its_start_while_the_tail_is_open(conn, log):
    not_open = conn.tail(str(log))  # each read opens the file by path (upstream's way): past the end, nothing
    assert not_open.read() == "first\n"
    log.write_text("1\n")
    assert not_open.read() == "" and holders(log) == 0
    with conn.tail(str(log)) as tf:
        append(log, "a longer line than what follows\n")
        assert tf.read().startswith("a longer")
        log.write_text("x\n")  # the same file, truncated (as copytruncate or `> file`)
        assert tf.read() == "x\n" and tf.last_pos == 2
        append(log, "y\n")
        assert tf.read() == "y\n"
        assert tf.read(0) == "x\ny\n"
    assert settled(log, 0) == 0


@pytest.mark.parametrize("new", ["new 1\n", "a first line of the new file, longer than all of the old one\n"],
                         ids=["shorter", "longer"])
def test_a_rotated_file_is_read_to_its_end_then_the_new_one_from_its_start(conn, log, new):
    rotated = log.with_name("app.log.1")
    with conn.tail(str(log)) as tf:
        append(log, "old 1\n")
        assert tf.read() == "old 1\n"
        append(log, "old 2\n")
        log.rename(rotated)  # rotated: renamed away and created anew, as logrotate does by default
        log.write_text(new)
        assert tf.read() == "old 2\n" + new
        assert settled(rotated, 0) == 0 and holders(log) == 1  # the old file let go, the new one held
        append(log, "new 2\n")
        assert tf.read() == "new 2\n" and tf.last_pos == len(new) + 6
    assert settled(log, 0) == 0


def test_a_removed_file_is_read_to_its_end_then_fails_until_created_again(conn, log):
    with conn.tail(str(log)) as tf:
        append(log, "last\n")
        log.unlink()
        assert tf.read() == "last\n"
        assert settled(log, 0) == 0  # the removed file is not kept alive on the host
        with pytest.raises(FileNotFoundError):
            tf.read()
        log.write_text("again\n")
        assert tf.read() == "again\n"


def test_a_cancelled_read_or_a_lost_connection_lets_the_file_go(fleet, creds, log):
    async def body() -> None:
        async with AsyncConnection(fleet.addresses[1], **creds) as conn, conn.tail(str(log)) as tf:
            assert holders(log) == 1
            reading = asyncio.ensure_future(tf.read())
            for _ in range(3):  # its requests sent, their replies not taken yet
                await asyncio.sleep(0)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            assert await asyncio.to_thread(settled, log, 0) == 0
            append(log, "after the cancel\n")
            assert await tf.read() == "after the cancel\n" and holders(log) == 1  # held again, from where it was
            assert conn._conn is not None
            conn._conn.abort()  # the connection lost: its handle with it
            while conn.connected:
                await asyncio.sleep(0.01)
            append(log, "after the loss\n")
            assert await tf.read() == "after the loss\n"
            assert await asyncio.to_thread(settled, log, 1) == 1

    asyncio.run(asyncio.wait_for(body(), 60))
    assert settled(log, 0) == 0


def test_workers_hold_each_hosts_file_while_open_and_follow_truncation(fleet, log):
    hosts = [f"{a}:{fleet.port}" for a in fleet.addresses[:2]]
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD) as mc:
        with mc.tail(str(log)) as tailer:
            assert holders(log) == 2
            append(log, "a line longer than the next\n")
            assert tailer.read() == {h: "a line longer than the next\n" for h in hosts}
            log.write_text("x\n")
            assert tailer.read() == {h: "x\n" for h in hosts}
        assert tailer.contents == {h: "" for h in hosts} and tailer.errors == {}  # from init_pos 6: past "x\n"
        assert settled(log, 0) == 0


def test_a_followed_file_is_followed_across_its_rotation_and_let_go_at_the_end(fleet, log):
    rotated = log.with_name("app.log.1")
    shown: list[str] = []
    rotate = threading.Event()
    deadline = time.monotonic() + 30

    def on_text(host: str, text: str) -> None:
        shown.append(text)
        if text == "":  # open
            append(log, "old\n")
        elif "old\n" in "".join(shown) and not rotate.is_set():
            rotate.set()
            log.rename(rotated)
            log.write_text("new\n")

    mc = MultiConnection.from_shared_auth(fleet.addresses[:1], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port)
    try:
        results = mc.tail(str(log)).follow(on_text, interval=0.05,
                                           until=lambda: "new\n" in shown or time.monotonic() > deadline)
        assert settled(rotated, 0) == 0 and settled(log, 0) == 0  # the worker let go when the follow ended
    finally:
        mc.close()
    assert "".join(shown) == "old\nnew\n" and str(results.summary()) == "1 ok"
