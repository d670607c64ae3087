"""Wall time against the latency-bound floor: connect + ``true`` + close on N hosts behind the network relay.

    python -m scale.bench_latency --hosts 1000 --rtts 0.02,0.1 --repeat 5
    python -m scale.bench_latency --hosts 10000 --rtts 0.1 --tools hussh --batches 500 --repeat 1

Every endpoint of a loopback sshd fleet sits behind ``hussh.testing``'s relay at each round-trip
time of ``--rtts`` in turn. Each tool runs as its own process (``scale/peers/connect_true.py`` for
hussh, upstream hussh and parallel-ssh, each in its own venv; ``peers/cli_true.py`` for ``clush``
and the classic ``pssh`` command, over the system ``ssh``), at its own default concurrency and at
each of ``--batches`` (equal concurrency), in a rotated order every repetition; medians reported.

The floor is what the round trips alone cost: ``ceil(N / concurrency) x 6 x rtt``, 6 being the
protocol's fewest round trips for connect + execute + close (``bench_round_trips.MINIMUM``).
Beside it the CPU floor: the CPU the run spent (client, sshd fleet, relay) over this machine's
cores, below which no wall can go here however few round trips a tool needs. ``wall`` is the
whole process (interpreter start-up included); ``op`` is the runner's first connect to its close.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hussh.testing import NetworkConditions

from .bench_round_trips import MINIMUM
from .measure import DEFAULT_VENV_ROOT, Measurement, ensure_venv, machine_line, median, proc_cpu
from .suite import PEERS, PSSH, UPSTREAM, LoopbackBench, command_line, completed_text, write_readme

ROUND_TRIPS = MINIMUM["connect + execute + close"][0]
CLUSTERSHELL = ("ClusterShell==1.10.1",)
TOOLS = ("hussh", "upstream", "pssh-lib", "clush", "pssh")
DEFAULT_CONCURRENCY = {"hussh": 100, "upstream": 100, "pssh-lib": 100, "clush": 64, "pssh": 32}  # their own
LABELS = {"hussh": "hussh (this project)", "upstream": "upstream hussh 0.3.3 (Rust)",
          "pssh-lib": "parallel-ssh 2.16 library", "clush": "clush (ClusterShell 1.10.1, ssh per host)",
          "pssh": "pssh command (Debian 2.3.4, ssh per host)"}


@dataclass(frozen=True)
class Config:
    """One tool at one concurrency: its own default, or a concurrency every tool is given."""

    tool: str
    concurrency: int
    default: bool

    @property
    def name(self) -> str:
        return f"{self.tool}@{self.concurrency}"

    @property
    def setting(self) -> str:
        return f"{'default' if self.default else 'equal'} ({self.concurrency})"


def configs(tools: list[str], batches: list[int]) -> list[Config]:
    """Each tool at its default, then at every ``batches`` concurrency its default is not."""
    made = []
    for tool in tools:
        own = DEFAULT_CONCURRENCY[tool]
        made.append(Config(tool, own, True))
        made += [Config(tool, b, False) for b in batches if b != own]
    return made


def argv_of(config: Config, bench: LoopbackBench, size: int) -> list[str]:
    """The runner's command line: the tool at its default (``--batch 0``) or at the equal concurrency."""
    root = bench.args.venv_root
    batch = "0" if config.default else str(config.concurrency)
    common = ["--tool", config.tool.removesuffix("-lib"), "--targets", str(bench.targets(size)),
              "--user", bench.creds["user"], "--key", bench.creds["key"], "--batch", batch]
    if config.tool in ("clush", "pssh"):
        command = (str(Path(ensure_venv("clustershell", CLUSTERSHELL, root)).parent / "clush")
                   if config.tool == "clush" else shutil.which("parallel-ssh") or "parallel-ssh")
        return [sys.executable, str(PEERS / "cli_true.py"), *common, "--command", command]
    python = {"hussh": sys.executable, "upstream": ensure_venv("upstream", UPSTREAM, root),
              "pssh-lib": ensure_venv("pssh", PSSH, root)}[config.tool]
    return [python, str(PEERS / "connect_true.py"), *common]


