"""What the command line shows: each host as it finishes (lines, JSON, files), then groups and the summary.

Remote stdout goes to our stdout and remote stderr (and hussh's own failure messages) to our
stderr, each line prefixed ``host: ``, as clush does; the summary always goes to stderr.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ._cli_progress import ProgressBar
from ._local_files import create, host_file_name
from ._result import SKIPPED, SSHResult
from ._views import Group, json_line, outcome
from .multi_conn import MultiResult
from .rollout import CallStatus

RULE = "-" * 15

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def prefixed(host: str, text: str) -> str:
    """Every line of ``text`` as ``host: line`` (as it is for an empty ``host``); a last line without
    newline gets one."""
    if not text:
        return ""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not host:
        return "".join(f"{line}\n" for line in lines)
    return "".join(f"{host}: {line}\n" for line in lines)


def save(path: Path, text: str) -> None:
    """Write an ``--outdir`` file readable by its owner only (0600 less the umask): output may hold secrets.
    A file there from an earlier run is narrowed to that too."""
    fd = create(str(path), 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def natural_key(host: str) -> list[str | int]:
    """Sort key putting web2 before web10 (``-L``)."""
    parts: list[str | int] = list(re.split(r"([0-9]+)", host))
    parts[1::2] = [int(p) for p in parts[1::2]]
    return parts


class Display:
    """Receives each finished host (``host()``, an ``on_timed_result`` callback) and ends the run (``finish()``).

    ``mode`` is ``lines`` (default), ``gather`` (``-b``), ``group`` (``-B``), ``sorted`` (``-L``),
    ``json`` or ``quiet``; ``outdir`` also saves every host's output and exit status (stderr in
    ``errdir`` when given); ``prefix=False`` drops the ``host: `` of output lines (``-N``);
    ``progress`` draws a bar on stderr (only asked for when it is a terminal).
    """

    def __init__(self, mode: str, total: int, outdir: Path | None = None, progress: bool = False,
                 stdout: TextIO | None = None, stderr: TextIO | None = None, errdir: Path | None = None,
                 prefix: bool = True, status: Callable[[], CallStatus | None] | None = None) -> None:
        self.mode, self.total, self.outdir, self.errdir, self.prefix = mode, total, outdir, errdir, prefix
        self.out, self.err = stdout or sys.stdout, stderr or sys.stderr
        self.results: dict[str, SSHResult] = {}
        self.seconds: dict[str, float] = {}
        self.failed = self.skipped = 0
        self.status = status  # the running call's snapshot, for the bar and the list of running hosts
        self.bar = ProgressBar(total, self.err) if progress else None

    def host(self, host: str, result: SSHResult, seconds: float) -> None:
        self.results[host] = result
        self.seconds[host] = seconds
        if result.error == SKIPPED:
            self.skipped += 1
        elif outcome(result) != "ok":
            self.failed += 1
        self.save(host, result)
        out = err = ""
        if self.mode == "lines":
            out, err = self.lines(host, result)
        elif self.mode == "gather" and not result.error:
            err = self.error_lines(host, result)  # stdout is printed once per group, at the end
        elif self.mode == "json":
            out = json_line(host, result, seconds)
        write = (lambda: self._emit(out, err)) if out or err else None
        if self.bar is not None:
            self.bar.advance(self.progress_note(), write)
        elif write is not None:
            write()

    def progress_note(self) -> str:
        """What the bar says beside the count: failed, skipped, running, and the wave of a rollout."""
        note = f"{self.failed} failed" + (f", {self.skipped} skipped" if self.skipped else "")
        status = self.status() if self.status is not None else None
        if status is None:
            return note
        note = f"{note}, {len(status.running)} running"
        return note if status.waves == 1 else f"{note}, wave {status.wave + 1}/{status.waves}"

    def running(self) -> None:
        """Print the hosts still running, the slowest first, with how long each has been going (SIGUSR1)."""
        status = self.status() if self.status is not None else None
        if status is None:
            return
        now = time.time()
        lines = [f"hussh: {len(status.running)} host(s) running, slowest first:\n"]
        lines += [f"  {host}: {now - at:.1f} s\n" for host, at in status.running.items()]  # oldest first already
        text = "".join(lines)
        if self.bar is not None:
            self.bar.advance(self.progress_note(), lambda: self._emit("", text), count=0)
        else:
            self._emit("", text)

    def save(self, host: str, result: SSHResult) -> None:
        """``--outdir``/``--errdir``: the host's stdout, stderr and exit status (``-1``: hussh's failure)."""
        if self.outdir is not None:
            base = self.outdir / host_file_name(host)
            save(Path(f"{base}.out"), result.stdout)
            save(Path(f"{base}.status"), f"{result.status}\n")
        errors = self.errdir or self.outdir
        if errors is not None:
            save(Path(f"{errors / host_file_name(host)}.err"), result.stderr)

    def lines(self, host: str, result: SSHResult) -> tuple[str, str]:
        """A host's stdout and stderr as printed line by line (``-N``: without prefix, but hussh's own
        failure messages always name the host)."""
        return prefixed(self._label(host, result), result.stdout), self.error_lines(host, result)

    def error_lines(self, host: str, result: SSHResult) -> str:
        """A host's stderr as printed line by line, and its exit status when not 0."""
        return prefixed(self._label(host, result), result.stderr) + (
            f"hussh: {host}: exit status {result.status}\n" if result.status and not result.error else "")

    def _label(self, host: str, result: SSHResult) -> str:
        return host if self.prefix or result.error else ""

    def _emit(self, out: str, err: str) -> None:
        if out:
            self.out.write(out)
            self.out.flush()
        if err:
            self.err.write(err)
            self.err.flush()

    def close(self) -> None:
        """Take the progress bar off the screen for good."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, order: list[str], elapsed: float, interrupted: bool = False) -> int:
        """Groups (``-b``/``-B``) or sorted lines (``-L``) of the hosts that finished, and the summary
        line; return the exit status."""
        self.close()
        finished = MultiResult(((h, self.results[h]) for h in order if h in self.results), self.seconds)
        if self.mode == "sorted":
            for host in sorted(finished, key=natural_key):
                self._emit(*self.lines(host, finished[host]))
        if self.mode in ("group", "gather"):
            if self.mode == "gather":  # stderr was shown as it came: only stdout and the status must agree
                finished = MultiResult((h, r if r.error else SSHResult(r.stdout, "", r.status)) for h, r in
                                       finished.items())
            groups = finished.grouped(by_error_kind=True)
            text = "".join(map(group_text, [g for g in groups if not g.result.error]
                                + [g for g in groups if g.result.error]))
            self._emit(text, "")
        print(finished.summary().format(elapsed, unfinished=self.total - len(finished)), file=self.err, flush=True)
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or self.skipped else EXIT_OK


def group_text(group: Group) -> str:
    """A group as clush -b shows it: its folded hosts and count between rules, then its output.

    A failure group (hussh's own errors, gathered by kind) shows the first host's message as the example.
    """
    label = f"{group.folded} ({len(group.hosts)})"
    if group.outcome != "ok":
        label += f" {group.outcome}"
    result = group.result
    if result.error:
        example = group.hosts[0]
        body = prefixed(example, result.stdout) + prefixed(example, result.stderr)
    else:
        body = ended(result.stdout) + ended(result.stderr)
    return f"{RULE}\n{label}\n{RULE}\n{body}"


def ended(text: str) -> str:
    """``text`` as is, ending in a newline (none added to nothing)."""
    return text if not text or text.endswith("\n") else text + "\n"
