"""A bastion whose link freezes under 1,000 hosts: every host behind it fails within the keepalive bound.

    python -m scale.bastion_freeze [--hosts 1000] [--keepalive 2] [--port 2296] [--second-octet 92]

The bastion is one loopback endpoint behind ``hussh.testing``'s relay; the targets are a loopback
fleet reached only through it (their own keepalives off, so only the bastion's can notice), plus one
host reached directly. Every host starts a command that runs ``--hold`` seconds; once all of them
run, the relay freezes the bastion's link (packets dropped both ways, sockets left open, as a
vanished network). Printed: when each host behind the bastion failed, counted from the freeze,
against the bound ``(ServerAliveCountMax + 1) x ServerAliveInterval`` (plus one interval of timer
slack), how it failed, and whether the direct host finished its command. The run fails (exit 1)
when a host hangs past twice the bound, fails otherwise than by a lost connection, or the direct
host is dragged down with the bastion.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection, MultiResult
from hussh.testing import LoopbackFleet, NetworkConditions, loopback_addresses

COUNT_MAX = 3  # the default ServerAliveCountMax (hussh's DEFAULT_KEEPALIVE_COUNT_MAX)


def running(token: str) -> int:
    """Commands of this run alive on the machine (their argv carries the token)."""
    found = subprocess.run(["pgrep", "-fc", f"sleep {token}"], capture_output=True, text=True)
    return int(found.stdout.strip() or 0)


def wait_for(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {limit:g} s waiting for {what}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000, help="targets behind the bastion")
    parser.add_argument("--keepalive", type=float, default=2.0, help="the bastion's ServerAliveInterval, seconds")
    parser.add_argument("--hold", type=float, default=120.0, help="seconds each command runs if nothing fails")
    parser.add_argument("--batch-size", type=int, default=0, help="default: every host at once")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HUSSH_TEST_PORT", "2296")))
    parser.add_argument("--second-octet", type=int, default=92)
    args = parser.parse_args(argv)
    bound = (COUNT_MAX + 1) * args.keepalive
    token = f"{args.hold:g}.{secrets.randbelow(10**6):06d}"  # a sleep length only this run uses
    bastion_fleet = LoopbackFleet(loopback_addresses(2, second_octet=args.second_octet), port=args.port,
                                  per_process=1, network=NetworkConditions())  # one node each: frozen apart
    target_fleet = LoopbackFleet(loopback_addresses(args.hosts, second_octet=args.second_octet + 1),
                                 port=args.port)
    with bastion_fleet, target_fleet:
        bastion, direct = bastion_fleet.endpoints
        jump = AsyncConnection(bastion.host, port=bastion.port, **bastion_fleet.credentials.key_auth(),
                               host_key_checking="off", keepalive_interval=args.keepalive)
        behind = [AsyncConnection(e.host, port=e.port, **target_fleet.credentials.key_auth(),
                                  host_key_checking="off", proxy_jump=jump, keepalive_interval=0)
                  for e in target_fleet.endpoints]
        plain = AsyncConnection(direct.host, port=direct.port, **bastion_fleet.credentials.key_auth(),
                                host_key_checking="off", keepalive_interval=args.keepalive)
        failed_at: dict[str, float] = {}
        out: dict[str, MultiResult] = {}
        with MultiConnection([*behind, plain], batch_size=args.batch_size or args.hosts + 1) as mc:
            started = time.monotonic()
            connected = mc.connect()
            print(f"connected {len(connected) - len(connected.failed)} of {args.hosts + 1} hosts "
                  f"in {time.monotonic() - started:.1f} s")
            if connected.failed:
                print("not connected:", dict(list(connected.failed.items())[:3]))
                return 1
            frozen_at = [0.0]

            def note(host: str, result: object) -> None:
                failed_at[host] = time.monotonic() - frozen_at[0]

            command = f"sleep {token} & pid=$!; sleep {args.hold:g}; kill $pid; echo done"
            thread = threading.Thread(target=lambda: out.__setitem__("r", mc.execute(command, on_result=note)),
                                      daemon=True)
            thread.start()
            wait_for(lambda: running(token) >= args.hosts + 1, 120, "every command to start")
            frozen_at[0] = time.monotonic()
            bastion_fleet.freeze([bastion])
            try:
                thread.join(args.hold + 4 * bound)
                hung = thread.is_alive()
            finally:
                bastion_fleet.heal([bastion])
            thread.join(30)
            if hung or "r" not in out:
                print(f"HUNG: the call was still running {args.hold + 4 * bound:g} s after the freeze")
                return 1
    results = out["r"]
    tunnelled = [str(e.host) for e in target_fleet.endpoints]
    times = sorted(failed_at[h] for h in tunnelled if h in failed_at)
    kinds: dict[str, int] = {}
    for host in tunnelled:
        kind = results[host].stderr.split(":", 1)[0] if results[host].status != 0 else "ok"
        kinds[kind] = kinds.get(kind, 0) + 1
    direct_ok = results[str(direct.host)].stdout == "done\n"
    quantile = statistics.quantiles(times, n=100) if len(times) > 1 else times * 99
    print(f"\n{args.hosts} hosts through one bastion, its link frozen mid-command; keepalive every "
          f"{args.keepalive:g} s x {COUNT_MAX} unanswered: bound {bound:g} s (+{args.keepalive:g} s of timer slack)")
    print(f"  failed after the freeze: min {times[0]:.1f} s, median {statistics.median(times):.1f} s, "
          f"p99 {quantile[98]:.1f} s, max {times[-1]:.1f} s")
    print(f"  how: {kinds}")
    direct_said = "finished its command" if direct_ok else "FAILED: " + results[str(direct.host)].stderr
    print(f"  the direct host: {direct_said}")
    ok = (kinds.get("ConnectionLost", 0) == args.hosts and times[-1] <= bound + args.keepalive and direct_ok)
    print("  verdict:", "every host noticed within the bound" if ok else "OUTSIDE the bound or the wrong failure")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
