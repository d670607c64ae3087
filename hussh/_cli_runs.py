"""The command line's side of the run journal: ``hussh runs`` (list, ``show ID``), the journal ``run`` and
``put`` record in, and ``--resume`` / ``--retry-failed`` replaying a recorded run.

    hussh runs [-n N] [--journal PATH]
    hussh runs show ID [-b | -B | --json | -q] [--journal PATH]

A replayed run takes its operation (command, or file and remote path) and its hosts from the
journal, and the connection options it recorded unless given again; credentials are never
recorded, so ``-A`` or ``$HUSSH_PASSWORD`` are given again when the run needed them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ._cli_args import Parser, UsageError, build_parser, fail
from ._cli_input import how_to_run
from ._cli_output import EXIT_FAILED, EXIT_OK, Display
from .journal import SKIPPED, Journal, JournalError, RunInfo
from .multi_conn import MultiConnection, MultiResult, OnTimedResult

RECORDED = {"user": str, "port": int, "identity": str, "jump": str, "ssh_config": str, "timeout": float,
            "connect_timeout": float, "batch_size": int, "workers": int}
"""The options ``run``/``put`` record (never a credential), and restore on a replay unless given again."""

KINDS = {"run": "command", "put": "transfer"}


def setup(args: argparse.Namespace) -> int | None:
    """Before connecting: ``args.journal_db`` (the journal to record in, or None) and, on a replay, the
    run's hosts (``args.journal_hosts``) and options. An exit status when there is nothing to replay."""
    args.journal_db = args.journal_hosts = args.replayed = None
    if args.command not in KINDS or args.no_journal:
        return None
    wanted = args.resume or args.retry_failed
    try:
        journal = Journal(args.journal) if args.journal else Journal.default()
        if wanted is not None:
            run = journal.run(_resolve(journal, wanted))
            if run.kind != KINDS[args.command]:
                other = next(c for c, k in KINDS.items() if k == run.kind)
                raise JournalError(f"run {run.id} is a {run.kind}: replay it with hussh {other}")
            hosts = journal.pending(run.id, failed_only=bool(args.retry_failed))
            if not hosts:
                print(f"hussh: run {run.id} has no host {'that failed' if args.retry_failed else 'without a result'}"
                      ": nothing to do", file=sys.stderr)
                return EXIT_OK
            _restore(args, run)
            args.journal_hosts, args.replayed = hosts, run.id
    except JournalError as exc:
        raise UsageError(f"hussh: {exc}" + ("" if wanted else " (--no-journal runs without a journal)")) from None
    journal.options = {"command": args.command,  # None for an option not given: never restored as if it were
                       **{name: getattr(args, name, None) for name in RECORDED}}
    args.journal_db = journal
    return None


def replay(mc: MultiConnection, args: argparse.Namespace) -> Callable[[OnTimedResult], MultiResult] | None:
    """The call of ``--resume`` / ``--retry-failed`` (None without them)."""
    if getattr(args, "replayed", None) is None:
        return None
    method = mc.retry_failed if args.retry_failed else mc.resume
    data: bytes | None = None
    password: str | None = None
    if args.command == "run":  # the run's stdin again (checked against the journal), --sudo's password
        how = how_to_run(args)
        data, password = how["input"] or None, how["sudo_password"]
    return lambda on_host: method(args.replayed, on_timed_result=on_host, data=data,  # mc.limits has the rollout
                                  sudo_password=password)


def _resolve(journal: Journal, wanted: str) -> int | str:
    """``last``: the newest run; anything else is checked by the journal."""
    if wanted != "last":
        return wanted
    newest = journal.runs(1)
    if not newest:
        raise JournalError(f"{journal.path} has no run yet")
    return newest[0].id


def _restore(args: argparse.Namespace, run: RunInfo) -> None:
    """Options the run recorded take the place of options not given now (still at their defaults)."""
    defaults = vars(build_parser().parse_args([args.command, "--resume", "1"]))
    for name, kind in RECORDED.items():
        value = run.options.get(name)
        if value is None or getattr(args, name, None) != defaults.get(name):
            continue
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or isinstance(value, bool):
            raise JournalError(f"run {run.id} recorded {name}={value!r}, not a {kind.__name__}")
        setattr(args, name, kind(value))


