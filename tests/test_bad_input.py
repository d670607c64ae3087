"""Failures callers will meet: unreachable hosts, bad credentials, odd output, silent servers."""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket
import time
from typing import Any

import pytest
import uvloop

import hussh
import hussh._spec
from hussh import Connection, SSHResult
from hussh.aio import AsyncConnection
from hussh.testing import KEY_USER

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(coro, loop: str = "uvloop", timeout: float = 60):
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))


def execute(host: str, command: str, loop: str = "uvloop", **kwargs: Any) -> SSHResult:
    async def body():
        async with AsyncConnection(host, **kwargs) as conn:
            return await conn.execute(command)

    return run(body(), loop)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[3]


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_refused_port_is_a_connect_error_naming_host_and_port(loop):
    port = unused_port()
    with pytest.raises(hussh.ConnectError) as info:
        execute("127.0.0.1", "true", loop, port=port, connect_timeout=10)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ECONNREFUSED
    assert f"127.0.0.1:{port}" in str(info.value)


def test_refused_port_with_the_sync_connection():
    port = unused_port()
    with pytest.raises(hussh.ConnectError, match=f"127.0.0.1:{port}"):
        Connection("127.0.0.1", port=port, password="x", timeout=10_000)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_unresolvable_name_is_a_connect_error(loop):
    started = time.monotonic()
    with pytest.raises(hussh.ResolveError, match="no-such-host!") as info:  # '!': refused before any DNS query
        execute("no-such-host!", "true", loop, password="x", connect_timeout=10)
    assert not isinstance(info.value, hussh.HostKeyError)
    assert time.monotonic() - started < 10


def test_wrong_password_is_an_authentication_error(host, fleet):
    with pytest.raises(hussh.AuthenticationError) as info:
        execute(host, "true", username="hussh", password="wrong", port=fleet.port)
    assert not isinstance(info.value, OSError)


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage", "public-key"])
def test_unusable_private_key_is_an_authentication_error_naming_the_path(host, fleet, tmp_path, kind):
    path = tmp_path / f"key-{kind}"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64 at all\x00\xff\n")
    elif kind == "public-key":
        shutil.copy(f"{fleet.client_key}.pub", path)
    with pytest.raises(hussh.AuthenticationError, match=str(path)):
        execute(host, "true", username=KEY_USER, private_key=path, port=fleet.port)
    with pytest.raises(hussh.AuthenticationError, match=str(path)):
        Connection(host, port=fleet.port, username=KEY_USER, private_key=str(path))


def test_missing_remote_file_raises_file_not_found(host, creds, tmp_path):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            errors = []
            for operation in (
                conn.sftp_read("/nonexistent/file.txt"),
                conn.sftp_read("/nonexistent/file.txt", tmp_path / "out"),
                conn.sftp_list("/nonexistent/dir"),
                conn.tail("/nonexistent/app.log").__aenter__(),
            ):
                try:
                    await operation
                except FileNotFoundError as exc:
                    errors.append(exc)
            still = await conn.execute("echo fine")
            return errors, still

    errors, still = run(body())
    assert len(errors) == 4
    assert all(f"{host}:" in str(exc) and exc.errno == errno.ENOENT for exc in errors)
    assert still.stdout == "fine\n"


def test_permission_denied_remote_file(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            await conn.sftp_read("/etc/shadow")

    with pytest.raises(PermissionError, match="/etc/shadow"):
        run(body())


def test_non_utf8_output_is_decoded_with_replacement(host, creds):
    result = execute(host, "printf 'a\\377\\376b'; printf '\\303(' >&2", **creds)
    assert result == SSHResult("a\ufffd\ufffdb", "\ufffd(", 0)


def test_20_mb_of_stdout_arrives_complete(host, creds):
    lines = 2_700_000
    result = execute(host, f"seq 1 {lines}", **creds)
    expected = "".join(f"{i}\n" for i in range(1, lines + 1))
    assert len(expected) > 20_000_000
    assert len(result.stdout) == len(expected)
    assert result.stdout == expected
    assert result.status == 0


def test_output_beyond_max_output_raises_with_the_first_bytes(host, creds):
    limit = 100_000
    started = time.monotonic()
    with pytest.raises(hussh.OutputLimitExceeded) as info:
        execute(host, "seq 1 100000000", **creds, max_output=limit)
    assert time.monotonic() - started < 10
    expected = "".join(f"{i}\n" for i in range(1, 30_000))[:limit]
    assert info.value.result == SSHResult(expected, "", -1)


def test_output_of_exactly_max_output_bytes_is_not_an_error(host, creds):
    result = execute(host, "head -c 50 /dev/zero | tr '\\0' x", **creds, max_output=50)
    assert result == SSHResult("x" * 50, "", 0)
    with pytest.raises(hussh.OutputLimitExceeded):
        execute(host, "head -c 51 /dev/zero | tr '\\0' x", **creds, max_output=50)


def test_multibyte_text_split_across_packets_is_intact(host, creds):
    result = execute(host, "yes '€ü✓' | head -n 300000", **creds)
    assert result.stdout == "€ü✓\n" * 300_000


def test_stderr_counts_towards_max_output(host, creds):
    with pytest.raises(hussh.OutputLimitExceeded) as info:
        execute(host, "echo 12345; head -c 100 /dev/zero | tr '\\0' e >&2", **creds, max_output=50)
    result = info.value.result
    assert len(result.stdout) + len(result.stderr) == 50
    assert result.stdout == "12345\n"
    assert result.stderr == "e" * 44


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_silent_host_hits_connect_timeout(blackhole, loop):
    started = time.monotonic()
    with pytest.raises(hussh.ConnectTimeout) as info:
        execute(blackhole[0], "true", loop, port=blackhole[1], connect_timeout=1)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 10
    assert isinstance(info.value, TimeoutError)
    assert f"{blackhole[0]}:{blackhole[1]}" in str(info.value)


def test_silent_host_is_bounded_by_timeout_when_no_connect_timeout(blackhole):
    started = time.monotonic()
    with pytest.raises(hussh.ConnectTimeout):
        execute(blackhole[0], "true", port=blackhole[1], timeout=1.5)
    assert 1.4 < time.monotonic() - started < 10


def test_silent_host_is_bounded_by_the_default_connect_timeout(blackhole, monkeypatch):
    monkeypatch.setattr(hussh._spec, "DEFAULT_CONNECT_TIMEOUT", 2)
    started = time.monotonic()
    with pytest.raises(hussh.ConnectTimeout, match="after 2 seconds"):
        execute(blackhole[0], "true", port=blackhole[1], timeout=0)
    assert 1.9 < time.monotonic() - started < 10


def test_silent_host_with_the_sync_connection(blackhole, monkeypatch):
    started = time.monotonic()
    with pytest.raises(hussh.ConnectTimeout):
        Connection(blackhole[0], port=blackhole[1], timeout=1000)
    assert 0.9 < time.monotonic() - started < 10
    monkeypatch.setattr(hussh._spec, "DEFAULT_CONNECT_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(hussh.ConnectTimeout):
        Connection(blackhole[0], port=blackhole[1])
    assert 0.9 < time.monotonic() - started < 10


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(host=""),
        dict(host="h", port=0),
        dict(host="h", port=70000),
        dict(host="h", timeout=-1),
        dict(host="h", connect_timeout=-0.5),
        dict(host="h", max_output=0),
    ],
)
def test_invalid_arguments_are_refused_before_connecting(kwargs):
    with pytest.raises(ValueError):
        AsyncConnection(**kwargs)
