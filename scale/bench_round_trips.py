"""Round trips per operation: hussh, OpenSSH's ``ssh``, upstream hussh and parallel-ssh through the network relay.

    python -m scale.bench_round_trips [--rtt 0.2] [--hosts 3] [--repeat 2] [--port 2290] [--no-peers]

Each operation runs on a few loopback hosts at once behind ``hussh.testing``'s relay, once with no
delay and once at ``--rtt``: its round trips are ``(wall at rtt - wall at 0) / rtt``, rounded, the
fastest of ``--repeat`` runs each (noise only ever adds time). The relay stands for a real link
(the TCP handshake costs one round trip: it dials sshd 1.5 rtt after it accepted), so the counts
compare with the protocol's minimum, reasoned out in MINIMUM. tests/test_round_trips.py pins them.
Upstream hussh and parallel-ssh run ``scale/peers/connect_true.py`` in their own venvs and
processes; their counts come from the runner's phase marks, so start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hussh.multi_conn import MultiConnection
from hussh.testing import Fleet, LoopbackFleet, NetworkConditions, loopback_addresses

from .measure import DEFAULT_VENV_ROOT, ensure_venv, runner_env

PAYLOAD = b"x" * 1024
REMOTE = "hussh-round-trips.txt"

# The protocol's fewest round trips, counted as the client waits: TCP 1 (SYN, SYN-ACK; the ACK
# carries the client's version and KEXINIT); the server's version and KEXINIT 1; ECDH init/reply
# (NEWKEYS rides with it) 1; SERVICE_REQUEST with the USERAUTH_REQUEST pipelined behind it (a key
# signed at once, no "none" probe, no query) 1. A channel: OPEN/CONFIRMATION 1 (a request names
# the server's channel number, known only then), then the request 1; closing waits for nothing.
# SFTP: the subsystem request with INIT behind it 1, OPEN 1 (its handle), WRITE or READs with
# CLOSE pipelined 1. A tail read on an open handle: one READ 1 (hussh's FSTAT and STATs, which notice a
# truncated or rotated file, ride beside it).
MINIMUM = {
    "connect, unknown host (accept-new)": (4, "host key arrives in the ECDH reply: no extra trip"),
    "connect, known host, key": (4, "TCP, versions+KEXINIT, ECDH, service+auth pipelined"),
    "connect, known host, password": (4, "as with a key"),
    "execute on a live connection": (2, "channel open, exec request"),
    "connect + execute + close": (6, "connect 4 + execute 2; close waits for nothing"),
    "sftp_write 1 KiB, first": (4, "channel, subsystem+INIT, OPEN, WRITE+CLOSE"),
    "sftp_write 1 KiB, session open": (2, "OPEN, WRITE+CLOSE"),
    "sftp_read 1 KiB, first": (4, "channel, subsystem+INIT, OPEN, READs+CLOSE"),
    "sftp_read 1 KiB, session open": (2, "OPEN, READs+CLOSE"),
    "tail read": (1, "one READ on the open handle"),
    "connect(prune_failures=True), one host refused": (4, "as connect; dropping a failed host is local"),
}
OPENSSH = {  # rows OpenSSH's ssh can run: connect, `true`, close, nothing shared between runs
    "ssh: connect + `true` + close, known host, key": ("strict", 6),
    "ssh: connect + `true` + close, unknown host (accept-new)": ("accept-new", 6),
}

# Libraries run as their own processes: row -> the runner's phases it adds up (peers/connect_true.py --again:
# connected, true, again, closed; parallel-ssh connects inside its first run_command, so no "connected").
PEERS = {
    "upstream": ("upstream hussh 0.3.3 (Rust)", ("hussh==0.3.3",), {
        "upstream hussh: connect": ("connected",),
        "upstream hussh: execute on a live connection": ("again",),
        "upstream hussh: connect + execute + close": ("connected", "true", "closed"),
    }),
    "pssh": ("parallel-ssh 2.16 (libssh2)", ("parallel-ssh==2.16.0.post1",), {
        "parallel-ssh: connect + execute (first run_command)": ("true",),
        "parallel-ssh: execute on a live connection": ("again",),
        "parallel-ssh: connect + execute + close": ("true", "closed"),
    }),
}
PEER_MINIMUM = {"connect": 4, "connect + execute (first run_command)": 6, "execute on a live connection": 2,
                "connect + execute + close": 6}
RUNNER = Path(__file__).resolve().parent / "peers" / "connect_true.py"


@dataclass
class Bench:
    """A relayed fleet and what every operation needs: hosts, logins, a known_hosts file."""

    fleet: Fleet
    hosts: list[str]
    workdir: Path

    def known_hosts(self) -> Path:
        return self.fleet.write_known_hosts(self.workdir / "known_hosts")

    def empty_file(self) -> Path:
        """A new empty known_hosts file: accept-new records the keys it meets there."""
        handle, path = tempfile.mkstemp(dir=self.workdir, suffix=".known_hosts")
        os.close(handle)
        return Path(path)

    def multi(self, auth: str = "key", checking: str = "strict", hosts: list[str] | None = None) -> MultiConnection:
        creds = self.fleet.credentials
        login = creds.key_auth() if auth == "key" else creds.password_auth()
        if checking == "strict":
            known = self.known_hosts()
        else:  # a file of its own each time: accept-new records the keys it meets
            known = self.empty_file()
        return MultiConnection.from_shared_auth(hosts or self.hosts, **login, known_hosts=str(known),
                                                host_key_checking=checking, connect_timeout=30)  # type: ignore[arg-type]

    @contextmanager
    def connected(self) -> Iterator[MultiConnection]:
        with self.multi() as mc:
            _check(mc.execute(f"head -c 1024 /dev/zero > {REMOTE}"))
            yield mc


def _check(results: object) -> None:
    failed = getattr(results, "failed", None)
    if failed:
        raise RuntimeError(f"an operation failed: {dict(list(failed.items())[:2])}")


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    _check(action())
    return time.monotonic() - started


# Each operation: bench -> seconds of the part that is timed (setup and teardown untimed).
def _connect(auth: str, checking: str) -> Callable[[Bench], float]:
    def run(bench: Bench) -> float:
        mc = bench.multi(auth, checking)
        try:
            return _timed(mc.connect)
        finally:
            mc.close()
    return run


def _live(action: Callable[[MultiConnection], object], warm: Callable[[MultiConnection], object] | None = None,
          ) -> Callable[[Bench], float]:
    def run(bench: Bench) -> float:
        with bench.connected() as mc:
            if warm is not None:
                _check(warm(mc))
            return _timed(lambda: action(mc))
    return run


def _connect_execute_close(bench: Bench) -> float:
    def whole() -> object:
        with bench.multi() as mc:
            return mc.execute("true")
    return _timed(whole)


def _tail_read(bench: Bench) -> float:
    """A read of what was appended (1 KiB per host) to a file a tail holds open."""
    with bench.connected() as mc, mc.tail(REMOTE) as tail:
        _check(mc.execute(f"head -c 1024 /dev/zero >> {REMOTE}"))
        return _timed(tail.read)


def _prune(bench: Bench) -> float:
    refused = bench.fleet.hosts[len(bench.hosts)]
    bench.fleet.refuse([refused])
    try:
        mc = bench.multi(hosts=[*bench.hosts, refused])
        try:
            started = time.monotonic()
            results = mc.connect(prune_failures=True)
            seconds = time.monotonic() - started
            if set(results.failed) != {refused}:
                raise RuntimeError(f"expected only {refused} to fail: {dict(results.failed)}")
            return seconds
        finally:
            mc.close()
    finally:
        bench.fleet.heal([refused])


def _write(mc: MultiConnection) -> object:
    return mc.sftp_write_data(PAYLOAD, REMOTE)


def _read(mc: MultiConnection) -> object:
    return mc.sftp_read(REMOTE)


HUSSH: dict[str, Callable[[Bench], float]] = {
    "connect, unknown host (accept-new)": _connect("key", "accept-new"),
    "connect, known host, key": _connect("key", "strict"),
    "connect, known host, password": _connect("password", "strict"),
    "execute on a live connection": _live(lambda mc: mc.execute("true")),
    "connect + execute + close": _connect_execute_close,
    "sftp_write 1 KiB, first": _live(_write),
    "sftp_write 1 KiB, session open": _live(_write, warm=_write),
    "sftp_read 1 KiB, first": _live(_read),
    "sftp_read 1 KiB, session open": _live(_read, warm=_read),
    "tail read": _tail_read,
    "connect(prune_failures=True), one host refused": _prune,
}


def _ssh(checking: str) -> Callable[[Bench], float]:
    """OpenSSH's client, no ControlMaster, in batch mode with the key: every host at once."""
    def run(bench: Bench) -> float:
        creds = bench.fleet.credentials
        known = bench.known_hosts() if checking == "strict" else bench.empty_file()
        argv = ["ssh", "-F", "/dev/null", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "BatchMode=yes",
                "-o", f"StrictHostKeyChecking={'yes' if checking == 'strict' else 'accept-new'}",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=yes", "-i", str(creds.client_key), "-l", creds.key_user]
        started = time.monotonic()
        procs = [subprocess.Popen([*argv, "-p", host.rpartition(":")[2], host.rpartition(":")[0], "true"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for host in bench.hosts]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        seconds = time.monotonic() - started
        if any(p.returncode for p in procs):
            raise RuntimeError(f"ssh failed: {errors}")
        return seconds
    return run


SSH = {name: _ssh(checking) for name, (checking, _) in OPENSSH.items()}


def peer_phases(bench: Bench, tool: str, python: str) -> dict[str, float]:
    """One run of ``peers/connect_true.py --again`` in the peer's venv: seconds of each phase, from its marks."""
    targets = bench.workdir / "targets.txt"
    targets.write_text("".join(f"{host}\n" for host in bench.hosts))
    home = Path(tempfile.mkdtemp(dir=bench.workdir))
    creds = bench.fleet.credentials
    done = subprocess.run([python, str(RUNNER), "--tool", tool, "--again", "--batch", "0", "--targets", str(targets),
                           "--user", creds.key_user, "--key", str(creds.client_key)],
                          capture_output=True, text=True, timeout=300, env=runner_env(home), cwd=bench.workdir)
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    if report.get("completed") != len(bench.hosts):
        raise RuntimeError(f"{tool} failed: {report.get('failures') or done.stderr[-500:]}")
    marks = report["marks"]
    order = [m for m in ("imported", "connected", "true", "again", "closed") if m in marks]
    return {later: marks[later] - marks[earlier] for earlier, later in zip(order, order[1:])}


def peer_round_trips(bench: Bench, tool: str, python: str, rtt: float, repeat: int) -> dict[str, tuple[int, float]]:
    """Each of the peer's rows: its round trips at ``rtt`` (rounded) and the exact quotient, fastest runs each."""
    rows = PEERS[tool][2]
    walls: dict[float, dict[str, float]] = {}
    for delay in (0.0, rtt):
        bench.fleet.set_network(NetworkConditions(rtt=delay))
        samples = [peer_phases(bench, tool, python) for _ in range(repeat)]
        walls[delay] = {row: min(sum(s[p] for p in phases) for s in samples) for row, phases in rows.items()}
    bench.fleet.set_network(NetworkConditions())
    return {row: (round(q := (walls[rtt][row] - walls[0.0][row]) / rtt), q) for row in rows}


def round_trips(bench: Bench, operation: Callable[[Bench], float], rtt: float, repeat: int) -> tuple[int, float]:
    """The operation's round trips at ``rtt`` (rounded) and the exact quotient, fastest runs each."""
    walls = {}
    for delay in (0.0, rtt):
        bench.fleet.set_network(NetworkConditions(rtt=delay))
        walls[delay] = min(operation(bench) for _ in range(repeat))
    bench.fleet.set_network(NetworkConditions())
    quotient = (walls[rtt] - walls[0.0]) / rtt
    return round(quotient), quotient


@contextmanager
def bench_fleet(hosts: int, port: int, second_octet: int) -> Iterator[Bench]:
    """``hosts`` relayed endpoints to measure on, and one more that ``_prune`` refuses."""
    with (tempfile.TemporaryDirectory() as tmp,
          LoopbackFleet(loopback_addresses(hosts + 1, second_octet), port=port, per_process=1,
                        network=NetworkConditions()) as fleet):
        yield Bench(fleet, fleet.hosts[:hosts], Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_round_trips", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, default=0.2, help="round-trip delay of the relay, seconds")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="runs per delay; the fastest counts")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HUSSH_TEST_PORT", "2290")))
    parser.add_argument("--second-octet", type=int, default=68)
    parser.add_argument("--no-peers", action="store_true", help="leave out upstream hussh and parallel-ssh")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT, help="where the peers' venvs live")
    args = parser.parse_args(argv)
    pythons = {} if args.no_peers else {tool: ensure_venv(tool, packages, args.venv_root)
                                        for tool, (_, packages, _) in PEERS.items()}
    print(f"round trips per operation, {args.hosts} hosts at once, rtt {args.rtt * 1000:.0f} ms, "
          f"fastest of {args.repeat} (wall at rtt - wall at 0) / rtt\n")
    print("| operation | round trips | (exact) | protocol minimum | why the minimum |")
    print("| --- | ---: | ---: | ---: | --- |")
    with bench_fleet(args.hosts, args.port, args.second_octet) as bench:
        for name, operation in HUSSH.items():
            count, exact = round_trips(bench, operation, args.rtt, args.repeat)
            least, why = MINIMUM[name]
            print(f"| {name} | {count} | {exact:.2f} | {least} | {why} |", flush=True)
        for name, operation in SSH.items():
            count, exact = round_trips(bench, operation, args.rtt, args.repeat)
            print(f"| {name} | {count} | {exact:.2f} | {OPENSSH[name][1]} | OpenSSH 9.2 client |", flush=True)
        for tool, python in pythons.items():
            label = PEERS[tool][0]
            for name, (count, exact) in peer_round_trips(bench, tool, python, args.rtt, args.repeat).items():
                least = PEER_MINIMUM[name.split(": ", 1)[1]]
                print(f"| {name} | {count} | {exact:.2f} | {least} | {label}, own venv and process |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
