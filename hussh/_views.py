"""Views of many hosts' results for people and batch jobs: identical outputs grouped, outcomes counted, JSON lines.

Used by ``MultiResult.grouped()``, ``.summary()`` and ``.json_lines()`` and by the command line.
Nothing here copies an output: a group holds the first of its hosts' results, and the pool
already hands identical outputs over as one string object, so 1,000 hosts printing the same
megabyte cost one megabyte here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import msgspec

from ._result import SKIPPED, SSHResult
from .hostlist import fold

__all__ = ["Group", "HostRecord", "Summary", "group_results", "json_line", "outcome", "summarize"]

OK = "ok"
SKIPPED_LABEL = "skipped"


def outcome(result: SSHResult) -> str:
    """``"ok"``, ``"exit N"`` for a command that ran and failed, hussh's error kind (``"ConnectTimeout"``),
    or ``"skipped"`` for a host a rollout never started."""
    if result.error == SKIPPED:
        return SKIPPED_LABEL
    if result.error:
        return result.error
    return OK if result.status == 0 else f"exit {result.status}"


class Group(NamedTuple):
    """Hosts that share one result; ``folded`` names them short (``web[001-117,119]``)."""

    hosts: list[str]
    folded: str
    result: SSHResult

    @property
    def outcome(self) -> str:
        return outcome(self.result)


def group_results(results: Mapping[str, SSHResult], by_error_kind: bool = False) -> list[Group]:
    """Hosts with identical ``(status, stdout, stderr)`` together, largest group first (ties: host order).

    With ``by_error_kind``, hussh's own failures group by kind alone (their messages name each
    host, so they would never match), each group keeping its first host's result as the example.
    """
    members: dict[object, list[str]] = {}
    first: dict[object, SSHResult] = {}
    for host, result in results.items():
        key: object = result.error if by_error_kind and result.error else \
            (result.status, result.stdout, result.stderr, result.error)
        hosts = members.get(key)
        if hosts is None:
            members[key] = [host]
            first[key] = result
        else:
            hosts.append(host)
    ordered = sorted(members, key=lambda k: -len(members[k]))  # stable: ties keep host order
    return [Group(members[k], fold(members[k]), first[k]) for k in ordered]


class Summary(NamedTuple):
    """How many hosts had each outcome: ``"ok"`` first, then the most common failures, ``"skipped"`` last."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        """Hosts that failed (skipped ones are not: they never started)."""
        return self.total - self.counts.get(OK, 0) - self.skipped

    @property
    def skipped(self) -> int:
        return self.counts.get(SKIPPED_LABEL, 0)

    def format(self, seconds: float | None = None, unfinished: int = 0) -> str:
        """``997 ok, 2 ConnectTimeout, 1 exit 1 in 12.3 s``; ``unfinished`` hosts (an interrupted run) are named too."""
        parts = [f"{count} {label}" for label, count in self.counts.items()]
        if unfinished:
            parts.append(f"{unfinished} not finished")
        text = ", ".join(parts) or "no hosts"
        return text if seconds is None else f"{text} in {seconds:.1f} s"

    def __str__(self) -> str:
        return self.format()


def summarize(results: Iterable[SSHResult]) -> Summary:
    """Count outcomes (see ``outcome``)."""
    counts = Counter(map(outcome, results))
    ok = counts.pop(OK, 0)
    skipped = counts.pop(SKIPPED_LABEL, 0)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return Summary(({OK: ok} if ok else {}) | dict(ordered) | ({SKIPPED_LABEL: skipped} if skipped else {}))


class HostRecord(msgspec.Struct, omit_defaults=True):
    """One line of the JSON-lines export; fields may be added later, never renamed or removed.

    ``skipped`` appears (``true``) only for a host a rollout never started."""

    host: str
    status: int
    stdout: str
    stderr: str
    error: str
    seconds: float
    skipped: bool = False


_encoder = msgspec.json.Encoder()


def json_line(host: str, result: SSHResult, seconds: float) -> str:
    """``{"host": ..., "status": ..., "stdout": ..., "stderr": ..., "error": ..., "seconds": ...}`` and a newline
    (``"skipped": true`` too for a host a rollout never started)."""
    record = HostRecord(host, result.status, result.stdout, result.stderr, result.error, round(seconds, 3),
                        result.error == SKIPPED)
    return _encoder.encode(record).decode() + "\n"
