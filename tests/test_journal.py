"""The run journal (hussh.Journal) and resume / retry, from the library and the command line, on real sshd.

What each host did is checked on the fleet itself where it matters: every run appends a line to a
file of its own per endpoint (loopback endpoints share this machine's disk, so the file is named
after the endpoint's address), so "ran again" and "never ran again" are counted, not inferred.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from clirun import env, hussh
from hussh import Journal, JournalError, SSHResult
from hussh import journal as journal_module
from hussh.journal import Operation
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_PASSPHRASE, KEY_USER, PASSWORD, PASSWORD_USER

ADDRESS = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"
STAGGER = f"sleep $(( $(echo {ADDRESS} | cut -d. -f4) % 4 ))"  # 0-3 s, spread over the fleet's addresses


def marked(directory: Path, then: str = "true") -> str:
    """A command that appends a line to ``directory/<endpoint address>`` (counting its runs there), then ``then``."""
    return f"echo ran >> {directory}/{ADDRESS} && {then}"


def runs_on(directory: Path, host: str) -> int:
    """How many times a ``marked`` command ran on ``host`` (``address:port``)."""
    path = directory / host.rsplit(":", 1)[0]
    return len(path.read_text().splitlines()) if path.exists() else 0


def rows(path: Path, query: str, *values: object) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(query, values).fetchall()


def hosts_of(fleet) -> list[str]:
    return [f"{address}:{fleet.port}" for address in fleet.addresses]


# --- what a run records ---

def test_a_run_and_each_host_are_recorded(fleet, tmp_path):
    path = tmp_path / "journal.db"
    hosts = hosts_of(fleet)
    commands = {hosts[0]: "echo out; echo err >&2", hosts[1]: "echo half; exit 3",
                hosts[2]: "true", hosts[3]: "true"}
    mc = MultiConnection.from_shared_auth(hosts + ["127.0.0.1:1"], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, journal=Journal(path), batch_size=7)
    with mc:
        first = mc.execute_map(commands)
        second = mc.execute("echo hello", timeout=30)
    assert first.run_id is not None and second.run_id == first.run_id + 1

    run = Journal(path).run(second.run_id)
    assert run.kind == "command" and run.operation.command == "echo hello" and run.operation.timeout == 30
    assert run.hosts == mc.hosts and run.host_count == 5
    assert (run.succeeded, run.failed, run.skipped, run.unfinished) == (4, 1, 0, 0)
    assert run.options["batch_size"] == 7
    assert (run.uid, run.pid, run.hostname) == (os.getuid(), os.getpid(), os.uname().nodename)
    assert run.user and run.ended is not None and run.started <= run.ended <= time.time()
    for host in hosts:
        entry = run.entries[host]
        assert (entry.status, entry.result, entry.wave) == ("succeeded", second[host], None)
        assert entry.seconds == pytest.approx(second.seconds[host], abs=1e-5)
    dead = run.entries["127.0.0.1:1"]
    assert dead.status == "failed" and dead.result == second["127.0.0.1:1"] and dead.result.error == "ConnectError"

    mapped = Journal(path).run(first.run_id)
    assert mapped.operation.commands == commands
    assert mapped.entries[hosts[0]].result == first[hosts[0]] == SSHResult("out\n", "err\n", 0)
    assert (mapped.entries[hosts[1]].status, mapped.entries[hosts[1]].result.status) == ("failed", 3)
    assert [r.id for r in Journal(path).runs()] == [second.run_id, first.run_id]

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    wave_and_exit = rows(path, "SELECT wave, exit_code, error FROM hosts WHERE run_id = ? AND host = ?",
                         second.run_id, "127.0.0.1:1")
    assert wave_and_exit == [(None, -1, "ConnectError")]


def test_outputs_are_stored_as_the_results_hold_them(fleet, tmp_path):
    """Within max_output: the row holds what the result held, no more."""
    path = tmp_path / "journal.db"
    mc = MultiConnection.from_shared_auth(hosts_of(fleet)[:2], username=PASSWORD_USER, password=PASSWORD,
                                          max_output=1000, journal=Journal(path))
    with mc:
        result = mc.execute("head -c 50000 /dev/zero | tr '\\0' x")
    stored = rows(path, "SELECT host, stdout, stderr, error FROM hosts WHERE run_id = ?", result.run_id)
    assert len(stored) == 2
    for host, stdout, stderr, error in stored:
        assert (stdout, stderr, error) == (result[host].stdout, result[host].stderr, result[host].error)
        assert len(stdout) <= 1000 and error == "OutputLimitExceeded"


def test_a_long_output_many_hosts_printed_is_stored_once(fleet, tmp_path):
    """Outputs of SHARED_OUTPUT characters or more are kept once per journal; every row still reads its own."""
    path = tmp_path / "journal.db"
    hosts = hosts_of(fleet)
    long_a, long_b = "head -c 20000 /dev/zero | tr '\\0' a", "head -c 30000 /dev/zero | tr '\\0' b >&2"
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, journal=Journal(path))
    with mc:
        first = mc.execute_map({h: long_a if i % 2 else long_b for i, h in enumerate(hosts)})
        second = mc.execute(long_a)
    assert rows(path, "SELECT count(*) FROM outputs") == [(2,)]  # 2 + len(hosts) texts were printed
    assert sum(size for (size,) in rows(path, "SELECT length(stdout) + length(stderr) FROM host_rows")) == 0
    for result in (first, second):
        assert result.run_id is not None
        recorded = Journal(path).run(result.run_id)
        assert recorded.results == {h: result[h] for h in hosts}
        assert {len(r.stdout) + len(r.stderr) for r in recorded.results.values()} <= {20000, 30000}
    by_host = dict(rows(path, "SELECT host, length(stdout) FROM hosts WHERE run_id = ?", second.run_id))
    assert by_host == dict.fromkeys(hosts, 20000)  # the documented table still reads as the texts


def test_deleting_runs_as_documented_drops_the_outputs_no_row_names_any_more(tmp_path):
    path = tmp_path / "journal.db"
    journal = Journal(path)
    shared, own = "s" * 5000, "o" * 5000
    for outputs in ((shared, own), (shared,)):
        recorder = journal.start(Operation("command", command="x"), [f"h{i}" for i in range(len(outputs))], {})
        for i, text in enumerate(outputs):
            recorder.host(f"h{i}", SSHResult(text, "", 0), 1.0)
        recorder.end()
    assert rows(path, "SELECT count(*) FROM outputs") == [(2,)]
    with sqlite3.connect(path) as db:  # docs/rollouts.md's recipe
        db.execute("DELETE FROM hosts WHERE run_id < 2")
        db.execute("DELETE FROM runs WHERE id < 2")
    assert rows(path, "SELECT text FROM outputs") == [(shared,)]  # the second run still names it
    assert journal.run(2).results == {"h0": SSHResult(shared, "", 0)}


def test_a_journal_of_the_first_schema_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:  # what hussh wrote before outputs were shared
        db.executescript(journal_module._RUNS + "PRAGMA user_version = 1;")
        db.execute("INSERT INTO runs (kind, operation, hosts, host_count, options, started, user, uid, hostname, pid) "
                   "VALUES ('command', '{\"kind\":\"command\",\"command\":\"x\"}', '[\"h\"]', 1, '{}', 1, 'u', 0, "
                   "'m', 1)")
        db.execute("INSERT INTO hosts (run_id, host, status, exit_code, stdout, finished) "
                   "VALUES (1, 'h', 'succeeded', 0, ?, 2)", ("x" * 5000,))
    db.close()
    journal = Journal(path)
    assert journal.run(1).results == {"h": SSHResult("x" * 5000, "", 0)}
    assert rows(path, "PRAGMA user_version") == [(2,)]
    recorder = journal.start(Operation("command", command="x"), ["h"], {})
    recorder.host("h", SSHResult("x" * 5000, "", 0), 1.0)
    recorder.end()
    assert journal.run(2).results == journal.run(1).results
    assert rows(path, "SELECT count(*) FROM outputs") == [(1,)]
    assert journal.pending(1) == [] and [r.succeeded for r in journal.runs()] == [1, 1]


def test_a_journal_that_cannot_be_written_stops_the_call_before_anything_runs(fleet, tmp_path, remote_dir):
    mc = MultiConnection.from_shared_auth(hosts_of(fleet), username=PASSWORD_USER, password=PASSWORD,
                                          journal=Journal(tmp_path / "missing" / "journal.db"))
    with pytest.raises(JournalError, match="missing/journal.db"):
        mc.execute(marked(remote_dir))
    mc.close()
    assert not list(remote_dir.iterdir())
    (tmp_path / "other.db").write_bytes(b"not a database" * 100)
    with pytest.raises(JournalError, match="other.db"):
        Journal(tmp_path / "other.db").runs()


# --- durability ---

KILLED = textwrap.dedent("""
    import sys
    from hussh import Journal
    from hussh.multi_conn import MultiConnection

    journal, command, *hosts = sys.argv[1:]
    mc = MultiConnection.from_shared_auth(hosts, username="hussh", password="hussh", batch_size=200,
                                          journal=Journal(journal))
    mc.execute(command, on_result=lambda host, result: print(host, result.status, flush=True))
