"""Nothing a server says makes hussh write outside the destination the caller named, or more openly than the
remote file: hostile asyncssh servers (``hussh.testing.hostile``) list traversal names, absolute paths,
NUL and control characters, setuid modes and lying sizes; real sshd serves 0600 files and ``-`` paths;
host names such as ``..`` (ssh config aliases of real hosts) become file names.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from clirun import hussh
from hussh import Connection
from hussh._cli_output import Display
from hussh._result import SSHResult
from hussh.errors import OutputLimitExceeded
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from hussh.testing.hostile import Dir, FakeTree, File, scp_source, serve

UMASK = 0o027  # not the usual 022, so that a test sees it applied


@pytest.fixture
def umask():
    previous = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(previous)


def tree_server(roots):
    return serve(sftp=FakeTree.factory(roots))


def files_under(root: Path) -> set[str]:
    """Every file and directory below ``root``, relative to it (links not followed)."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ------------------------------------------------------------------------------ names in a listing


@pytest.mark.parametrize("name, why", [
    ("../escape.txt", "contains a path separator"),
    ("sub/../../escape.txt", "contains a path separator"),
    ("{outside}/escape.txt", "is an absolute path"),
    ("nul\0byte", "contains a NUL byte"),
    ("bell\x07\x1b]0;title", "contains a control character"),
    ("new\nline", "contains a control character"),
    ("", "is empty"),
    (b"caf\xe9", "is not UTF-8"),
], ids=["dotdot", "nested-dotdot", "absolute", "nul", "escape-sequence", "newline", "empty", "not-utf8"])
def test_get_dir_refuses_a_name_that_is_not_one_file_name(tmp_path, caplog, name, why):
    outside = tmp_path / "outside"
    outside.mkdir()
    if isinstance(name, str):
        name = name.replace("{outside}", str(outside))
    roots = {"/top": Dir({name: File(b"evil"), "ok.txt": File(b"ok")})}
    with tree_server(roots) as server, Connection(server.host, **server.options()) as conn:
        transferred, failed = conn.sftp_get_dir("/top", str(tmp_path / "dst"))
        shown = name if isinstance(name, str) else name.decode(errors="backslashreplace")
        assert transferred == ["/top/ok.txt"]
        assert failed == [f"/top/{shown}"]
        assert files_under(tmp_path) == {"outside", "dst", "dst/ok.txt"}
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            f"hussh: refused the name {shown!r} that {server.host}:{server.port} listed in /top: it {why}"]
        with pytest.raises(OSError, match="refused the name") as caught:
            conn.sftp_get_dir("/top", str(tmp_path / "dst2"), fail_fast=True)
        assert caught.value.errno == errno.EINVAL


def test_get_dir_skips_dot_and_dotdot_even_as_directories_with_files(tmp_path):
    """A server may list ``..`` (or ``.``) as a directory holding files: those are never entered."""
    roots = {"/top": Dir({"..": Dir({"escape.txt": File(b"evil")}), ".": Dir({"also.txt": File(b"evil")}),
                          "ok.txt": File(b"ok")})}
    with tree_server(roots) as server, Connection(server.host, **server.options()) as conn:
        assert conn.sftp_get_dir("/top", str(tmp_path / "dst")) == (["/top/ok.txt"], [])
    assert files_under(tmp_path) == {"dst", "dst/ok.txt"}


def test_get_dir_takes_a_backslash_as_part_of_a_name(tmp_path):
    """On POSIX ``\\`` separates nothing: kept as a character of the name, as OpenSSH's sftp does."""
    roots = {"/top": Dir({"back\\slash": File(b"b")})}
    with tree_server(roots) as server, Connection(server.host, **server.options()) as conn:
        assert conn.sftp_get_dir("/top", str(tmp_path / "dst")) == (["/top/back\\slash"], [])
    assert (tmp_path / "dst" / "back\\slash").read_bytes() == b"b"


def test_get_dir_follows_no_local_link_out_of_the_destination(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("mine")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "linkdir").symlink_to(outside)
    (dst / "link.txt").symlink_to(outside / "target.txt")
    roots = {"/top": Dir({"linkdir": Dir({"x.txt": File(b"evil")}), "link.txt": File(b"evil"),
                          "ok.txt": File(b"ok")})}
    with tree_server(roots) as server, Connection(server.host, **server.options()) as conn:
        transferred, failed = conn.sftp_get_dir("/top", str(dst))
        assert transferred == ["/top/ok.txt"]
        assert sorted(failed) == ["/top/link.txt", "/top/linkdir"]
        assert files_under(outside) == {"target.txt"} and (outside / "target.txt").read_text() == "mine"
        with pytest.raises(OSError, match="a symbolic link is in the way") as caught:
            conn.sftp_get_dir("/top", str(dst), fail_fast=True)
        assert caught.value.filename == str(dst / "link.txt")


