"""What the run journal costs: its size for 10,000 hosts of 1 KiB outputs (all alike, all different), its wall on 1,000.

    python -m scale.bench_journal [--rows 10000] [--output 1024] [--hosts 1000] [--reps 5] [--port 2290]

1. Size: one run of ``--rows`` synthetic host rows, each ``--output`` bytes of stdout (and a short
   stderr), written through ``Journal.start`` / ``Recorder.host`` as a real run writes them (one
   commit per host); the file's size once the run is closed (the WAL checkpointed into it).
2. Overhead: ``--hosts`` loopback endpoints (``hussh.testing.LoopbackFleet``), a fresh
   ``MultiConnection`` per rep doing connect + ``true`` + close, with and without a journal,
   alternating, ``--reps`` times each; the median walls and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hussh import Journal, SSHResult
from hussh.journal import Operation
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses


def journal_size(directory: Path, rows: int, output: int, same: bool = False) -> tuple[int, float]:
    """Bytes on disk of a journal holding one run of ``rows`` hosts, and the seconds its rows took to write;
    ``same``: every host printed the same output (a config file, a version string)."""
    path = directory / f"size-{same}.db"
    hosts = [f"host{i:05d}.example.com" for i in range(rows)]
    recorder = Journal(path).start(Operation("command", command="cat /etc/motd"), hosts, {"batch_size": 100})
    started = time.perf_counter()
    for i, host in enumerate(hosts):
        stdout = ("same " * (output // 5 + 1) if same else f"{host} {i} " * (output // 10 + 1))[:output]
        recorder.host(host, SSHResult(stdout, "warning: x\n", 0), 0.25)
    elapsed = time.perf_counter() - started
    recorder.end()
    files = [p for p in directory.iterdir() if p.name.startswith(path.name)]
    return sum(p.stat().st_size for p in files), elapsed


def overhead(hosts: list[str], port: int, reps: int, directory: Path) -> tuple[list[float], list[float]]:
    """Walls of connect + true + close on every host, without and with a journal, alternating."""
    walls: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(reps + 1):  # the first pair warms caches and is not counted
        for journaled in (False, True) if rep % 2 else (True, False):
            journal = Journal(directory / "overhead.db") if journaled else None
            started = time.perf_counter()
            with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=port,
                                                  batch_size=1000, journal=journal) as mc:
                result = mc.execute("true")
            wall = time.perf_counter() - started
            if result.failed:
                raise SystemExit(f"{len(result.failed)} hosts failed: {next(iter(result.failed.values()))}")
            if rep:
                walls[journaled].append(wall)
    return walls[False], walls[True]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_journal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--output", type=int, default=1024, help="bytes of stdout per host row")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--port", type=int, default=2290)
    parser.add_argument("--second-octet", type=int, default=90)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hussh-bench-journal-") as scratch:
        directory = Path(scratch)
        for same in (False, True):
            size, seconds = journal_size(directory, args.rows, args.output, same)
            print(f"journal of {args.rows} hosts x {args.output} B stdout, {'the same' if same else 'a different'} "
                  f"output per host: {size / 2**20:.1f} MiB ({size / args.rows:.0f} B per host); rows written in "
                  f"{seconds:.2f} s ({seconds / args.rows * 1e6:.0f} us per committed row)")
        if not args.hosts:
            return 0
        addresses = loopback_addresses(args.hosts, second_octet=args.second_octet)
        with LoopbackFleet(addresses, port=args.port, per_process=16) as fleet:
            without, with_journal = overhead(fleet.addresses, fleet.port, args.reps, directory)
    plain, journaled = statistics.median(without), statistics.median(with_journal)
    print(f"{args.hosts} hosts, connect + true + close, {args.reps} reps alternating "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    print(f"  without journal: median {plain:.2f} s  {[round(w, 2) for w in without]}")
    print(f"  with journal:    median {journaled:.2f} s  {[round(w, 2) for w in with_journal]}")
    print(f"  overhead: {(journaled / plain - 1) * 100:+.1f}% of the median wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
