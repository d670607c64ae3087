"""The command line's options (clush/pssh conventions) and their checks, before anything runs.

Every mistake an operator can make in the arguments (an unknown option, a missing host file, a
malformed range, an unreadable key, a broken ssh config) becomes ``UsageError``: one line on
stderr and exit status 2, with no connection made and no worker started.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import NoReturn, TypedDict

from . import __version__, _credentials
from .errors import HusshError
from .hostlist import expand, read_hosts_file, select
from .multi_conn import MultiConnection

PASSWORD_ENV = "HUSSH_PASSWORD"


class UsageError(Exception):
    """Bad usage or unreadable input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """``argparse`` that reports a mistake in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


class HostFile(str):
    """A ``-f`` argument among the host patterns, so that host order follows the command line."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"want a number of seconds >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"want a port number 1-65535, got {text!r}")
    return int(text)


def _host_options() -> Parser:
    group = Parser(add_help=False)
    hosts = group.add_argument_group("hosts")
    hosts.add_argument("-H", "--hosts", dest="targets", action="append", default=[], metavar="HOSTS",
                       help="comma-separated hosts ([user@]host[:port], names from ~/.ssh/config); repeatable")
    hosts.add_argument("-w", dest="targets", action="append", metavar="PATTERN",
                       help="host pattern with ranges, e.g. 'web[001-120],db[1-3]'; repeatable")
    hosts.add_argument("-f", "--hosts-file", dest="targets", action="append", type=HostFile, metavar="FILE",
                       help="file of hosts or patterns, one a line, '#' comments; repeatable")
    hosts.add_argument("-x", "--exclude", action="append", default=[], metavar="HOSTS",
                       help="hosts to leave out (patterns, '*' and '?' wildcards); repeatable")
    conn = group.add_argument_group("connection")
    conn.add_argument("-l", "--user", help="login user (default: from the host, the ssh config, else root)")
    conn.add_argument("-p", "--port", type=_port, help="port (default: from the host, the ssh config, else 22)")
    conn.add_argument("-i", "--identity", metavar="KEY", help="private key file (its passphrase: $HUSSH_PASSWORD)")
    conn.add_argument("-A", "--ask-pass", action="store_true",
                      help=f"prompt once for the password (else ${PASSWORD_ENV} is used if set)")
    conn.add_argument("-J", "--jump", metavar="[USER@]HOST[:PORT][,...]", help="bastion(s) to go through, as ssh -J")
    conn.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file instead of ~/.ssh/config")
    conn.add_argument("-b", "--batch-size", type=_positive_int, default=100, metavar="N",
                      help="hosts worked on at once (default: 100)")
    conn.add_argument("-t", "--timeout", type=_seconds, default=0.0, metavar="SECONDS",
                      help="per-host limit for the operation, connecting included (default: none)")
    conn.add_argument("--connect-timeout", type=_seconds, default=0.0, metavar="SECONDS",
                      help="per-host limit for connecting and logging in "
                           "(default: the ssh config's ConnectTimeout, else -t, else 15)")
    conn.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes (default: one per CPU)")
    conn.add_argument("-v", "--verbose", action="count", default=0,
                      help="-v: per-connection log lines (asyncssh) and progress logs; -vv: debug detail")
    return group


def _output_options(with_dir: bool) -> Parser:
    group = Parser(add_help=False)
    out = group.add_argument_group("output")
    modes = out.add_mutually_exclusive_group()
    modes.add_argument("-g", "--group", dest="mode", action="store_const", const="group",
                       help="gather hosts with identical output under one header, at the end")
    modes.add_argument("--json", dest="mode", action="store_const", const="json",
                       help="one JSON object per host per line, as each host finishes")
    modes.add_argument("-q", "--quiet", dest="mode", action="store_const", const="quiet",
                       help="print only the summary")
    if with_dir:
        out.add_argument("-o", "--outdir", metavar="DIR",
                         help="also save each host's stdout and stderr to DIR/HOST.out and DIR/HOST.err")
    group.set_defaults(mode="lines", outdir=None)
    return group


# --- the run journal (hussh/_cli_runs.py): where it is written, and resuming a recorded run ---

def _journal_options() -> Parser:
    group = Parser(add_help=False)
    journal = group.add_argument_group("journal (see 'hussh runs')")
    journal.add_argument("--journal", metavar="PATH", help="journal file to record the run in (default: "
                         "journal.sqlite3 in $HUSSH_STATE_DIR, else $XDG_STATE_HOME/hussh, else ~/.local/state/hussh)")
    journal.add_argument("--no-journal", action="store_true", help="record nothing")
    replay = journal.add_mutually_exclusive_group()
    replay.add_argument("--resume", metavar="ID", help="the run ID again, on its hosts without a result "
                                                      "(never one that succeeded); 'last' is the newest run")
    replay.add_argument("--retry-failed", metavar="ID", help="the run ID again, on its hosts that failed")
    return group