def measure(bench: LoopbackBench, config: Config, size: int, record: bool = True) -> Measurement:
    """One run, with the relay's CPU meanwhile kept in the report (``relay_cpu``)."""
    assert bench.fleet is not None
    relays = bench.fleet.relay_pids()
    # A fresh HOME each run: every run meets the fleet for the first time, as in scale/bench.py.
    bench.env["HOME"] = tempfile.mkdtemp(prefix="home-", dir=bench.workdir)
    before = sum(proc_cpu(pid) for pid in relays)
    m = bench.measure(config.name, argv_of(config, bench, size), size, record=record)
    if m.report is not None:
        m.report["relay_cpu"] = sum(proc_cpu(pid) for pid in relays) - before
    return m


def op_seconds(m: Measurement) -> float | None:
    """From the runner's first connect (or its spawn of the command) to its close."""
    marks = (m.report or {}).get("marks", {})
    return marks["closed"] - marks["imported"] if "closed" in marks and "imported" in marks else None


def summarize(config: Config, rtt: float, runs: list[Measurement]) -> dict[str, Any]:
    size = runs[0].hosts
    cores = len(os.sched_getaffinity(0))
    relay = median([m.report["relay_cpu"] for m in runs if m.report and "relay_cpu" in m.report])
    server = median([m.server_cpu for m in runs if m.server_cpu is not None])
    client = median([m.cpu for m in runs])
    floor = math.ceil(size / config.concurrency) * ROUND_TRIPS * rtt
    ops = [s for m in runs if (s := op_seconds(m)) is not None]
    return {
        "tool": config.tool, "setting": config.setting, "concurrency": config.concurrency, "default": config.default,
        "hosts": size, "rtt": rtt, "runs": len(runs), "version": next((m.report["version"] for m in runs if m.report),
                                                                      "?"),
        "completed_min": min(m.completed for m in runs), "completed_max": max(m.completed for m in runs),
        "oom_killed": sum(m.oom_killed for m in runs), "timeouts": sum(m.timed_out for m in runs),
        "no_report": sum(m.report is None and not m.timed_out for m in runs),
        "wall_s": median([m.wall for m in runs]), "wall_min_s": min(m.wall for m in runs),
        "wall_max_s": max(m.wall for m in runs), "op_s": median(ops) if ops else None,
        "floor_s": floor, "client_cpu_s": client, "server_cpu_s": server, "relay_cpu_s": relay,
        "cpu_floor_s": (client + server + relay) / cores,
        "other_load_pct": median([m.other_frac for m in runs]) * 100,
        "busy_before_pct": median([m.busy_before for m in runs]) * 100,
        "failures": next((m.report["failures"] for m in runs if m.report and m.report.get("failures")), []),
    }


def hussh_reference(summaries: list[dict[str, Any]], s: dict[str, Any]) -> dict[str, Any] | None:
    """hussh's row to compare ``s`` with: at the same rtt and concurrency, or (a peer's default) hussh's default."""
    same = [h for h in summaries if h["tool"] == "hussh" and h["rtt"] == s["rtt"]]
    return (next((h for h in same if h["concurrency"] == s["concurrency"] and not s["default"]), None)
            or next((h for h in same if h["default"] and s["default"]), None)
            or next((h for h in same if h["concurrency"] == s["concurrency"]), None))


