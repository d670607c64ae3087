"""The blocking Connection (timeouts in milliseconds) against real sshd processes."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import hussh
from hussh import Connection, FileTailer, SSHResult
from hussh.testing import KEY_USER, PASSWORD_USER


def wait_for_process(conn: Connection, token: str, present: bool, within: float = 5) -> bool:
    pattern = f"[{token[0]}]{token[1:]}"
    deadline = time.monotonic() + within
    while True:
        found = conn.execute(f"pgrep -f '{pattern}'", timeout=10_000).status == 0
        if found == present:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def sleep_token() -> str:
    return f"sleep 30.{random.randrange(10**6):06d}"


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[1]


@pytest.fixture
def conn(connect, host, creds):
    return connect(host, **creds)


def test_constructor_connects_and_logs_in(host, creds):
    connection = Connection(host, **creds)
    try:
        assert repr(connection) == f"Connection({PASSWORD_USER}@{host}:{creds['port']}, connected)"
        assert connection.execute("id -un") == SSHResult(f"{PASSWORD_USER}\n", "", 0)
    finally:
        connection.close()
    assert repr(connection).endswith("not connected)")


def test_constructor_raises_for_a_wrong_password(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=f"{PASSWORD_USER}@{host}"):
        Connection(host, port=fleet.port, username=PASSWORD_USER, password="not-the-password")


def test_positional_arguments_follow_upstream_order(host, fleet):
    connection = Connection(host, fleet.port, KEY_USER, None, str(fleet.client_key), None, None, 5000)
    try:
        assert (connection.port, connection.username, connection.timeout) == (fleet.port, KEY_USER, 5000)
        assert connection.private_key == str(fleet.client_key)
        assert connection.execute("id -un").stdout == f"{KEY_USER}\n"
    finally:
        connection.close()


def test_username_defaults_to_root(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=f"for root@{host}:"):
        Connection(host, port=fleet.port, password="whatever")


def test_with_statement_closes(host, creds):
    with Connection(host, **creds) as connection:
        result = connection.execute("echo out; echo err >&2; exit 4")
        assert repr(connection).endswith(", connected)")
    assert repr(connection).endswith("not connected)")
    assert result == SSHResult("out\n", "err\n", 4)


def test_timeout_is_in_milliseconds(host, creds):
    with Connection(host, **creds, timeout=1500, connect_timeout=10) as connection:
        assert connection.timeout == 1500
        assert connection.spec.timeout == 1.5
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            connection.execute("echo partial; sleep 30; echo never")
        elapsed = time.monotonic() - started
        assert connection.execute("sleep 0.2; echo ok").stdout == "ok\n"
    assert isinstance(info.value, hussh.CommandTimeout)
    assert info.value.result == SSHResult("partial\n", "", -1)
    assert 1.45 < elapsed < 10


def test_per_call_timeout_in_milliseconds_overrides(conn, remote_dir):
    token = sleep_token()
    marker = remote_dir / "marker"
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        command = pool.submit(conn.execute, f"echo begin; {token}; touch {marker}", 3000)
        assert wait_for_process(conn, token, present=True, within=2.5)
        with pytest.raises(hussh.CommandTimeout) as info:
            command.result(timeout=10)
        elapsed = time.monotonic() - started
    assert info.value.result.stdout == "begin\n"
    assert 2.9 < elapsed < 10
    assert wait_for_process(conn, token, present=False, within=5), "the remote command survived its timeout"
    assert conn.execute("sleep 0.3; echo unbounded", timeout=0).stdout == "unbounded\n"
    assert not marker.exists()


def test_sftp_round_trip(conn, remote_dir, tmp_path):
    local = tmp_path / "local.txt"
    local.write_text("from a local file\n")
    conn.sftp_write(local, str(remote_dir / "copied.txt"))
    conn.sftp_write_data("text ✓\n", str(remote_dir / "text.txt"))
    conn.sftp_write_data(b"\x01\x02\xff", str(remote_dir / "raw.bin"))
    assert (remote_dir / "copied.txt").read_text() == "from a local file\n"
    assert (remote_dir / "text.txt").read_bytes() == "text ✓\n".encode()
    assert (remote_dir / "raw.bin").read_bytes() == b"\x01\x02\xff"
    assert conn.sftp_read(str(remote_dir / "text.txt")) == "text ✓\n"
    assert conn.sftp_read(str(remote_dir / "raw.bin"), tmp_path / "raw.bin") is None
    assert (tmp_path / "raw.bin").read_bytes() == b"\x01\x02\xff"
    assert conn.sftp_list(str(remote_dir)) == ["copied.txt", "raw.bin", "text.txt"]


def test_file_tailer(conn, remote_dir):
    log = remote_dir / "service.log"
    conn.sftp_write_data("before\n", str(log))
    with conn.tail(str(log)) as tailer:
        assert isinstance(tailer, FileTailer)
        assert tailer.remote_file == str(log)
        assert tailer.init_pos == tailer.last_pos == 7
        conn.execute(f"echo one >> {log}")
        assert tailer.read() == "one\n"
        assert tailer.last_pos == 11
        conn.execute(f"printf 'two \\342\\234' >> {log}")
        assert tailer.read() == "two "
        conn.execute(f"printf '\\223\\n' >> {log}")
        assert tailer.read() == "✓\n"
        assert tailer.read(from_pos=0) == "before\none\ntwo ✓\n"
        assert tailer.contents is None
        conn.execute(f"echo three >> {log}")
    assert tailer.contents == "one\ntwo ✓\nthree\n"


def test_execute_after_close_reconnects(conn):
    assert conn.execute("echo a").stdout == "a\n"
    conn.close()
    assert repr(conn).endswith("not connected)")
    assert conn.execute("echo b").stdout == "b\n"
    assert repr(conn).endswith(", connected)")


def test_missing_remote_file_raises_file_not_found(conn, remote_dir):
    with pytest.raises(FileNotFoundError) as info:
        conn.sftp_read(str(remote_dir / "absent.txt"))
    assert "absent.txt" in str(info.value)
