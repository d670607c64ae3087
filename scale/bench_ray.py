"""Benchmark: the Ray engine against the local engine, same run, alternating, on loopback hosts.

    python -m scale.bench_ray --hosts 1000 --repeat 5
    python -m scale.bench_ray --hosts 1000 --repeat 5 --json /tmp/bench_ray.json

A loopback sshd fleet (``hussh.testing.LoopbackFleet``) and a one-machine Ray cluster
(``ray.init(address="local")``, one CPU per core, no dashboard) start first, outside the timings.
Each repetition runs, in this process, for each engine (order alternating between repetitions):
make a ``MultiConnection`` -> connect -> ``true`` -> ``whoami`` -> close, timing each phase; both
engines get the same ``workers=`` (shards), the local engine's default for this many hosts, and
the same ``batch_size``. Worker start-up counts (fork for the local engine, actor creation for
Ray), as it does for a script; the cluster's start does not. HOME is a temporary directory
(known_hosts, Ray's token). One warm-up round of each engine runs first and is reported apart
(it starts the local engine's zygote, since this process has Ray's threads, and Ray's first
worker processes).

Beside the wall times, each round's client CPU: this process (with its Ray threads), the local
engine's worker processes, and every process of the one-machine Ray cluster (GCS, raylet, actors),
but not the fleet's sshd. On a machine shared with other work, wall times move with the others'
load while CPU seconds barely do: the ratio of client CPU is the steadier measure of what the Ray
engine adds. It also measures what the cost model in docs/beyond-one-machine.md needs: each
engine's per-call overhead (a ``true`` on already connected hosts, small and large), the time an
actor takes to start and take its hosts, and the memory (PSS) and CPU of the worker processes
or actors. Each run waits first (``--quiet-wait``) for the machine to be under ``--quiet``
busy, and reports how busy it was, since other work on the machine skews any single run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hussh.multi_conn import MultiConnection  # noqa: E402
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses  # noqa: E402
from hussh.workers.engine import LocalEngine  # noqa: E402
from hussh.workers.pool import default_worker_count  # noqa: E402
from scale.bench import wait_quiet  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pss(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def tree_times(root: int, exclude: set[int]) -> dict[int, float]:
    """pid -> CPU seconds (user + system, its threads included) of ``root`` and its descendants,
    outside ``exclude``'s subtrees: this process with its Ray threads, the local engine's zygote and
    workers, and every process of the one-machine Ray cluster (GCS, raylet, workers, actors)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in exclude or pid not in times:
            continue
        found[pid] = times[pid]
        todo.extend(children.get(pid, ()))
    return found


FLEET_PIDS: set[int] = set()


def pids_of(mc: MultiConnection) -> list[int]:
    pool = mc._pool
    if hasattr(pool, "where"):
        return [pid for _, pid, _ in pool.where().values()]
    return [w.pid for w in pool.workers if w is not None]


def one_round(name: str, engine, hosts: list[str], batch: int, workers: int) -> dict:
    """make -> connect -> true -> whoami -> close, each phase timed; worker memory and CPU."""
    marks = [("start", time.perf_counter())]
    before = tree_times(os.getpid(), FLEET_PIDS)
    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, batch_size=batch,
                                          workers=workers, engine=engine)
    connected = mc.connect()
    marks.append(("connect", time.perf_counter()))
    first = mc.execute("true")
    marks.append(("true", time.perf_counter()))
    second = mc.execute("whoami")
    marks.append(("whoami", time.perf_counter()))
    pids = pids_of(mc)
    memory = sum(pss(pid) for pid in pids)
    used = sum(cpu(pid) for pid in pids)
    mc.close()
    marks.append(("close", time.perf_counter()))
    time.sleep(1.0)  # the same settling time for both engines
    after = tree_times(os.getpid(), FLEET_PIDS)
    # Workers and actors are counted as they were before close (they exit then, and Ray's raylet
    # does not account for the children it reaps); every other process by what it spent meanwhile.
    total = used + sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items() if pid not in pids)
    ok = sum(1 for h in hosts if connected[h].status == 0 and first[h].status == 0
             and second[h].stdout == f"{PASSWORD_USER}\n")
    phases = {label: round(marks[i][1] - marks[i - 1][1], 3) for i, (label, _) in enumerate(marks) if i}
    return {"engine": name, "wall": round(marks[-1][1] - marks[0][1], 3), "phases": phases, "ok": ok,
            "shards": len(pids), "pss_mb": round(memory / 2**20, 1), "worker_cpu": round(used, 2),
            "client_cpu": round(total, 2)}


