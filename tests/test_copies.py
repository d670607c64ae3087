"""Copies as operators expect them, on many hosts: ``put -r`` / ``get -r`` (and clush's ``--copy`` / ``--rcopy``),
``MultiConnection.sftp_put_dir`` / ``sftp_get_dir``, remote links followed for files, ``get`` into
``DIR/HOST/REMOTE`` so that no file overwrites another, modes kept within the safety rules.

The fleet's hosts share this machine's filesystem: "remote" trees are built and checked here directly,
while every transfer goes through sshd as the login user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clirun import hussh
from hussh import Connection, Journal
from hussh._cli_args import UsageError, fetched_as, parse
from hussh.aio import AsyncConnection
from hussh.hostlist import fold
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from hussh.testing.hostile import Dir, FakeTree, File, serve


@pytest.fixture
def conn(fleet) -> list[str]:
    return ["-l", KEY_USER, "-i", str(fleet.client_key), "--port", str(fleet.port)]


@pytest.fixture
def hosts(fleet) -> list[str]:
    return ["-w", fold(fleet.addresses)]


@pytest.fixture
def mc(fleet):
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, timeout=60) as multi:
        yield multi


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def readable_tree(root: Path) -> Path:
    """Files (0604, 0755), a nested and an empty directory, a relative and an absolute file link, a directory
    link; readable and writable by the login users."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a")
    (root / "a.txt").chmod(0o604)
    (root / "sub" / "b.txt").write_text("b")
    (root / "sub" / "deeper" / "c.sh").write_text("c")
    (root / "sub" / "deeper" / "c.sh").chmod(0o755)
    (root / "rel-link.txt").symlink_to("sub/b.txt")
    (root / "abs-link.txt").symlink_to(root / "a.txt")
    (root / "linkdir").symlink_to("sub")
    for path in (root, *root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777)
    return root


TREE = ["a.txt", "abs-link.txt", "linkdir/b.txt", "linkdir/deeper/c.sh", "rel-link.txt", "sub/b.txt",
        "sub/deeper/c.sh"]


def listed(stdout: str) -> list[str]:
    return sorted(stdout.splitlines())


# ------------------------------------------------------------------------------ the library


def test_multi_get_dir_gives_every_host_its_tree_and_lists_its_files(fleet, mc, remote_dir, tmp_path):
    remote = readable_tree(remote_dir / "src")
    results = mc.sftp_get_dir(str(remote), tmp_path / "{host}" / "copy")
    assert list(results) == fleet.addresses
    for host, result in results.items():
        assert (result.status, result.stderr) == (0, ""), result
        assert listed(result.stdout) == [str(remote / f) for f in TREE]
        copy = tmp_path / host / "copy"
        assert (copy / "abs-link.txt").read_text() == "a" and not (copy / "abs-link.txt").is_symlink()
        assert (copy / "rel-link.txt").read_text() == "b" and (copy / "linkdir" / "deeper" / "c.sh").read_text() == "c"
        assert (copy / "empty").is_dir()
        assert mode(copy / "a.txt") == 0o604 & ~current_umask() and mode(copy / "sub" / "deeper" / "c.sh") == 0o755 \
            & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_multi_get_dir_reports_each_failed_file_with_its_kind_and_keeps_the_rest(mc, remote_dir, tmp_path):
    remote = readable_tree(remote_dir / "src")
    secret = remote / "sub" / "root-only"
    secret.write_text("s")
    secret.chmod(0o600)  # owned by root (the test runner): the login user cannot read it
    results = mc.sftp_get_dir(str(remote), tmp_path / "{host}")
    for host, result in results.items():
        assert (result.status, result.error) == (-1, "PermissionError")
        assert listed(result.stdout) == [str(remote / f) for f in TREE]  # the others were saved
        failures = result.stderr.splitlines()
        assert len(failures) == 3 and all(line.startswith("PermissionError: ") for line in failures)
        assert failures[-1] == "PermissionError: 2 of 9 entries failed (each named above)"
        assert any(f"{secret} on {host}:" in line for line in failures)
        assert not (tmp_path / host / "sub" / "root-only").exists()


