"""Scaling: connect + ``true`` + ``whoami`` + close at 1k, 3k and 10k hosts, under ``ulimit -n 1024`` and a high limit.

    python -m scale.bench_scaling --sizes 1000,3000,10000 --repeat 5 [--readme] [--plot scale/bench-scaling.png]
    python -m scale.bench_scaling \\
        --from-json scale/results/scaling-1024.json,scale/results/scaling-1048576.json --readme

Runs ``scale.bench`` (same fleet, tools in their own venvs and processes, alternating) once per
descriptor limit, every tool under the same limit, then derives from its JSON:

* cost per host at the largest size against the smallest (wall, client CPU, fleet CPU);
* the cost of hussh's eviction near the descriptor limit: ``hussh-2w`` (two workers, so each
  holds more hosts than 1024 descriptors allow and must close idle connections and reconnect)
  under the low limit against the same under the high one;
* memory per connected host, parent and workers apart (PSS growth between sizes);
* whether this machine can hold the largest size at all: before each limit's run, the smallest
  size's fleet figures (sshd processes and memory per connected session) are extrapolated against
  ``pid_max`` and MemAvailable, and sizes that cannot fit are left out with the numbers that say so
  (``--force`` runs them anyway);
* a model for 100,000 hosts from one machine (CPU, memory, descriptors, time), checked by
  predicting the largest measured size from the smallest;
* a plot of wall and memory against hosts per tool (matplotlib, in its own venv if this one lacks it).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .measure import ensure_venv, machine_info, machine_line, mem_available_kib
from .suite import RESULTS, SCALE, command_line, render, write_readme

TOOLS = "hussh,hussh-2w,upstream,pssh"
PID_RESERVE = 3000  # processes left for the machine's other work


def run_sizes(sizes: list[int], nofile: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``run_bench`` for every size; with ``--repeat-large`` the sizes above the smallest get their
    own (shorter) run and the JSONs are merged, so a 10k-host size need not be repeated five times."""
    if args.repeat_large is None or len(sizes) == 1 or args.repeat_large == args.repeat:
        return run_bench(sizes, nofile, args, out)
    data = run_bench(sizes[:1], nofile, args, out)
    large = run_bench(sizes[1:], nofile, argparse.Namespace(**{**vars(args), "repeat": args.repeat_large}),
                      out.with_name(out.stem + "-large.json"))
    data["sizes"] = data["sizes"] + large["sizes"]
    data["summaries"].update(large["summaries"])
    data["runs"] = data["runs"] + large["runs"]
    data["args"]["repeat_large"] = str(args.repeat_large)
    return data


