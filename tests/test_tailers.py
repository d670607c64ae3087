"""File tailers (``FileTailer``, ``AsyncFileTailer``, ``MultiFileTailer``) with upstream's attributes.

Upstream's behaviour, measured: ``last_pos`` is 0 before the block and the file size once in it;
``read()`` moves it to the end; ``seek_end()`` returns the new offset; ``contents`` (after the
block) runs from ``init_pos`` to the end; reading past a truncated file's end gives ``""`` (a tail
not open: an open one follows truncation and rotation as ``tail -F``, tests/test_tail_follow.py).
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import append
from hussh import FileTailer
from hussh.aio import AsyncConnection, AsyncFileTailer
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER


@pytest.fixture
def conn(connect, fleet, creds):
    return connect(fleet.addresses[0], **creds)




def test_positions_reads_and_contents(conn, log):
    tailer = conn.tail(str(log))
    assert isinstance(tailer, FileTailer)
    assert (tailer.remote_file, tailer.last_pos, tailer.contents) == (str(log), 0, None)
    with tailer as tf:
        assert tf is tailer and tf.last_pos == 6
        conn.execute(f"echo 'new line' >> {log}")
        assert tf.read() == "new line\n" and tf.last_pos == 15
        assert tf.read() == ""
        assert tf.read(0) == "first\nnew line\n" and tf.last_pos == 15
        assert tf.read(2) == "rst\nnew line\n"
        append(log, "skipped\n")
        assert tf.seek_end() == 23 and tf.last_pos == 23
        assert tf.read() == ""
        append(log, "last\n")
    assert tailer.contents == "new line\nskipped\nlast\n"
    assert tailer.last_pos == 28
    assert tailer.read() == ""


def test_init_pos_sets_where_contents_start(conn, log):
    with FileTailer(conn, str(log), init_pos=2) as tf:
        assert tf.last_pos == 6  # reads still start at the end
        append(log, "more\n")
        assert tf.read() == "more\n"
    assert tf.contents == "rst\nmore\n"


def test_read_without_entering_starts_at_zero(conn, log):
    assert conn.tail(str(log)).read() == "first\n"


def test_split_utf8_character_waits_for_the_next_read(conn, log):
    with conn.tail(str(log)) as tf:
        append(log, b"caf\xc3")
        assert tf.read() == "caf" and tf.last_pos == 9
        append(log, b"\xa9\n")
        assert tf.read() == "é\n"
    assert tf.contents == "café\n"


def test_missing_file_raises_file_not_found(conn, remote_dir):
    missing = remote_dir / "absent.log"
    with pytest.raises(FileNotFoundError) as caught:
        with conn.tail(str(missing)):
            pass
    assert caught.value.filename == f"{missing} on {conn.host}:{conn.port}"


def test_contents_are_kept_when_the_block_fails(conn, log):
    with pytest.raises(ZeroDivisionError):
        with conn.tail(str(log)) as tf:
            append(log, "before the error\n")
            _ = 1 / 0
    assert tf.contents == "before the error\n"


def test_a_failed_block_keeps_its_own_error_when_contents_cannot_be_read(conn, log):
    with pytest.raises(ZeroDivisionError):
        with conn.tail(str(log)) as tf:
            log.unlink()
            _ = 1 / 0
    assert tf.contents is None


def test_async_tailer_has_the_same_attributes(fleet, creds, log):
    async def body():
        async with AsyncConnection(fleet.addresses[1], **creds) as conn:
            tailer = conn.tail(str(log))
            assert isinstance(tailer, AsyncFileTailer)
            assert (tailer.remote_file, tailer.last_pos, tailer.contents) == (str(log), 0, None)
            async with tailer as tf:
                await conn.execute(f"echo A >> {log}")
                first = await tf.read()
                append(log, "B\n")
                end = await tf.seek_end()
                after_seek = await tf.read()
                append(log, "C\n")
            return first, end, after_seek, tailer.contents, tailer.last_pos

    assert asyncio.run(asyncio.wait_for(body(), 60)) == ("A\n", 10, "", "A\nB\nC\n", 12)


def test_multi_file_tailer_hosts_read_and_contents(fleet, log):
    hosts = [f"{a}:{fleet.port}" for a in fleet.addresses[:2]]
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD) as mc:
        tailer = mc.tail(str(log))
        assert tailer.hosts == hosts and tailer.contents == {}
        with tailer:
            append(log, "m\n")
            assert tailer.read() == {h: "m\n" for h in hosts}
            assert tailer.read(0) == {h: "first\nm\n" for h in hosts}
        assert tailer.contents == {h: "m\n" for h in hosts}
        assert tailer.read() == {h: "" for h in hosts}  # closed: nothing more, as upstream
        assert tailer.errors == {}
        assert mc.tail_map({hosts[1]: str(log)}).hosts == [hosts[1]]
