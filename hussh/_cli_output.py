"""What the command line shows: each host as it finishes (lines, JSON, files), then groups and the summary.

Remote stdout goes to our stdout and remote stderr (and hussh's own failure messages) to our
stderr, each line prefixed ``host: ``, as clush does; the summary always goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ._cli_progress import ProgressBar
from ._local_files import create, host_file_name
from ._result import SSHResult
from ._views import Group, json_line, outcome
from .multi_conn import MultiResult

RULE = "-" * 15

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def prefixed(host: str, text: str) -> str:
    """Every line of ``text`` as ``host: line``; a last line without newline gets one."""
    if not text:
        return ""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return "".join(f"{host}: {line}\n" for line in lines)


def save(path: Path, text: str) -> None:
    """Write an ``--outdir`` file readable by its owner only (0600 less the umask): output may hold secrets.
    A file there from an earlier run is narrowed to that too."""
    fd = create(str(path), 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class Display:
    """Receives each finished host (``host()``, an ``on_timed_result`` callback) and ends the run (``finish()``).

    ``mode`` is ``lines`` (default), ``group``, ``json`` or ``quiet``; ``outdir`` also saves every
    host's output; ``progress`` draws a bar on stderr (only asked for when it is a terminal).
    """

    def __init__(self, mode: str, total: int, outdir: Path | None = None, progress: bool = False,
                 stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.mode, self.total, self.outdir = mode, total, outdir
        self.out, self.err = stdout or sys.stdout, stderr or sys.stderr
        self.results: dict[str, SSHResult] = {}
        self.seconds: dict[str, float] = {}
        self.failed = 0
        self.bar = ProgressBar(total, self.err) if progress else None

    def host(self, host: str, result: SSHResult, seconds: float) -> None:
        self.results[host] = result
        self.seconds[host] = seconds
        if outcome(result) != "ok":
            self.failed += 1
        if self.outdir is not None:
            name = host_file_name(host)
            save(self.outdir / f"{name}.out", result.stdout)
            save(self.outdir / f"{name}.err", result.stderr)
        out = err = ""
        if self.mode == "lines":
            out = prefixed(host, result.stdout)
            err = prefixed(host, result.stderr) + (f"hussh: {host}: exit status {result.status}\n"
                                                   if result.status and not result.error else "")
        elif self.mode == "json":
            out = json_line(host, result, seconds)
        write = (lambda: self._emit(out, err)) if out or err else None
        if self.bar is not None:
            self.bar.advance(self.failed, write)
        elif write is not None:
            write()

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
        """Groups (``-g``) of the hosts that finished and the summary line; return the exit status."""
        self.close()
        finished = MultiResult(((h, self.results[h]) for h in order if h in self.results), self.seconds)
        if self.mode == "group":
            groups = finished.grouped(by_error_kind=True)
            text = "".join(map(group_text, [g for g in groups if not g.result.error]
                                + [g for g in groups if g.result.error]))
            self._emit(text, "")
        print(finished.summary().format(elapsed, unfinished=self.total - len(finished)), file=self.err, flush=True)
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK


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