def test_get_dir_stops_an_endless_tree(tmp_path):
    """A server can invent a new directory at every level (each with its own real path): 64 levels, as OpenSSH."""
    class Endless(FakeTree):
        def node(self, path):
            return Dir({"d": Dir()}) if path.startswith(b"/top") else super().node(path)

    with serve(sftp=Endless.factory({})) as server, Connection(server.host, **server.options()) as conn:
        transferred, failed = conn.sftp_get_dir("/top", str(tmp_path / "dst"))
    assert transferred == [] and failed == ["/top" + "/d" * 65]
    assert (tmp_path / "dst" / os.path.join(*["d"] * 64)).is_dir()


# ------------------------------------------------------------------------------ modes and sizes


@pytest.mark.parametrize("preserve", [True, False], ids=["preserve", "default"])
def test_get_dir_modes_keep_only_the_0777_bits_less_the_umask(tmp_path, umask, preserve):
    roots = {"/top": Dir({"setuid": File(b"x", 0o4777), "setgid": File(b"x", 0o2755), "sticky": File(b"x", 0o1666),
                          "private": File(b"x", 0o600), "readonly": File(b"x", 0o444),
                          "dir": Dir({"inner": File(b"x", 0o640)}, 0o4555)})}
    with tree_server(roots) as server, Connection(server.host, **server.options()) as conn:
        transferred, failed = conn.sftp_get_dir("/top", str(tmp_path / "dst"), preserve_permissions=preserve)
    assert failed == [] and len(transferred) == 6
    dst = tmp_path / "dst"
    owner_write = 0 if preserve else 0o200  # as OpenSSH's sftp: without -p the owner may write the copy
    expected = {"setuid": 0o777, "setgid": 0o755, "sticky": 0o666, "private": 0o600, "readonly": 0o444,
                "dir/inner": 0o640}
    for name, bits in expected.items():
        assert mode(dst / name) == (bits | owner_write) & ~umask, name
    assert mode(dst / "dir") == ((0o555 if preserve else 0o755) & ~umask)


class GatedReads(FakeTree):
    """Holds every read until ``gate`` opens: the test looks at the local file in the meantime."""

    gate = threading.Event()

    async def read(self, file_obj, offset, size):
        await asyncio.to_thread(self.gate.wait, 30)
        return super().read(file_obj, offset, size)


@pytest.mark.parametrize("call", ["sftp_read", "sftp_get_dir"])
def test_a_private_file_is_never_more_open_while_it_arrives(tmp_path, call):
    GatedReads.gate.clear()
    roots = {"/top": Dir({"secret": File(b"s" * 100_000, 0o600)})}
    local = tmp_path / "secret"
    with serve(sftp=GatedReads.factory(roots)) as server, Connection(server.host, **server.options()) as conn:
        remote, target = ("/top/secret", str(local)) if call == "sftp_read" else ("/top", str(tmp_path))
        worker = threading.Thread(target=getattr(conn, call), args=(remote, target))
        worker.start()
        try:
            for _ in range(3000):
                if local.exists():
                    break
                time.sleep(0.01)
            assert mode(local) == 0o600  # before a byte arrived
        finally:
            GatedReads.gate.set()
            worker.join(30)
    assert local.read_bytes() == b"s" * 100_000 and mode(local) == 0o600


class OverlongReads(FakeTree):
    """Sends the whole rest of the file to every read, whatever size was asked for."""

    def read(self, file_obj, offset, size):
        return file_obj.data[offset:]


def test_a_file_never_grows_past_the_size_the_server_stated(tmp_path):
    roots = {"/top": Dir({"liar": File(b"0123456789" + b"x" * 100_000, size=10)})}
    with serve(sftp=OverlongReads.factory(roots)) as server, Connection(server.host, **server.options()) as conn:
        conn.sftp_read("/top/liar", str(tmp_path / "one"))
        conn.sftp_get_dir("/top", str(tmp_path / "tree"))
    assert (tmp_path / "one").read_bytes() == b"0123456789"
    assert (tmp_path / "tree" / "liar").read_bytes() == b"0123456789"


@pytest.fixture
def real(fleet, connect, creds, remote_dir):
    """A real sshd, and a 0600 file on it owned by the login user (made through the server, umask 077)."""
    conn = connect(fleet.addresses[0], **creds)
    conn.execute(f"umask 077; printf secret > {remote_dir}/secret")
    assert mode(remote_dir / "secret") == 0o600
    return conn


