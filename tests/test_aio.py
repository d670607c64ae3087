"""AsyncConnection against real sshd processes."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
import pytest
import uvloop

import hussh
from hussh import SSHResult
from hussh.aio import AsyncConnection
from hussh.testing import KEY_USER, PASSWORD_USER

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(coro: Coroutine[Any, Any, Any], loop: str = "uvloop", timeout: float = 60) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


async def wait_for_process(conn: AsyncConnection, token: str, present: bool, within: float = 5) -> bool:
    """Poll ``pgrep -f`` on the host until a process whose command line holds ``token`` is (not) there."""
    pattern = f"[{token[0]}]{token[1:]}"  # the bracket keeps pgrep's own shell from matching
    deadline = time.monotonic() + within
    while True:
        found = (await conn.execute(f"pgrep -f '{pattern}'", timeout=10)).status == 0
        if found == present:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


def sleep_token() -> str:
    return f"sleep 30.{random.randrange(10**6):06d}"


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[0]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_connect_execute_close(host, creds, loop):
    async def body():
        conn = AsyncConnection(host, **creds)
        assert not conn.connected
        await conn.connect()
        assert conn.connected
        assert "connected" in repr(conn) and f"{PASSWORD_USER}@{host}:{creds['port']}" in repr(conn)
        result = await conn.execute("echo out; echo err >&2; id -un >&2; exit 3")
        await conn.close()
        assert not conn.connected
        return result

    assert run(body(), loop) == SSHResult(stdout="out\n", stderr=f"err\n{PASSWORD_USER}\n", status=3)


def test_async_with_connects_and_closes(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            assert conn.connected
            result = await conn.execute("printf 'a\\nb'")
        return conn, result

    conn, result = run(body())
    assert not conn.connected
    assert result.stdout == "a\nb"
    assert result.stderr == ""
    assert result.status == 0


def test_command_killed_by_signal_reports_128_plus_signal(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            return await conn.execute("echo before; kill -TERM $$; echo after")

    result = run(body())
    assert result.stdout == "before\n"
    assert result.status == 128 + 15


def test_sshresult_equality_repr_and_msgpack_round_trip(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            return await conn.execute("printf 'x\\n'; printf 'é' >&2; exit 7")

    result = run(body())
    assert result == SSHResult("x\n", "é", 7)
    assert result != SSHResult("x\n", "é", 0)
    assert hash(result) == hash(SSHResult("x\n", "é", 7))
    assert repr(SSHResult("o", "e", 1)) == "SSHResult(stdout='o', stderr='e', status=1)"
    assert SSHResult() == SSHResult("", "", 0)
    encoded = msgspec.msgpack.encode(result)
    assert msgspec.msgpack.decode(encoded) == ["x\n", "é", 7, ""]  # stdout, stderr, status, error kind
    assert msgspec.msgpack.decode(encoded, type=SSHResult) == result


def test_key_path_alias_logs_in_with_that_key(fleet, host):
    conn = AsyncConnection(host, username=KEY_USER, key_path=fleet.client_key, port=fleet.port)
    assert conn.private_key == conn.key_path == str(fleet.client_key)

    async def body():
        async with conn:
            return await conn.execute("id -un")

    assert run(body()).stdout == f"{KEY_USER}\n"


def test_key_path_and_different_private_key_are_refused(fleet, host):
    with pytest.raises(TypeError, match="key_path"):  # upstream raises TypeError for both aliases
        AsyncConnection(host, private_key=fleet.client_key, key_path=fleet.encrypted_client_key)


def test_username_defaults_to_root():
    conn = AsyncConnection("127.77.0.1")
    assert conn.username == conn.spec.username == "root"
    assert conn.port == 22
    assert conn.timeout == 0


def test_sftp_write_copies_a_local_file_byte_for_byte(host, creds, tmp_path, remote_dir):
    payload = bytes(range(256)) * 1000
    local = tmp_path / "upload.bin"
    local.write_bytes(payload)
    target = remote_dir / "upload.bin"

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_write(local, str(target))
            return await conn.execute(f"stat -c %U:%s {target}")

    assert run(body()).stdout == f"{PASSWORD_USER}:{len(payload)}\n"
    assert target.read_bytes() == payload


def test_sftp_write_of_a_missing_local_file_raises(host, creds, tmp_path, remote_dir):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_write(tmp_path / "absent", str(remote_dir / "x"))

    with pytest.raises(FileNotFoundError):
        run(body())
    assert not (remote_dir / "x").exists()


def test_sftp_write_data_text_and_bytes_replace_the_file(host, creds, remote_dir):
    text_file, bin_file = remote_dir / "text.txt", remote_dir / "data.bin"

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_write_data("a much longer first version\n", str(text_file))
            await conn.sftp_write_data("héllo ✓\n", str(text_file))
            await conn.sftp_write_data(b"\x00\xff\xfe raw", str(bin_file))

    run(body())
    assert text_file.read_bytes() == "héllo ✓\n".encode()
    assert bin_file.read_bytes() == b"\x00\xff\xfe raw"


def test_sftp_read_as_text_and_to_a_local_path(host, creds, remote_dir, tmp_path):
    source = remote_dir / "source.txt"
    source.write_bytes("line 1\nünïcode ✓\n".encode() + b"bad \xff byte\n")
    source.chmod(0o644)
    local = tmp_path / "copy.txt"

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            text = await conn.sftp_read(str(source))
            saved = await conn.sftp_read(str(source), local_path=local)
            return text, saved

    text, saved = run(body())
    assert text == "line 1\nünïcode ✓\nbad \ufffd byte\n"
    assert saved is None
    assert local.read_bytes() == source.read_bytes()


def test_sftp_list_names_sorted_without_dot_entries(host, creds, remote_dir):
    for name in ("b.log", "a.txt", ".hidden"):
        (remote_dir / name).write_text(name)
    (remote_dir / "sub").mkdir()
    (remote_dir / "empty").mkdir()

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            return await conn.sftp_list(str(remote_dir)), await conn.sftp_list(str(remote_dir / "empty"))

    listing, empty = run(body())
    assert listing == [".hidden", "a.txt", "b.log", "empty", "sub"]
    assert empty == []


def test_tail_reads_only_appended_text(host, creds, remote_dir):
    log = remote_dir / "app.log"

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_write_data("old line\n", str(log))
            async with conn.tail(str(log)) as tailer:
                assert tailer.init_pos == tailer.last_pos == len("old line\n")
                assert await tailer.read() == ""
                await conn.execute(f"echo first >> {log}")
                first = await tailer.read()
                await conn.execute(f"echo second >> {log}")
                second = await tailer.read()
                again = await tailer.read()
                whole = await tailer.read(from_pos=0)
                await conn.execute(f"echo third >> {log}")
            return tailer, first, second, again, whole

    tailer, first, second, again, whole = run(body())
    assert first == "first\n"
    assert second == "second\n"
    assert again == ""
    assert whole == "old line\nfirst\nsecond\n"
    assert tailer.contents == "first\nsecond\nthird\n"


def test_tail_keeps_a_utf8_character_split_across_appends(host, creds, remote_dir):
    log = remote_dir / "split.log"
    euro = "€".encode()
    assert len(euro) == 3

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_write_data(b"", str(log))
            reads = []
            async with conn.tail(str(log)) as tailer:
                await conn.execute(f"printf 'price: \\{euro[0]:03o}' >> {log}")
                reads.append(await tailer.read())
                await conn.execute(f"printf '\\{euro[1]:03o}' >> {log}")
                reads.append(await tailer.read())
                await conn.execute(f"printf '\\{euro[2]:03o}5\\n' >> {log}")
                reads.append(await tailer.read())
            return reads, tailer.contents

    reads, contents = run(body())
    assert reads == ["price: ", "", "€5\n"]
    assert "".join(reads) == contents == "price: €5\n"
    assert log.read_bytes() == "price: €5\n".encode()


def test_command_timeout_keeps_partial_output_and_kills_the_command(host, creds, remote_dir):
    marker = remote_dir / "marker"
    token = sleep_token()

    async def body():
        async with AsyncConnection(host, **creds) as conn:
            started = time.monotonic()
            command = asyncio.ensure_future(conn.execute(f"echo start; {token}; touch {marker}", timeout=3))
            assert await wait_for_process(conn, token, present=True, within=2.5)
            with pytest.raises(hussh.CommandTimeout) as info:
                await command
            elapsed = time.monotonic() - started
            gone = await wait_for_process(conn, token, present=False, within=5)
            after = await conn.execute("echo still usable")
            return info.value, elapsed, gone, after

    error, elapsed, gone, after = run(body())
    assert isinstance(error, TimeoutError) and isinstance(error, hussh.HusshTimeout)
    assert isinstance(error, hussh.CommandTimeout) and error.result == SSHResult(stdout="start\n", stderr="", status=-1)
    assert 2.9 < elapsed < 10
    assert gone, "the remote command survived its timeout"
    assert after == SSHResult("still usable\n", "", 0)
    assert not marker.exists()


def test_connection_timeout_is_the_default_command_limit(host, creds):
    async def body():
        async with AsyncConnection(host, **creds, timeout=1.5, connect_timeout=10) as conn:
            with pytest.raises(hussh.CommandTimeout) as info:
                await conn.execute("echo partial; sleep 30")
            unlimited = await conn.execute("sleep 2; echo done", timeout=0)
            return info.value.result, unlimited

    partial, unlimited = run(body())
    assert partial.stdout == "partial\n"
    assert unlimited.stdout == "done\n"


def test_execute_after_close_reconnects(host, creds):
    async def body():
        conn = AsyncConnection(host, **creds)
        first = await conn.execute("echo one")
        assert conn.connected
        await conn.close()
        assert not conn.connected
        second = await conn.execute("echo two")
        listing = await conn.sftp_list("/")
        assert conn.connected
        await conn.close()
        return first, second, listing

    first, second, listing = run(body())
    assert (first.stdout, second.stdout) == ("one\n", "two\n")
    assert "tmp" in listing


def test_server_side_drop_is_followed_by_a_transparent_reconnect(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_list("/")
            old = conn._conn
            await conn.execute("p=$PPID; (sleep 0.2; kill -9 $p) </dev/null >/dev/null 2>&1 &")
            deadline = time.monotonic() + 10
            while conn.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            dropped = not conn.connected
            result = await conn.execute("echo back")
            listing = await conn.sftp_list("/")
            return dropped, result, listing, conn._conn is not old

    dropped, result, listing, replaced = run(body())
    assert dropped, "killing the session's sshd did not close the connection"
    assert result == SSHResult("back\n", "", 0)
    assert "tmp" in listing
    assert replaced


def test_connection_lost_during_a_command_raises_then_recovers(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            with pytest.raises(hussh.ConnectionLost) as info:
                await conn.execute("kill -9 $PPID; sleep 5")
            return info.value, await conn.execute("echo recovered")

    error, result = run(body())
    assert isinstance(error, ConnectionError)
    assert host in str(error)
    assert result.stdout == "recovered\n"
