"""The command line's options (clush/pdsh letters, pssh's where they agree) and their checks, before anything runs.

Every mistake an operator can make in the arguments (an unknown option, a missing host file, a
malformed range, an unreadable key, a broken ssh config) becomes ``UsageError``: one line on
stderr and exit status 2, with no connection made and no worker started.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import shutil
import sys
import tempfile
from typing import NoReturn

from . import __version__, _credentials
from ._cli_config import ENV as CONFIG_ENV
from ._cli_config import ConfigFileError, FileConfig
from ._cli_config import load as load_config
from ._config import HONOURED, config_paths
from ._inventory_dsh import groups as dsh_groups
from ._options import ConnectOptions, FleetLimits
from .errors import HusshError
from .hostlist import expand, read_hosts_file, select
from .inventory import ENV as INVENTORY_ENV
from .inventory import Inventory, InventoryError, default_paths
from .inventory import load as load_inventory
from .multi_conn import MultiConnection
from .rollout import Rollout

PASSWORD_ENV = "HUSSH_PASSWORD"


class UsageError(Exception):
    """Bad usage or unreadable input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """``argparse`` that reports a mistake in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        if HINT in message:
            raise UsageError(f"hussh: {message.split(HINT, 1)[1]}")
        for option, hint in RENAMED.items():
            if message.startswith(f"argument {option}/") and "expected one argument" in message:
                raise UsageError(f"hussh: {hint}")
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


class HostFile(str):
    """A ``--hostfile`` argument among the host patterns, so that host order follows the command line."""


class Nodes(str):
    """A ``-w`` node set (``@group``, ``^file``, ``-host`` and ``!``/``&`` as clush and pdsh read them)."""


class Groups(str):
    """A ``-g`` group list (an Ansible pattern: ``web,db``, ``web:&prod``)."""


HINT = "\0"
"""Starts a type error that is the whole message: the mistake of someone used to another tool's letter."""

RENAMED = {
    "-g": "-g takes a GROUP as in clush and pdsh (e.g. -g web); gathering identical output is -b (-B with stderr)",
    "-o": "-o takes an ssh option Key=Value as ssh and clush do (e.g. -o ConnectTimeout=5); "
          "an output directory is --outdir DIR",
    "-f": "-f is the fanout (a number) as in clush and pdsh; a host file is --hostfile FILE",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"want a positive integer, got {text!r}")
    return value


def _fanout(text: str) -> int:
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{HINT}{RENAMED['-f']} (got -f {text})") from None


def _pssh_parallelism(text: str) -> int:
    raise argparse.ArgumentTypeError(f"{HINT}-p is not an option of hussh: pssh's parallelism is -f N (the fanout, "
                                     f"as clush and pdsh); a port is --port N or host:port (got -p {text})")


