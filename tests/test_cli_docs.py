"""Every ```sh and ```python example of docs/cli.md, run against the loopback fleet; a ```text block
right after one is its output, compared line by line (as a multiset: hosts finish in any order).

The fleet is named as the page says, in an ssh config written into the isolated HOME. The only
adaptations: ``/tmp/hussh-docs`` becomes a directory of this test's own, and in the output,
timings and the fleet's port are normalised. A command's exit status must be 0, or the one its
``# exit N`` comment gives. ``hussh tail`` is run in the background: lines are appended to the
followed file until they show, then it gets Ctrl-C.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clirun import REPO, Running, env
from hussh.testing import PASSWORD

DOC = REPO / "docs" / "cli.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
EXIT = re.compile(r"#.*\bexit (\d+)")
DOCS_PORT = "2222"


def examples() -> list[tuple[str, str, str | None]]:
    """(language, code, expected output or None) of each runnable block, in page order."""
    text = DOC.read_text()
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in BLOCK.finditer(text)]
    found = []
    for index, (language, code, _, end) in enumerate(blocks):
        if language not in ("sh", "python"):
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        output = None
        if following and following[0] == "text" and not text[end:following[2]].strip():
            output = following[1]
        found.append((language, code, output))
    return found


EXAMPLES = examples()


@pytest.fixture
def docs_home(fleet, isolated_home, tmp_path):
    """The page's ssh config, key and password file in HOME; a scratch dir as /tmp/hussh-docs; hussh on PATH."""
    ssh = isolated_home / ".ssh"
    ssh.mkdir()
    shutil.copy(fleet.client_key, ssh / "fleet_key")
    (ssh / "fleet_key").chmod(0o600)
    names = [f"Host web{i}\n    HostName {address}\n" for i, address in enumerate(fleet.addresses, 1)]
    (ssh / "config").write_text("".join(names) + "Host old1\n    HostName 127.77.9.9\n"
                                f"Host web* old*\n    Port {fleet.port}\n    User hussh-key\n"
                                "    IdentityFile ~/.ssh/fleet_key\n")
    (isolated_home / ".fleet-password").write_text(PASSWORD + "\n")
    scratch = Path(f"/tmp/hussh-docs-{uuid.uuid4().hex[:10]}")
    scratch.mkdir(mode=0o777)
    scratch.chmod(0o777)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "hussh"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m hussh \"$@\"\n")
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield work, scratch, env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def normalised(text: str, port: int) -> list[str]:
    text = re.sub(r"/tmp/hussh-docs-[0-9a-f]+", "/tmp/hussh-docs", text)
    text = text.replace(f":{port}", f":{DOCS_PORT}")
    text = re.sub(r" in \d+\.\d s$", " in N s", text, flags=re.MULTILINE)
    text = re.sub(r'"seconds":[0-9.e-]+', '"seconds":N', text)
    return sorted(text.splitlines())


def script(code: str) -> str:
    """The block as a bash script that checks each command's exit status."""
    lines = ["set -u"]
    for number, command in enumerate(code.replace("\\\n", " ").splitlines(), 1):
        if not command.strip() or command.lstrip().startswith("#"):
            continue
        expected = EXIT.search(command)
        want = expected.group(1) if expected else "0"
        lines += [command,
                  f'rc=$?; [ $rc -eq {want} ] || {{ echo "line {number} exited $rc, not {want}" >&2; exit 99; }}']
    return "\n".join(lines) + "\n"


def test_the_page_has_examples_of_every_command_and_mode():
    code = "\n".join(code for _, code, _ in EXAMPLES)
    for piece in ("hussh run", "hussh put", "hussh get", "hussh tail", " -B ", " -L ", " -g ", " -w '@", " --json ",
                  " -q ", " --outdir ", " --hostfile ", " --inventory ", " -x ", " -J ", " -A ", " -v ",
                  "HUSSH_PASSWORD", "grouped(", "summary()"):
        assert piece in code, piece


def test_every_example_runs_as_documented(docs_home, fleet):
    """In page order, in one HOME and working directory, as a reader's session would (later examples use
    files made by earlier ones); every failing example is reported."""
    work, scratch, environment = docs_home
    failures = []
    for number, (language, code, expected) in enumerate(EXAMPLES, 1):
        code = code.replace("/tmp/hussh-docs", str(scratch))
        try:
            if "hussh tail" in code:
                _tail(code, scratch, work)
                continue
            output = _python(code, work, environment) if language == "python" else _run(script(code), work, environment)
            if expected is not None:
                assert normalised(output, fleet.port) == normalised(expected, fleet.port)
        except AssertionError as exc:
            failures.append(f"example {number}:\n{code}\n{exc}")
    assert not failures, "\n\n".join(failures)


def _python(code: str, work: Path, environment: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=environment, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _run(bash: str, work: Path, environment: dict[str, str]) -> str:
    """Run ``bash`` with no terminal (``-A`` then reads the password from stdin); return stdout + stderr."""
    done = subprocess.run(["bash", "-c", bash], cwd=work, env=environment, input=PASSWORD + "\n",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90,
                          start_new_session=True)
    assert done.returncode == 0, done.stdout
    return done.stdout.replace("Warning: Password input may be echoed.\n", "").replace("Password: ", "")


def _tail(code: str, scratch: Path, work: Path) -> None:
    [command] = [line for line in code.splitlines() if line.startswith("hussh tail")]
    words = shlex.split(command.split("#")[0])
    log = Path(words[-1])
    assert log.parent == scratch
    log.touch()
    log.chmod(0o666)
    run = Running(*words[1:], cwd=work)
    try:
        deadline = time.monotonic() + 20
        while True:  # it follows from the end, from a moment not shown: append until the line shows
            assert time.monotonic() < deadline and run.proc.poll() is None, (run.out, run.err)
            with log.open("a") as handle:
                handle.write("hello from the docs test\n")
            if run.saw(lambda: "web1: hello from the docs test\n" in run.out, timeout=0.3):
                break
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=15) == int(EXIT.findall(command)[0])
    finally:
        run.kill()
