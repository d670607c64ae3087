"""``Connection.scp_read/scp_write/scp_write_data`` against real sshd, failures included.

Upstream raises a bare ``OSError`` for every SCP failure; ours raises its builtin subclasses naming
host and path, so code written for upstream (``except OSError``) still catches them.
"""

from __future__ import annotations

import os
import stat

import pytest

from hussh import Connection


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[3]


@pytest.fixture
def conn(connect, host, creds):
    return connect(host, **creds)


def where(path: os.PathLike[str] | str, conn: Connection) -> str:
    return f"{path} on {conn.host}:{conn.port}"


def test_write_data_then_read_back_as_text(conn, remote_dir):
    target = remote_dir / "greeting.txt"
    conn.scp_write_data("Hello there! ü\n", str(target))
    assert target.read_text() == "Hello there! ü\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.stat().st_uid != 0  # written by the login user, through the server
    assert conn.scp_read(str(target)) == "Hello there! ü\n"


def test_write_data_accepts_bytes_and_replaces_the_file(conn, remote_dir):
    target = remote_dir / "blob"
    target.write_bytes(b"an older and much longer content")
    target.chmod(0o666)  # created by root (the test runner); the login user rewrites it
    conn.scp_write_data(b"\x00\x01new", str(target))
    assert target.read_bytes() == b"\x00\x01new"


def test_read_to_a_local_file(conn, remote_dir, tmp_path):
    source = remote_dir / "remote.bin"
    source.write_bytes(bytes(range(256)) * 100)
    local = tmp_path / "copy.bin"
    assert conn.scp_read(str(source), str(local)) is None
    assert local.read_bytes() == source.read_bytes()


def test_read_replaces_undecodable_bytes(conn, remote_dir):
    source = remote_dir / "latin1"
    source.write_bytes(b"caf\xe9\n")
    assert conn.scp_read(str(source)) == "caf\ufffd\n"


def test_write_a_local_file_to_a_path_and_into_a_directory(conn, remote_dir, tmp_path):
    local = tmp_path / "app.conf"
    local.write_text("key=value\n")
    conn.scp_write(str(local), str(remote_dir / "renamed.conf"))
    assert (remote_dir / "renamed.conf").read_text() == "key=value\n"
    conn.scp_write(local, str(remote_dir))  # an existing directory: the file lands inside, by name
    assert (remote_dir / "app.conf").read_text() == "key=value\n"


def test_remote_paths_are_not_split_or_run_by_the_shell(conn, remote_dir):
    odd = remote_dir / "a b; touch injected"
    conn.scp_write_data("odd", str(odd))
    assert odd.read_text() == "odd"
    assert not (remote_dir / "injected").exists()
    assert conn.scp_read(str(odd)) == "odd"


@pytest.mark.parametrize("operation", ["scp_write", "scp_write_data"])
def test_missing_remote_directory(conn, remote_dir, tmp_path, operation):
    target = str(remote_dir / "no-such-dir" / "file.txt")
    local = tmp_path / "x"
    local.write_text("x")
    with pytest.raises(FileNotFoundError) as caught:
        if operation == "scp_write":
            conn.scp_write(str(local), target)
        else:
            conn.scp_write_data("x", target)
    assert caught.value.filename == where(target, conn)
    assert "No such file or directory" in str(caught.value)


def test_missing_remote_file_creates_no_local_file(conn, remote_dir, tmp_path):
    missing = str(remote_dir / "absent.txt")
    with pytest.raises(FileNotFoundError) as caught:
        conn.scp_read(missing)
    assert caught.value.filename == where(missing, conn)
    with pytest.raises(FileNotFoundError):
        conn.scp_read(missing, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_remote_directory_read_as_a_file(conn, remote_dir, tmp_path):
    with pytest.raises(IsADirectoryError) as caught:
        conn.scp_read(str(remote_dir))
    assert caught.value.filename == where(remote_dir, conn)
    with pytest.raises(IsADirectoryError):
        conn.scp_read(str(remote_dir), str(tmp_path / "out"))


def test_remote_permission_denied(conn, remote_dir):
    secret = remote_dir / "root-only"
    secret.write_text("s")
    secret.chmod(0o600)  # owned by root (the test runner), read by the login user
    with pytest.raises(PermissionError) as caught:
        conn.scp_read(str(secret))
    assert caught.value.filename == where(secret, conn)


def test_missing_local_file_or_directory(conn, remote_dir, tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        conn.scp_write(str(tmp_path / "nope"), str(remote_dir / "x"))
    assert caught.value.filename == str(tmp_path / "nope")
    with pytest.raises(IsADirectoryError):
        conn.scp_write(str(tmp_path), str(remote_dir / "x"))
    source = remote_dir / "there"
    source.write_text("t")
    with pytest.raises(FileNotFoundError) as caught:
        conn.scp_read(str(source), str(tmp_path / "no-dir" / "out"))
    assert caught.value.filename == str(tmp_path / "no-dir")
    assert not (remote_dir / "x").exists()


def test_errors_are_oserrors_as_upstream_raises(conn, remote_dir):
    with pytest.raises(OSError):
        conn.scp_read(str(remote_dir / "absent"))
