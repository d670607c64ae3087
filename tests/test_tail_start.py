"""``tail`` follows from the moment it starts, not from when its last host connected: lines written while
hosts connect are shown. Each host's start is where its file was at ``since`` when its mtime shows no
change since then, else its last ``lines`` lines (``AsyncFileTailer.seek_since``, ``hussh tail -n``).
A host's lines show from the moment its own tail is open, while slower hosts still connect
(``MultiFileTailer.follow``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from clirun import Running, children
from hussh import Connection, SSHResult, _loop
from hussh.hostlist import fold
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER, Fleet, LoopbackFleet, NetworkConditions, loopback_addresses
from scale.bench_hostile_output import vm_hwm

PAST = 60  # seconds: a file last written this long ago has not changed since any start the tests take


def written(path: Path, text: str, age: float = 0) -> Path:
    path.write_text(text)
    path.chmod(0o666)
    if age:
        os.utime(path, (time.time() - age,) * 2)
    return path


def test_an_unchanged_file_starts_at_its_end(fleet, creds, remote_dir):
    log = written(remote_dir / "app.log", "old 1\nold 2\n", age=PAST)
    with Connection(fleet.addresses[0], **creds) as conn:
        tailer = conn._async.tail(str(log))
        assert _loop.run(tailer.seek_since(time.time(), 10)) == log.stat().st_size
        with log.open("a") as handle:
            handle.write("new\n")
        assert _loop.run(tailer.read()) == "new\n"


@pytest.mark.parametrize("text, lines, shown", [
    ("a\nb\nc\n", 2, "b\nc\n"),
    ("a\nb\nc", 1, "c"),  # a last line without its newline counts, as in tail -n
    ("a\nb\nc", 2, "b\nc"),
    ("a\nb\nc\n", 10, "a\nb\nc\n"),
    ("a\nb\nc\n", 0, ""),
    ("", 3, ""),
])
def test_a_file_changed_since_the_start_shows_its_last_lines(fleet, creds, remote_dir, text, lines, shown):
    started = time.time() - PAST  # the file is written after this
    log = written(remote_dir / "app.log", text)
    with Connection(fleet.addresses[0], **creds) as conn:
        tailer = conn._async.tail(str(log))
        _loop.run(tailer.seek_since(started, lines))
        assert _loop.run(tailer.read()) == shown


def test_the_look_back_is_bounded_by_max_output_and_starts_at_a_whole_line(fleet, creds, remote_dir):
    log = written(remote_dir / "app.log", "x" * 50 + "\n" + "tail one\ntail two\n")
    with Connection(fleet.addresses[0], **creds, max_output=30) as conn:
        tailer = conn._async.tail(str(log))
        _loop.run(tailer.seek_since(time.time() - PAST, 100))
        assert _loop.run(tailer.read()) == "tail one\ntail two\n"


def test_multi_tail_since_shows_what_was_written_before_the_hosts_opened(fleet, remote_dir):
    unchanged = written(remote_dir / "idle.log", "old\n", age=PAST)
    busy = written(remote_dir / "busy.log", "older\n", age=PAST)
    started = time.time() - 1  # a second ago: the appends below come after it, in a later whole second
    with busy.open("a") as handle:
        handle.write("while connecting\n")
    with MultiConnection.from_shared_auth(fleet.addresses[:2], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port) as mc:
        files = dict(zip(fleet.addresses[:2], (str(unchanged), str(busy))))
        with mc.tail_map(files, since=started, lines=1) as tailer:
            news = tailer.read()
        assert tailer.errors == {}
    assert news == {fleet.addresses[0]: "", fleet.addresses[1]: "while connecting\n"}


# ------------------------------------------------------------------------------ 200 hosts, the command line


@pytest.fixture(scope="module")
def fleet_200():
    port = int(os.environ.get("HUSSH_TEST_PORT", "2222"))
    with LoopbackFleet(loopback_addresses(200, second_octet=71), port=port) as made:
        yield made


class Writer:
    """Appends ``line N`` to a file every ``every`` seconds, one whole line a write, until stopped."""

    def __init__(self, path: Path, every: float) -> None:
        self.path, self.every, self.count = path, every, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        with self.path.open("a", buffering=1) as handle:
            while not self.stopping.wait(self.every):
                self.count += 1
                handle.write(f"line {self.count}\n")

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(timeout=10)
        return self.count


@pytest.mark.slow
def test_hussh_tail_shows_lines_written_while_200_hosts_connect(fleet_200, remote_dir):
    log = written(remote_dir / "app.log", "".join(f"old {n}\n" for n in range(5)), age=PAST)
    hosts = fleet_200.addresses
    run = Running("tail", "-w", fold(hosts), "-l", KEY_USER, "-i", str(fleet_200.client_key), "--port",
                  str(fleet_200.port), "-n", "1000", "--interval", "0.2", str(log))
    writer = None
    try:
        run.wait_for(lambda: bool(children(run.proc.pid)), what="its workers")  # the command has started
        writer = Writer(log, 0.02)  # from now on, while the hosts connect, every line must show on every host
        run.wait_for(lambda: len({line.split(": ", 1)[0] for line in run.out}) == len(hosts), timeout=90,
                     what="lines from every host")
        time.sleep(0.1)
        last = writer.stop()
        run.wait_for(lambda: sum(line.endswith(f": line {last}\n") for line in run.out) == len(hosts), timeout=60,
                     what="the last line on every host")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=30) == 130
    finally:
        if writer is not None:
            writer.stop()
        run.kill()
    shown: dict[str, list[str]] = {host: [] for host in hosts}
    for line in run.out:
        host, _, text = line.partition(": ")
        shown[host].append(text)
    for host, texts in shown.items():
        new = [text for text in texts if text.startswith("line ")]
        assert new == [f"line {n}\n" for n in range(1, last + 1)], host  # each once, in order, none missing


# ------------------------------------------------------------------------------ a slow host holds no other back

RELAYED = pytest.mark.hussh_fleet(4, network=NetworkConditions())


def news(lines: list[str], host: str) -> list[str]:
    """The ``line N`` lines shown for ``host``."""
    return [line.split(": ", 1)[1] for line in lines if line.startswith(f"{host}: line ")]


@RELAYED
def test_hussh_tail_shows_the_hosts_following_while_a_frozen_one_still_connects(hussh_fleet: Fleet, remote_dir):
    """The first host's link is frozen: its handshake cannot end until it thaws. The others' lines print
    all the same, as written; once it thaws, its own lines print too, from the start, each once."""
    slow, *good = hussh_fleet.hosts
    log = written(remote_dir / "app.log", "old\n", age=PAST)
    hussh_fleet.freeze([slow])
    run = Running("tail", "-w", ",".join(hussh_fleet.hosts), "-l", hussh_fleet.credentials.key_user,
                  "-i", str(hussh_fleet.client_key),
                  "-o", "StrictHostKeyChecking=no", "-t", "120", "-n", "1000", "--interval", "0.1", str(log))
    writer = None
    try:
        run.wait_for(lambda: bool(children(run.proc.pid)), what="its workers")
        writer = Writer(log, 0.05)
        run.wait_for(lambda: all(len(news(run.out, host)) >= 3 for host in good), timeout=60,
                     what="lines of the hosts that are not frozen")
        assert news(run.out, slow) == [] and run.err == []  # it is still connecting
        hussh_fleet.thaw([slow])
        run.wait_for(lambda: len(news(run.out, slow)) >= 3, timeout=60, what="the thawed host's lines")
        last = writer.stop()
        run.wait_for(lambda: all(f"line {last}\n" in news(run.out, host) for host in hussh_fleet.hosts),
                     timeout=30, what="the last line on every host")
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=30) == 130
    finally:
        if writer is not None:
            writer.stop()
        run.kill()
    for host in hussh_fleet.hosts:  # -n 1000: every line since the start, each once, in order
        assert news(run.out, host) == [f"line {n}\n" for n in range(1, last + 1)], host


@RELAYED
def test_follow_calls_back_each_host_from_its_own_start_and_stops_when_asked(hussh_fleet: Fleet, remote_dir):
    """``MultiFileTailer.follow``: ``on_text(host, "")`` as each tail opens, then its text; a frozen host
    holds no other back; ``until`` ends the call, the hosts followed with status 0; a missing file fails
    its host alone, at once."""
    slow, good, missing, other = hussh_fleet.hosts
    logs = {host: written(remote_dir / f"{n}.log", "old\n", age=PAST) for n, host in enumerate(hussh_fleet.hosts)}
    logs[missing].unlink()
    files = {host: str(path) for host, path in logs.items()}
    shown: dict[str, list[str]] = {host: [] for host in files}
    ended: dict[str, SSHResult] = {}
    thawed = threading.Event()

    def on_text(host: str, text: str) -> None:
        shown[host].append(text)
        if host in (good, other) and text == "":  # open: what is appended from now on shows
            with logs[host].open("a") as handle:
                handle.write(f"{host} after\n")
        if not thawed.is_set() and all("after" in "".join(shown[h]) for h in (good, other)):
            assert shown[slow] == []  # the frozen host is still connecting
            with logs[slow].open("a") as handle:
                handle.write("while frozen\n")
            thawed.set()
            hussh_fleet.thaw([slow])

    hussh_fleet.freeze([slow])
    since = time.time()
    mc = MultiConnection.from_shared_auth(hussh_fleet.hosts, **hussh_fleet.credentials.password_auth(),
                                          connect_timeout=120)  # not entered: that would connect every host first
    try:
        tailer = mc.tail_map(files, since=since, lines=1)
        results = tailer.follow(on_text, interval=0.1, on_result=lambda host, result: ended.update({host: result}),
                                until=lambda: "while frozen" in "".join(shown[slow]))
    finally:
        mc.close()
    assert thawed.is_set() and "".join(shown[slow]) == "while frozen\n" and shown[slow][0] == ""
    assert "".join(shown[good]) == f"{good} after\n" and shown[good][0] == ""
    assert {host: r.status for host, r in results.items()} == {slow: 0, good: 0, missing: -1, other: 0}
    assert results[missing].error == "FileNotFoundError" and tailer.errors == {missing: results[missing].stderr}
    assert ended == dict(results)


def test_follow_reads_no_further_ahead_than_the_caller_takes_in(fleet, remote_dir):
    """A caller slower than its file grows: the worker waits for it (its pipe's high-water mark) instead of
    reading on and holding what the caller has not taken (64 MiB here)."""
    log = written(remote_dir / "fast.log", "", age=PAST)
    size = 64 << 20
    taken = 0

    def on_text(host: str, text: str) -> None:
        nonlocal taken
        if text == "":  # open: the file grows by 64 MiB at once
            with log.open("ab") as handle:
                handle.write(b"x" * size)
        taken += len(text)
        time.sleep(0.02)  # a slow caller

    mc = MultiConnection.from_shared_auth(fleet.addresses[:1], username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, workers=1)
    try:
        mc.connect()
        worker = mc.shards()[0].pid
        assert worker is not None
        before = vm_hwm(worker)
        mc.tail(str(log)).follow(on_text, interval=0.1, until=lambda: taken >= size)
        grown = vm_hwm(worker) - before
    finally:
        mc.close()
    assert taken == size and grown < 16 << 20, grown