def _ssh_option(text: str) -> tuple[str, str]:
    """``Key=Value`` or ``Key Value`` (also clush's ``-oKey=Value``) naming an ssh config option hussh applies."""
    body = text[2:] if text.startswith("-o") else text
    key, _, value = body.replace("=", " ", 1).partition(" ")
    key, value = key.strip(), value.strip()
    if not key or not value:
        raise argparse.ArgumentTypeError(f"{HINT}{RENAMED['-o']} (got -o {text})")
    known = {name.lower(): name for name in HONOURED}
    if key.lower() not in known:
        raise argparse.ArgumentTypeError(f"{HINT}-o {key}: not an ssh option hussh applies "
                                         f"(those are: {', '.join(HONOURED)})")
    return known[key.lower()], value


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
    hosts.add_argument("-w", "--nodes", dest="targets", action="append", default=[], type=Nodes, metavar="NODES",
                       help="nodes as clush/pdsh: 'web[001-120],db[1-3]', @group, ^file, -host or !host to leave "
                            "out, &@group to intersect, ^@group for either but not both (left to right); repeatable")
    hosts.add_argument("-H", "--hosts", dest="targets", action="append", metavar="HOSTS",
                       help="comma-separated hosts ([user@]host[:port], names from ~/.ssh/config, ranges); repeatable")
    hosts.add_argument("--hostfile", "--hosts-file", dest="targets", action="append", type=HostFile, metavar="FILE",
                       help="file of hosts or patterns, one a line, '#' comments; repeatable")
    hosts.add_argument("-g", "--group", dest="targets", action="append", type=Groups, metavar="GROUP",
                       help="hosts of inventory groups: 'web', 'web,db', 'web:&prod:!web3', 'web[0:2]'; else dsh "
                            "group files (~/.dsh/group, $DSHGROUP_PATH); repeatable")
    hosts.add_argument("-a", "--all", action="store_true", help="every host of the inventory")
    hosts.add_argument("-x", "--exclude", action="append", default=[], metavar="NODES",
                       help="nodes to leave out (node sets, @group, '*' and '?' wildcards); repeatable")
    hosts.add_argument("-X", "--exclude-group", action="append", default=[], metavar="GROUP",
                       help="inventory groups to leave out; repeatable")
    hosts.add_argument("--limit", metavar="PATTERN", help="keep only the hosts of this Ansible pattern")
    hosts.add_argument("--inventory", action="append", default=[], metavar="PATH",
                       help=f"inventory file or directory (Ansible, clush groups.conf, genders); repeatable "
                            f"(default: ${INVENTORY_ENV}, else ~/.config/hussh/inventory, clush's groups.conf "
                            "or /etc/genders if present)")
    conn = group.add_argument_group("connection")
    conn.add_argument("-l", "--user", help="login user (default: from the host, the ssh config, else root)")
    conn.add_argument("--port", type=_port, help="port (default: from the host, the ssh config, else 22)")
    conn.add_argument("-p", dest="pssh_parallelism", type=_pssh_parallelism, help=argparse.SUPPRESS)
    conn.add_argument("-i", "--identity", metavar="KEY", help="private key file (its passphrase: $HUSSH_PASSWORD)")
    conn.add_argument("-A", "--ask-pass", action="store_true",
                      help=f"prompt once for the password (else ${PASSWORD_ENV} is used if set)")
    conn.add_argument("-J", "--jump", metavar="[USER@]HOST[:PORT][,...]", help="bastion(s) to go through, as ssh -J")
    conn.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file instead of ~/.ssh/config")
    conn.add_argument("-o", "--ssh-option", dest="ssh_options", action="append", default=[], type=_ssh_option,
                      metavar="KEY=VALUE", help="ssh config option for every host, before the config files "
                                                "(as ssh -o); repeatable")
    conn.add_argument("-f", "--fanout", "--batch-size", dest="batch_size", type=_fanout, metavar="N",
                      help="hosts worked on at once (default: 100)")
    conn.add_argument("-t", "--connect-timeout", type=_seconds, metavar="SECONDS",
                      help="per-host limit for connecting and logging in "
                           "(default: the ssh config's ConnectTimeout, else -u, else 15)")
    conn.add_argument("-u", "--timeout", type=_seconds, metavar="SECONDS",
                      help="per-host limit for the whole operation, connecting included (default: none)")
    conn.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes (default: one per CPU)")
    conn.add_argument("--config", metavar="FILE",
                      help=f"settings for every run and per group (TOML; default: ${CONFIG_ENV}, else "
                           "~/.config/hussh/hussh.conf if present); the options given here beat it")
    conn.add_argument("-v", "--verbose", action="count", default=0,
                      help="-v: per-connection log lines (asyncssh) and progress logs; -vv: debug detail")
    return group


