"""sudo=True / ``hussh run --sudo`` against the loopback fleet's sudoers (hussh/testing/_users.py):
``hussh`` runs commands as ``hussh-key`` with its password, ``hussh-key`` as ``hussh`` without one."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from clirun import env
from hussh import Journal, SudoError
from hussh.hostlist import fold
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from hussh.workers import protocol as p

pytestmark = pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed (make setup installs it)")

WRONG = "wr0ng-Pa55-zq7"  # distinctive: it must never show up anywhere


@pytest.fixture
def conn(connect, fleet, creds):
    return connect(fleet.addresses[0], **creds)


def test_sudo_answers_the_prompt_once_and_shows_nothing_of_it(conn):
    result = conn.execute("id -un; echo err >&2", sudo=True, sudo_password=PASSWORD, timeout=30_000)
    assert (result.stdout, result.stderr, result.status) == (f"{KEY_USER}\n", "err\n", 0)


def test_a_failing_command_is_not_a_sudo_error(conn):
    result = conn.execute("echo out; exit 3", sudo=True, sudo_password=PASSWORD, timeout=30_000)
    assert (result.stdout, result.status, result.error) == ("out\n", 3, "")


def test_wrong_password_is_a_sudo_error_that_never_shows_the_password(conn):
    with pytest.raises(SudoError, match="sudo refused the password on") as caught:
        conn.execute("touch /tmp/never", sudo=True, sudo_password=WRONG, timeout=30_000)
    assert WRONG not in str(caught.value) and WRONG not in repr(caught.value.result)
    assert "try again" in str(caught.value)  # sudo's own words are quoted


def test_no_password_where_one_is_needed_is_a_sudo_error(conn):
    with pytest.raises(SudoError, match="a password is required"):
        conn.execute("id", sudo=True, timeout=30_000)


def test_nopasswd_needs_no_password_and_never_gets_one_on_stdin(connect, fleet, key_creds):
    conn = connect(fleet.addresses[0], **key_creds)
    assert conn.execute("id -un", sudo=True, timeout=30_000).stdout == f"{PASSWORD_USER}\n"
    result = conn.execute("cat; echo end", sudo=True, sudo_password=WRONG, timeout=30_000)
    assert (result.stdout, result.stderr, result.status) == ("end\n", "", 0)  # the password was never written


def test_input_reaches_the_command_after_the_password(conn):
    result = conn.execute("cat", sudo=True, sudo_password=PASSWORD, input="payload\n", timeout=30_000)
    assert result.stdout == "payload\n"


def test_password_with_a_newline_is_refused(conn):
    with pytest.raises(ValueError, match="newline"):
        conn.execute("id", sudo=True, sudo_password="a\nb")


def test_fleet_kinds_and_journal_never_hold_the_password(fleet, tmp_path):
    journal = Journal(tmp_path / "runs.db")
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, timeout=60, journal=journal) as mc:
        good = mc.execute("id -un", sudo=True, sudo_password=PASSWORD)
        bad = mc.execute("id -un", sudo=True, sudo_password=WRONG)
    assert {r.stdout for r in good.values()} == {f"{KEY_USER}\n"}
    assert {r.error for r in bad.values()} == {"SudoError"} and len(bad.failed) == len(fleet.addresses)
    assert all(r.stderr.startswith("SudoError: sudo refused the password on ") for r in bad.values())
    assert WRONG not in repr(bad) + "".join(r.stdout + r.stderr for r in bad.values())
    assert not any(WRONG.encode() in path.read_bytes() for path in tmp_path.iterdir())


def test_the_worker_request_hides_the_password():
    message = p.Execute(1, [(0, "id")], sudo=True, sudo_password=WRONG)
    assert WRONG not in repr(message) and "sudo_password=***" in repr(message)


def run_cli(fleet, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hussh", "run", "-w", fold(fleet.addresses), "-l", PASSWORD_USER,
            "--port", str(fleet.port), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=env(HUSSH_PASSWORD=PASSWORD, **extra_env))


@pytest.mark.parametrize("flag", [["--sudo"], ["-m", "sudo"]], ids=["--sudo", "-m sudo"])
def test_cli_sudo(fleet, flag):
    done = run_cli(fleet, *flag, "id -un", HUSSH_SUDO_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"{h}: {KEY_USER}" for h in fleet.addresses)


def test_cli_wrong_sudo_password(fleet):
    done = run_cli(fleet, "--sudo", "id -un", HUSSH_SUDO_PASSWORD=WRONG)
    assert done.returncode == 1
    assert WRONG not in done.stdout + done.stderr
    assert done.stderr.count("SudoError: sudo refused the password") == len(fleet.addresses)