def runs_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--journal", metavar="PATH", help="the journal file (default: the state directory's)")
    parser = Parser(prog="hussh runs", parents=[common], description="The runs recorded in the journal, newest first.")
    parser.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="how many runs (default: 20; 0: all)")
    actions = parser.add_subparsers(dest="action", metavar="show")
    show = actions.add_parser("show", parents=[common], help="print a run as it was shown live",
                              description="Print a recorded run as 'hussh run' showed it; exit 0 only when every "
                                          "host succeeded.")
    show.add_argument("id", metavar="ID", help="the run's ID (from 'hussh runs'), or 'last'")
    modes = show.add_mutually_exclusive_group()
    modes.add_argument("-b", "--gather", dest="mode", action="store_const", const="gather",
                       help="gather hosts with identical stdout and status under one header, as 'hussh run -b'")
    modes.add_argument("-B", "--gather-all", dest="mode", action="store_const", const="group",
                       help="gather with stderr too, as 'hussh run -B'")
    modes.add_argument("--json", dest="mode", action="store_const", const="json",
                       help="one JSON object per host per line, as 'hussh run --json'")
    modes.add_argument("-q", "--quiet", dest="mode", action="store_const", const="quiet", help="only the summary")
    show.set_defaults(mode="lines")
    return parser


def runs(argv: list[str]) -> int:
    """``hussh runs ...``; the exit status."""
    try:
        args = runs_parser().parse_args(argv)
        journal = Journal(args.journal) if args.journal else Journal.default()
        if args.action == "show":
            return show(journal, args.id, args.mode)
        if not journal.path.exists():
            print(f"hussh: no runs recorded in {journal.path}", file=sys.stderr)
            return EXIT_OK
        listing(journal.runs(args.limit or None))
        return EXIT_OK
    except JournalError as exc:
        return fail(UsageError(f"hussh: {exc}"))
    except UsageError as exc:
        return fail(exc)


def listing(found: list[RunInfo]) -> None:
    """One line per run: ID, start, kind, hosts per outcome, and what it did."""
    print(f"{'ID':>5}  {'STARTED':19}  {'KIND':8}  {'HOSTS':>6} {'DONE':>6} {'FAILED':>6} {'SKIPPED':>7} "
          f"{'UNFINISHED':>10}  COMMAND")
    for run in found:
        what = printable(run.operation.describe())
        if run.resumes is not None:
            what += f"  ({run.how} of {run.resumes})"
        print(f"{run.id:>5}  {when(run.started)}  {run.kind:8}  {run.host_count:>6} {run.succeeded:>6} "
              f"{run.failed:>6} {run.skipped:>7} {run.unfinished:>10}  {what}")


def show(journal: Journal, wanted: str, mode: str) -> int:
    """Replay a run's hosts through the live display (in the order they finished), then its summary."""
    run = journal.run(_resolve(journal, wanted))
    who = f"{run.user}@{run.hostname} (pid {run.pid})"
    extra = f", {run.how} of run {run.resumes}" if run.resumes is not None else ""
    state = f"ended {when(run.ended)}" if run.ended is not None else "never ended (the caller died)"
    print(f"hussh: run {run.id}: {run.kind} {printable(run.operation.describe())!r} on {run.host_count} hosts "
          f"by {who}, started {when(run.started)}, {state}{extra}", file=sys.stderr)
    display = Display(mode, run.host_count)
    finished = [entry for entry in run.entries.values() if entry.status != SKIPPED]
    for entry in finished:
        display.host(entry.host, entry.result, entry.seconds)
    last = run.ended or max((entry.finished for entry in finished), default=run.started)
    status = display.finish(run.hosts, last - run.started)
    return EXIT_FAILED if status == EXIT_OK and run.succeeded < run.host_count else status


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def printable(text: str) -> str:
    """``text`` on one line: control characters escaped (a command may hold newlines or escapes)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