def test_a_remote_0600_file_arrives_0600_from_a_real_server(real, remote_dir, tmp_path, umask):
    real.sftp_read(str(remote_dir / "secret"), str(tmp_path / "sftp"))
    real.scp_read(str(remote_dir / "secret"), str(tmp_path / "scp"))
    earlier = tmp_path / "earlier"
    earlier.write_text("an older, public copy")
    earlier.chmod(0o644)
    real.sftp_read(str(remote_dir / "secret"), str(earlier))
    into = tmp_path / "into"
    into.mkdir()
    real.sftp_read(str(remote_dir / "secret"), str(into))  # a directory: the file is named after the remote path
    for name in ("sftp", "scp", "earlier", "into/secret"):
        assert (tmp_path / name).read_text() == "secret" and mode(tmp_path / name) == 0o600, name
    real.execute(f"chmod 4755 {remote_dir}/secret")  # the login user's own file: setuid is allowed
    real.sftp_read(str(remote_dir / "secret"), str(tmp_path / "sftp-setuid"))
    real.scp_read(str(remote_dir / "secret"), str(tmp_path / "scp-setuid"))
    assert mode(tmp_path / "sftp-setuid") == mode(tmp_path / "scp-setuid") == 0o755 & ~umask


def test_hussh_get_keeps_a_0600_file_0600(real, fleet, remote_dir, tmp_path):
    done = hussh("get", "-w", fleet.addresses[0], "-l", PASSWORD_USER, "--port", str(fleet.port),
                 str(remote_dir / "secret"), str(tmp_path / "fetched"), HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "fetched" / fleet.addresses[0] / str(remote_dir / "secret").lstrip("/")) == 0o600


# ------------------------------------------------------------------------------ scp


@pytest.mark.parametrize("into", ["file", "directory"])
def test_scp_read_saves_only_the_file_asked_for(tmp_path, umask, into):
    """The server's scp names files and modes: another name, a second file, setuid bits; none of it lands."""
    sent = scp_source(("evil.sh", 0o4755, b"#!/bin/sh\n"), ("second", 0o4777, b"wanted"))
    with serve(process=sent) as server, Connection(server.host, **server.options()) as conn:
        target = tmp_path / "wanted.txt" if into == "file" else tmp_path
        conn.scp_read("/srv/wanted.txt", str(target))
    assert files_under(tmp_path) == {"wanted.txt"}
    assert (tmp_path / "wanted.txt").read_bytes() == b"wanted" and mode(tmp_path / "wanted.txt") == 0o777 & ~umask


