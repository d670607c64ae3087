"""Local failures during transfers: a read-only or full file system, a directory that cannot be made, a local
file that is missing or vanishes. Each is that host's error (or one clear error before anything runs); the
other hosts are unaffected. File systems are small tmpfs mounts made (and unmounted) by the tests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER

SIZE = 2 << 20  # bytes of the remote file: more than the full file system holds


@pytest.fixture
def mc(fleet):
    conn = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, workers=2)
    yield conn
    conn.close()


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True,
                   timeout=30)


@pytest.fixture
def mounts(tmp_path):
    """A read-only tmpfs and a 1 MiB one, unmounted afterwards."""
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        mount_tmpfs(tmp_path / name, options)
        made.append(tmp_path / name)
        return tmp_path / name

    try:
        yield mount
    finally:
        for path in made:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_sftp_read_into_a_read_only_full_or_blocked_directory_fails_only_those_hosts(mc, fleet, mounts, tmp_path,
                                                                                     remote_dir):
    source = remote_dir / "big"
    source.write_bytes(os.urandom(SIZE))
    source.chmod(0o644)
    read_only = mounts("ro", "size=1m,ro")
    full = mounts("full", "size=1m")
    root = tmp_path / "copies"
    root.mkdir()
    ok, ro_host, full_host, blocked_host = fleet.addresses
    (root / ro_host).symlink_to(read_only)
    (root / full_host).symlink_to(full)
    (root / blocked_host).write_text("a file where the directory should be")  # ok's directory is made
    results = mc.sftp_read(str(source), str(root / "{host}" / "copy"))
    assert results[ok].status == 0 and (root / ok / "copy").read_bytes() == source.read_bytes()
    expected = {ro_host: ("OSError", "Read-only file system"), full_host: ("OSError", "No space left on device"),
                blocked_host: ("NotADirectoryError", "Not a directory")}
    for host, (kind, text) in expected.items():
        result = results[host]
        assert result.status == -1 and result.error == kind, result
        assert text in result.stderr and "(local file)" in result.stderr and str(root / host / "copy") in result.stderr
    assert mc.execute("true").succeeded.keys() == fleet.addresses  # the hosts themselves are fine


def test_a_missing_local_file_is_one_error_and_nothing_runs(fleet, tmp_path, remote_dir):
    mc = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port)
    try:
        with pytest.raises(FileNotFoundError) as info:
            mc.sftp_write(str(tmp_path / "missing"), str(remote_dir / "copy"))
        assert str(tmp_path / "missing") in str(info.value)
        assert mc.shards() == []  # no worker started, no host contacted
    finally:
        mc.close()
    assert not (remote_dir / "copy").exists()


def test_a_local_file_that_vanishes_during_sftp_write_is_written_whole_everywhere(mc, fleet, tmp_path, remote_dir):
    local = tmp_path / "payload"
    payload = os.urandom(1 << 20)
    local.write_bytes(payload)
    removed: list[str] = []

    def remove_after_first(host: str, result: object) -> None:
        if not removed:
            local.unlink()
            removed.append(host)

    results = mc.sftp_write(str(local), str(remote_dir / "copy"), on_result=remove_after_first)  # one disk here
    assert removed and not local.exists()
    assert len(results.succeeded) == 4
    assert (remote_dir / "copy").read_bytes() == payload