def table(summaries: list[dict[str, Any]]) -> str:
    """One markdown row per tool and setting, grouped by rtt."""
    lines = ["| tool | setting | N | rtt ms | wall s (min-max) | op s | floor s | wall / floor | op / floor "
             "| wall / hussh | CPU floor s | client CPU ms/host | sshd CPU ms/host | relay CPU ms/host | completed "
             "| other load % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| --- | ---: |"]
    for s in summaries:
        ref = hussh_reference(summaries, s)
        n = s["hosts"]
        op = s["op_s"]
        lines.append(
            f"| {s['tool']} | {s['setting']} | {n} | {s['rtt'] * 1000:.0f} | {s['wall_s']:.2f} "
            f"({s['wall_min_s']:.2f}-{s['wall_max_s']:.2f}) | {'-' if op is None else format(op, '.2f')} "
            f"| {s['floor_s']:.2f} | {s['wall_s'] / s['floor_s']:.2f} "
            f"| {'-' if op is None else format(op / s['floor_s'], '.2f')} "
            f"| {'-' if ref is None else format(s['wall_s'] / ref['wall_s'], '.2f')} | {s['cpu_floor_s']:.2f} "
            f"| {s['client_cpu_s'] * 1000 / n:.2f} | {s['server_cpu_s'] * 1000 / n:.2f} "
            f"| {s['relay_cpu_s'] * 1000 / n:.2f} | {completed_text(s)} | {s['other_load_pct']:.0f} |")
    return "\n".join(lines)