def _output_options(with_dir: bool) -> Parser:
    group = Parser(add_help=False)
    out = group.add_argument_group("output")
    modes = out.add_mutually_exclusive_group()
    modes.add_argument("-b", "--gather", dest="mode", action="store_const", const="gather",
                       help="gather hosts with identical stdout under one header, at the end (stderr as it comes)")
    modes.add_argument("-B", "--gather-all", dest="mode", action="store_const", const="group",
                       help="like -b, stderr included in what must be identical")
    modes.add_argument("-L", "--sorted", dest="mode", action="store_const", const="sorted",
                       help="no headers: every line at the end, ordered by host")
    modes.add_argument("--json", dest="mode", action="store_const", const="json",
                       help="one JSON object per host per line, as each host finishes")
    modes.add_argument("-q", "--quiet", dest="mode", action="store_const", const="quiet",
                       help="print only the summary")
    out.add_argument("-N", "--no-prefix", action="store_true", help="lines without the 'host: ' prefix")
    out.add_argument("-S", "--max-status", action="store_true",
                     help="exit with the largest exit status of the hosts (255 for a host hussh could not work on)")
    if with_dir:
        out.add_argument("--outdir", metavar="DIR",
                         help="also save each host's stdout, stderr and exit status to DIR/HOST.out, "
                              "DIR/HOST.err and DIR/HOST.status")
        out.add_argument("--errdir", metavar="DIR", help="save each host's stderr to DIR/HOST.err instead")
    group.set_defaults(mode="lines", outdir=None, errdir=None)
    return group


# --- copies: put/get -r, and clush's --copy/--rcopy/--dest ---

CLUSH_COPY = {"-c": "put", "--copy": "put", "--rcopy": "get"}
COMMANDS = ("run", "put", "get", "tail", "runs", "fleet")


def _copy_options(command: str) -> Parser:
    group = Parser(add_help=False)
    copy = group.add_argument_group("copy")
    copy.add_argument("-r", "--recursive", action="store_true",
                      help="copy directories with everything in them (a file is copied as without -r)")
    where = "DIR/BASENAME on every host" if command == "put" else "DIR/HOST/REMOTE here"
    copy.add_argument("--dest", metavar="DIR", help=f"clush's spelling: the copy goes to {where}")
    copy.add_argument("--clush", action="store_true", help=argparse.SUPPRESS)  # made from --copy/--rcopy
    return group


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"want a number of lines >= 0, got {text!r}")
    return int(text)


def clush_copy(argv: list[str]) -> list[str]:
    """clush's ``-c/--copy SRC`` and ``--rcopy SRC`` (with ``--dest``) in place of a command word: ``put -r`` /
    ``get -r``, the other arguments kept in place (clush always copies directories whole)."""
    if not argv or argv[0] in COMMANDS:
        return argv
    index = next((i for i, word in enumerate(argv) if word in CLUSH_COPY), None)
    if index is None:
        return argv
    return [CLUSH_COPY[argv[index]], "-r", "--clush", *argv[:index], *argv[index + 1:]]


def _check_copy(args: argparse.Namespace) -> None:
    """Where the copy goes: REMOTE / LOCAL_DIR, else ``--dest``, else (clush's default) the same path
    for ``put`` and the working directory for ``get``; never both."""
    target = "remote" if args.command == "put" else "local_dir"
    given = getattr(args, target)
    if args.dest is not None and given is not None:
        raise UsageError(f"hussh {args.command}: give {target.upper()} or --dest, not both (one source at a time)")
    if given is not None or getattr(args, "resume", None) or getattr(args, "retry_failed", None):
        return
    if args.command == "put":
        if args.local is not None and (args.dest is not None or args.clush):
            base = os.path.basename(os.path.normpath(args.local))
            args.remote = os.path.join(args.dest, base) if args.dest is not None else os.path.abspath(args.local)
    elif args.dest is not None or args.clush:
        args.local_dir = args.dest if args.dest is not None else "."
    else:
        raise UsageError("hussh get: the following arguments are required: local_dir (or --dest DIR)")


LOGIN_DIR = "%7E"
"""Where ``get`` puts a relative ``REMOTE`` under ``LOCAL_DIR/HOST``: ``~`` (the login directory, where the
server reads it from), percent-encoded as in host names, so it is no file name an absolute path gives."""


def fetched_as(remote: str) -> str:
    """Where ``get`` puts a host's copy of ``remote`` under ``LOCAL_DIR/HOST``, one place per remote path:
    an absolute path without its leading ``/`` (``/etc/hosts``: ``etc/hosts``), a relative one under
    ``LOGIN_DIR`` (``notes.txt``: ``%7E/notes.txt``); ``.`` parts dropped, and a ``%`` in an absolute
    path's first part written ``%25``, so that part is never ``%7E``."""
    parts = [part for part in remote.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"hussh get: REMOTE must not contain '..' ({remote!r}): it also names where the copy goes, "
                         "LOCAL_DIR/HOST/REMOTE")
    if not remote.startswith("/"):
        parts.insert(0, LOGIN_DIR)
    elif parts:
        parts[0] = parts[0].replace("%", "%25")
    return os.path.join(*parts) if parts else ""


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