def run_bench(sizes: list[int], nofile: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One ``scale.bench`` run at every size under ``ulimit -n nofile``; its JSON."""
    argv = [sys.executable, "-m", "scale.bench", "--hosts", ",".join(map(str, sizes)), "--repeat", str(args.repeat),
            "--tools", args.tools, "--nofile", str(nofile), "--json", str(out), "--second-octet",
            str(args.second_octet), "--port", str(args.port), "--quiet-wait", str(args.quiet_wait),
            "--timeout", str(args.timeout)]
    print(f"[scaling] {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    subprocess.run(argv, check=True, cwd=SCALE.parent)
    return json.loads(out.read_text())


def fits(probe: dict[str, Any], size: int) -> tuple[bool, str]:
    """Whether ``size`` connected sessions fit this machine, extrapolated from a probe run's fleet figures."""
    small = probe["sizes"][0]
    best = max(probe["summaries"][str(small)], key=lambda s: s["fleet_procs"])
    procs_per_host = best["fleet_procs"] / small
    mem_per_host = best["mem_available_drop_mib"] / small
    running = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    need_procs = procs_per_host * size
    need_mib = mem_per_host * size
    available = mem_available_kib() / 1024
    ok = need_procs + running + PID_RESERVE <= pid_max and need_mib <= 0.9 * available
    return ok, (f"{size} hosts need ~{need_procs:,.0f} sshd processes ({procs_per_host:.2f} per connected session at "
                f"{small} hosts) beside {running:,} running, against pid_max {pid_max:,}; "
                f"and ~{need_mib / 1024:.1f} GiB (MemAvailable fell {mem_per_host:.2f} MiB per host at {small}) "
                f"against {available / 1024:.1f} GiB available")


def by_tool(data: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for size, summaries in data["summaries"].items():
        for s in summaries:
            table.setdefault(s["tool"], {})[int(size)] = s
    return table


def ok(s: dict[str, Any]) -> bool:
    return bool(s.get("all_completed"))


def scaling_table(data: dict[str, Any]) -> str:
    rows = []
    for _tool, sizes in by_tool(data).items():
        for size, s in sorted(sizes.items()):
            rows.append({**s, "size": size})
    columns = [
        ("tool", lambda s: s["tool"], ""), ("hosts", lambda s: s["size"], ""),
        ("completed", lambda s: f"{s['completed_min']}/{s['hosts']}" + ("" if ok(s) else " FAILED"), ""),
        ("wall s", lambda s: s["wall_s"], ".2f"),
        ("(min-max)", lambda s: f"({s['wall_min_s']:.2f}-{s['wall_max_s']:.2f})", ""),
        ("wall ms/host", lambda s: s["wall_s"] * 1000 / s["hosts"], ".2f"),
        ("CPU ms/host", lambda s: s["cpu_ms_per_host"], ".2f"),
        ("sshd CPU ms/host", lambda s: s["server_cpu_ms_per_host"], ".2f"),
        ("PSS sum MiB", lambda s: s["pss_sum_mib"], ".1f"), ("parent PSS", lambda s: s.get("root_pss_mib"), ".1f"),
        ("workers PSS", lambda s: s.get("rest_pss_mib"), ".1f"), ("procs", lambda s: s["procs"], ""),
        ("sshd procs", lambda s: s.get("fleet_procs"), ""),
        ("other load %", lambda s: s["other_load_pct"], ".0f"),
    ]
    return render(rows, columns)


def derived(low: dict[str, Any] | None, high: dict[str, Any] | None) -> list[str]:
    """Cost per host at the largest size against the smallest, eviction cost, memory per connected host."""
    lines: list[str] = []
    for data in (high, low):
        label = f"ulimit -n {data['args']['nofile']}" if data else ""
        if not data:
            continue
        for tool, sizes in by_tool(data).items():
            done = {n: s for n, s in sizes.items() if ok(s)}
            if len(done) < 2:
                continue
            a, b = min(done), max(done)
            sa, sb = done[a], done[b]
            lines.append(
                f"{label}, {tool}: per host at {b} vs {a}: "
                f"wall {sb['wall_s'] * 1000 / b:.2f} vs {sa['wall_s'] * 1000 / a:.2f} ms, "
                f"client CPU {sb['cpu_ms_per_host']:.2f} vs {sa['cpu_ms_per_host']:.2f} ms, "
                f"sshd CPU {sb['server_cpu_ms_per_host'] or 0:.2f} vs {sa['server_cpu_ms_per_host'] or 0:.2f} ms; "
                f"memory per connected host (PSS growth {a}->{b}): parent "
                f"{(sb['root_pss_mib'] - sa['root_pss_mib']) * 1024 / (b - a):.1f} KiB, workers "
                f"{(sb['rest_pss_mib'] - sa['rest_pss_mib']) * 1024 / (b - a):.1f} KiB, whole tool "
                f"{(sb['pss_sum_mib'] - sa['pss_sum_mib']) * 1024 / (b - a):.1f} KiB")
    if low and high:
        lo, hi = by_tool(low).get("hussh-2w", {}), by_tool(high).get("hussh-2w", {})
        for size in sorted(set(lo) & set(hi)):
            if ok(lo[size]) and ok(hi[size]):
                lines.append(
                    f"Eviction, hussh with 2 workers at {size} hosts ({size // 2} per worker; "
                    f"{int(low['args']['nofile']) - 48} connections fit in one under ulimit -n "
                    f"{low['args']['nofile']}): "
                    f"wall {lo[size]['wall_s']:.2f} s under ulimit -n {low['args']['nofile']} "
                    f"vs {hi[size]['wall_s']:.2f} s with a high limit "
                    f"({lo[size]['wall_s'] / hi[size]['wall_s']:.2f}x), "
                    f"client CPU {lo[size]['cpu_ms_per_host']:.2f} vs {hi[size]['cpu_ms_per_host']:.2f} ms/host, "
                    f"sshd CPU {lo[size]['server_cpu_ms_per_host'] or 0:.2f} vs "
                    f"{hi[size]['server_cpu_ms_per_host'] or 0:.2f} ms/host (each eviction is a reconnect)")
    return lines


def model(data: dict[str, Any], hosts: int = 100_000) -> list[str]:
    """A linear model of hussh from the smallest and largest completed sizes, checked, then scaled to ``hosts``."""
    sizes = {n: s for n, s in by_tool(data).get("hussh", {}).items() if ok(s)}
    if len(sizes) < 2:
        return ["model: needs hussh completed at two sizes"]
    a, b = min(sizes), max(sizes)
    sa, sb = sizes[a], sizes[b]
    cpus = data["machine"]["cpus"]

    def slope(key: str) -> tuple[float, float]:
        per = (sb[key] - sa[key]) / (b - a)
        return per, sa[key] - per * a  # per host, fixed

    wall_per, wall_fixed = slope("wall_s")
    pss_per, pss_fixed = slope("pss_sum_mib")
    root_per, root_fixed = slope("root_pss_mib")
    client_ms, server_ms = sb["cpu_ms_per_host"], sb["server_cpu_ms_per_host"] or 0.0
    mid = sorted(sizes)[len(sizes) // 2] if len(sizes) > 2 else None
    lines = [f"model (hussh, from {a} and {b} hosts, this machine: {cpus} cores shared by client and fleet):"]
    if mid and mid not in (a, b):
        sm = sizes[mid]
        lines.append(f"  check at {mid} hosts: predicted wall {wall_fixed + wall_per * mid:.1f} s (measured "
                     f"{sm['wall_s']:.1f}), PSS {pss_fixed + pss_per * mid:.0f} MiB (measured {sm['pss_sum_mib']:.0f})")
    client_s = client_ms * hosts / 1000
    server_s = server_ms * hosts / 1000
    lines += [
        f"  client CPU: {client_ms:.2f} ms/host -> {client_s:,.0f} CPU-s for {hosts:,} hosts "
        f"({client_s / cpus:,.0f} s on {cpus} cores if nothing else ran there)",
        f"  client memory: {pss_fixed:.0f} MiB + {pss_per * 1024:.1f} KiB per connected host -> "
        f"{(pss_fixed + pss_per * hosts) / 1024:.1f} GiB with all {hosts:,} connected "
        f"(parent {(root_fixed + root_per * hosts) / 1024:.2f} GiB)",
        f"  descriptors: one per connected host in the workers -> {hosts:,} in all; under ulimit -n 1024 hussh "
        f"starts ceil({hosts:,}/976) = {math.ceil(hosts / 976)} workers (or evicts idle connections with fewer); "
        f"with a high limit, {cpus} workers of {hosts // cpus:,} each",
        f"  time with the fleet elsewhere (client CPU-bound): ~{client_s / cpus:,.0f} s; on this machine with a local "
        f"fleet: {wall_per * 1000:.2f} ms/host measured -> ~{wall_fixed + wall_per * hosts:,.0f} s, "
        f"of which the fleet's {server_ms:.1f} ms/host is {server_s:,.0f} CPU-s",
        f"  the local fleet itself cannot reach {hosts:,}: ~{sb.get('fleet_procs', 0) / b:.1f} sshd processes per "
        f"connected session -> {sb.get('fleet_procs', 0) / b * hosts:,.0f} processes against pid_max "
        f"{data['machine'].get('pid_max', 32768):,}",
    ]
    return lines


def plot(datasets: dict[str, dict[str, Any]], path: Path) -> None:
    """Wall and PSS against hosts, one line per tool and limit (in a matplotlib venv if this one has none)."""
    series = []
    lowest = min(int(d["args"]["nofile"]) for d in datasets.values())
    for label, data in datasets.items():
        for tool, sizes in by_tool(data).items():
            points = [(n, s["wall_s"], s["pss_sum_mib"]) for n, s in sorted(sizes.items()) if ok(s)]
            if points:
                series.append({"label": f"{tool} ({label})", "points": points,
                               "dashed": len(datasets) > 1 and int(data["args"]["nofile"]) == lowest})
    spec = json.dumps({"series": series, "path": str(path),
                       "title": "connect + true + whoami + close, loopback fleet, batch 100"})
    python = sys.executable
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        python = ensure_venv("plot", ("matplotlib>=3.8",))
    subprocess.run([python, "-m", "scale.plots", "scaling"], input=spec, text=True, check=True, cwd=SCALE.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repeat-large", type=int, help="repetitions for the sizes above the smallest "
                        "(default: --repeat); their medians are then from fewer runs, as the table says")
    parser.add_argument("--tools", default=TOOLS)
    parser.add_argument("--low-nofile", type=int, default=1024)
    parser.add_argument("--high-nofile", type=int, default=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                        help="the high limit (default: this process's hard limit, as far as it can go without "
                             "CAP_SYS_RESOURCE; 20000 in this sandbox, whose root lacks that capability)")
    parser.add_argument("--second-octet", type=int, default=93)
    parser.add_argument("--port", type=int, default=2293)
    parser.add_argument("--quiet-wait", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--force", action="store_true", help="run sizes the feasibility check rules out")
    parser.add_argument("--from-json", help="comma-separated JSON files of earlier runs: only derive, plot, write")
    parser.add_argument("--plot", type=Path, default=SCALE / "bench-scaling.png")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    datasets: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if args.from_json:
        for path in args.from_json.split(","):
            data = json.loads(Path(path).read_text())
            datasets[data["args"]["nofile"]] = data
    else:
        RESULTS.mkdir(exist_ok=True)
        for nofile in (args.high_nofile, args.low_nofile):
            out = RESULTS / f"scaling-{nofile}.json"
            probe = run_bench(sizes[:1], nofile, argparse.Namespace(**{**vars(args), "repeat": 1}),
                              RESULTS / f"scaling-probe-{nofile}.json")
            runnable = []
            for size in sizes:
                fit, why = fits(probe, size)
                if fit or args.force or size == sizes[0]:
                    runnable.append(size)
                else:
                    notes.append(f"left out under ulimit -n {nofile}: {why}")
                    print(f"[scaling] {notes[-1]}", file=sys.stderr)
            datasets[str(nofile)] = run_sizes(runnable, nofile, args, out)
            datasets[str(nofile)]["feasibility"] = [fits(probe, s)[1] for s in sizes]
            out.write_text(json.dumps(datasets[str(nofile)], indent=1, default=str))
    low = datasets.get(str(args.low_nofile))
    high = (datasets.get(str(args.high_nofile))
            or next((d for k, d in datasets.items() if k != str(args.low_nofile)), None))
    parts = []
    for label, data in (("high limit", high), (f"ulimit -n {args.low_nofile}", low)):
        if data:
            parts.append(f"**{label}** (`--nofile {data['args']['nofile']}`)\n\n```text\n{scaling_table(data)}\n```")
    feasibility = (high or low or {}).get("feasibility", [])
    text = "\n".join(derived(low, high) + [""] + (model(high) if high else []) + [""] + notes + feasibility)
    print("\n\n".join(parts) + "\n\n" + text)
    if args.plot and datasets:
        plot({f"nofile {k}": d for k, d in datasets.items()}, args.plot)
    if args.readme:
        info = (high or low or {}).get("machine") or machine_info()
        header = (f"Generated by `{command_line('scale.bench_scaling')}` on {time.strftime('%Y-%m-%d')}; "
                  f"{machine_line(info)}; loopback sshd fleet (16 addresses per sshd process, password login), "
                  f"batch 100, tools: {args.tools} (hussh-2w = hussh with workers=2), alternating, medians of "
                  f"{args.repeat}" + (f" at {sizes[0]} hosts and of {args.repeat_large} above (time: a 10k-host "
                                      "run takes minutes per tool)" if args.repeat_large else "") + ".")
        write_readme("scaling", header + "\n\n" + "\n\n".join(parts) + f"\n\n```text\n{text}\n```\n\n"
                     + (f"![wall and memory against hosts]({args.plot.name})" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