def verdicts(summaries: list[dict[str, Any]]) -> list[str]:
    """The issue's goals, judged on what ran: hussh within 1.15x of the floor at batch 100, ahead of every
    peer at equal concurrency, and whether a larger batch pays off (if not: the CPU figures that stop it)."""
    out = []
    for h in (s for s in summaries if s["tool"] == "hussh"):
        rtt, c, n = h["rtt"] * 1000, h["concurrency"], h["hosts"]
        where = f"hussh at batch {c}, {rtt:.0f} ms"
        cpu = (f"CPU floor {h['cpu_floor_s']:.2f} s (client {h['client_cpu_s'] * 1000 / n:.2f} + sshd "
               f"{h['server_cpu_s'] * 1000 / n:.2f} + relay {h['relay_cpu_s'] * 1000 / n:.2f} ms/host)")
        bound = "CPU-bound" if h["cpu_floor_s"] > h["floor_s"] else "latency-bound"
        ratio = h["wall_s"] / h["floor_s"]
        if c == 100:
            out.append(f"{'ok  ' if ratio <= 1.15 else 'MISS'} {where}: wall {h['wall_s']:.2f} s = {ratio:.2f}x the "
                       f"floor {h['floor_s']:.2f} s (goal <= 1.15); {bound} here: {cpu}")
        for peer in (s for s in summaries if s["tool"] != "hussh" and s["rtt"] == h["rtt"]
                     and s["concurrency"] == c and (not s["default"] or c == DEFAULT_CONCURRENCY[s["tool"]])):
            r = h["wall_s"] / peer["wall_s"]
            out.append(f"{'ok  ' if r < 1.0 else 'MISS'} {where}: wall {r:.2f}x {peer['tool']}'s at equal "
                       f"concurrency ({h['wall_s']:.2f} against {peer['wall_s']:.2f} s)")
        base = next((s for s in summaries if s["tool"] == "hussh" and s["rtt"] == h["rtt"] and s["concurrency"] == 100),
                    None)
        if c > 100 and base is not None:
            client = h["client_cpu_s"]
            out.append(f"note {where}: wall {h['wall_s']:.2f} s against {base['wall_s']:.2f} s at batch 100; latency "
                       f"floor {h['floor_s']:.2f} s, {cpu}: {bound}"
                       + (f"; the client's CPU alone ({client:.2f} s) is {client / h['floor_s']:.1f}x the latency "
                          "floor" if client > h["floor_s"] else ""))
    return out


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_latency", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rtts", type=_floats, default=[0.02, 0.1], help="round trips, seconds (default 0.02,0.1)")
    parser.add_argument("--batches", type=_ints, default=[100, 500],
                        help="equal concurrencies every tool also runs at (default 100,500)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {','.join(TOOLS)}")
    parser.add_argument("--repeat", type=int, default=5, help="alternating repetitions, medians (quote >= 5)")
    parser.add_argument("--second-octet", type=int, default=93, help="loopback fleet: 127.<this>.x.y")
    parser.add_argument("--port", type=int, default=2293, help="loopback fleet port")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a tool run is killed")
    parser.add_argument("--memory-limit-gib", type=float, default=12.0, help="memory cgroup limit per run")
    parser.add_argument("--quiet-threshold", type=float, default=0.15,
                        help="before each run, wait until the machine is less busy than this share of all cores")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="longest wait for that, seconds (0: never)")
    parser.add_argument("--no-warmup", action="store_true", help="skip each tool's untimed 3-host warm-up")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT)
    parser.add_argument("--json", type=Path, help="write every run here (default scale/results/latency.json)")
    parser.add_argument("--readme", action="store_true", help="write the table into scale/README.md")
    parser.add_argument("--section", default="latency", help="README markers to write between (default latency)")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    if unknown := set(tools) - set(TOOLS):
        parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    if "pssh" in tools and shutil.which("parallel-ssh") is None:
        parser.error("the pssh command is missing: apt-get install pssh (or leave 'pssh' out of --tools)")
    args.auth, args.batch_size = "key", 0  # the ssh-based tools log in with the key; concurrency is per config
    plan = configs(tools, args.batches)
    summaries: list[dict[str, Any]] = []
    with LoopbackBench("latency", args, network=NetworkConditions()) as bench:
        assert bench.fleet is not None
        for config in plan:
            argv_of(config, bench, 3)  # venvs made now, not inside a timed run
        if not args.no_warmup:  # .pyc files, page cache: not what a run measures
            for config in {c.tool: c for c in plan}.values():
                m = measure(bench, config, min(3, args.hosts), record=False)
                print(f"[latency] warm-up {config.tool}: {m.completed}/{m.hosts}, {m.wall:.2f} s", file=sys.stderr,
                      flush=True)
        for rtt in args.rtts:
            bench.fleet.set_network(NetworkConditions(rtt=rtt))
            runs: dict[Config, list[Measurement]] = {c: [] for c in plan}
            for rep in range(args.repeat):
                for config in plan[rep % len(plan):] + plan[:rep % len(plan)]:
                    m = measure(bench, config, args.hosts)
                    runs[config].append(m)
                    op = op_seconds(m)
                    print(f"[latency] rtt {rtt * 1000:.0f} ms rep {rep + 1}/{args.repeat} {config.name:<14} "
                          f"{m.completed}/{m.hosts} wall {m.wall:6.2f} s op {op or float('nan'):6.2f} s "
                          f"CPU {m.cpu * 1000 / m.hosts:5.2f} ms/host other load {m.other_frac:4.0%} "
                          f"(before {m.busy_before:4.0%})", file=sys.stderr, flush=True)
            summaries += [summarize(c, rtt, runs[c]) for c in plan]
        bench.save(summaries, args.json or bench.args.json)
        header = (f"Generated by `{command_line('scale.bench_latency')}` on {bench.started}; "
                  f"{machine_line(bench.info)}; loopback sshd fleet ({args.hosts} addresses, 16 per sshd process) "
                  f"behind the relay; connect + `true` + close, key login; {args.repeat} alternating repetition(s), "
                  f"medians; floor = ceil(N / concurrency) x {ROUND_TRIPS} round trips x rtt; CPU floor = (client + "
                  f"sshd + relay CPU) / {len(os.sched_getaffinity(0))} cores.")
    body = "\n".join([header, "", table(summaries), "", "```text", *verdicts(summaries), "```"])
    print("\n" + "; ".join(f"{t} = {LABELS[t]}" for t in tools) + "\n")
    print(body)
    failed = [f"{s['tool']} {s['setting']} {s['rtt'] * 1000:.0f} ms: {f['count']} x {f['example'][:160]}"
              for s in summaries for f in s["failures"][:2]]
    if failed:
        print("\nfailures (first failing run):\n  " + "\n  ".join(failed))
    if args.readme:
        write_readme(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
