"""The command in a real terminal (tmux): the progress bar while it runs, and ``-A``'s password prompt;
no escape codes when stderr is a pipe."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clirun import REPO, hussh
from hussh.hostlist import fold
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

REFUSED = "127.77.9.8"


class Tmux:
    """A private tmux server (its own socket, so our environment) with one 150x30 window."""

    def __init__(self) -> None:
        self.socket = f"hussh-test-{uuid.uuid4().hex[:10]}"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def start(self, argv: list[str], cwd: Path) -> None:
        """Run ``python -m hussh ARGV`` in the window; the pane then shows ``EXIT=<status>`` and stays."""
        command = (f"cd {shlex.quote(str(cwd))} && PYTHONPATH={shlex.quote(str(REPO))} "
                   f"{shlex.join([sys.executable, '-m', 'hussh', *argv])}; echo EXIT=$?; exec cat")
        self.tmux("new-session", "-d", "-x", "150", "-y", "30", "sh", "-c", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_screen(self, pattern: str, timeout: float = 20) -> str:
        """The screen once ``pattern`` (a regex) shows on it; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if re.search(pattern, screen, re.MULTILINE):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen after {timeout} s:\n{screen}")
            time.sleep(0.05)  # polling the screen: no event tells when tmux redrew

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def term():
    terminal = Tmux()
    try:
        yield terminal
    finally:
        terminal.close()


@pytest.fixture
def conn(fleet) -> list[str]:
    return ["-l", KEY_USER, "-i", str(fleet.client_key), "--port", str(fleet.port)]


def waiting_for(flag: Path) -> str:
    return f"while [ ! -e {flag} ]; do sleep 0.05; done; echo done"


def test_progress_bar_while_running_then_gone_before_the_summary(term, fleet, conn, remote_dir, tmp_path):
    flag = remote_dir / "go"
    term.start(["run", "-w", fold(fleet.addresses), "-H", REFUSED, *conn, "-u", "60", waiting_for(flag)], tmp_path)
    screen = term.wait_screen(r"^ *20%\|.*\| 1/5 hosts, 1 failed, \d running \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ hosts/s\]")
    assert re.search(rf"^{REFUSED}: ConnectError: .*$", screen, re.MULTILINE)  # printed above the bar, whole
    flag.touch()
    screen = term.wait_screen(r"^EXIT=1$")
    assert "hosts, " not in screen  # the bar is gone
    assert re.search(r"^4 ok, 1 ConnectError in \d+\.\d s$", screen, re.MULTILINE)
    assert sorted(re.findall(r"^(127\.77\.0\.\d): done$", screen, re.MULTILINE)) == fleet.addresses


def test_progress_bar_keeps_moving_while_hosts_run(term, fleet, conn, remote_dir, tmp_path):
    """No host finishes for a while (then one): the elapsed time on the bar still counts up each second."""
    flag = remote_dir / "go"
    term.start(["run", "-w", fold(fleet.addresses), "-H", REFUSED, *conn, "-t", "60", waiting_for(flag)], tmp_path)
    term.wait_screen(r"\| 1/5 hosts, 1 failed, \d running \[00:0[0-2]<")
    for second in (3, 4):  # redrawn although nothing finished since
        term.wait_screen(rf"\| 1/5 hosts, 1 failed, \d running \[00:0{second}<", timeout=10)
    flag.touch()
    assert "hosts, " not in term.wait_screen(r"^EXIT=1$")


def test_quiet_draws_no_bar(term, fleet, conn, remote_dir, tmp_path):
    flag = remote_dir / "go"
    term.start(["run", "-q", "-w", fold(fleet.addresses), *conn, "-u", "60", f"touch {remote_dir}/$$.started; "
                + waiting_for(flag)], tmp_path)
    deadline = time.monotonic() + 20
    while len(list(remote_dir.glob("*.started"))) < 4:  # every host runs: a bar would be on the screen by now
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert term.screen().strip() == ""
    flag.touch()
    screen = term.wait_screen(r"^EXIT=0$")
    assert screen.split("\n")[0] == "4 ok in " + screen.split("\n")[0].split(" in ")[1]


def test_no_escape_codes_when_stderr_is_a_pipe(fleet, conn):
    done = hussh("run", "-w", fold(fleet.addresses), "-H", REFUSED, *conn, "sleep 0.5; echo x")
    assert done.returncode == 1
    assert "\x1b" not in done.stderr + done.stdout and "\r" not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == 2  # the refused host's line and the summary


def test_ask_pass_prompts_once_on_the_terminal(term, fleet, tmp_path):
    term.start(["run", "-A", "-l", PASSWORD_USER, "--port", str(fleet.port), "-w", fold(fleet.addresses), "whoami"],
               tmp_path)
    term.wait_screen(r"^Password:\s*$")
    term.send(PASSWORD, "Enter")
    screen = term.wait_screen(r"^EXIT=0$")
    assert PASSWORD not in screen.replace(f"{PASSWORD_USER}\n", "").replace(f": {PASSWORD_USER}", "")
    assert sorted(re.findall(r"^(127\.77\.0\.\d): hussh$", screen, re.MULTILINE)) == fleet.addresses
    assert screen.count("Password:") == 1


def test_enter_lists_the_running_hosts_without_disturbing_the_output(term, fleet, conn, remote_dir, tmp_path):
    """``Enter`` (as in clush) prints the hosts still running with how long each has been going; the key
    is not echoed, every host's output and the summary come through whole, and echo is back after."""
    flag = remote_dir / "go"
    term.start(["run", "-w", fold(fleet.addresses), *conn, "-u", "60",
                f"touch {remote_dir}/$$.started; {waiting_for(flag)}"], tmp_path)
    deadline = time.monotonic() + 20
    while len(list(remote_dir.glob("*.started"))) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(20):  # again until hussh has heard every host start (its Started frames)
        term.send("Enter")
        screen = term.wait_screen(r"^hussh: \d host\(s\) running, slowest first:$")
        if "hussh: 4 host(s)" in screen:
            break
        time.sleep(0.1)
    listed = re.findall(r"^  (127\.77\.0\.\d): (\d+\.\d) s$", screen, re.MULTILINE)
    assert sorted(host for host, _ in listed) == fleet.addresses
    flag.touch()
    screen = term.wait_screen(r"^EXIT=0$")
    assert sorted(re.findall(r"^(127\.77\.0\.\d): done$", screen, re.MULTILINE)) == fleet.addresses
    assert re.search(r"^4 ok in \d+\.\d s$", screen, re.MULTILINE)
    assert "hosts, " not in screen  # an echoed newline would have left a copy of the bar behind
    assert "\n\n" not in screen.split("EXIT=0")[0].strip()
    term.send("echoed-again")  # no Enter: the terminal echoes it (`cat` after us has not read it yet)
    term.wait_screen(r"^echoed-again$")