def test_multi_get_dir_fetches_a_file_as_that_file_and_names_a_missing_path(fleet, mc, remote_dir, tmp_path):
    remote = readable_tree(remote_dir / "src")
    results = mc.sftp_get_dir(str(remote / "abs-link.txt"), tmp_path / "{host}.txt")
    assert all(r.stdout == f"{remote / 'abs-link.txt'}\n" and r.status == 0 for r in results.values())
    assert all((tmp_path / f"{host}.txt").read_text() == "a" for host in fleet.addresses)
    results = mc.sftp_get_dir(str(remote_dir / "absent"), tmp_path / "absent-{host}")
    for host, result in results.items():
        assert (result.status, result.error, result.stdout) == (-1, "FileNotFoundError", "")
        assert f"{remote_dir / 'absent'} on {host}:" in result.stderr
    with pytest.raises(ValueError, match=r"must contain '\{host\}'"):
        mc.sftp_get_dir(str(remote), tmp_path / "shared")


def test_multi_put_dir_lists_the_files_and_keeps_modes_without_setuid(mc, remote_dir, tmp_path):
    local = readable_tree(tmp_path / "src")
    (local / "setuid").write_text("x")
    (local / "setuid").chmod(0o4755)
    target = remote_dir / "made" / "dst"  # every host writes the same path here (one filesystem): same bytes
    results = mc.sftp_put_dir(local, str(target))
    for result in results.values():
        assert (result.status, result.stderr) == (0, "")
        assert listed(result.stdout) == sorted([str(local / f) for f in TREE] + [str(local / "setuid")])
    assert (target / "abs-link.txt").read_text() == "a" and not (target / "abs-link.txt").is_symlink()
    assert mode(target / "a.txt") == 0o604 and mode(target / "sub" / "deeper" / "c.sh") == 0o755
    assert mode(target / "setuid") == 0o755  # as OpenSSH's sftp: the 0777 bits only
    assert (target / "a.txt").stat().st_uid != os.getuid()  # written by the login user, through sshd
    with pytest.raises(FileNotFoundError):
        mc.sftp_put_dir(tmp_path / "absent", str(target))


def test_single_host_put_dir_never_sets_setuid(fleet, creds, remote_dir, tmp_path):
    local = tmp_path / "src"
    local.mkdir()
    (local / "tool").write_text("x")
    (local / "tool").chmod(0o6755)
    with Connection(fleet.addresses[0], **creds) as single:
        assert single.sftp_put_dir(str(local), str(remote_dir / "dst")) == ([str(local / "tool")], [])
    assert mode(remote_dir / "dst" / "tool") == 0o755


def test_multi_get_dir_keeps_the_defences_against_a_hostile_server(tmp_path):
    """The workers' downloads are ``get_dir``'s: a traversal name fails alone, setuid never lands."""
    roots = {"/top": Dir({"../escape.txt": File(b"evil"), "tool": File(b"x", 0o4755), "ok.txt": File(b"ok")})}
    with serve(sftp=FakeTree.factory(roots)) as server:
        with MultiConnection([AsyncConnection(server.host, **server.options())]) as multi:
            result = multi.sftp_get_dir("/top", tmp_path / "dst").values()[0]
    assert (result.status, result.error) == (-1, "OSError")
    assert listed(result.stdout) == ["/top/ok.txt", "/top/tool"]
    assert "refused the name '../escape.txt'" in result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["dst", "dst/ok.txt", "dst/tool"]
    assert not mode(tmp_path / "dst" / "tool") & 0o7000


# ------------------------------------------------------------------------------ remote links, single files


def test_a_remote_symlink_is_read_as_the_file_it_points_to(fleet, creds, mc, remote_dir, tmp_path):
    """As scp and sftp: ``/etc/os-release`` (a relative link on most systems) and a link of the test's own."""
    remote = readable_tree(remote_dir / "src")
    with Connection(fleet.addresses[0], **creds) as single:
        single.sftp_read(str(remote / "rel-link.txt"), str(tmp_path / "one"))
        single.sftp_read("/etc/os-release", str(tmp_path / "os-release"))
    assert (tmp_path / "one").read_text() == "b"
    assert (tmp_path / "os-release").read_bytes() == Path("/etc/os-release").read_bytes()
    results = mc.sftp_read(str(remote / "abs-link.txt"), str(tmp_path / "{host}.a"))
    assert all(r.status == 0 for r in results.values()), results
    assert all((tmp_path / f"{host}.a").read_text() == "a" for host in fleet.addresses)


# ------------------------------------------------------------------------------ the command line


