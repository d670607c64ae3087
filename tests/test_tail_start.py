"""``tail`` follows from the moment it starts, not from when its last host connected: lines written while
hosts connect are shown. Each host's start is where its file was at ``since`` when its mtime shows no
change since then, else its last ``lines`` lines (``AsyncFileTailer.seek_since``, ``hussh tail -n``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from clirun import Running, children
from hussh import Connection, _loop
from hussh.hostlist import fold
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses

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