def _rollout_options() -> Parser:
    group = Parser(add_help=False)
    rollout = group.add_argument_group("rollout (see docs/rollouts.md)")
    rollout.add_argument("--canary", type=_positive_int, metavar="N",
                         help="run the first N hosts alone first; if one fails, start no other host")
    rollout.add_argument("--serial", metavar="SIZES", help="waves of hosts, as counts or percentages "
                         "(e.g. 1,5%%,25%%,100%%; the last repeats); a wave starts when the one before has finished")
    rollout.add_argument("--max-fail", metavar="N|P%", help="failure budget of the whole run: one more failed "
                         "host and no new host starts (those not started are reported skipped)")
    rollout.add_argument("--wave-pause", type=_seconds, metavar="SECONDS", help="pause between waves")
    return group


def rollout_of(args: argparse.Namespace, base: Rollout | None = None) -> Rollout | None:
    """The ``Rollout`` the options ask for over ``base`` (the config file's): None without either."""
    given = {name: value for name, value in (("canary", args.canary), ("waves", args.serial),
                                             ("max_failures", args.max_fail), ("pause", args.wave_pause))
             if value is not None}
    if not given:
        return base
    try:
        return dataclasses.replace(base, **given) if base is not None else Rollout(**given)
    except ValueError as exc:
        raise UsageError(f"hussh: {exc}") from None


def _command_options(run: Parser) -> None:
    """``run``'s stdin and sudo options (hussh/_cli_input.py uses them)."""
    how = run.add_argument_group("command input and sudo")
    stdin = how.add_mutually_exclusive_group()
    stdin.add_argument("--stdin", dest="stdin_file", metavar="FILE",
                       help="send FILE to every command's stdin ('-': hussh's stdin); by default hussh's stdin "
                            "is sent when it is not a terminal, else nothing; the commands then see end of file")
    stdin.add_argument("--nostdin", "--no-stdin", dest="no_stdin", action="store_true",
                       help="send nothing on the commands' stdin, even when hussh's is not a terminal (clush's name)")
    how.add_argument("--sudo", action="store_true",
                     help="run the command through sudo; its password from $HUSSH_SUDO_PASSWORD, else asked once")
    how.add_argument("-m", "--mode", dest="run_mode", choices=["sudo"], help="clush's run mode: '-m sudo' is --sudo")


