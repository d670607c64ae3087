"""``sftp_put_dir`` / ``sftp_get_dir``: recursive transfers with upstream's (transferred, failed) results.

The fleet's hosts share this machine's filesystem, so the "remote" tree is built and checked here
directly, while the transfer itself goes through sshd as the login user.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from hussh import Connection
from hussh.aio import AsyncConnection


@pytest.fixture
def conn(fleet, creds):
    connection = Connection(fleet.addresses[2], **creds, timeout=30_000)
    try:
        yield connection
    finally:
        connection.close()


def make_tree(root: Path) -> Path:
    """files (modes 0604, 0644, 0755), nested and empty directories, a file link, a directory link, a dangling link."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a")
    (root / "a.txt").chmod(0o604)  # others may read: the login user, for get_dir
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deeper" / "c.sh").write_text("c")
    (root / "sub" / "deeper" / "c.sh").chmod(0o755)
    (root / "link.txt").symlink_to("a.txt")
    (root / "linkdir").symlink_to("sub")
    (root / "dangling").symlink_to(root / "nowhere")
    for path in (root, *root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777)  # the login user may read and write the tree
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


FILES = ["a.txt", "link.txt", "linkdir/b.txt", "linkdir/deeper/c.sh", "sub/b.txt", "sub/deeper/c.sh"]


def test_put_dir_follows_links_and_preserves_modes(conn, remote_dir, tmp_path):
    local = make_tree(tmp_path / "src")
    target = remote_dir / "made" / "parents" / "dst"
    transferred, failed = conn.sftp_put_dir(str(local), str(target))
    assert sorted(transferred) == [str(local / f) for f in FILES]
    assert failed == [str(local / "dangling")]
    assert (target / "link.txt").read_text() == "a" and not (target / "link.txt").is_symlink()
    assert (target / "linkdir" / "deeper" / "c.sh").read_text() == "c"
    assert (target / "empty").is_dir()
    assert mode(target / "a.txt") == 0o604 and mode(target / "sub" / "deeper" / "c.sh") == 0o755
    assert (target / "a.txt").stat().st_uid != os.getuid()  # written by the login user, through sshd


def test_put_dir_without_following_links_or_modes(conn, remote_dir, tmp_path):
    local = make_tree(tmp_path / "src")
    target = remote_dir / "dst"
    transferred, failed = conn.sftp_put_dir(str(local), str(target), follow_symlinks=False,
                                            preserve_permissions=False)
    assert sorted(transferred) == [str(local / f) for f in ("a.txt", "sub/b.txt", "sub/deeper/c.sh")]
    assert failed == []
    assert not (target / "link.txt").exists() and not (target / "linkdir").exists()
    assert mode(target / "sub" / "deeper" / "c.sh") == 0o644  # the server's default for new files


def test_put_dir_failures(conn, remote_dir, tmp_path):
    local = make_tree(tmp_path / "src")
    with pytest.raises(FileNotFoundError):
        conn.sftp_put_dir(str(local), str(remote_dir / "dst"), fail_fast=True)
    assert conn.sftp_put_dir(str(tmp_path / "absent"), str(remote_dir / "x")) == ([], [str(tmp_path / "absent")])
    with pytest.raises(NotADirectoryError):
        conn.sftp_put_dir(str(local / "a.txt"), str(remote_dir / "x"), fail_fast=True)
    blocker = remote_dir / "a-file"
    blocker.write_text("in the way")
    assert conn.sftp_put_dir(str(local / "sub"), str(blocker)) == ([], [str(local / "sub")])


def test_put_dir_stops_at_a_symlink_loop(conn, remote_dir, tmp_path):
    local = tmp_path / "src"
    (local / "inner").mkdir(parents=True)
    (local / "inner" / "f").write_text("f")
    (local / "inner" / "back").symlink_to(local)
    transferred, failed = conn.sftp_put_dir(str(local), str(remote_dir / "dst"))
    assert transferred == [str(local / "inner" / "f")]
    assert failed == [str(local / "inner" / "back")]


def test_get_dir_follows_links_and_preserves_modes(conn, remote_dir, tmp_path):
    remote = make_tree(remote_dir / "src")
    secret = remote / "sub" / "root-only"
    secret.write_text("s")
    secret.chmod(0o600)  # owned by root (the test runner): the login user cannot read it
    local = tmp_path / "made" / "dst"
    transferred, failed = conn.sftp_get_dir(str(remote), str(local))
    assert sorted(transferred) == [str(remote / f) for f in FILES]
    assert sorted(failed) == [str(remote / "dangling"), str(remote / "linkdir" / "root-only"), str(secret)]
    assert (local / "linkdir" / "deeper" / "c.sh").read_text() == "c"
    assert not (local / "link.txt").is_symlink() and (local / "empty").is_dir()
    assert mode(local / "a.txt") == 0o604 and mode(local / "sub" / "deeper" / "c.sh") == 0o755


def test_get_dir_without_following_links_and_its_failures(conn, remote_dir, tmp_path):
    remote = make_tree(remote_dir / "src")
    transferred, failed = conn.sftp_get_dir(str(remote), str(tmp_path / "dst"), follow_symlinks=False)
    assert sorted(transferred) == [str(remote / f) for f in ("a.txt", "sub/b.txt", "sub/deeper/c.sh")]
    assert failed == [] and not (tmp_path / "dst" / "linkdir").exists()
    absent = str(remote_dir / "absent")
    assert conn.sftp_get_dir(absent, str(tmp_path / "x")) == ([], [absent])
    with pytest.raises(FileNotFoundError) as caught:
        conn.sftp_get_dir(absent, str(tmp_path / "x"), fail_fast=True)
    assert caught.value.filename == f"{absent} on {conn.host}:{conn.port}"
    with pytest.raises(NotADirectoryError):
        conn.sftp_get_dir(str(remote / "a.txt"), str(tmp_path / "x"), fail_fast=True)


def test_async_put_and_get_dir(fleet, creds, remote_dir, tmp_path):
    local = make_tree(tmp_path / "src")

    async def body():
        async with AsyncConnection(fleet.addresses[3], **creds) as conn:
            up = await conn.sftp_put_dir(str(local), str(remote_dir / "up"))
            down = await conn.sftp_get_dir(str(remote_dir / "up"), str(tmp_path / "down"))
            return up, down

    (up_ok, up_failed), (down_ok, down_failed) = asyncio.run(asyncio.wait_for(body(), 60))
    assert len(up_ok) == len(FILES) and up_failed == [str(local / "dangling")]
    assert sorted(down_ok) == [str(remote_dir / "up" / f) for f in FILES] and down_failed == []
    assert (tmp_path / "down" / "sub" / "deeper" / "c.sh").read_text() == "c"
