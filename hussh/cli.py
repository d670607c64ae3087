"""``hussh``: the operator's command line over ``MultiConnection`` (clush/pdsh letters, pssh's where they agree).

    hussh run  [HOSTS] [CONN] [OUTPUT] COMMAND...
    hussh put  [HOSTS] [CONN] [OUTPUT] LOCAL REMOTE
    hussh get  [HOSTS] [CONN] [OUTPUT] REMOTE LOCAL_DIR
    hussh tail [HOSTS] [CONN] REMOTE_FILE
    hussh fleet ...

Exit status: 0 every host succeeded, 1 some host failed, 2 bad usage (nothing ran), 130
interrupted; with ``-S`` the largest exit status of the hosts. ``docs/cli.md`` describes every
option, the output modes and the JSON schema.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._cli_args import UsageError, connect, fail, fetched_as, parse
from ._cli_input import how_to_run
from ._cli_output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Display, prefixed
from ._cli_progress import listing_on_request
from ._cli_runs import replay, runs, setup
from ._result import SSHResult
from .multi_conn import MultiConnection, MultiResult, OnTimedResult

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

Operation = Callable[[OnTimedResult], MultiResult]

_handler: logging.Handler | None = None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hussh`` command; returns the exit status."""
    started = time.time()  # tail follows from here: lines written while hosts connect are shown
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fleet"]:
        return fleet(argv[1:])
    if argv[:1] == ["runs"]:
        return runs(argv[1:])
    try:
        args = parse(argv)
        configure_logging(args.verbose)
        if (nothing_to_do := setup(args)) is not None:  # the journal; --resume / --retry-failed
            return nothing_to_do
        mc = connect(args)
        if args.command == "tail":
            return tail(mc, args.remote, args.interval, started, args.lines)
        return perform(mc, prepare(mc, args), args)
    except UsageError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of our output went away (``| head``): stop quietly, as ``cat`` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def configure_logging(verbosity: int) -> None:
    """Before any worker starts (they inherit it): hussh's warnings only, asyncssh's per-connection
    lines from ``-v``, debug detail from ``-vv``; every line names the process it came from."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # main() called again in one process (tests, scripts): one handler, not two
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d [%(process)d] %(message)s", "%H:%M:%S"))
    root.addHandler(_handler)
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.getLogger("hussh").setLevel(level)
    logging.getLogger("asyncssh").setLevel(level)
    if verbosity >= 2:
        import asyncssh  # noqa: PLC0415 - already imported by hussh; named here for its debug switch

        asyncssh.set_debug_level(2)


def prepare(mc: MultiConnection, args: argparse.Namespace) -> Operation:
    """The call to make for ``run``/``put``/``get``, with its local files checked (and directories made) first."""
    if (replayed := replay(mc, args)) is not None:
        make_dir(getattr(args, "outdir", None))
        return replayed
    if args.command == "run":
        command = " ".join(args.cmd)
        make_dir(args.outdir)
        make_dir(args.errdir)
        how = how_to_run(args)  # stdin read and sudo password asked before any host starts
        return lambda on_host: mc.execute(command, on_timed_result=on_host, **how)  # mc.limits has the rollout
    if args.command == "put":
        if os.path.isdir(args.local):
            if not args.recursive:
                raise UsageError(f"hussh: {args.local} is a directory: copy it with put -r (on every host "
                                 f"{args.remote} becomes a copy of it)")
            return lambda on_host: mc.sftp_put_dir(args.local, args.remote, on_timed_result=on_host)
        try:
            with open(args.local, "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"hussh: cannot read {args.local}: {exc.strerror}") from None
        return lambda on_host: mc.sftp_write(args.local, args.remote, on_timed_result=on_host)
    make_dir(args.local_dir)
    template = os.path.join(args.local_dir, "{host}", fetched_as(args.remote))
    if args.recursive:
        return lambda on_host: mc.sftp_get_dir(args.remote, template, on_timed_result=on_host)
    return lambda on_host: mc.sftp_read(args.remote, template, on_timed_result=on_host)


def make_dir(path: str | None) -> None:
    if path is not None:
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"hussh: cannot create directory {path}: {exc.strerror}") from None


def perform(mc: MultiConnection, operation: Operation, args: argparse.Namespace) -> int:
    """Run the operation, showing hosts as they finish; Ctrl-C shows what finished and exits 130."""
    hosts = mc.hosts
    errdir = getattr(args, "errdir", None)
    display = Display(args.mode, len(hosts), Path(args.outdir) if getattr(args, "outdir", None) else None,
                      progress=args.mode not in ("quiet", "sorted") and sys.stderr.isatty(),
                      errdir=Path(errdir) if errdir else None, prefix=not args.no_prefix, status=mc.status)
    started = time.monotonic()
    interrupted = False
    try:
        with listing_on_request(display.running):  # SIGUSR1, SIGINFO, Enter on the terminal
            operation(display.host)
    except KeyboardInterrupt:  # the pool has already stopped every worker
        interrupted = True
    except ValueError as exc:  # raised before anything ran (e.g. a file too large for put)
        display.close()
        mc.close()
        return fail(UsageError(f"hussh: {exc}"))
    try:
        status = display.finish(hosts, time.monotonic() - started, interrupted)
        return largest_status(display) if args.max_status and not interrupted else status
    finally:
        mc.close()


def largest_status(display: Display) -> int:
    """``-S``: the largest exit status of the hosts, as clush and pdsh return it; 255 (ssh's own) for a
    host hussh could not work on."""
    return max((255 if result.error else result.status for result in display.results.values()), default=0)


def tail(mc: MultiConnection, remote: str, interval: float, since: float, lines: int) -> int:
    """Print lines appended to ``remote`` on every host since ``since``, prefixed ``host: ``, until Ctrl-C (exit 130).

    Each host's lines print from the moment its own tail is open, while other hosts still connect
    (``MultiFileTailer.follow``). A host whose file changed after ``since`` (its mtime) starts at its
    last ``lines`` lines, since where it was at ``since`` cannot be known. A host that fails is reported
    once on stderr; when every host has failed, the exit status is 1.
    """
    partial: dict[str, str] = {}

    def show(host: str, text: str) -> None:
        complete, _, rest = (partial.pop(host, "") + text).rpartition("\n")
        if rest:
            partial[host] = rest
        if complete:
            sys.stdout.write(prefixed(host, complete + "\n"))
            sys.stdout.flush()

    def ended(host: str, result: SSHResult) -> None:
        if result.status != 0:
            sys.stderr.write(prefixed(host, result.stderr))
            sys.stderr.flush()

    try:
        results = mc.tail(remote, since=since, lines=lines).follow(show, interval=interval, on_result=ended)
        return EXIT_FAILED if results.failed else EXIT_OK
    except KeyboardInterrupt:
        for host, rest in partial.items():
            sys.stdout.write(prefixed(host, rest))
        sys.stdout.flush()
        return EXIT_INTERRUPTED
    finally:
        mc.close()


def fleet(argv: list[str]) -> int:
    """``hussh fleet ...``: the test-fleet tool of ``hussh.testing``, when this installation has it."""
    try:
        from hussh.testing.cli import main as fleet_main  # noqa: PLC0415 - optional, built separately
    except ModuleNotFoundError as exc:
        if exc.name not in ("hussh.testing", "hussh.testing.cli"):
            raise
        print("hussh fleet: not available: this installation has no hussh.testing.cli", file=sys.stderr)
        return EXIT_USAGE
    return int(fleet_main(argv) or 0)


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]