def build_parser() -> Parser:
    parser = Parser(prog="hussh", description="Run commands, copy files and follow logs on many hosts over SSH.",
                    epilog="Exit status: 0 every host succeeded, 1 some host failed, 2 bad usage, 130 interrupted. "
                           "'hussh fleet ...' runs the test-fleet tool when it is installed.")
    parser.add_argument("--version", action="version", version=f"hussh {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,put,get,tail,runs,fleet}")
    hosts = _host_options()
    journal = _journal_options()
    rollout = _rollout_options()
    run = commands.add_parser("run", parents=[hosts, _output_options(True), journal, rollout],
                              help="run a command on every host",
                              description="Run COMMAND on every host; output lines are prefixed 'host: '.")
    _command_options(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the command (its words joined with spaces, as ssh does)")
    put = commands.add_parser("put", parents=[hosts, _output_options(False), journal, rollout, _copy_options("put")],
                              help="copy a local file (or with -r a directory) to every host")
    put.add_argument("local", nargs="?", help="local file (or directory, with -r)")
    put.add_argument("remote", nargs="?", help="remote path: the copy of LOCAL (a directory becomes it)")
    get = commands.add_parser("get", parents=[hosts, _output_options(False), _copy_options("get")],
                              help="copy a remote file (or with -r a directory) from every host to "
                                   "LOCAL_DIR/HOST/REMOTE")
    get.add_argument("remote", help="remote file (or directory, with -r)")
    get.add_argument("local_dir", nargs="?", help="local directory (created if missing); each host's copy goes to "
                                                  "LOCAL_DIR/HOST/REMOTE (relative: LOCAL_DIR/HOST/%%7E/REMOTE)")
    tail = commands.add_parser("tail", parents=[hosts], help="follow a remote file on every host until Ctrl-C")
    tail.add_argument("remote", help="remote file")
    tail.add_argument("-n", "--lines", type=_count, default=10, metavar="N",
                      help="a host whose file changed after the command started shows its last N lines first, "
                           "as tail -n (default: 10)")
    tail.add_argument("--interval", type=_seconds, default=0.5, metavar="SECONDS",
                      help="how often to look for new lines (default: 0.5)")
    commands.add_parser("runs", help="list the journal's runs, or show one (hussh runs --help)", add_help=False)
    commands.add_parser("fleet", help="the test-fleet tool (hussh.testing), when installed", add_help=False)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parsed and checked options; ``UsageError`` for anything wrong."""
    args = build_parser().parse_args(clush_copy(argv))
    if args.command in ("put", "get"):
        _check_copy(args)
    if args.command == "run":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd and not (args.resume or args.retry_failed):
            raise UsageError("hussh run: no command given (see 'hussh run --help')")
        if args.cmd and args.mode in ("gather", "group") and args.cmd[0].isdigit() and "-b" in argv:
            raise UsageError(f"hussh: -b gathers identical output as in clush and takes no number; "
                             f"the fanout is -f N (got -b {args.cmd[0]})")
    if args.command in ("run", "put"):
        _check_journal_options(args, [" ".join(args.cmd)] if args.command == "run" else [args.local, args.remote])
        rollout_of(args)  # refused here, before anything connects
    return args


def inventory_of(args: argparse.Namespace) -> Inventory:
    """The ``--inventory`` files, else the default ones (``inventory.default_paths``), and after
    them pdsh's dsh group files (``~/.dsh/group``, ``$DSHGROUP_PATH``) for ``-g``/``-X``/``@group``."""
    paths = args.inventory or default_paths()
    try:
        inventory = load_inventory(*paths) if paths else Inventory()
    except InventoryError as exc:
        raise UsageError(f"hussh: {exc}") from None
    inventory.update(dsh_groups(in_all=False))  # -a stays the inventory's hosts, as pdsh's -a is
    return inventory


def hosts_of(args: argparse.Namespace, inventory: Inventory) -> list[str]:
    """The hosts of ``-w``/``-H``/``--hostfile``/``-g`` in command-line order and ``-a``, minus
    ``-X``/``-x``, within ``--limit``; never empty."""
    hosts: dict[str, None] = {}
    try:
        for target in args.targets:
            hosts.update(dict.fromkeys(_names(target, inventory)))
        if args.all:
            hosts.update(dict.fromkeys(inventory.all_hosts()))
        given = bool(hosts)
        for group in args.exclude_group:
            for host in inventory.select(group):
                hosts.pop(host, None)
        if args.exclude:
            left = select(hosts, [name for nodes in args.exclude for name in inventory.nodes(nodes)])
            hosts = dict.fromkeys(left)
        if args.limit is not None:
            keep = set(inventory.select(args.limit))
            hosts = {host: None for host in hosts if host in keep}
    except OSError as exc:
        raise UsageError(f"hussh: cannot read host file {exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"hussh: {exc}") from None
    if not hosts:
        raise UsageError("hussh: no hosts left after -x, -X and --limit" if given
                         else "hussh: no hosts given (use -w, -H, --hostfile, -g or -a)")
    return list(hosts)


def _names(target: str, inventory: Inventory) -> list[str]:
    if isinstance(target, HostFile):
        return read_hosts_file(target)
    if isinstance(target, Nodes):
        return inventory.nodes(target)
    if isinstance(target, Groups):
        try:
            return inventory.select(target.lstrip("@"))
        except InventoryError as exc:
            raise InventoryError(f"{exc} (-g takes an inventory group, as in clush; "
                                 "gathering identical output is -b, or -B with stderr)") from None
    return expand(target)


def password_of(args: argparse.Namespace) -> str | None:
    """``-A`` asks once on the terminal; otherwise ``$HUSSH_PASSWORD``, if set (never an option)."""
    if args.ask_pass:
        try:
            return getpass.getpass("Password: ")
        except (EOFError, OSError) as exc:
            raise UsageError(f"hussh: -A could not read a password: {exc or 'end of input'}") from None
    return os.environ.get(PASSWORD_ENV)


def config_of(args: argparse.Namespace) -> FileConfig:
    """The config file (``--config``, ``$HUSSH_CONFIG``, the default one); a mistake in it is a ``UsageError``."""
    try:
        return load_config(args.config)
    except ConfigFileError as exc:
        raise UsageError(f"hussh: {exc}") from None


def options_of(args: argparse.Namespace, password: str | None) -> ConnectOptions:
    """The connection flags as ``ConnectOptions`` (those not given left to the config file and ssh config)."""
    return ConnectOptions(username=args.user, port=args.port, password=password, private_key=args.identity,
                          proxy_jump=args.jump, ssh_config=args.ssh_config, timeout=args.timeout,
                          connect_timeout=args.connect_timeout)


def limits_of(args: argparse.Namespace, base: FleetLimits) -> FleetLimits:
    """The config file's ``FleetLimits`` with the flags given (``-f``, ``--workers``, the rollout's) over them."""
    given = {name: value for name in ("batch_size", "workers") if (value := getattr(args, name)) is not None}
    if args.command in ("run", "put"):
        given["rollout"] = rollout_of(args, base.rollout)
    return base.replace(**given)


def connect(args: argparse.Namespace) -> MultiConnection:
    """A ``MultiConnection`` for the options; nothing is started yet (workers start on the first call).

    Each host's options: what it says for itself (``user@host:port``, the inventory), then the
    flags, then its groups' sections of the config file, then its ``[defaults]``, then the ssh config.
    """
    inventory = inventory_of(args)
    hosts = getattr(args, "journal_hosts", None) or hosts_of(args, inventory)  # --resume: the run's hosts
    config = config_of(args)
    password = password_of(args)
    flags = options_of(args, password)
    options = flags.over(config.options)
    chosen = set(hosts)
    groups = {group: flags.over(given) for group, given in config.groups.items()  # the groups of the hosts chosen
              if inventory.has_group(group) and not chosen.isdisjoint(inventory.hosts_of(group))}
    for key in {o.private_key for o in (options, *groups.values()) if o.private_key is not None}:
        found = _credentials.material(os.path.expanduser(key), password)
        if found.error:
            raise UsageError(f"hussh: {found.error}")
    scratch = tempfile.mkdtemp(prefix="hussh-o-") if args.ssh_options else None
    try:
        if scratch is not None:
            options, groups = _with_options(args.ssh_options, options, groups, scratch)
        return MultiConnection.from_inventory(inventory, hosts, options=options, group_options=groups,
                                              limits=limits_of(args, config.limits),
                                              journal=getattr(args, "journal_db", None))
    except (ValueError, TypeError, OSError, HusshError) as exc:
        message = str(exc).replace(os.path.join(scratch, OPTIONS_FILE), "-o") if scratch else str(exc)
        raise UsageError(f"hussh: {message}") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


OPTIONS_FILE = "ssh-options"


def _with_options(ssh_options: list[tuple[str, str]], options: ConnectOptions, groups: dict[str, ConnectOptions],
                  scratch: str) -> tuple[ConnectOptions, dict[str, ConnectOptions]]:
    """``-o`` as ssh applies it: a config file of its own, read before the others (first value wins), for
    every host (the groups that name their own ssh config too)."""
    path = os.path.join(scratch, OPTIONS_FILE)
    with open(path, "w", encoding="utf-8") as file:
        file.write("Host *\n" + "".join(f"    {key} {value}\n" for key, value in ssh_options))

    def first(given: ConnectOptions) -> ConnectOptions:
        return given.replace(ssh_config=(path, *map(str, config_paths(given.ssh_config))))
    return first(options), {group: first(given) if given.ssh_config is not None else given
                            for group, given in groups.items()}


def fail(error: UsageError) -> int:
    """Report bad usage in one line; the exit status for it."""
    print(error, file=sys.stderr)
    return 2