def call_overhead(engines: dict, hosts: list[str], workers: int, calls: int) -> dict:
    """Seconds of ``execute("true")`` on already connected hosts, per engine: both connected at
    once and called in turn, so that other load on the machine hits both alike."""
    conns = {name: MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD,
                                                    workers=workers, engine=engine)
             for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in conns}
    try:
        for mc in conns.values():
            mc.connect()
            mc.execute("true")
        for _ in range(calls):
            for name, mc in conns.items():
                started = time.perf_counter()
                results = mc.execute("true")
                times[name].append(time.perf_counter() - started)
                assert len(results.succeeded) == len(hosts)
    finally:
        for mc in conns.values():
            mc.close()
    return {name: {"hosts": len(hosts), "median_ms": round(1000 * statistics.median(values), 1),
                   "min_ms": round(1000 * min(values), 1)} for name, values in times.items()}


def actor_start(hosts: list[str], shards: int) -> dict:
    """Seconds from creating a Ray pool's actors until each took its hosts; their memory."""
    import ray

    from hussh.ray import RayEngine

    specs = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD)._specs
    pool = RayEngine().pool(specs, 100, shards, MultiConnection.from_shared_auth(hosts[:1])._retry)
    try:
        started = time.perf_counter()
        for shard in pool.shards:
            pool._ensure(shard)
        waited = []
        pending = [shard.assigned for shard in pool.shards]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=120)
            ray.get(ready)
            waited.append(time.perf_counter() - started)
        memory = [pss(pid) for _, pid, _ in pool.where().values()]
    finally:
        pool.shutdown()
    return {"shards": shards, "first_s": round(min(waited), 2), "all_s": round(max(waited), 2),
            "pss_mb_each": round(statistics.median(memory) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=None, help="shards for both (default: the local engine's)")
    parser.add_argument("--port", type=int, default=2711)
    parser.add_argument("--second-octet", type=int, default=81)
    parser.add_argument("--calls", type=int, default=20, help="calls timed per overhead measurement")
    parser.add_argument("--quiet", type=float, default=0.35, help="busy fraction to wait for before each run")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for it at most")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    # A HOME of its own: host keys learned on first use go to a throwaway known_hosts (the fleet's
    # keys are new on every run), and Ray's token lands there, never in the user's home.
    os.environ["HOME"] = tempfile.mkdtemp(prefix="hussh-bench-ray-home-")
    os.environ.pop("SSH_AUTH_SOCK", None)
    os.environ["PYTHONPATH"] = str(ROOT)  # Ray's workers (started by this process) import this checkout
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # loopback only, see docs/beyond-one-machine.md

    import ray

    from hussh.ray import RayEngine

    workers = args.workers or default_worker_count(args.hosts)
    cpus = len(os.sched_getaffinity(0))
    report: dict = {"hosts": args.hosts, "batch_size": args.batch_size, "workers": workers, "cpus": cpus,
                    "ray": ray.__version__, "rounds": [], "warmup": []}
    with LoopbackFleet(loopback_addresses(args.hosts, args.second_octet), port=args.port) as fleet:
        hosts = [str(endpoint) for endpoint in fleet.endpoints]
        FLEET_PIDS.update(fleet.pids())
        started = time.perf_counter()
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=200 << 20)
        report["cluster_start_s"] = round(time.perf_counter() - started, 2)
        engines = {"local": LocalEngine(), "ray": RayEngine()}
        try:
            for name in ("local", "ray"):
                report["warmup"].append(one_round(name, engines[name], hosts, args.batch_size, workers))
            for rep in range(args.repeat):
                for name in (("local", "ray") if rep % 2 == 0 else ("ray", "local")):
                    busy = wait_quiet(args.quiet, args.quiet_wait)
                    result = one_round(name, engines[name], hosts, args.batch_size, workers)
                    result["busy_before"] = round(busy, 2)
                    report["rounds"].append(result)
                    print(json.dumps(result), flush=True)
            sizes = [call_overhead(engines, hosts[:size], workers, args.calls) for size in (4, args.hosts)]
            report["overhead"] = {name: [size[name] for size in sizes] for name in engines}
            report["actor_start"] = [actor_start(hosts[:size], shards)
                                     for size, shards in ((2, 1), (16 * 8, 8))]
        finally:
            ray.shutdown()
    summarize(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def summarize(report: dict) -> None:
    by = {name: [r for r in report["rounds"] if r["engine"] == name] for name in ("local", "ray")}
    med = {name: statistics.median(r["wall"] for r in rounds) for name, rounds in by.items() if rounds}
    print(f"\n{report['hosts']} hosts, batch {report['batch_size']}, {report['workers']} worker(s)/shard(s), "
          f"{report['cpus']} cores, Ray {report['ray']} (cluster start {report['cluster_start_s']} s, not counted)")
    print(f"{'engine':8} {'wall (median)':>14} {'min':>7} {'max':>7}  phases (median s)"
          "                                 PSS MB  worker CPU s  client CPU s  ok")
    for name, rounds in by.items():
        if not rounds:
            continue
        phases = {k: statistics.median(r["phases"][k] for r in rounds) for k in rounds[0]["phases"]}
        print(f"{name:8} {med[name]:>12.2f} s {min(r['wall'] for r in rounds):>6.2f} "
              f"{max(r['wall'] for r in rounds):>6.2f}  "
              + " ".join(f"{k}={v:.2f}" for k, v in phases.items())
              + f"  {statistics.median(r['pss_mb'] for r in rounds):>6.0f}"
              f"  {statistics.median(r['worker_cpu'] for r in rounds):>10.2f}"
              f"  {statistics.median(r['client_cpu'] for r in rounds):>12.2f}"
              f"  {min(r['ok'] for r in rounds)}/{report['hosts']}")
    if "local" in med and "ray" in med:
        print(f"ray / local wall: {med['ray'] / med['local']:.2f}x "
              f"(per repetition: {', '.join(f'{r:.2f}' for r in ratios(by, 'wall'))})")
        cpu = {name: statistics.median(r["client_cpu"] for r in rounds) for name, rounds in by.items()}
        print(f"ray / local client CPU: {cpu['ray'] / cpu['local']:.2f}x "
              f"(per repetition: {', '.join(f'{r:.2f}' for r in ratios(by, 'client_cpu'))})")
    print("warm-up:", ", ".join(f"{r['engine']} {r['wall']:.2f} s" for r in report["warmup"]))
    for name, sizes in report.get("overhead", {}).items():
        print(f"per-call overhead, {name}: " + ", ".join(
            f"{s['hosts']} hosts {s['median_ms']} ms (min {s['min_ms']})" for s in sizes))
    for start in report.get("actor_start", []):
        print(f"actor start: {start['shards']} actor(s): first {start['first_s']} s, all {start['all_s']} s, "
              f"{start['pss_mb_each']} MB PSS each")


def ratios(by: dict, key: str) -> list[float]:
    return [ray[key] / local[key] for local, ray in zip(by["local"], by["ray"])]


if __name__ == "__main__":
    main()