def _check_journal_options(args: argparse.Namespace, operands: list[str]) -> None:
    """``--resume``/``--retry-failed`` take the operation and hosts from the journal, so neither is given again."""
    replayed = args.resume or args.retry_failed
    if replayed is None:
        if args.command == "put" and not all(operands):
            raise UsageError(f"hussh {args.command}: the following arguments are required: local, remote")
        return
    option = "--resume" if args.resume else "--retry-failed"
    if args.no_journal:
        raise UsageError(f"hussh: {option} reads the journal: it cannot go with --no-journal")
    if any(operands) or args.targets:
        raise UsageError(f"hussh: {option} runs the recorded {'command' if args.command == 'run' else 'copy'} on the "
                         f"recorded hosts: give neither hosts nor {'a COMMAND' if args.command == 'run' else 'files'}")

# --- end of the run journal's options ---


def build_parser() -> Parser:
    parser = Parser(prog="hussh", description="Run commands, copy files and follow logs on many hosts over SSH.",
                    epilog="Exit status: 0 every host succeeded, 1 some host failed, 2 bad usage, 130 interrupted. "
                           "'hussh fleet ...' runs the test-fleet tool when it is installed.")
    parser.add_argument("--version", action="version", version=f"hussh {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,put,get,tail,runs,fleet}")
    hosts = _host_options()
    journal = _journal_options()
    run = commands.add_parser("run", parents=[hosts, _output_options(True), journal],
                              help="run a command on every host",
                              description="Run COMMAND on every host; output lines are prefixed 'host: '.")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the command (its words joined with spaces, as ssh does)")
    put = commands.add_parser("put", parents=[hosts, _output_options(False), journal],
                              help="copy a local file to every host")
    put.add_argument("local", nargs="?", help="local file")
    put.add_argument("remote", nargs="?", help="remote path")
    get = commands.add_parser("get", parents=[hosts, _output_options(False)],
                              help="copy a remote file from every host to LOCAL_DIR/HOST")
    get.add_argument("remote", help="remote file")
    get.add_argument("local_dir", help="local directory (created if missing); one file per host, named after it")
    tail = commands.add_parser("tail", parents=[hosts], help="follow a remote file on every host until Ctrl-C")
    tail.add_argument("remote", help="remote file")
    tail.add_argument("--interval", type=_seconds, default=0.5, metavar="SECONDS",
                      help="how often to look for new lines (default: 0.5)")
    commands.add_parser("runs", help="list the journal's runs, or show one (hussh runs --help)", add_help=False)
    commands.add_parser("fleet", help="the test-fleet tool (hussh.testing), when installed", add_help=False)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parsed and checked options; ``UsageError`` for anything wrong."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd and not (args.resume or args.retry_failed):
            raise UsageError("hussh run: no command given (see 'hussh run --help')")
    if args.command in ("run", "put"):
        _check_journal_options(args, [" ".join(args.cmd)] if args.command == "run" else [args.local, args.remote])
    return args


def hosts_of(args: argparse.Namespace) -> list[str]:
    """The hosts named by ``-H``/``-w``/``-f`` in command-line order, minus ``-x``; never empty."""
    patterns: list[str] = []
    try:
        for target in args.targets:
            patterns.extend(read_hosts_file(target) if isinstance(target, HostFile) else [target])
        hosts = select(patterns, args.exclude)
    except OSError as exc:
        raise UsageError(f"hussh: cannot read host file {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"hussh: {exc}") from None
    if not hosts:
        raise UsageError("hussh: no hosts left after -x" if patterns and any(map(expand, patterns))
                         else "hussh: no hosts given (use -H, -w or -f)")
    return hosts


def password_of(args: argparse.Namespace) -> str | None:
    """``-A`` asks once on the terminal; otherwise ``$HUSSH_PASSWORD``, if set (never an option)."""
    if args.ask_pass:
        try:
            return getpass.getpass("Password: ")
        except (EOFError, OSError) as exc:
            raise UsageError(f"hussh: -A could not read a password: {exc or 'end of input'}") from None
    return os.environ.get(PASSWORD_ENV)


class _Options(TypedDict, total=False):
    """``connect()``'s options that are only passed when given on the command line."""

    private_key: str
    port: int
    ssh_config: str


def connect(args: argparse.Namespace) -> MultiConnection:
    """A ``MultiConnection`` for the options; nothing is started yet (workers start on the first call)."""
    hosts = getattr(args, "journal_hosts", None) or hosts_of(args)  # --resume: the run's hosts, from the journal
    password = password_of(args)
    options: _Options = {}
    if args.identity is not None:
        found = _credentials.material(os.path.expanduser(args.identity), password)
        if found.error:
            raise UsageError(f"hussh: {found.error}")
        options["private_key"] = args.identity
    if args.port is not None:
        options["port"] = args.port
    if args.ssh_config is not None:
        options["ssh_config"] = args.ssh_config
    try:
        return MultiConnection.from_shared_auth(
            hosts, username=args.user, password=password, timeout=args.timeout, batch_size=args.batch_size,
            connect_timeout=args.connect_timeout, proxy_jump=args.jump, workers=args.workers,
            journal=getattr(args, "journal_db", None), **options,
        )
    except (ValueError, TypeError, OSError, HusshError) as exc:
        raise UsageError(f"hussh: {exc}") from None


def fail(error: UsageError) -> int:
    """Report bad usage in one line; the exit status for it."""
    print(error, file=sys.stderr)
    return 2
