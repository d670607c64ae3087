"""The ``hussh`` command against the loopback fleet, run as a subprocess: output modes, host selection,
exit statuses, bad input, Ctrl-C, logging, put/get/tail."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clirun import Running, children, env, hussh
from hussh import cli
from hussh._cli_args import connect, parse
from hussh.hostlist import fold
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

SUMMARY = re.compile(r"^(\d+ [\w ]+, )*\d+ [\w ]+ in \d+\.\d s$")
REFUSED = ["127.77.9.8", "127.77.9.9"]  # loopback addresses where nothing listens: connection refused


@pytest.fixture
def conn(fleet) -> list[str]:
    return ["-l", KEY_USER, "-i", str(fleet.client_key), "--port", str(fleet.port)]


@pytest.fixture
def hosts(fleet) -> list[str]:
    return ["-w", fold(fleet.addresses)]


def on_first(fleet, then: str, otherwise: str) -> str:
    """A shell command doing ``then`` on the fleet's first host and ``otherwise`` on the others."""
    return f'set -- $SSH_CONNECTION; if [ "$3" = {fleet.addresses[0]} ]; then {then}; else {otherwise}; fi'


def summary_of(stderr: str) -> str:
    last = stderr.splitlines()[-1]
    assert SUMMARY.match(last), last
    return last.rsplit(" in ", 1)[0]


# ----------------------------------------------------------------------------- output modes

def test_default_prints_prefixed_lines_as_each_host_finishes(fleet, conn, hosts, remote_dir):
    first = fleet.addresses[0]
    flag = remote_dir / "go"
    command = on_first(fleet, "echo first",
                       f"while [ ! -e {flag} ]; do sleep 0.05; done; echo rest") + "; echo warn >&2"
    run = Running("run", *hosts, *conn, "-u", "60", command)
    try:
        run.wait_for(lambda: f"{first}: first\n" in run.out, what="the first host's line")
        assert len(run.out) == 1  # the others are still waiting for the flag: lines came as hosts finished
        flag.touch()
        assert run.finish() == 0
    finally:
        run.kill()
    assert sorted(run.out) == sorted([f"{first}: first\n"] + [f"{a}: rest\n" for a in fleet.addresses[1:]])
    assert sorted(run.err[:-1]) == sorted(f"{a}: warn\n" for a in fleet.addresses)
    assert summary_of("".join(run.err)) == "4 ok"