def test_scp_read_of_no_file_names_the_remote_path(tmp_path):
    with serve(process=scp_source()) as server, Connection(server.host, **server.options()) as conn:
        where = f"/srv/wanted.txt on {server.host}:{server.port}"
        with pytest.raises(OSError, match="sent no file") as caught:
            conn.scp_read("/srv/wanted.txt")
        assert caught.value.filename == where
        with pytest.raises(OSError, match="sent no file"):
            conn.scp_read("/srv/wanted.txt", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_scp_paths_starting_with_a_dash_are_file_names(fleet, connect, creds, tmp_path):
    conn = connect(fleet.addresses[1], **creds)
    name = f"-hussh-{uuid.uuid4().hex[:8]}.txt"  # relative: in the login user's home
    try:
        conn.scp_write_data("dash\n", name)
        assert conn.execute(f"cat ./{name}").stdout == "dash\n"
        assert conn.scp_read(name) == "dash\n"
        conn.scp_read(name, str(tmp_path / "copy"))
        assert (tmp_path / "copy").read_text() == "dash\n"
        local = tmp_path / "upload"
        local.write_text("up\n")
        conn.scp_write(str(local), name)
        assert conn.scp_read(name) == "up\n"
        with pytest.raises(FileNotFoundError) as caught:
            conn.scp_read(f"-absent-{name}")
        assert caught.value.filename == f"-absent-{name} on {conn.host}:{conn.port}"
    finally:
        conn.execute(f"rm -f ./{name}")


# ------------------------------------------------------------------------------ host names as file names

ODD_HOSTS = {"..": "%2E%2E", ".": "%2E", "a/b": "a%2Fb", "50%": "50%25"}


@pytest.fixture
def odd_config(fleet, tmp_path) -> Path:
    """An ssh config naming real fleet hosts ``..``, ``.``, ``a/b`` and ``50%``."""
    path = tmp_path / "ssh_config"
    path.write_text("".join(textwrap.dedent(f"""\
        Host {alias}
            HostName {address}
        """) for alias, address in zip(ODD_HOSTS, fleet.addresses)))
    return path


@pytest.mark.parametrize("template", ["{host}", "{host}/copy"])
def test_sftp_read_never_writes_outside_for_a_host_named_dotdot(fleet, remote_dir, tmp_path, odd_config, template):
    (remote_dir / "conf").write_text("c")
    out = tmp_path / "out"
    out.mkdir()
    with MultiConnection.from_shared_auth(list(ODD_HOSTS), username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, ssh_config=str(odd_config)) as mc:
        results = mc.sftp_read(str(remote_dir / "conf"), str(out / template))
    assert not results.failed, {h: r.stderr for h, r in results.items()}
    written = {template.replace("{host}", name) for name in ODD_HOSTS.values()}
    assert files_under(tmp_path) == {"ssh_config", "out"} | {f"out/{w}" for w in written} | (
        {f"out/{name}" for name in ODD_HOSTS.values()} if "/" in template else set())
    assert {h: r.stdout for h, r in results.items()} == {
        h: str(out / template.replace("{host}", name)) for h, name in ODD_HOSTS.items()}


def test_hussh_get_never_writes_outside_for_a_host_named_dotdot(fleet, remote_dir, tmp_path, odd_config):
    (remote_dir / "conf").write_text("c")
    done = hussh("get", "-w", "..,.", "-F", str(odd_config), "-l", PASSWORD_USER, "--port", str(fleet.port),
                 str(remote_dir / "conf"), str(tmp_path / "fetched"), HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    parts = str(remote_dir / "conf").lstrip("/").split("/")  # LOCAL_DIR/HOST/REMOTE: each level of it
    levels = ["/".join(parts[:n]) for n in range(len(parts) + 1)]
    assert files_under(tmp_path) == {"ssh_config", "fetched"} | {
        f"fetched/{name}/{level}".rstrip("/") for name in ("%2E%2E", "%2E") for level in levels}


def test_outdir_files_stay_inside_and_private(tmp_path, umask):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "web.out"
    earlier.write_text("from an earlier run")
    earlier.chmod(0o644)
    display = Display("quiet", 7, out)
    hosts = {"..": "%2E%2E", ".": "%2E", "": "%", "a/b": "a%2Fb", "x\0y": "x%00y", "\x1b[2J": "%1B[2J", "web": "web"}
    for host in hosts:
        display.host(host, SSHResult("out\n", "err\n", 0), 0.1)
    assert files_under(tmp_path) == {"out"} | {f"out/{n}.{s}" for n in hosts.values() for s in ("out", "err", "status")}
    assert {mode(path) for path in out.iterdir()} == {0o600 & ~umask}
    assert earlier.read_text() == "out\n"


class SizesOf(OverlongReads):
    """``OverlongReads`` whose STAT and FSTAT give every file the size ``claimed`` (``None``: no size at all)."""

    def __init__(self, chan, roots, claimed: int | None) -> None:
        super().__init__(chan, roots)
        self.claimed = claimed

    def stat(self, path):
        attrs = super().stat(path)
        attrs.size = self.claimed
        return attrs

    def fstat(self, file_obj):
        attrs = super().fstat(file_obj)
        attrs.size = self.claimed
        return attrs


@pytest.mark.parametrize(("claimed", "second"), [(None, slice(64, 128)), (10**15, slice(64, 128)), (0, slice(0, 64))],
                         ids=["no-size", "huge", "zero"])
def test_a_tail_reads_what_it_asked_for_whatever_sizes_the_server_states(claimed, second):
    """A tail's reads are bounded by what hussh asked (``max_output``), not by sizes the server states (absent,
    huge, zero: a file shorter than the offset is read from its start, as it says) nor by what it sends."""
    data = bytes(range(48, 58)) * 100
    with serve(sftp=SizesOf.factory({"/top": Dir({"log": File(data)})}, claimed=claimed)) as server, \
            Connection(server.host, **server.options(), max_output=64) as conn:
        with conn.tail("/top/log") as tf:
            assert tf.last_pos == (claimed or 0)
            assert tf.read(0) == data[:64].decode() and tf.last_pos == 64
            assert tf.read() == data[second].decode()


def test_a_file_read_into_memory_stays_within_max_output_however_much_the_server_sends():
    data = bytes(range(48, 58)) * 100
    with serve(sftp=OverlongReads.factory({"/top": Dir({"log": File(data)})})) as server, \
            Connection(server.host, **server.options(), max_output=64) as conn:
        with pytest.raises(OutputLimitExceeded) as caught:
            conn.sftp_read("/top/log")
    assert caught.value.result.stdout == data[:64].decode()
