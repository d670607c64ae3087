"""``Connection.remote_copy``: host to host through the client, streamed, with its failures.

The fleet's hosts share this machine's filesystem, so a copy "to the same path on another host"
is a copy of a file onto itself: it must leave the file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hussh
from hussh.aio import AsyncConnection

FILE_SIZE = 50 * 1024 * 1024


@pytest.fixture
def source(connect, fleet, creds):
    return connect(fleet.addresses[0], **creds)


@pytest.fixture
def dest(connect, fleet, key_creds):
    return connect(fleet.addresses[1], **key_creds)


def shared_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o666)
    return path


def test_copies_to_another_host_and_path(source, dest, remote_dir):
    src = shared_file(remote_dir / "src.bin", os.urandom(300_000))
    source.remote_copy(source_path=str(src), dest_conn=dest, dest_path=str(remote_dir / "dst.bin"))
    copied = remote_dir / "dst.bin"
    assert copied.read_bytes() == src.read_bytes()
    assert copied.stat().st_uid != src.stat().st_uid  # written by the destination's login user


def test_replaces_a_longer_destination(source, dest, remote_dir):
    src = shared_file(remote_dir / "short", b"new")
    old = shared_file(remote_dir / "long", b"an older, longer content")
    source.remote_copy(str(src), dest, str(old))
    assert old.read_bytes() == b"new"


def test_empty_file(source, dest, remote_dir):
    src = shared_file(remote_dir / "empty", b"")
    source.remote_copy(str(src), dest, str(remote_dir / "empty-copy"))
    assert (remote_dir / "empty-copy").read_bytes() == b""


def test_default_destination_is_the_same_path_and_a_self_copy_keeps_the_file(source, dest, remote_dir):
    data = os.urandom(700_000)
    src = shared_file(remote_dir / "same.bin", data)
    source.remote_copy(str(src), dest)  # same path on the other host: here, the very same file
    assert src.read_bytes() == data
    source.remote_copy(str(src), source)
    assert src.read_bytes() == data


def test_missing_source_names_the_source_host(source, dest, remote_dir):
    missing = remote_dir / "absent"
    with pytest.raises(FileNotFoundError) as caught:
        source.remote_copy(str(missing), dest, str(remote_dir / "out"))
    assert caught.value.filename == f"{missing} on {source.host}:{source.port}"
    assert not (remote_dir / "out").exists()


def test_missing_destination_directory_names_the_destination_host(source, dest, remote_dir):
    src = shared_file(remote_dir / "src", b"x")
    target = remote_dir / "no-such-dir" / "out"
    with pytest.raises(FileNotFoundError) as caught:
        source.remote_copy(str(src), dest, str(target))
    assert caught.value.filename == f"{target} on {dest.host}:{dest.port}"


def test_source_directory_is_refused(source, dest, remote_dir):
    with pytest.raises(IsADirectoryError) as caught:
        source.remote_copy(str(remote_dir), dest, str(remote_dir / "out"))
    assert caught.value.filename == f"{remote_dir} on {source.host}:{source.port}"


def test_destination_must_be_a_connection(source, fleet, creds, remote_dir):
    src = shared_file(remote_dir / "src", b"x")
    with pytest.raises(TypeError, match="dest_conn must be a Connection"):
        source.remote_copy(str(src), "not-a-connection", str(remote_dir / "out"))
    with pytest.raises(TypeError, match="not AsyncConnection"):
        source.remote_copy(str(src), AsyncConnection(fleet.addresses[1], **creds), str(remote_dir / "out"))


COPY_AND_MEASURE = textwrap.dedent("""
    import json, sys
    from hussh import Connection

    def peak_kib():  # the process's high-water mark of resident memory
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    args = json.loads(sys.argv[1])
    source = Connection(args["source"], **args["source_creds"])
    dest = Connection(args["dest"], **args["dest_creds"])
    source.remote_copy(args["warmup"], dest, args["warmup"] + ".copy")  # SFTP clients and buffers set up
    before = peak_kib()
    source.remote_copy(args["path"], dest, args["path"] + ".copy")
    print(json.dumps({"growth_kib": peak_kib() - before}))
""")


@pytest.mark.slow
def test_50_mb_copy_streams_with_flat_client_memory(fleet, creds, key_creds, remote_dir):
    big = remote_dir / "big.bin"
    with open(big, "wb") as handle:
        for _ in range(FILE_SIZE // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    big.chmod(0o644)
    warmup = shared_file(remote_dir / "warmup.bin", os.urandom(2 * 1024 * 1024))
    args = dict(source=fleet.addresses[0], source_creds=creds, dest=fleet.addresses[1], dest_creds=key_creds,
                path=str(big), warmup=str(warmup))
    env = {**os.environ, "PYTHONPATH": str(Path(hussh.__file__).resolve().parent.parent)}  # the hussh under test
    done = subprocess.run([sys.executable, "-c", COPY_AND_MEASURE, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    growth_mib = json.loads(done.stdout)["growth_kib"] / 1024
    assert growth_mib < 16, f"client peak memory grew {growth_mib:.1f} MiB for a 50 MiB copy"

    def digest(path: Path) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    assert digest(Path(f"{big}.copy")) == digest(big)
