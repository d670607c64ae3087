"""``batch_size`` as one budget against fixed per-worker shares: wall against the floor, two code trees.

    python -m scale.bench_lanes --old /work/main [--hosts 200] [--batch 40] [--workers 4] [--rtt 0.2]
        [--slow-fraction 0.1] [--slow 3] [--fast 0.5] [--slow-in-one] [--repeat 5] [--engine local|ray]

One loopback fleet (behind the network relay at ``--rtt``, when given) serves both code trees:
``--old`` (say /work/main, per-worker shares) and ``--new`` (this checkout), each run in a process
of its own with that tree first on its path, alternating old/new within each repetition. A run
connects every host (untimed), then times one ``execute_map`` on the live connections: a
``--slow-fraction`` of the hosts (picked at random, seeded; with ``--slow-in-one`` among the hosts
of worker 0, as a slow region's hosts share shards) ``sleep --slow``, the rest ``sleep --fast``.
With ``--slow-fraction 0`` every host sleeps ``--fast``, as in the issue's ``sleep 8`` on 200 hosts
over 6 shards.

The floor is the wall of one queue of the hosts, in order, on ``--batch`` lanes with nothing
lost between hosts, each host taking its sleep plus the two round trips of a command on a live
connection (channel open, exec request: ``scale/bench_round_trips.py``). Reported: median wall
of each tree, and its excess over the floor (seconds and ratio), medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, NetworkConditions, loopback_addresses

ROOT = Path(__file__).resolve().parent.parent
EXECUTE_ROUND_TRIPS = 2

CHILD = """
import json, sys, time
from hussh.multi_conn import MultiConnection
spec = json.loads(sys.stdin.read())
engine = None
if spec["engine"] == "ray":
    import ray
    from hussh.ray import RayEngine
    ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=100 << 20)
    engine = RayEngine()
with MultiConnection.from_shared_auth(spec["hosts"], username=spec["user"], password=spec["password"],
                                      port=spec["port"], batch_size=spec["batch"], workers=spec["workers"],
                                      known_hosts=spec["known_hosts"], connect_timeout=60, engine=engine) as mc:
    connected = mc.connect()
    assert not connected.failed, dict(list(connected.failed.items())[:2])
    started = time.perf_counter()
    results = mc.execute_map(spec["commands"])
    wall = time.perf_counter() - started
    assert not results.failed, dict(list(results.failed.items())[:2])
print(json.dumps({"wall": wall, "code": __import__("workers").__file__}))
"""


def sleeps(hosts: int, fraction: float, slow: float, fast: float, among: range | None = None,
           seed: int = 1) -> list[float]:
    """Each host's sleep: ``fraction`` of them (at random ``among`` those indices, seeded) ``slow``, the
    rest ``fast``."""
    chosen = set(random.Random(seed).sample(among or range(hosts), round(hosts * fraction)))
    return [slow if i in chosen else fast for i in range(hosts)]


def floor(lengths: list[float], lanes: int) -> float:
    """The wall of ``lengths`` run in order from one queue on ``lanes`` lanes, none idle while a host waits."""
    free = [0.0] * min(lanes, len(lengths))
    end = 0.0
    for length in lengths:
        start = heapq.heappop(free)
        end = max(end, start + length)
        heapq.heappush(free, start + length)
    return end


def run(tree: Path, spec: dict, home: str) -> float:
    """One timed call with the code of ``tree``, in a process of its own (with Ray: a one-machine cluster
    of its own, on loopback only, with a token, its files under ``home``)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    if spec["engine"] == "ray":
        env.update(HOME=home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(spec), env=env, capture_output=True,
                          text=True, timeout=1200, cwd=tree)
    if proc.returncode:
        raise RuntimeError(f"{tree}: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["code"].startswith(str(tree)):
        raise RuntimeError(f"ran {out['code']}, not the code of {tree}")
    return float(out["wall"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_lanes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the code tree to compare with (per-worker shares)")
    parser.add_argument("--new", type=Path, default=ROOT)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4, help="worker processes (local) or shards (ray)")
    parser.add_argument("--rtt", type=float, default=0.0, help="round trip of the relay in front of the fleet, s")
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slow", type=float, default=3.0, help="the slow hosts' sleep, s")
    parser.add_argument("--fast", type=float, default=0.5, help="the other hosts' sleep, s")
    parser.add_argument("--slow-in-one", action="store_true", help="the slow hosts all among worker 0's")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HUSSH_TEST_PORT", "2290")))
    parser.add_argument("--second-octet", type=int, default=66)
    args = parser.parse_args(argv)
    among = range(0, args.hosts, args.workers) if args.slow_in_one else None  # host i lives in worker i % workers
    lengths = sleeps(args.hosts, args.slow_fraction, args.slow, args.fast, among)
    ideal = floor([length + EXECUTE_ROUND_TRIPS * args.rtt for length in lengths], args.batch)
    network = NetworkConditions(rtt=args.rtt) if args.rtt else None
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    walls: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp, \
            LoopbackFleet(loopback_addresses(args.hosts, args.second_octet), port=args.port, network=network) as fleet:
        known = fleet.write_known_hosts(Path(tmp) / "known_hosts")
        spec = {"hosts": fleet.addresses, "user": PASSWORD_USER, "password": PASSWORD, "port": fleet.port,
                "batch": args.batch, "workers": args.workers, "known_hosts": str(known), "engine": args.engine,
                "commands": {host: f"sleep {length}" for host, length in zip(fleet.addresses, lengths)}}
        where = ", all in worker 0" if args.slow_in_one else ""
        print(f"{args.hosts} hosts ({sum(length == args.slow for length in lengths)} sleep {args.slow} s{where}, the "
              f"rest {args.fast} s), batch_size {args.batch}, {args.workers} {args.engine} workers, rtt "
              f"{args.rtt * 1000:.0f} ms; floor {ideal:.2f} s\n", flush=True)
        for rep in range(args.repeat):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for name in order:
                walls[name].append(run(trees[name], spec, tmp))
            print(f"  rep {rep + 1}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in trees), flush=True)
    print("\n| code | median wall | over the floor | wall / floor | runs |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, tree in trees.items():
        median = statistics.median(walls[name])
        print(f"| {name} ({tree}) | {median:.2f} s | {median - ideal:+.2f} s | {median / ideal:.2f} | "
              f"{', '.join(f'{w:.2f}' for w in walls[name])} |")
    print(f"\nnew / old, median walls: {statistics.median(walls['new']) / statistics.median(walls['old']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
