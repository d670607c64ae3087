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
import re
import resource
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
