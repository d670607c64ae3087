"""What the server is asked to do per host, per client: one connect + ``true`` + ``whoami`` + close against an sshd
at LogLevel DEBUG3, its log reduced to the SSH messages it received and sent and the requests it served.

    python -m scale.sshd_trace [--tools hussh,upstream,pssh] [--hosts 1]

Part of finding where the fleet spends more CPU serving hussh than upstream: packets, channel and
global requests, window adjusts, the disconnect. The fleet is a LoopbackFleet of ``--hosts``
endpoints whose sshd config is the usual one with ``LogLevel DEBUG3``; each tool runs its usual
bench runner (``scale/peers/*_multi.py``/``pssh_parallel.py``) against it, one after the other,
and the log lines each run added are summarised (message types by direction and count, requests).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path

from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses

from .bench import PEERS, tool_named, tool_python
from .measure import DEFAULT_VENV_ROOT, run_measured, runner_env
from .suite import write_readme

MESSAGES = {1: "DISCONNECT", 2: "IGNORE", 5: "SERVICE_REQUEST", 6: "SERVICE_ACCEPT", 7: "EXT_INFO", 20: "KEXINIT",
            21: "NEWKEYS", 30: "KEX_ECDH_INIT", 31: "KEX_ECDH_REPLY", 50: "USERAUTH_REQUEST", 51: "USERAUTH_FAILURE",
            52: "USERAUTH_SUCCESS", 53: "USERAUTH_BANNER", 80: "GLOBAL_REQUEST", 81: "REQUEST_SUCCESS",
            82: "REQUEST_FAILURE", 90: "CHANNEL_OPEN", 91: "CHANNEL_OPEN_CONFIRMATION", 92: "CHANNEL_OPEN_FAILURE",
            93: "CHANNEL_WINDOW_ADJUST", 94: "CHANNEL_DATA", 95: "CHANNEL_EXTENDED_DATA", 96: "CHANNEL_EOF",
            97: "CHANNEL_CLOSE", 98: "CHANNEL_REQUEST", 99: "CHANNEL_SUCCESS", 100: "CHANNEL_FAILURE"}
PACKET = re.compile(r"(receive|send) packet: type (\d+)")
REQUEST = re.compile(r"(server_input_channel_req: channel \d+ request (\S+)|server_input_global_request: rtype (\S+)"
                     r"|input_userauth_request: try method (\S+)|kex: algorithm: (\S+)"
                     r"|kex: client->server cipher: (\S+)"
                     r"|Received disconnect|Connection closed by|session_close_by_channel|Close session)")


def debug_config(fleet: LoopbackFleet) -> None:
    """Make the fleet write its sshd configs with LogLevel DEBUG3 (before ``up``)."""
    original = fleet._write_config

    def write(node, port):  # type: ignore[no-untyped-def]
        path = original(node, port)
        path.write_text(path.read_text().replace("LogLevel ERROR", "LogLevel DEBUG3"))
        return path

    fleet._write_config = write  # type: ignore[method-assign]


def summarise(lines: list[str]) -> tuple[collections.Counter[str], collections.Counter[str]]:
    packets: collections.Counter[str] = collections.Counter()
    requests: collections.Counter[str] = collections.Counter()
    for line in lines:
        if match := PACKET.search(line):
            direction = "client->server" if match.group(1) == "receive" else "server->client"
            packets[f"{direction} {MESSAGES.get(int(match.group(2)), match.group(2))}"] += 1
        if match := REQUEST.search(line):
            requests[next(g for g in match.groups()[1:] if g) if any(match.groups()[1:]) else match.group(1)] += 1
    return packets, requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.sshd_trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", default="hussh,upstream,pssh")
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--readme", action="store_true", help="write the summary into scale/README.md")
    args = parser.parse_args(argv)
    fleet = LoopbackFleet(loopback_addresses(args.hosts, second_octet=94), port=2294)
    debug_config(fleet)
    results = {}
    with fleet, tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "home").mkdir()
        targets = Path(tmp, "targets.txt")
        targets.write_text("".join(f"{h}\n" for h in fleet.hosts))
        log = fleet.workdir / "sshd_0.log"
        for name in args.tools.split(","):
            tool = tool_named(name)
            assert tool is not None, f"unknown tool {name}"
            argv_ = [tool_python(tool, DEFAULT_VENV_ROOT), str(PEERS / tool.script), *tool.args, "--targets",
                     str(targets), "--user", PASSWORD_USER, "--password", PASSWORD, "--batch", "10"]
            before = log.stat().st_size
            m = run_measured(name, argv_, args.hosts, runner_env(Path(tmp, "home")), sample_interval=0)
            with log.open(errors="replace") as handle:
                handle.seek(before)
                lines = handle.read().splitlines()
            results[name] = (m.completed, *summarise(lines))
    names = list(results)
    keys = sorted(set().union(*(packets for _, packets, _ in results.values())))
    text = [f"{'SSH messages per host':<44}" + "".join(f"{n:>20}" for n in names)]
    for key in keys:
        text.append(f"{key:<44}" + "".join(f"{results[n][1][key] / args.hosts:>20g}" for n in names))
    text.append(f"{'total packets':<44}" + "".join(f"{sum(results[n][1].values()) / args.hosts:>20g}" for n in names))
    for name in names:
        completed, _, requests = results[name]
        text.append(f"{name} ({completed}/{args.hosts} completed): "
                    + ", ".join(f"{k} x{v / args.hosts:g}" for k, v in sorted(requests.items())))
    print("\n".join(text))
    if args.readme:
        write_readme("sshd-trace", f"Generated by `python -m scale.sshd_trace {' '.join(sys.argv[1:])}` on "
                     f"{time.strftime('%Y-%m-%d')}: what sshd (LogLevel DEBUG3) received and sent per host for "
                     "connect + true + whoami + close, and the requests it served:\n\n```text\n"
                     + "\n".join(text) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