""")


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@pytest.mark.slow
@pytest.mark.hussh_fleet(120)
def test_a_caller_killed_mid_run_leaves_every_reported_host_and_resume_runs_the_rest(hussh_fleet, tmp_path,
                                                                                     remote_dir):
    path = tmp_path / "journal.db"
    hosts = list(hussh_fleet.hosts)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path), marked(remote_dir, STAGGER), *hosts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    reported: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, reported), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(reported) < 40:
            assert proc.poll() is None and time.monotonic() < deadline, (reported, proc.stderr.read())
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no handler, no finally, no atexit
        proc.wait(timeout=10)
        reader.join(timeout=30)  # its workers see the end of their pipes and exit, closing its stdout
        assert not reader.is_alive()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    done = {line.split()[0] for line in reported}
    journal = Journal(path)
    [info] = journal.runs()
    run = journal.run(info.id)
    assert run.ended is None and run.host_count == 120
    assert done <= set(run.entries), f"reported but not in the journal: {sorted(done - set(run.entries))}"
    assert 0 < run.unfinished < 120 - 40 + 1

    resumed = hussh("run", "--resume", str(info.id), "--journal", str(path), "-l", PASSWORD_USER, "-q",
                    timeout=120, HUSSH_PASSWORD=PASSWORD)
    assert resumed.returncode == 0, resumed.stderr
    [again, _] = journal.runs()
    second = journal.run(again.id)
    assert (second.resumes, second.how) == (info.id, "resume")
    assert set(second.hosts) == set(hosts) - set(run.entries)
    assert second.succeeded == second.host_count == run.unfinished
    for host in run.entries:  # finished before the kill: never run again
        assert runs_on(remote_dir, host) == 1, host
    assert all(runs_on(remote_dir, host) >= 1 for host in hosts)
    assert journal.pending(info.id) == []


def started_runs(path: Path) -> int:
    """Runs the journal at ``path`` holds so far: 0 until its file and its tables exist."""
    try:
        return int(rows(path, "SELECT count(*) FROM runs")[0][0]) if path.exists() else 0
    except sqlite3.OperationalError:  # the file is made, its tables not yet
        return 0


@pytest.mark.slow
@pytest.mark.hussh_fleet(120)
def test_two_processes_writing_one_journal_at_once_keep_their_own_rows(hussh_fleet, tmp_path):
    path = tmp_path / "journal.db"
    targets = ",".join(hussh_fleet.hosts)
    procs = [subprocess.Popen([sys.executable, "-m", "hussh", "run", "--journal", str(path), "-l", PASSWORD_USER,
                               "-H", targets, "-q", f"echo {name}-{ADDRESS}; {STAGGER}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env(HUSSH_PASSWORD=PASSWORD), stdin=subprocess.DEVNULL)
             for name in ("first", "second")]
    try:
        deadline = time.monotonic() + 60
        while started_runs(path) != 2 and any(proc.poll() is None for proc in procs):
            assert time.monotonic() < deadline, "the two runs never both started"
            time.sleep(0.05)
        with sqlite3.connect(path, isolation_level=None) as db:  # a third writer holds the lock mid-run: both wait
            db.execute("BEGIN IMMEDIATE")
            time.sleep(1.5)
            db.execute("COMMIT")
        db.close()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:  # a failed wait leaves no process behind for the next test
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    journal = Journal(path)
    runs = [journal.run(info.id) for info in journal.runs()]
    assert len(runs) == 2
    letters = set()
    for run in runs:
        [letter] = {entry.result.stdout.split("-")[0] for entry in run.entries.values()}
        letters.add(letter)
        assert run.succeeded == run.host_count == 120 and run.ended is not None
        for host, entry in run.entries.items():
            assert entry.result.stdout == f"{letter}-{host.rsplit(':', 1)[0]}\n"
    assert letters == {"first", "second"}
    spans = sorted((min(e.finished for e in r.entries.values()), max(e.finished for e in r.entries.values()))
                   for r in runs)
    assert spans[1][0] < spans[0][1]  # the two wrote at the same time, not one after the other


# --- resume and retry ---

def test_resume_runs_only_hosts_without_a_result_and_chains(fleet, tmp_path, remote_dir):
    path = tmp_path / "journal.db"
    hosts = hosts_of(fleet)
    journal = Journal(path)
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, journal=journal,
                                          workers=1, batch_size=1)
    seen: list[str] = []

    def crash_after_two(host: str, result: object) -> None:
        seen.append(host)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the caller stops: the pool stops every worker
    with pytest.raises(KeyboardInterrupt):
        mc.execute(marked(remote_dir), on_result=crash_after_two)
    [info] = journal.runs()
    assert (info.succeeded, info.unfinished) == (2, 2) and info.ended is not None
    assert journal.pending(info.id) == [h for h in hosts if h not in seen]

    mc.close()  # a later call starts new workers
    resumed = mc.resume(info.id)
    assert sorted(resumed) == sorted(h for h in hosts if h not in seen) and not resumed.failed
    assert resumed.run_id == info.id + 1
    run = journal.run(resumed.run_id)
    assert (run.resumes, run.how, run.operation) == (info.id, "resume", journal.run(info.id).operation)
    for host in seen:
        assert runs_on(remote_dir, host) == 1
    assert mc.resume(info.id) == {} and len(journal.runs()) == 2  # nothing left: nothing run, nothing recorded
    mc.close()


def test_retry_failed_runs_only_the_failed_hosts(fleet, tmp_path, remote_dir):
    path = tmp_path / "journal.db"
    hosts = hosts_of(fleet)
    ready = remote_dir / "ready"
    ready.mkdir(mode=0o777)
    ready.chmod(0o777)
    for host in hosts[:2]:
        (ready / host.rsplit(":", 1)[0]).touch()
    journal = Journal(path)
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD,
                                          journal=journal) as mc:
        first = mc.execute(marked(remote_dir, f"test -e {ready}/{ADDRESS}"))
        assert first.run_id is not None and sorted(first.failed) == hosts[2:]
        assert mc.resume(first.run_id) == {}  # every host has a result: resume has nothing to do
        (ready / hosts[2].rsplit(":", 1)[0]).touch()
        retried = mc.retry_failed(first.run_id)
        assert sorted(retried) == hosts[2:] and list(retried.failed) == [hosts[3]]
        again = mc.retry_failed(first.run_id)  # hosts[2] succeeded in the retry: only hosts[3] is left
        assert list(again) == [hosts[3]]
    assert [runs_on(remote_dir, h) for h in hosts] == [1, 1, 2, 3]
    assert [(r.resumes, r.how) for r in journal.runs()] == [(first.run_id, "retry-failed")] * 2 + [(None, None)]
    with pytest.raises(ValueError, match="does not"), \
            MultiConnection.from_shared_auth(hosts[:3], username=PASSWORD_USER, password=PASSWORD) as fewer:
        fewer.retry_failed(first.run_id, journal=journal)


def test_a_transfer_resumes_only_with_the_same_data(fleet, tmp_path, remote_dir):
    path = tmp_path / "journal.db"
    local = tmp_path / "app.conf"
    local.write_text("v1\n")
    hosts = hosts_of(fleet)
    journal = Journal(path)
    with MultiConnection.from_shared_auth(hosts + ["127.0.0.1:1"], username=PASSWORD_USER, password=PASSWORD,
                                          journal=journal) as mc:
        first = mc.sftp_write(local, str(remote_dir / "app.conf"))
        assert first.run_id is not None and list(first.failed) == ["127.0.0.1:1"]
        operation = journal.run(first.run_id).operation
        assert (operation.kind, operation.local, operation.size) == ("transfer", str(local), 3)
        local.write_text("v2\n")
        with pytest.raises(ValueError, match="differs"):
            mc.retry_failed(first.run_id)
        with pytest.raises(ValueError, match="differs"):
            mc.retry_failed(first.run_id, data="v2\n")
        local.write_text("v1\n")
        assert list(mc.retry_failed(first.run_id)) == ["127.0.0.1:1"]
        data_run = mc.sftp_write_data(b"payload-never-stored\n", str(remote_dir / "other.conf"))
        assert data_run.run_id is not None and journal.run(data_run.run_id).operation.local is None
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("journal.db"))
    assert b"payload-never-stored" not in stored and b"v1" not in stored  # the data sent is never stored


def test_no_secret_is_stored(fleet, tmp_path):
    """Neither a password, a key's passphrase nor key material reaches the journal's files."""
    path = tmp_path / "journal.db"
    secret = "s3cret-Pa55word-never-stored"
    with MultiConnection.from_shared_auth(hosts_of(fleet)[:2], username=PASSWORD_USER, password=secret,
                                          journal=Journal(path)) as mc:
        assert len(mc.execute("true").failed) == 2  # a wrong password: the run is recorded all the same
    key = fleet.encrypted_client_key
    done = hussh("run", "--journal", str(path), "-H", ",".join(hosts_of(fleet)[:2]), "-l", KEY_USER,
                 "-i", str(key), "true", HUSSH_PASSWORD=KEY_PASSPHRASE)
    assert done.returncode == 0, done.stderr
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("journal.db"))
    assert str(key).encode() in stored  # the key's path is recorded (where its options are): not the key
    key_lines = [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    for text in [secret, KEY_PASSPHRASE, *key_lines]:
        assert text.encode() not in stored, text


# --- the command line ---

def test_the_command_line_journals_by_default_in_the_private_state_directory(fleet, tmp_path, isolated_home):
    targets = ",".join(hosts_of(fleet))
    state = isolated_home / ".local" / "state" / "hussh"
    done = hussh("run", "-H", targets, "-l", PASSWORD_USER, "-q", "true", HUSSH_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [r.host_count for r in Journal(state / "journal.sqlite3").runs()] == [4]

    mine = tmp_path / "mine"
    done = hussh("run", "-H", targets, "-l", PASSWORD_USER, "-q", "true", HUSSH_PASSWORD=PASSWORD,
                 XDG_STATE_HOME=str(tmp_path / "xdg"), HUSSH_STATE_DIR=str(mine))
    assert done.returncode == 0, done.stderr
    assert len(Journal(mine / "journal.sqlite3").runs()) == 1 and not (tmp_path / "xdg").exists()
    done = hussh("run", "-H", targets, "-l", PASSWORD_USER, "-q", "true", HUSSH_PASSWORD=PASSWORD,
                 XDG_STATE_HOME=str(tmp_path / "xdg"))
    assert done.returncode == 0 and len(Journal(tmp_path / "xdg" / "hussh" / "journal.sqlite3").runs()) == 1

    mine.chmod(0o755)
    refused = hussh("run", "-H", targets, "-q", "true", HUSSH_STATE_DIR=str(mine))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == f"hussh: the state directory {mine} has mode 0755, open to other users: chmod 700 " \
                             f"{mine} (--no-journal runs without a journal)\n"
    mine.chmod(0o700)

    unwritten = tmp_path / "unwritten"
    done = hussh("run", "--no-journal", "-H", targets, "-l", PASSWORD_USER, "-q", "true", HUSSH_PASSWORD=PASSWORD,
                 HUSSH_STATE_DIR=str(unwritten))
    assert done.returncode == 0 and not unwritten.exists()


def test_runs_lists_and_shows_like_the_live_output(fleet, tmp_path):
    path = str(tmp_path / "journal.db")
    targets = ",".join(hosts_of(fleet) + ["127.0.0.1:1"])
    login = ("--journal", path, "-l", PASSWORD_USER, "-H", targets)
    live = hussh("run", *login, "--json", "echo same; echo err >&2", HUSSH_PASSWORD=PASSWORD)
    assert live.returncode == 1
    second_run = hussh("run", *login, "-q", "echo same", HUSSH_PASSWORD=PASSWORD)
    assert second_run.returncode == 1

    listed = hussh("runs", "--journal", path)
    assert listed.returncode == 0, listed.stderr
    header, second, first = listed.stdout.splitlines()
    assert header.split() == ["ID", "STARTED", "KIND", "HOSTS", "DONE", "FAILED", "SKIPPED", "UNFINISHED", "COMMAND"]
    assert second.split()[0] == "2" and second.split()[3:] == ["command", "5", "4", "1", "0", "0", "echo", "same"]
    assert first.split()[0] == "1" and first.endswith("echo same; echo err >&2")

    shown = hussh("runs", "show", "1", "--json", "--journal", path)
    assert shown.returncode == 1
    def records(text: str) -> list[dict]:
        return sorted((json.loads(line) | {"seconds": 0} for line in text.splitlines()), key=lambda r: r["host"])
    assert records(shown.stdout) == records(live.stdout) and len(records(live.stdout)) == 5
    assert shown.stderr.startswith("hussh: run 1: command 'echo same; echo err >&2' on 5 hosts by ")
    assert shown.stderr.splitlines()[-1].startswith("4 ok, 1 ConnectError in ")

    gathered = hussh("runs", "show", "last", "-b", "--journal", path)
    assert gathered.returncode == 1
    assert gathered.stdout.startswith(f"{'-' * 15}\n127.77.0.[1-4]:{fleet.port} (4)\n{'-' * 15}\nsame\n")
    assert f"127.0.0.1:1 (1) ConnectError\n{'-' * 15}\n127.0.0.1:1: ConnectError: " in gathered.stdout
    missing = hussh("runs", "show", "9", "--journal", path)
    assert (missing.returncode, missing.stderr) == (2, f"hussh: {path} has no run 9 (hussh runs lists them)\n")


def test_the_command_line_retries_failed_hosts_and_puts(fleet, tmp_path, remote_dir):
    path = str(tmp_path / "journal.db")
    hosts = hosts_of(fleet)
    login = ("--journal", path, "-l", PASSWORD_USER)
    ready = remote_dir / "ready"
    ready.mkdir(mode=0o777)
    ready.chmod(0o777)
    (ready / hosts[0].split(":")[0]).touch()
    first = hussh("run", *login, "-H", ",".join(hosts), "-q", marked(remote_dir, f"test -e {ready}/{ADDRESS}"),
                  HUSSH_PASSWORD=PASSWORD)
    assert first.returncode == 1 and first.stderr.startswith("1 ok, 3 exit 1")
    for host in hosts[1:]:
        (ready / host.split(":")[0]).touch()
    retried = hussh("run", *login, "--retry-failed", "last", HUSSH_PASSWORD=PASSWORD)
    assert retried.returncode == 0, retried.stderr
    assert retried.stderr.startswith("3 ok in ")
    assert [runs_on(remote_dir, h) for h in hosts] == [1, 2, 2, 2]
    nothing = hussh("run", *login, "--retry-failed", "1")
    assert (nothing.returncode, nothing.stderr) == (0, "hussh: run 1 has no host that failed: nothing to do\n")

    wrong = hussh("put", *login, "--resume", "1")
    assert (wrong.returncode, wrong.stderr) == (2, "hussh: run 1 is a command: replay it with hussh run\n")
    both = hussh("run", *login, "--resume", "1", "-H", hosts[0], "true")
    assert both.returncode == 2 and "give neither hosts nor a COMMAND" in both.stderr
    assert hussh("run", "--no-journal", "--resume", "1").returncode == 2

    local = tmp_path / "app.conf"
    local.write_text("v1\n")
    put = hussh("put", *login, "-H", ",".join(hosts + ["127.0.0.1:1"]), "-q", str(local),
                str(remote_dir / "app.conf"), HUSSH_PASSWORD=PASSWORD)
    assert put.returncode == 1
    local.write_text("v2\n")
    changed = hussh("put", *login, "--retry-failed", "last", HUSSH_PASSWORD=PASSWORD)
    assert changed.returncode == 2 and "the data differs from what run 3 sent" in changed.stderr
    local.write_text("v1\n")
    again = hussh("put", *login, "--retry-failed", "3", HUSSH_PASSWORD=PASSWORD)
    assert again.returncode == 1 and again.stderr.splitlines()[-1].startswith("1 ConnectError in ")
    assert Journal(path).run(4).hosts == ["127.0.0.1:1"]
    assert hussh("put", *login, "-H", hosts[0], str(local)).returncode == 2  # no REMOTE: usage, as before


def test_a_command_run_with_input_resumes_only_with_the_same_input_and_sudo_again(fleet, tmp_path, remote_dir):
    """stdin is recorded by size and SHA-256 (never the bytes), sudo as a flag: a resumed command gets both
    again, or the resume is refused, instead of running the command without its input or sudo."""
    path = tmp_path / "journal.db"
    hosts = hosts_of(fleet)
    journal = Journal(path)
    with MultiConnection.from_shared_auth(hosts[:1], username=PASSWORD_USER, password=PASSWORD,
                                          journal=journal) as first:
        first.execute(f"cat >> {remote_dir}/in; false", input=b"the input\n")
    [info] = journal.runs()
    operation = journal.run(info.id).operation
    assert (operation.size, operation.sudo) == (len(b"the input\n"), False)
    assert b"the input" not in path.read_bytes()
    with MultiConnection.from_shared_auth(hosts[:1], username=PASSWORD_USER, password=PASSWORD,
                                          journal=journal) as again:
        with pytest.raises(ValueError, match="10 bytes of input: pass the same data="):
            again.retry_failed(info.id)
        with pytest.raises(ValueError, match="the data differs"):
            again.retry_failed(info.id, data=b"other input\n")
        retried = again.retry_failed(info.id, data=b"the input\n")
    assert list(retried) == hosts[:1]
    assert (remote_dir / "in").read_bytes() == b"the input\nthe input\n"


def test_a_command_run_through_sudo_is_resumed_through_sudo(fleet, tmp_path):
    path = tmp_path / "journal.db"
    journal = Journal(path)
    host = hosts_of(fleet)[:1]
    with MultiConnection.from_shared_auth(host, username=KEY_USER, private_key=str(fleet.client_key),
                                          journal=journal) as mc:
        mc.execute("id -un; false", sudo=True)
        [info] = journal.runs()
        assert journal.run(info.id).operation.sudo
        retried = mc.retry_failed(info.id)
    assert retried[host[0]].stdout == f"{PASSWORD_USER}\n"  # sudo ran it as the other fleet user again
