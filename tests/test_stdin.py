"""A command's stdin: end of file by default, or the given bytes then end of file (single host and fleet)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from clirun import env
from hussh import multi_conn
from hussh.hostlist import fold
from hussh.multi_conn import MAX_STDIN, MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from test_aio import run


@pytest.fixture
def mc(fleet):
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, timeout=60) as conns:
        yield conns


@pytest.mark.parametrize(("command", "printed"), [("cat", ""), ("read x; echo $?", "1\n"), ("head -c 10", "")])
def test_commands_reading_stdin_end_at_once_without_input(connect, fleet, creds, command, printed):
    """No input: stdin is at end of file, so a command reading it ends (it used to wait forever)."""
    conn = connect(fleet.addresses[0], **creds)
    result = conn.execute(command, timeout=20_000)
    assert (result.stdout, result.status) == (printed, 0), result


def test_input_reaches_the_command_then_end_of_file(connect, fleet, creds):
    conn = connect(fleet.addresses[0], **creds)
    assert conn.execute("cat", input="x\ny\n", timeout=20_000).stdout == "x\ny\n"
    assert conn.execute("read a; read b; echo \"$b-$a\"", input=b"1\n2\n", timeout=20_000).stdout == "2-1\n"
    assert conn.execute("head -c 3; echo; cat | wc -c", input=b"abcdefgh", timeout=20_000).stdout == "abc\n5\n"


def test_input_not_read_by_the_command_does_not_hang_it(connect, fleet, creds):
    """A command that exits without reading its (large) stdin finishes; what it printed is kept."""
    conn = connect(fleet.addresses[0], **creds)
    result = conn.execute("echo done", input=os.urandom(8 << 20), timeout=30_000)
    assert (result.stdout, result.status) == ("done\n", 0)


def test_async_connection_input(fleet, creds):
    from hussh.aio import AsyncConnection

    async def body() -> str:
        async with AsyncConnection(fleet.addresses[0], **creds) as conn:
            return (await conn.execute("tr a-z A-Z", input="shout", timeout=20)).stdout

    assert run(body()) == "SHOUT"


def test_every_host_gets_the_same_input(mc):
    results = mc.execute("cat", input="same\n", timeout=20)
    assert {r.stdout for r in results.values()} == {"same\n"} and len(results) == len(mc.hosts)
    results = mc.execute_map({h: f"cat; echo {n}" for n, h in enumerate(mc.hosts)}, input=b"in\n", timeout=20)
    assert [r.stdout for r in results.values()] == [f"in\n{n}\n" for n in range(len(mc.hosts))]


def test_fleet_default_is_end_of_file(mc):
    results = mc.execute("cat; read x || echo eof", timeout=20)
    assert {(r.stdout, r.status) for r in results.values()} == {("eof\n", 0)}


def test_100_mb_of_stdin_arrives_whole_on_every_host(mc):
    """md5 on the host equals the local one: chunks flow in order, nothing lost, then end of file."""
    data = os.urandom(100 << 20)
    results = mc.execute("md5sum", input=data, timeout=120)
    local = hashlib.md5(data).hexdigest()
    assert {r.stdout.split()[0] for r in results.values() if r.stdout} == {local}, results
    assert all(r.status == 0 for r in results.values())


def test_input_over_the_bound_is_refused_clearly(mc, monkeypatch):
    assert MAX_STDIN == (1 << 30) - (1 << 20)  # docs/multi-connection.md states it
    monkeypatch.setattr(multi_conn, "MAX_STDIN", 10)
    with pytest.raises(ValueError, match="input is sent to each worker in one request; 11 bytes is over"):
        mc.execute("cat", input="x" * 11)
    assert mc.execute("cat", input="x" * 10, timeout=20).succeeded


# ----------------------------------------------------------------------------- the command line

def cli(fleet, *args: str, stdin: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``hussh run`` on the fleet by key, with ``stdin`` as its stdin (None: /dev/null)."""
    argv = [sys.executable, "-m", "hussh", "run", "-w", fold(fleet.addresses), "-l", KEY_USER,
            "-i", str(fleet.client_key), "--port", str(fleet.port), *args]
    return subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=env())


def test_cli_forwards_its_stdin_to_every_host(fleet):
    """``echo x | hussh run -w ... cat`` prints x once per host (it used to hang)."""
    done = cli(fleet, "cat", stdin=b"x\n")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.decode().splitlines()) == sorted(f"{h}: x" for h in fleet.addresses)


def test_cli_stdin_at_end_of_file_and_nostdin(fleet):
    done = cli(fleet, "read x || echo eof")
    assert sorted(done.stdout.decode().splitlines()) == sorted(f"{h}: eof" for h in fleet.addresses)
    done = cli(fleet, "--nostdin", "cat; echo end", stdin=b"not sent\n")
    assert sorted(done.stdout.decode().splitlines()) == sorted(f"{h}: end" for h in fleet.addresses)


def test_cli_stdin_file(fleet, tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "blob").write_bytes(data)
    done = cli(fleet, "--stdin", str(tmp_path / "blob"), "md5sum", stdin=b"ignored")
    assert {line.split()[1] for line in done.stdout.decode().splitlines()} == {hashlib.md5(data).hexdigest()}
    missing = cli(fleet, "--stdin", str(tmp_path / "nope"), "cat")
    assert missing.returncode == 2 and b"cannot read" in missing.stderr and b"No such file" in missing.stderr


def test_cli_stdin_over_the_bound_is_refused_before_anything_runs(fleet, tmp_path):
    """The bound is MAX_STDIN; checked here with a smaller one, set in the child process."""
    code = ("import sys; from hussh import _cli_input; _cli_input.MAX_STDIN = 10; "
            "from hussh.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "run", "-w", fold(fleet.addresses), "-l", KEY_USER,
            "-i", str(fleet.client_key), "--port", str(fleet.port), f"touch {tmp_path}/ran"]
    done = subprocess.run(argv, input=b"x" * 11, capture_output=True, timeout=60, env=env())
    assert done.returncode == 2 and b"holds more than 10 bytes" in done.stderr, done.stderr
    assert not (tmp_path / "ran").exists()