def test_non_zero_exit_is_shown_and_counted(fleet, conn, hosts):
    done = hussh("run", *hosts, *conn, on_first(fleet, "exit 3", "true"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == f"hussh: {fleet.addresses[0]}: exit status 3"
    assert summary_of(done.stderr) == "3 ok, 1 exit 3"


def test_group_gathers_identical_output_and_failures_by_kind(fleet, conn, hosts, blackhole):
    silent = f"{blackhole[0]}:{blackhole[1]}"
    command = on_first(fleet, "whoami; exit 3", "whoami")
    done = hussh("run", "-B", *hosts, "-H", ",".join(REFUSED), "-H", silent, *conn, "-t", "1", command)
    assert done.returncode == 1
    a = fleet.addresses
    rule = "-" * 15
    assert done.stdout == (
        f"{rule}\n{fold(a[1:])} (3)\n{rule}\n{KEY_USER}\n"
        f"{rule}\n{a[0]} (1) exit 3\n{rule}\n{KEY_USER}\n"
        f"{rule}\n127.77.9.[8-9] (2) ConnectError\n{rule}\n"
        f"127.77.9.8: ConnectError: connection refused by 127.77.9.8:{fleet.port}\n"
        f"{rule}\n{silent} (1) ConnectTimeout\n{rule}\n"
        f"{silent}: ConnectTimeout: connecting to {silent} timed out after 1 seconds "
        "(TCP connect, handshake and login)\n"
    )
    assert done.stderr.splitlines()[:-1] == []  # everything but the summary is in the groups
    assert summary_of(done.stderr) == "3 ok, 2 ConnectError, 1 ConnectTimeout, 1 exit 3"


def test_json_is_one_object_per_host_per_line(fleet, conn, hosts):
    done = hussh("run", "--json", *hosts, "-H", REFUSED[0], *conn, "echo out; echo err >&2")
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(list(r) == ["host", "status", "stdout", "stderr", "error", "seconds"] for r in records)
    by_host = {r["host"]: r for r in records}
    assert set(by_host) == {*fleet.addresses, REFUSED[0]}
    for address in fleet.addresses:
        assert by_host[address] | {"seconds": 0} == {"host": address, "status": 0, "stdout": "out\n",
                                                     "stderr": "err\n", "error": "", "seconds": 0}
        assert 0 < by_host[address]["seconds"] < 30
    refused = by_host[REFUSED[0]]
    assert (refused["status"], refused["error"], refused["stdout"]) == (-1, "ConnectError", "")
    assert refused["stderr"].startswith("ConnectError: ")
    assert summary_of(done.stderr) == "4 ok, 1 ConnectError"


def test_outdir_saves_each_hosts_stdout_stderr_and_exit_status(fleet, conn, hosts, tmp_path):
    outdir = tmp_path / "out"
    command = on_first(fleet, "exit 3", "whoami; echo err >&2")
    done = hussh("run", "-q", "--outdir", str(outdir), *hosts, "-H", REFUSED[0], *conn, command)
    assert done.returncode == 1
    first, *others = fleet.addresses
    for address in others:
        assert (outdir / f"{address}.out").read_text() == f"{KEY_USER}\n"
        assert (outdir / f"{address}.err").read_text() == "err\n"
        assert (outdir / f"{address}.status").read_text() == "0\n"
    assert (outdir / f"{first}.status").read_text() == "3\n"
    assert (outdir / f"{REFUSED[0]}.out").read_text() == ""
    assert (outdir / f"{REFUSED[0]}.err").read_text().startswith("ConnectError: ")
    assert (outdir / f"{REFUSED[0]}.status").read_text() == "-1\n"
    assert len(list(outdir.iterdir())) == 15


def test_errdir_takes_stderr_apart_from_outdir(fleet, conn, hosts, tmp_path):
    outdir, errdir = tmp_path / "out", tmp_path / "err"
    done = hussh("run", "-q", "--outdir", str(outdir), "--errdir", str(errdir), *hosts, *conn, "echo out; echo err >&2")
    assert done.returncode == 0
    assert sorted(p.name for p in errdir.iterdir()) == sorted(f"{a}.err" for a in fleet.addresses)
    assert {p.read_text() for p in errdir.iterdir()} == {"err\n"}
    assert sorted(p.name for p in outdir.iterdir()) == sorted(f"{a}.{kind}" for a in fleet.addresses
                                                             for kind in ("out", "status"))


def test_quiet_prints_only_the_summary(conn, hosts):
    done = hussh("run", "-q", *hosts, *conn, "whoami; echo err >&2")
    assert (done.returncode, done.stdout, len(done.stderr.splitlines())) == (0, "", 1)
    assert summary_of(done.stderr) == "4 ok"


# ----------------------------------------------------------------------------- hosts

def test_host_files_ranges_and_exclusion(fleet, conn, tmp_path):
    a = fleet.addresses
    prefix = a[0].rsplit(".", 1)[0]
    hosts_file = tmp_path / "fleet.hosts"
    hosts_file.write_text(f"# the web tier\n{prefix}.[1-3]   # three of them\n\n{a[3]}\n")
    done = hussh("run", "--json", "--hostfile", str(hosts_file), "-x", a[1], "-x", "*.3", *conn, "true")
    assert done.returncode == 0
    assert {json.loads(line)["host"] for line in done.stdout.splitlines()} == {a[0], a[3]}
    done = hussh("run", "--json", "-H", f"{a[2]},{a[0]}", "-w", f"{prefix}.[1-2]", *conn, "true")
    assert sorted(json.loads(line)["host"] for line in done.stdout.splitlines()) == sorted(a[:3])


def test_ssh_config_names_and_password_from_the_environment(fleet, isolated_home):
    """Names from ~/.ssh/config resolve; ``HUSSH_PASSWORD`` logs in (never a command-line option)."""
    ssh = isolated_home / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text("".join(f"Host web{i}\n  HostName {a}\n" for i, a in enumerate(fleet.addresses, 1))
                                + f"Host web*\n  Port {fleet.port}\n")
    done = hussh("run", "-w", "web[1-4]", "-l", PASSWORD_USER, "whoami", HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [f"web{i}: {PASSWORD_USER}" for i in range(1, 5)]
    done = hussh("run", "-w", "web1", "-l", PASSWORD_USER, "--connect-timeout", "5", "whoami")
    assert done.returncode == 1 and "AuthenticationError" in done.stderr  # no password, no key


def test_a_host_that_does_not_resolve_is_that_hosts_failure(fleet, conn, hosts):
    done = hussh("run", *hosts, "-H", "no-such-host!", *conn, "true")  # '!' fails before any DNS query
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith("no-such-host!: ResolveError: cannot resolve host")
    assert summary_of(done.stderr) == "4 ok, 1 ResolveError"


# ----------------------------------------------------------------------------- bad input

BAD_INPUT = {
    "unknown option": (["--bogus"], "unrecognized arguments: --bogus"),
    "missing host file": (["--hostfile", "missing.hosts"], "cannot read host file missing.hosts: No such file"),
    "empty host list": (["--hostfile", "empty.hosts"], "no hosts given"),
    "everything excluded": (["-w", "a[1-2]", "-x", "a*"], "no hosts left after -x"),
    "no host option": ([], "no hosts given"),
    "missing key": (["-i", "missing_key"], "cannot use private key missing_key"),
    "unreadable key": (["-i", "not_a_key"], "cannot use private key not_a_key: Invalid private key"),
    "malformed range": (["-w", "web[1-"], "unbalanced '['"),
    "reversed range": (["-w", "web[3-1]"], "start is greater than end"),
    "malformed ssh config": (["-F", "bad_config"], "Invalid Port integer value: notaport"),
    "missing ssh config": (["-F", "missing_config"], "ssh config file missing_config does not exist"),
    "bad port": (["--port", "0"], "want a port number 1-65535"),
    "negative timeout": (["-t", "-1"], "want a number of seconds >= 0"),
    "two output modes": (["-B", "--json"], "not allowed with argument"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2_with_nothing_run(case, fleet, remote_dir, tmp_path):
    options, message = BAD_INPUT[case]
    (tmp_path / "empty.hosts").write_text("# nothing here yet\n\n")
    (tmp_path / "not_a_key").write_text("this is not a key\n")
    (tmp_path / "bad_config").write_text("Host *\n  Port notaport\n")
    hosts = [] if options == [] or "--hostfile" in options or "-w" in options else ["-H", fleet.addresses[0]]
    marker = remote_dir / "ran"
    done = hussh("run", *hosts, "--port", str(fleet.port), *options, f"touch {marker}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert message in done.stderr
    assert not marker.exists()


def test_put_of_a_missing_file_and_run_without_command_are_bad_usage(fleet, conn, hosts, remote_dir):
    done = hussh("put", *hosts, *conn, "/nonexistent/file", str(remote_dir / "x"))
    assert (done.returncode, done.stderr) == (2, "hussh: cannot read /nonexistent/file: No such file or directory\n")
    done = hussh("run", *hosts, *conn)
    assert (done.returncode, done.stderr) == (2, "hussh run: no command given (see 'hussh run --help')\n")


# ----------------------------------------------------------------------------- Ctrl-C

@pytest.mark.parametrize("mode", ["lines", "group"])
def test_ctrl_c_stops_at_once_leaves_no_worker_and_shows_what_finished(mode, fleet, conn, hosts):
    first = fleet.addresses[0]
    token = f"{time.time_ns() % 10**6}"
    command = on_first(fleet, "echo fast", f"sleep 30.{token}")
    run = Running("run", *(["-B"] if mode == "group" else []), *hosts, *conn, command)
    try:
        if mode == "lines":
            run.wait_for(lambda: f"{first}: fast\n" in run.out, what="the fast host's line")
        else:  # nothing is printed before the end: wait until every slow host runs its sleep
            run.wait_for(lambda: _remote_sleeps(token) == 3, what="three remote sleeps")
        workers = children(run.proc.pid)
        assert workers
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=15) == 130
    finally:
        run.kill()
    expected = ([f"{first}: fast\n"] if mode == "lines"
                else ["-" * 15 + "\n", f"{first} (1)\n", "-" * 15 + "\n", "fast\n"])
    assert run.out == expected
    assert summary_of("".join(run.err)) == "1 ok, 3 not finished"
    assert [pid for pid in workers if os.path.exists(f"/proc/{pid}")] == []
    # The remote sleeps are stopped too, but only best effort (a worker gets ABORT_WAIT = 1.5 s to send the
    # kills before it is killed): on a machine loaded far past its cores that was seen to fail, so not asserted.


def _remote_sleeps(token: str) -> int:
    found = subprocess.run(["pgrep", "-c", "-f", f"^sleep 30.{token}$"], capture_output=True, text=True)
    return int(found.stdout.strip() or 0)


def test_broken_pipe_ends_quietly(conn, hosts):
    proc = subprocess.Popen([sys.executable, "-m", "hussh", "run", *hosts, *conn, "seq 200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env())
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline().endswith(b"\n")
        proc.stdout.close()  # as `| head -1` does
        assert proc.wait(timeout=30) == 128 + signal.SIGPIPE
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ----------------------------------------------------------------------------- logging

def test_asyncssh_is_quiet_by_default_and_v_shows_each_connection_from_the_workers(fleet, conn, hosts):
    quiet = hussh("run", *hosts, *conn, "true")
    assert quiet.returncode == 0 and quiet.stderr.splitlines()[:-1] == []
    run = Running("run", "-v", *hosts, *conn, "true")
    try:
        assert run.finish() == 0
    finally:
        run.kill()
    connected = [line for line in run.err if "Connected to SSH server at" in line]
    assert sorted(re.findall(r"at ([\d.]+),", line)[0] for line in connected) == sorted(fleet.addresses)
    pids = {int(re.findall(r"\[(\d+)\]", line)[0]) for line in connected}
    assert run.proc.pid not in pids  # logged by the worker processes, which inherited the configuration
    assert any("Auth for user hussh-key succeeded" in line for line in run.err)


# ----------------------------------------------------------------------------- put, get, tail

def test_put_then_get_one_file_per_host(fleet, conn, hosts, remote_dir, tmp_path):
    local = tmp_path / "app.conf"
    local.write_text("setting = 1\n")
    remote = remote_dir / "app.conf"
    done = hussh("put", *hosts, *conn, str(local), str(remote))
    assert (done.returncode, done.stdout) == (0, "")
    assert remote.read_text() == "setting = 1\n"
    fetched = tmp_path / "fetched"
    done = hussh("get", *hosts, *conn, str(remote), str(fetched))
    assert done.returncode == 0
    assert sorted(p.name for p in fetched.iterdir()) == sorted(fleet.addresses)
    copies = {a: fetched / a / str(remote).lstrip("/") for a in fleet.addresses}  # LOCAL_DIR/HOST/REMOTE
    assert all(copy.read_text() == "setting = 1\n" for copy in copies.values())
    assert sorted(done.stdout.splitlines()) == sorted(f"{a}: {copy}" for a, copy in copies.items())
    done = hussh("get", "-B", *hosts, *conn, str(remote_dir / "missing"), str(fetched))
    assert done.returncode == 1
    assert summary_of(done.stderr) == "4 FileNotFoundError"


def test_tail_follows_every_host_until_ctrl_c(fleet, conn, hosts, remote_dir):
    log = remote_dir / "app.log"
    log.write_text("old line\n")
    log.chmod(0o666)
    os.utime(log, (time.time() - 60,) * 2)  # not written since long before the command starts: not shown
    run = Running("tail", *hosts, "-H", REFUSED[0], *conn, "--interval", "0.1", "-n", "0", str(log))
    try:
        run.wait_for(lambda: any(REFUSED[0] in line for line in run.err), what="the refused host's error")
        number = 0
        deadline = time.monotonic() + 20
        while True:  # each tail opens at the file's end (-n 0), at a moment not shown: append until all show lines
            assert time.monotonic() < deadline and run.proc.poll() is None, (run.out, run.err)
            number += 1
            with log.open("a") as handle:
                handle.write(f"line {number}\n")
            if run.saw(lambda: len({line.split(": ")[0] for line in run.out if ": line" in line}) == 4, timeout=0.3):
                break
        with log.open("a") as handle:
            handle.write("last\npartial")
        run.wait_for(lambda: sum(line.endswith(": last\n") for line in run.out) == 4, what="the last lines")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=15) == 130
    finally:
        run.kill()
    for address in fleet.addresses:
        mine = [line.split(": ", 1)[1] for line in run.out if line.startswith(f"{address}: ")]
        assert mine[-2:] == ["last\n", "partial\n"] and "old line\n" not in mine
        assert mine[:-2] == [f"line {n}\n" for n in range(number - len(mine) + 3, number + 1)]
    assert run.err[0].startswith(f"{REFUSED[0]}: ConnectError: ")


def test_tail_exits_1_when_no_host_can_be_followed(conn, hosts, remote_dir):
    done = hussh("tail", *hosts, *conn, str(remote_dir / "missing.log"))
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 4 and "FileNotFoundError" in done.stderr


# ----------------------------------------------------------------------------- the rest

def test_version_and_help():
    assert hussh("--version").stdout == "hussh 0.1.0\n"
    assert hussh("run", "--help").returncode == 0


def test_fleet_says_so_when_the_testing_tool_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hussh.testing", None)  # import hussh.testing now fails,
    monkeypatch.setitem(sys.modules, "hussh.testing.cli", None)  # even when an earlier test imported it
    assert cli.main(["fleet", "up"]) == 2
    assert capsys.readouterr().err == "hussh fleet: not available: this installation has no hussh.testing.cli\n"


def test_fleet_delegates_to_the_testing_tool(monkeypatch):
    import types

    calls: list[list[str]] = []

    def main(argv: list[str]) -> int:
        calls.append(argv)
        return 7

    package, module = types.ModuleType("hussh.testing"), types.ModuleType("hussh.testing.cli")
    module.main = main  # type: ignore[attr-defined]  # a stand-in module, filled in here
    package.cli = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hussh.testing", package)
    monkeypatch.setitem(sys.modules, "hussh.testing.cli", module)
    assert cli.main(["fleet", "up", "--hosts", "3"]) == 7
    assert calls == [["up", "--hosts", "3"]]


def test_console_script_is_declared():
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '\nhussh = "hussh.cli:main"\n' in pyproject


# ----------------------------------------------------------------------------- clush/pdsh letters (issue 22)

@pytest.mark.parametrize(("options", "message"), [
    (["-f", "web1"], "hussh: -f is the fanout (a number) as in clush and pdsh; a host file is --hostfile FILE"),
    (["-p", "50"], "hussh: -p is not an option of hussh: pssh's parallelism is -f N"),
    (["-g", "-x", "none"], "hussh: -g takes a GROUP as in clush and pdsh (e.g. -g web); gathering identical"),
    (["-o", "out"], "hussh: -o takes an ssh option Key=Value as ssh and clush do (e.g. -o ConnectTimeout=5); "
                    "an output directory is --outdir DIR"),
    (["-o", "Colour=yes"], "hussh: -o Colour: not an ssh option hussh applies"),
    (["-b", "50"], "hussh: -b gathers identical output as in clush and takes no number; the fanout is -f N"),
    (["-g", "uname"], "hussh: no group or host 'uname' in the inventory (none given) (-g takes an inventory group"),
])
def test_a_letter_used_as_another_tool_uses_it_says_so_in_one_line(options, message, fleet, remote_dir, tmp_path):
    marker = remote_dir / "ran"
    done = hussh("run", "-H", fleet.addresses[0], "--port", str(fleet.port), *options, f"touch {marker}",
                 cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not marker.exists()


def test_gather_b_leaves_stderr_out_of_the_groups_and_B_takes_it_in(fleet, conn, hosts):
    command = on_first(fleet, "echo same; echo one >&2", "echo same; echo other >&2")
    gathered = hussh("run", "-b", *hosts, *conn, command)
    rule = "-" * 15
    assert gathered.stdout == f"{rule}\n{fold(fleet.addresses)} (4)\n{rule}\nsame\n"
    assert sorted(gathered.stderr.splitlines()[:-1]) == sorted(
        [f"{fleet.addresses[0]}: one"] + [f"{a}: other" for a in fleet.addresses[1:]])
    everything = hussh("run", "-B", *hosts, *conn, command)
    assert everything.stdout == (f"{rule}\n{fold(fleet.addresses[1:])} (3)\n{rule}\nsame\nother\n"
                                 f"{rule}\n{fleet.addresses[0]} (1)\n{rule}\nsame\none\n")
    assert everything.stderr.splitlines()[:-1] == []


def test_sorted_lines_L_and_no_prefix_N(fleet, conn, tmp_path):
    names = [f"n{i}" for i in (10, 2, 1)]  # given out of order; -L sorts them naturally
    config = tmp_path / "config"
    config.write_text("".join(f"Host {n}\n    HostName {a}\n" for n, a in zip(names, fleet.addresses)))
    command = "echo a; echo b"
    done = hussh("run", "-L", "-F", str(config), "-w", ",".join(names), *conn, command)
    assert done.stdout == "".join(f"n{i}: a\nn{i}: b\n" for i in (1, 2, 10))
    bare = hussh("run", "-L", "-N", "-F", str(config), "-w", ",".join(names), "-H", REFUSED[0], *conn, command)
    assert bare.stdout == "a\nb\n" * 3
    assert bare.stderr.splitlines()[0].startswith(f"{REFUSED[0]}: ConnectError: ")  # hussh's own still name it


def test_S_returns_the_largest_exit_status(fleet, conn, hosts):
    done = hussh("run", "-S", "-q", *hosts, *conn, on_first(fleet, "exit 7", "exit 3"))
    assert done.returncode == 7
    assert hussh("run", "-S", "-q", *hosts, *conn, "true").returncode == 0
    refused = hussh("run", "-S", "-q", *hosts, "-H", REFUSED[0], *conn, "exit 3")
    assert refused.returncode == 255


def test_o_applies_ssh_options_as_a_config_read_first(fleet, blackhole, tmp_path):
    key = ["-l", KEY_USER, "-i", str(fleet.client_key)]
    done = hussh("run", "-q", "-w", fold(fleet.addresses), *key, "-o", f"Port={fleet.port}", "true")
    assert (done.returncode, summary_of(done.stderr)) == (0, "4 ok")
    config = tmp_path / "config"
    config.write_text("Host *\n    Port 1\n")  # -o comes first, so it wins over the config, as with ssh
    done = hussh("run", "-q", "-F", str(config), "-w", fold(fleet.addresses), *key, "-oPort=" + str(fleet.port),
                 "true")
    assert (done.returncode, summary_of(done.stderr)) == (0, "4 ok")
    silent = f"{blackhole[0]}:{blackhole[1]}"
    done = hussh("run", "-H", silent, *key, "-o", "ConnectTimeout=1", "true")
    assert "timed out after 1 seconds" in done.stderr
    bad = hussh("run", "-H", silent, *key, "-o", "Port=notaport", "true")
    assert bad.returncode == 2 and bad.stderr.startswith("hussh: ") and "notaport" in bad.stderr
    assert "hussh-o-" not in bad.stderr  # the scratch file is named -o, not by its path


def test_f_is_the_fanout():
    mc = connect(parse(["run", "-f", "7", "-w", "a[1-3]", "true"]))
    assert (mc.batch_size, mc.hosts) == (7, ["a1", "a2", "a3"])
    mc.close()