def test_get_puts_each_file_under_host_and_remote_path_so_none_overwrites_another(fleet, conn, hosts, remote_dir,
                                                                                tmp_path):
    for sub in ("one", "two"):
        (remote_dir / sub).mkdir(mode=0o777)
        (remote_dir / sub / "app.conf").write_text(f"{sub}\n")
        (remote_dir / sub / "app.conf").chmod(0o644)
    out = tmp_path / "fetched"
    for sub in ("one", "two"):
        done = hussh("get", *hosts, *conn, str(remote_dir / sub / "app.conf"), str(out))
        assert done.returncode == 0, done.stderr
    for host in fleet.addresses:
        for sub in ("one", "two"):
            copy = out / host / str(remote_dir / sub / "app.conf").lstrip("/")
            assert copy.read_text() == f"{sub}\n"
    done = hussh("get", *hosts, *conn, "/etc/os-release", str(out))  # a link on the host: its file is fetched
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"{h}: {out / h / 'etc' / 'os-release'}" for h in fleet.addresses)
    assert (out / fleet.addresses[0] / "etc" / "os-release").read_bytes() == Path("/etc/os-release").read_bytes()


def test_put_of_a_directory_without_r_says_to_use_it(conn, hosts, remote_dir, tmp_path):
    done = hussh("put", *hosts, *conn, str(tmp_path), str(remote_dir / "x"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"hussh: {tmp_path} is a directory: copy it with put -r (on every host {remote_dir / 'x'} " \
                          "becomes a copy of it)\n"


def test_put_r_and_get_r_copy_trees_and_list_each_hosts_files(fleet, conn, hosts, remote_dir, tmp_path):
    local = readable_tree(tmp_path / "src")
    target = remote_dir / "deployed"
    done = hussh("put", "-r", *hosts, *conn, str(local), str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"{h}: {local / f}" for h in fleet.addresses for f in TREE)
    assert (target / "linkdir" / "deeper" / "c.sh").read_text() == "c" and mode(target / "sub" / "deeper" /
                                                                                 "c.sh") == 0o755
    out = tmp_path / "fetched"
    done = hussh("get", "-r", "-b", *hosts, *conn, str(target), str(out))  # -b: identical lists gathered once
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(str(target / "a.txt")) == 1 and fold(fleet.addresses) in done.stdout
    for host in fleet.addresses:
        assert (out / host / str(target).lstrip("/") / "rel-link.txt").read_text() == "b"


def test_get_r_of_a_partly_unreadable_tree_names_the_host_the_file_and_the_kind(fleet, conn, hosts, remote_dir,
                                                                              tmp_path):
    remote = readable_tree(remote_dir / "src")
    (remote / "secret").write_text("s")
    (remote / "secret").chmod(0o600)
    done = hussh("get", "-r", *hosts, *conn, str(remote), str(tmp_path / "out"))
    assert done.returncode == 1
    for host in fleet.addresses:
        assert f"{host}: PermissionError: " in done.stderr and f"{remote / 'secret'} on {host}:" in done.stderr
        assert (tmp_path / "out" / host / str(remote).lstrip("/") / "a.txt").read_text() == "a"
    assert done.stderr.splitlines()[-1].startswith("4 PermissionError in ")


def test_clush_copy_and_rcopy_with_dest(fleet, conn, remote_dir, tmp_path):
    local = readable_tree(tmp_path / "src")
    host = fleet.addresses[1]
    done = hussh("-w", host, *conn, "--copy", str(local), "--dest", str(remote_dir))
    assert done.returncode == 0, done.stderr
    assert (remote_dir / "src" / "sub" / "b.txt").read_text() == "b"
    done = hussh("--rcopy", str(remote_dir / "src"), "-w", host, *conn, "--dest", str(tmp_path / "back"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back" / host / str(remote_dir / "src").lstrip("/") / "sub" / "b.txt").read_text() == "b"


def test_fetched_as_gives_every_remote_path_a_local_path_of_its_own():
    """Relative paths go under ``%7E`` (the login directory, ``~``) and no absolute path can land there."""
    remotes = ["x", "/x", "a/b", "/a/b", "/%7E/a/b", "%7E/a/b", "/%/x", "/%25/x", "/~/x", "~/x", ".", "/", "%7E",
               "/%7E"]
    places = [fetched_as(r) for r in remotes]
    assert len(set(places)) == len(places), dict(zip(remotes, places, strict=True))
    assert all(".." not in Path(p).parts and not Path(p).is_absolute() for p in places)
    assert fetched_as("/%7E/a/b") == "%257E/a/b" and fetched_as("/a%b/c%d") == "a%25b/c%d"


def test_get_keeps_a_relative_and_an_absolute_remote_path_apart(fleet, conn, remote_dir, tmp_path):
    """``get tmp/D/f`` reads the file under the login directory, ``get /tmp/D/f`` the other: two copies."""
    host = fleet.addresses[2]
    relative = f"{remote_dir.relative_to('/')}/f"
    (remote_dir / "f").write_text("absolute\n")
    made = hussh("run", "-w", host, *conn, f"mkdir -p {remote_dir.relative_to('/')} && echo relative > {relative}")
    try:
        assert made.returncode == 0, made.stderr
        out = tmp_path / "out"
        for remote in (relative, str(remote_dir / "f")):
            done = hussh("get", "-w", host, *conn, remote, str(out))
            assert done.returncode == 0, done.stderr
        assert (out / host / "%7E" / relative).read_text() == "relative\n"
        assert (out / host / relative).read_text() == "absolute\n"
    finally:
        hussh("run", "-w", host, *conn, f"rm -r {remote_dir.relative_to('/')} && rmdir --ignore-fail-on-non-empty tmp")


def test_put_creates_the_hosts_files_no_more_open_than_the_local_one(fleet, conn, hosts, remote_dir, tmp_path):
    """As scp, sftp and pdcp: a new file gets the local file's 0777 bits (less the host's umask), also on a
    replay, which the journal records them for; ``sftp_write_data`` takes them as ``mode=``."""
    local = tmp_path / "key"
    local.write_text("secret\n")
    local.chmod(0o600)
    done = hussh("put", *hosts, *conn, "--journal", str(tmp_path / "journal.db"), str(local), str(remote_dir / "key"))
    assert done.returncode == 0, done.stderr
    assert mode(remote_dir / "key") == 0o600 and (remote_dir / "key").read_text() == "secret\n"
    assert Journal(tmp_path / "journal.db").runs(1)[0].operation.mode == 0o600
    with MultiConnection.from_shared_auth(fleet.addresses, username=KEY_USER, private_key=str(fleet.client_key),
                                          port=fleet.port) as multi:
        assert not multi.sftp_write_data("x", str(remote_dir / "data"), mode=0o640).failed
    assert mode(remote_dir / "data") == 0o640


def test_copy_arguments(tmp_path):
    args = parse(["--copy", "app", "-w", "web1", "--dest", "/srv"])
    assert (args.command, args.recursive, args.local, args.remote) == ("put", True, "app", "/srv/app")
    args = parse(["-w", "web1", "-c", "dir/"])
    assert args.remote == os.path.abspath("dir")  # clush: the same path on the hosts
    args = parse(["-w", "web1", "--rcopy", "/var/log/app"])
    assert (args.command, args.recursive, args.remote, args.local_dir) == ("get", True, "/var/log/app", ".")
    assert parse(["get", "-w", "web1", "/x", "--dest", "out"]).local_dir == "out"
    assert parse(["run", "-w", "web1", "cp", "--copy", "a"]).cmd == ["cp", "--copy", "a"]  # the command's own
    with pytest.raises(UsageError, match="not both"):
        parse(["put", "-w", "web1", "a", "b", "--dest", "/srv"])
    with pytest.raises(UsageError, match="required: local_dir"):
        parse(["get", "-w", "web1", "/x"])
    assert [fetched_as(p) for p in ("/etc/hosts", "notes.txt", "./a//b/", "/", ".")] == [
        "etc/hosts", "%7E/notes.txt", "%7E/a/b", "", "%7E"]
    with pytest.raises(UsageError, match=r"must not contain '\.\.'"):
        fetched_as("/srv/../etc/passwd")


def test_directory_copies_refuse_an_engine_whose_workers_may_not_share_these_files(fleet, tmp_path):
    class Elsewhere:
        """An engine never started here: the check comes first."""

        def pool(self, *args: object) -> None:
            raise AssertionError("not reached")

    multi = MultiConnection.from_shared_auth(fleet.addresses[:1], port=fleet.port,
                                             engine=Elsewhere())  # type: ignore[arg-type]  # no engine, on purpose
    with pytest.raises(ValueError, match="local engine only, not Elsewhere"):
        multi.sftp_put_dir(tmp_path, "/srv/x")
    with pytest.raises(ValueError, match="local engine only"):
        multi.sftp_get_dir("/srv/x", tmp_path / "copy")
