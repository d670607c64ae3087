"""What rollouts cost and how precisely a failure budget stops a run, on loopback endpoints.

    python -m scale.bench_rollout [--hosts 1000] [--reps 3] [--port 2290]

1. Waves: a fresh ``MultiConnection`` per rep doing a one-shot ``true`` on ``--hosts`` hosts (each
   host connects in the call), then ``true`` again on the connected hosts, then close; with
   ``Rollout(waves="1,10%,100%")`` and without, alternating; median walls and their difference
   (the waves' barriers: each wave waits for its slowest host, and the first wave is one host).
2. Abort precision: a fifth of the hosts broken (they fail a ``test``), ``max_failures="5%"``,
   ``batch_size=100``, no waves: how many hosts started (succeeded + failed) before the run stopped,
   how many failed, how many were skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from hussh import Rollout
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses

KNOWN_HOSTS = os.path.join(tempfile.mkdtemp(prefix="hussh-bench-rollout-"), "known_hosts")
"""This run's own known_hosts: the fleet's keys are new each run, and ~/.ssh/known_hosts stays untouched."""


def one_run(hosts: list[str], port: int, rollout: Rollout | None) -> tuple[float, float]:
    """Walls of a one-shot ``true`` (connecting in the call, so each wave connects its hosts) + close, and of
    the same call on hosts already connected."""
    started = time.perf_counter()
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=port,
                                          batch_size=100, known_hosts=KNOWN_HOSTS)
    try:
        result = mc.execute("true", rollout=rollout)
        wall = time.perf_counter() - started
        if not result.failed and not result.skipped:
            call = time.perf_counter()
            result = mc.execute("true", rollout=rollout)
            call = time.perf_counter() - call
    finally:
        mc.close()
    if result.failed or result.skipped:
        raise SystemExit(f"{len(result.failed)} failed, {len(result.skipped)} skipped: "
                         f"{next(iter({**result.failed, **result.skipped}.values()))}")
    return wall, call


def waves(hosts: list[str], port: int, reps: int) -> None:
    rollout = Rollout(waves="1,10%,100%")
    walls: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for rep in range(reps + 1):  # the first pair warms caches and is not counted
        for waved in (False, True) if rep % 2 else (True, False):
            measured = one_run(hosts, port, rollout if waved else None)
            if rep:
                walls[waved].append(measured)
    plain = statistics.median(w for w, _ in walls[False]), statistics.median(c for _, c in walls[False])
    waved = statistics.median(w for w, _ in walls[True]), statistics.median(c for _, c in walls[True])
    print(f"waves 1,10%,100% ({rollout.plan(len(hosts))}) on {len(hosts)} hosts, batch_size 100, median of {reps}:")
    print(f"  one-shot true (connect in the call): {plain[0]:.2f} s without waves, {waved[0]:.2f} s with "
          f"({waved[0] - plain[0]:+.2f} s, {waved[0] / plain[0] - 1:+.1%})")
    print(f"  true again, hosts connected: {plain[1]:.2f} s without, {waved[1]:.2f} s with "
          f"({waved[1] - plain[1]:+.2f} s over 2 wave boundaries)")


def abort(hosts: list[str], port: int) -> None:
    commands = {host: "test -e /nonexistent" if i % 5 == 2 else "true" for i, host in enumerate(hosts)}
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=port,
                                          batch_size=100, known_hosts=KNOWN_HOSTS) as mc:
        result = mc.execute_map(commands, rollout=Rollout(max_failures="5%"))
    started = len(result) - len(result.skipped)
    limit = Rollout(max_failures="5%").failure_limit(len(hosts))
    print(f"abort: {len(hosts)} hosts, 20% broken, max_failures=5% ({limit}), batch_size 100: "
          f"{started} hosts started, {len(result.failed)} failed, {len(result.succeeded)} succeeded, "
          f"{len(result.skipped)} skipped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--port", type=int, default=int(os.environ.get("HUSSH_TEST_PORT", "2290")))
    parser.add_argument("--second-octet", type=int, default=92)
    args = parser.parse_args(argv)
    addresses = loopback_addresses(args.hosts, second_octet=args.second_octet)
    with LoopbackFleet(addresses, port=args.port, per_process=16) as fleet:
        waves(fleet.addresses, fleet.port, args.reps)
        abort(fleet.addresses, fleet.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
