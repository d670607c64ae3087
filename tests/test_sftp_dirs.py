"""``sftp_put_dir`` / ``sftp_get_dir``: recursive transfers with upstream's (transferred, failed) results.

The fleet's hosts share this machine's filesystem, so the "remote" tree is built and checked here
directly, while the transfer itself goes through sshd as the login user.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from hussh import Connection
from hussh.aio import AsyncConnection
from hussh.testing.hostile import serve


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
    (local / "sub" / "secret").write_text("s")
    (local / "sub" / "secret").chmod(0o600)
    (local / "sub" / "deeper").chmod(0o700)
    target = remote_dir / "dst"
    transferred, failed = conn.sftp_put_dir(str(local), str(target), follow_symlinks=False,
                                            preserve_permissions=False)
    assert sorted(transferred) == [str(local / f) for f in ("a.txt", "sub/b.txt", "sub/deeper/c.sh", "sub/secret")]
    assert failed == []
    assert not (target / "link.txt").exists() and not (target / "linkdir").exists()
    # as sftp without -p: created with the local 0777 bits less the server's umask (022), never more open
    assert mode(target / "sub" / "deeper" / "c.sh") == 0o755 and mode(target / "sub" / "secret") == 0o600
    assert mode(target / "sub" / "deeper") == 0o700


def recording(root: Path, events: list[tuple[object, ...]]) -> Callable[[asyncssh.SSHServerChannel[bytes]],
                                                                        asyncssh.SFTPServer]:
    """A plain SFTP server on ``root`` that notes each open, mode change and write, in the order it does them."""
    class Recorder(asyncssh.SFTPServer):
        def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
            events.append(("open", os.path.basename(path).decode(), attrs.permissions))
            return super().open(path, pflags, attrs)

        def fsetstat(self, file_obj, attrs):
            events.append(("fsetstat", attrs.permissions))
            return super().fsetstat(file_obj, attrs)

        def setstat(self, path, attrs):
            events.append(("setstat", os.path.basename(path).decode(), attrs.permissions))
            return super().setstat(path, attrs)

        def write(self, file_obj, offset, data):
            events.append(("write", offset))
            return super().write(file_obj, offset, data)

    return lambda chan: Recorder(chan, chroot=os.fsencode(root))


@pytest.mark.parametrize("size", [100, 300_000], ids=["one-write", "parallel-writes"])
def test_put_dir_never_leaves_a_file_more_open_than_the_local_one(tmp_path, size):
    """A 0600 file is created 0600, and an existing 0644 one is narrowed before a byte of it is written."""
    local, served = tmp_path / "src", tmp_path / "served"
    local.mkdir()
    (served / "dst").mkdir(parents=True)
    data = os.urandom(size)
    for name in ("new", "old"):
        (local / name).write_bytes(data)
        (local / name).chmod(0o600)
    (served / "dst" / "old").write_text("public")
    (served / "dst" / "old").chmod(0o644)
    events: list[tuple[object, ...]] = []
    with serve(sftp=recording(served, events)) as server, Connection(server.host, **server.options()) as conn:
        assert conn.sftp_put_dir(str(local), "/dst") == ([str(local / "new"), str(local / "old")], [])
    opened = [i for i, e in enumerate(events) if e[0] == "open"]
    assert [events[i] for i in opened] == [("open", "new", 0o600), ("open", "old", 0o600)]
    for first, end in zip(opened, [*opened[1:], len(events)], strict=True):
        after_open = events[first + 1:end]
        assert after_open[0] == ("fsetstat", 0o600), after_open[:3]  # before any write
        assert after_open.count(("fsetstat", 0o600)) == 1 and not any(e[0] == "setstat" for e in after_open)
    for name in ("new", "old"):
        assert mode(served / "dst" / name) == 0o600 and (served / "dst" / name).read_bytes() == data


def test_sftp_write_creates_the_file_no_more_open_than_the_local_one(conn, remote_dir, tmp_path):
    """As scp and sftp: a new file gets the local 0777 bits (less the umask), an existing one keeps its mode."""
    secret, script = tmp_path / "secret", tmp_path / "script"
    secret.write_text("s")
    secret.chmod(0o600)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o4750)  # setuid: never on the host
    conn.sftp_write(str(secret), str(remote_dir / "secret"))
    conn.sftp_write(str(script), str(remote_dir / "script"))
    assert mode(remote_dir / "secret") == 0o600 and mode(remote_dir / "script") == 0o750
    (remote_dir / "shared").write_text("old")
    (remote_dir / "shared").chmod(0o666)  # the login user may write it
    conn.sftp_write(str(secret), str(remote_dir / "shared"))
    assert mode(remote_dir / "shared") == 0o666 and (remote_dir / "shared").read_text() == "s"
    conn.sftp_write_data("k", str(remote_dir / "key"), mode=0o600)
    conn.sftp_write_data("d", str(remote_dir / "default"))
    assert mode(remote_dir / "key") == 0o600 and mode(remote_dir / "default") == 0o644


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


def test_async_file_errors_are_also_runtime_errors_as_upstreams(fleet, creds, remote_dir, tmp_path):
    """Upstream's AsyncConnection raises RuntimeError for every failure: code catching that keeps working."""
    absent = str(remote_dir / "absent")

    async def body():
        async with AsyncConnection(fleet.addresses[3], **creds) as conn:
            failures = []
            for call in (conn.sftp_get_dir(absent, str(tmp_path / "x"), fail_fast=True), conn.sftp_read(absent),
                         conn.sftp_write(str(tmp_path / "no-such-local-file"), absent), conn.tail(absent).__aenter__()):
                with pytest.raises(RuntimeError) as caught:
                    await call
                failures.append(caught.value)
            return failures

    for failure in asyncio.run(asyncio.wait_for(body(), 60)):
        assert isinstance(failure, FileNotFoundError) and type(failure).__name__ == "FileNotFoundError"
        assert failure.errno == errno.ENOENT and failure.filename
        copy = pickle.loads(pickle.dumps(failure))
        assert type(copy) is FileNotFoundError and (copy.errno, copy.filename) == (failure.errno, failure.filename)


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
