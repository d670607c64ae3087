"""``python -m hussh.testing``: a fleet for manual tries and demos that stays up until ``down``.

    python -m hussh.testing up 100                               # 100 loopback sshd endpoints (root)
    python -m hussh.testing up 1000 --compose --per-container 10  # 1000 endpoints in 100 containers
    python -m hussh.testing hosts                                # host:port, one per line
    python -m hussh.testing down                                 # everything gone
    python -m hussh.testing up 100 --net rtt=50ms,jitter=5ms     # behind the network relay (loopback)
    python -m hussh.testing net --freeze 127.70.0.3:2200         # a link goes silent; --thaw, --reset,
                                                                 # --set rtt=200ms [HOST:PORT ...]
    python -m hussh.testing image                                # only build the compose images

    python -m hussh.testing ssh-config                           # ssh config: aliases fleet1..fleetN

``hussh fleet up | hosts | ssh-config | down | image`` is the same tool. ``up`` writes the host list,
known_hosts, an ssh config for its hosts and client keys into the fleet's directory and prints where.
A loopback fleet keeps its host keys (per port, second octet and endpoints per sshd) in a private
directory of the user (``_keys.KeptHostKeys``), so keys that ssh or hussh recorded in
~/.ssh/known_hosts stay valid after ``down`` and ``up``; ``ssh-config`` spares ~/.ssh/known_hosts
altogether (the fleet's own known_hosts, ``StrictHostKeyChecking yes``). The fleet's record (what
``down`` needs) goes to $XDG_RUNTIME_DIR/hussh-testing, or /tmp/hussh-testing-<uid> without it
(private to this uid: see ``_registry``). One such fleet at a time. ``down`` removes only what the
fleet made: the processes in its namespaces or the containers and networks of its project, and its
directory if it still holds the marker the fleet wrote there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import _registry
from ._base import EndpointLike, Fleet, Network
from ._errors import FleetError
from ._keys import KeptHostKeys
from ._relay import RELAYS_FILE, NetworkConditions, conditions_dict
from ._relay import command as relay_command
from .compose import BASE_PORT, PER_CONTAINER, PROJECT, ComposeFleet
from .loopback import ADDRESSES_PER_SSHD, LoopbackFleet, loopback_addresses

LOOPBACK_PORT = 2200
LOOPBACK_OCTET = 70
ALIAS = "fleet"  # the ssh config's names: fleet1, fleet2, ...


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start N SSH endpoints and keep them until down")
    up.add_argument("endpoints", type=int, metavar="N")
    up.add_argument("--compose", action="store_true", help="docker compose containers instead of loopback sshd")
    up.add_argument("--per-container", "--per-node", type=int, metavar="K", dest="per_node",
                    help=f"endpoints per container (default {PER_CONTAINER}) or per sshd process "
                         f"(default {ADDRESSES_PER_SSHD})")
    up.add_argument("--port", type=int, default=LOOPBACK_PORT, help="loopback: the endpoints' port")
    up.add_argument("--second-octet", type=int, default=LOOPBACK_OCTET,
                    help="loopback: addresses 127.<this>.x.y")
    up.add_argument("--base-port", type=int, default=BASE_PORT, help="compose: first host port")
    up.add_argument("--project", default=PROJECT, help="compose: project name")
    up.add_argument("--timeout", type=float, help="seconds to wait for the whole fleet")
    up.add_argument("--json", action="store_true", help="print what up made as one JSON object")
    up.add_argument("--net", type=NetworkConditions.parse, metavar="CONDITIONS",
                    help="loopback: every endpoint behind the network relay, e.g. rtt=50ms,jitter=5ms,"
                         "bandwidth=1M,slow_start=2s (use rtt=0 to change them later with `net`)")
    up.add_argument("--net-host", nargs=2, action="append", default=[], metavar=("HOST:PORT", "CONDITIONS"),
                    help="loopback: these conditions for one endpoint (the others: --net, or none)")
    net = commands.add_parser("net", help="change the network of a fleet started with --net")
    net.add_argument("hosts", nargs="*", metavar="HOST:PORT", help="default: every endpoint")
    action = net.add_mutually_exclusive_group(required=True)
    action.add_argument("--set", type=NetworkConditions.parse, metavar="CONDITIONS",
                        help="new conditions, live connections included")
    action.add_argument("--freeze", action="store_true", help="forward nothing either way, sockets open")
    action.add_argument("--thaw", action="store_true", help="forward again")
    action.add_argument("--reset", action="store_true", help="RST both ends of every live connection")
    commands.add_parser("hosts", help="print host:port of every endpoint")
    commands.add_parser("ssh-config", help=f"print an ssh config for the fleet: hosts {ALIAS}1..{ALIAS}N, "
                                           "its own known_hosts, StrictHostKeyChecking yes")
    commands.add_parser("down", help="stop and remove the fleet")
    commands.add_parser("image", help="build the compose fleet's images (no registry needed)")
    return parser


def _cli_record() -> _registry.Record | None:
    return next((r for r in _registry.records() if "cli" in r), None)


def _up(args: argparse.Namespace, prog: str) -> int:
    if _cli_record() is not None:
        raise FleetError(f"a fleet is already up: {prog} down")
    fleet: Fleet
    network = _network(args)
    if args.compose:
        if network is not None:
            raise FleetError("--net needs the loopback backend: a detached compose fleet has no relay "
                             "(ComposeFleet(..., network=) does, while its owner runs)")
        fleet = ComposeFleet(args.endpoints, args.per_node or PER_CONTAINER, args.base_port, args.project)
    else:
        addresses = loopback_addresses(args.endpoints, args.second_octet)
        per_node = args.per_node or ADDRESSES_PER_SSHD
        fleet = LoopbackFleet(addresses, args.port, per_node, network=network)
        fleet.kept_host_keys = KeptHostKeys(f"loopback-127.{args.second_octet}-port{args.port}-per{per_node}")
    fleet.detached = True
    started = time.monotonic()
    fleet.up(args.timeout)
    try:
        info = _write_files(fleet, time.monotonic() - started)
    except BaseException:
        fleet.down()
        raise
    if args.json:
        print(json.dumps(info))
    else:
        _print(info, prog)
    return 0


def _network(args: argparse.Namespace) -> Network:
    """``--net`` for all, ``--net-host`` per endpoint (None: no relay)."""
    if not args.net_host:
        given: NetworkConditions | None = args.net
        return given
    each: dict[EndpointLike, NetworkConditions] = {}
    if args.net is not None:
        each.update((f"{a}:{args.port}", args.net) for a in loopback_addresses(args.endpoints, args.second_octet))
    each.update((host, NetworkConditions.parse(text)) for host, text in args.net_host)
    return each


def _net(args: argparse.Namespace, prog: str) -> int:
    """Send one change to the running fleet's relay (its control socket is in the fleet's directory)."""
    record = _cli_record()
    if record is None:
        raise FleetError(f"no fleet is up: {prog} up N --net rtt=0")
    workdir = Path(record["workdir"])
    try:
        relays: dict[str, list[str]] = json.loads((workdir / RELAYS_FILE).read_text())
    except FileNotFoundError:
        raise FleetError(f"the fleet has no network relay: start it with {prog} up N --net CONDITIONS") from None
    known = (workdir / "hosts").read_text().split()
    hosts = args.hosts or known
    unknown = [h for h in hosts if h not in known]
    if unknown:
        raise FleetError(f"not endpoints of this fleet: {', '.join(unknown[:10])}")
    wanted = set(hosts)
    for control, links in relays.items():  # each relay gets the hosts it serves
        mine = [h for h in links if h in wanted]
        if not mine:
            continue
        if args.set is not None:
            relay_command(workdir / control, "set", links=mine, conditions=conditions_dict(args.set))
        else:
            relay_command(workdir / control, "freeze" if args.freeze else "thaw" if args.thaw else "reset", links=mine)
    return 0


def _write_files(fleet: Fleet, seconds: float) -> dict[str, object]:
    """Write hosts and known_hosts next to the keys; record them with the fleet; return the summary."""
    assert fleet.record is not None
    workdir = Path(fleet.record["workdir"])
    hosts, known_hosts, ssh_config = workdir / "hosts", workdir / "known_hosts", workdir / "ssh_config"
    hosts.write_text("".join(f"{h}\n" for h in fleet.hosts))
    fleet.write_known_hosts(known_hosts)
    ssh_config.write_text(_ssh_config(fleet, known_hosts))
    creds = fleet.credentials
    kept = fleet.kept_host_keys if isinstance(fleet, LoopbackFleet) else None
    info = {
        "backend": fleet.record["backend"], "endpoints": len(fleet.endpoints), "nodes": len(fleet.nodes()),
        "seconds": round(seconds, 1), "hosts": str(hosts), "known_hosts": str(known_hosts),
        "ssh_config": str(ssh_config), "host_keys": str(kept.path) if kept is not None else None,
        "password_user": creds.password_user, "password": creds.password, "key_user": creds.key_user,
        "key": str(creds.client_key), "encrypted_key": str(creds.encrypted_client_key),
        "key_passphrase": creds.key_passphrase, "state": str(_registry.state_dir() / f"{fleet.record['id']}.json"),
    }
    _registry.register({**fleet.record, "cli": info})
    return info


def _ssh_config(fleet: Fleet, known_hosts: Path) -> str:
    """A ``Host`` block per endpoint (``fleet1``...; also its address when no two endpoints share one) that
    logs in with the fleet's key and checks host keys against the fleet's own known_hosts only."""
    creds = fleet.credentials
    shared = len({e.host for e in fleet.endpoints}) < len(fleet.endpoints)  # compose: 127.0.0.1, many ports
    count = len(fleet.endpoints)
    lines = [f"# {count} endpoints of `hussh fleet up`: ssh -F THIS_FILE {ALIAS}1, or",
             f"# hussh run -F THIS_FILE -w '{ALIAS}[1-{count}]' COMMAND"]
    for number, endpoint in enumerate(fleet.endpoints, 1):
        names = f"{ALIAS}{number}" if shared else f"{ALIAS}{number} {endpoint.host}"
        lines += [f"Host {names}", f"    HostName {endpoint.host}", f"    Port {endpoint.port}",
                  f"    User {creds.key_user}", f"    IdentityFile {creds.client_key}", "    IdentitiesOnly yes",
                  f"    UserKnownHostsFile {known_hosts}", "    StrictHostKeyChecking yes"]
    return "\n".join(lines) + "\n"


def _print(info: dict[str, object], prog: str) -> None:
    unit = "containers" if info["backend"] == "compose" else "sshd processes"
    print(f"{info['endpoints']} endpoints up in {info['seconds']}s ({info['backend']}, {info['nodes']} {unit})")
    print(f"  hosts        {info['hosts']}  (host:port per line; or: {prog} hosts)")
    print(f"  known_hosts  {info['known_hosts']}")
    print(f"  ssh config   {info['ssh_config']}  (ssh -F it {ALIAS}1; or: {prog} ssh-config)")
    if info["host_keys"]:
        print(f"  host keys    {info['host_keys']}  (kept: the next up with the same options reuses them)")
    print(f"  password     user {info['password_user']}, password {info['password']}")
    print(f"  key          user {info['key_user']}, key {info['key']}")
    print(f"               or {info['encrypted_key']}, passphrase {info['key_passphrase']}")
    print(f"  state        {info['state']}")
    print(f"  down         {prog} down")


def _hosts(prog: str) -> int:
    record = _cli_record()
    if record is None:
        raise FleetError(f"no fleet is up: {prog} up N")
    sys.stdout.write((Path(record["workdir"]) / "hosts").read_text())
    return 0


def _print_ssh_config(prog: str) -> int:
    record = _cli_record()
    if record is None:
        raise FleetError(f"no fleet is up: {prog} up N")
    try:
        sys.stdout.write((Path(record["workdir"]) / "ssh_config").read_text())
    except FileNotFoundError:
        raise FleetError(f"this fleet has no ssh config (started by an older hussh?): {prog} down, then up") from None
    return 0


def _down() -> int:
    record = _cli_record()
    if record is None:
        print("no fleet is up", file=sys.stderr)
        return 0
    started = time.monotonic()
    _registry.remove(record)
    print(f"down in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _image() -> int:
    try:
        from .image import ensure_images  # noqa: PLC0415 - needs the docker package
    except ImportError as error:
        raise FleetError(f"building images needs the docker package: pip install 'docker>=7' ({error})") from None
    for step, seconds in ensure_images().items():
        print(f"{step}: {seconds:.1f}s")
    return 0


def main(argv: list[str] | None = None, prog: str = "hussh fleet") -> int:
    """Run ``up``, ``hosts``, ``ssh-config``, ``net``, ``down`` or ``image``; return the exit status (1 on errors).

    ``prog`` is how the user called the tool, for the commands that messages suggest:
    ``hussh fleet`` (hussh's command line calls this), or ``python -m hussh.testing`` (its __main__).
    """
    args = _parser(prog).parse_args(argv)
    try:
        if args.command == "up":
            return _up(args, prog)
        if args.command == "hosts":
            return _hosts(prog)
        if args.command == "ssh-config":
            return _print_ssh_config(prog)
        if args.command == "down":
            return _down()
        if args.command == "net":
            return _net(args, prog)
        return _image()
    except FleetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
