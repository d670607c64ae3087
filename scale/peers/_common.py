"""What every peer runner shares: its command line, the target list, result checks, the JSON report.

Stdlib only, so it imports in every tool's own venv. A runner is started by ``scale/bench.py`` as
its own process (the bench measures the whole process: wall, CPU, RSS); the runner reports what
it saw on stdout as one JSON line: how many hosts completed both commands with the right output,
the failures grouped by message, and ``time.monotonic()`` marks of its phases (CLOCK_MONOTONIC is
system-wide on Linux, so the bench can place them against its own spawn time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

T_START = time.monotonic()  # first line the runner executes, after interpreter start-up


@dataclass
class Target:
    host: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Run:
    """One runner's options and its phase marks."""

    targets: list[Target]
    user: str
    password: str | None
    key: str | None
    batch: int
    options: argparse.Namespace = field(default_factory=argparse.Namespace)  # the runner's own options
    marks: dict[str, float] = field(default_factory=lambda: {"start": T_START})

    @property
    def hosts(self) -> list[str]:
        return [t.host for t in self.targets]

    @property
    def common_port(self) -> int | None:
        """The port shared by every target, or None when they differ."""
        ports = {t.port for t in self.targets}
        return ports.pop() if len(ports) == 1 else None

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> Run:
    """The runner's command line; ``extra`` adds the runner's own options (found in ``Run.options``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", required=True, help="file of host:port lines")
    parser.add_argument("--user", required=True)
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--password")
    auth.add_argument("--key", help="path of an unencrypted private key")
    parser.add_argument("--batch", type=int, default=100, help="concurrent hosts (every tool gets the same)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    targets = []
    with open(args.targets, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                host, _, port = line.rpartition(":")
                targets.append(Target(host, int(port)))
    return Run(targets, args.user, args.password, args.key, args.batch, args)


_NUMBERS = re.compile(r"\d+(\.\d+)*")


def _group(message: str) -> str:
    """Failure messages grouped by shape: addresses, ports and counts become ``N``."""
    text = (message or "").strip()
    first = text.splitlines()[0] if text else "no error message"
    return _NUMBERS.sub("N", first)[:240]


class Tally:
    """Per-host verdicts: a host completes when ``true`` exits 0 and ``whoami`` prints the login user."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.completed = 0
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def check(self, name: str, ok: bool, error: str | None = None) -> None:
        """A host's verdict in a workload of its own (``error`` says what was wrong)."""
        if ok:
            self.completed += 1
            return
        key = _group(error or "wrong result")
        self.failures[key] += 1
        self.examples.setdefault(key, f"{name}: {(error or 'wrong result').strip()[:400]}")

    def host(self, name: str, true_status: int | None, whoami_status: int | None, whoami_stdout: str | None,
             error: str | None = None) -> None:
        if true_status == 0 and whoami_status == 0 and (whoami_stdout or "").strip() == self.run.user:
            self.completed += 1
            return
        if error is None:
            if true_status != 0:
                error = f"'true' exit status {true_status}"
            elif whoami_status != 0:
                error = f"'whoami' exit status {whoami_status}"
            else:
                error = f"'whoami' printed {(whoami_stdout or '')[:40]!r}, expected {self.run.user!r}"
        key = _group(error)
        self.failures[key] += 1
        self.examples.setdefault(key, f"{name}: {error.strip()[:400]}")

    def report(self, tool: str, version: str, **extra: object) -> None:
        self.run.mark("end")
        top = self.failures.most_common(8)
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps({
            "tool": tool,
            "version": version,
            "hosts": len(self.run.targets),
            "completed": self.completed,
            "failed": len(self.run.targets) - self.completed,
            "failures": [{"count": n, "error": k, "example": self.examples[k]} for k, n in top],
            "marks": self.run.marks,
            # CPU seconds so far: this process, and the children it has already reaped (workers)
            "cpu_self": {"user": own.ru_utime, "sys": own.ru_stime},
            "cpu_children": {"user": kids.ru_utime, "sys": kids.ru_stime},
            **extra,
        }))
        sys.stdout.flush()


# ---------------------------------------------------------------- what a runner can measure of itself

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(k) for k in handle.read().split())
        except OSError:
            pass
    return pids


def tree_cpu() -> float:
    """CPU seconds of this process, its live descendants (hussh's workers) and the children they reaped.

    ``getrusage(RUSAGE_CHILDREN)`` only counts children once reaped; workers live across calls, so
    a phase's CPU is read from ``/proc`` instead (threads included: upstream's runtime is threaded).
    """
    total = 0
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                total += sum(int(f) for f in handle.read().rsplit(")", 1)[1].split()[11:15])
        except OSError:
            pass
    return total / _CLK_TCK


def tree_pss_kib() -> int:
    """Summed PSS of this process and its live descendants, in KiB."""
    total = 0
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def wire_bytes(port: int) -> tuple[int, int]:
    """(bytes servers sent, bytes they received) over the established TCP connections from local port ``port``.

    Read with ``ss`` on the server ends, so it counts what crossed the wire for every client alike
    (SSH framing and encryption included); take it before and after a phase and subtract.
    """
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=False).stdout
    sent = received = 0
    for match in re.finditer(r"bytes_acked:(\d+)|bytes_received:(\d+)", out):
        if match.group(1):
            sent += int(match.group(1))
        else:
            received += int(match.group(2))
    return sent, received


def timed_rounds(run: Run, tally: Tally, count: int, one_round: Callable[[], object],
                 error_of: Callable[[object, str], str | None]) -> dict[str, object]:
    """``count`` rounds of ``one_round()``, each timed (wall, process-tree CPU); a host counts as done
    only if no round failed it (its first error is kept). Returns the figures for the report."""
    bad: dict[str, str] = {}
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(count):
        cpu, wall = tree_cpu(), time.perf_counter()
        results = one_round()
        walls.append(time.perf_counter() - wall)
        cpus.append(tree_cpu() - cpu)
        for host in run.hosts:
            error = error_of(results, host)
            if error and host not in bad:
                bad[host] = error
    run.mark("rounds")
    for host in run.hosts:
        tally.check(host, host not in bad, bad.get(host))
    return dict(round_s=walls, round_cpu_s=cpus, round_median_s=statistics.median(walls),
                round_cpu_median_s=statistics.median(cpus))
