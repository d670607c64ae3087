"""Benchmark: connect + ``true`` + ``whoami`` + close on N hosts, through hussh and its peers, in one run.

    python -m scale.bench --hosts 1000 --repeat 3
    python -m scale.bench --hosts 3,100,1000 --tools hussh,upstream --json out.json
    python -m scale.bench --hosts 1000 --nofile 512          # every tool under ulimit -n 512
    python -m scale.bench --targets hosts.txt --user u --password p   # an existing fleet, no loopback sshd

Every tool runs as its own process (``scale/peers/<tool>.py``, in the tool's own venv), and the
whole process is measured from spawn to exit, as a batch job would wait for it:

* wall: ``time.perf_counter()`` around spawn .. ``os.wait4`` (interpreter start-up and imports included);
* client CPU: ``ru_utime + ru_stime`` from ``os.wait4``, which includes every descendant the tool
  reaped before exiting (hussh's worker processes are); reported per host;
* peak RSS: ``ru_maxrss`` from ``os.wait4``: the largest single process of the tool's tree (for a
  multi-process tool, not the sum). Beside it, the peak of the *sum* of PSS over the tool's live
  process tree, sampled from ``/proc/<pid>/smaps_rollup`` every ``--sample-interval`` seconds
  (PSS splits copy-on-write pages shared by forked workers, so it does not double count them);
* server CPU: what the loopback sshd fleet spent serving the run (its listeners' own and reaped
  children's CPU from ``/proc/<pid>/stat``, plus the sshd processes orphaned during the run, which
  the bench, a child subreaper, reaps itself), because the fleet shares this machine's cores;
* other load: the machine's busy time (``/proc/stat``) during the run minus the tool and the fleet,
  i.e. whatever else ran meanwhile; each run first waits (``--quiet-wait``) for a quiet machine.

The loopback fleet (``hussh.testing.LoopbackFleet``) starts once for all sizes; each repetition runs every
tool in a rotated order, and each tool reports how many hosts completed both commands with the
right output, so a tool that fails hosts is shown as such. Medians over repetitions are reported,
with ratios to hussh. Tools other than hussh get venvs under ``--venv-root`` (created on demand).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hussh.testing import (
    KEY_USER,
    PASSWORD,
    PASSWORD_USER,
    LoopbackFleet,
    loopback_addresses,
)

from .measure import (
    DEFAULT_VENV_ROOT,
    FleetCPU,
    Measurement,
    OrphanReaper,
    ensure_venv,
    machine_info,
    run_measured,
    wait_quiet,
)
from .measure import median as _median

PEERS = Path(__file__).resolve().parent / "peers"
PHASES = ("start", "imported", "connected", "true", "whoami", "closed", "end")


@dataclass(frozen=True)
class Tool:
    name: str
    script: str
    packages: tuple[str, ...] = ()  # empty: run with this interpreter (the project's venv)
    args: tuple[str, ...] = ()
    label: str = ""


TOOLS = {
    tool.name: tool
    for tool in (
        Tool("hussh", "hussh_multi.py", label="hussh (this project)"),
        Tool("hussh-2w", "hussh_multi.py", args=("--workers", "2"),
             label="hussh with workers=2 (more hosts per worker than one worker's descriptors hold under a low limit: "
                   "LRU eviction)"),
        Tool("upstream", "upstream_multi.py", ("hussh==0.3.3",), label="upstream hussh 0.3.3 (Rust)"),
        Tool("pssh", "pssh_parallel.py", ("parallel-ssh==2.16.0.post1",), label="parallel-ssh"),
        Tool("asyncssh", "asyncssh_gather.py", label="asyncssh, one asyncio loop"),
        Tool("asyncssh-uvloop", "asyncssh_gather.py", args=("--uvloop",), label="asyncssh, one uvloop loop"),
    )
}
DEFAULT_TOOLS = "hussh,upstream,pssh,asyncssh"


def _experiment_names() -> tuple[str, ...]:
    """``EXPERIMENTS`` of peers/_experiments.py (a plain file there, not a package module)."""
    spec = importlib.util.spec_from_file_location("_experiments", PEERS / "_experiments.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.EXPERIMENTS)


EXPERIMENTS = _experiment_names()


def tool_named(name: str) -> Tool | None:
    """A registered tool, or ``hussh+exp1+exp2``: hussh with candidate optimizations patched in."""
    if name in TOOLS:
        return TOOLS[name]
    base, *experiments = name.split("+")
    if experiments == ["all"]:
        experiments = list(EXPERIMENTS)
    if base == "hussh" and experiments and all(e in EXPERIMENTS for e in experiments):
        return Tool(name, "hussh_multi.py", args=("--experiments", ",".join(experiments)),
                    label=f"hussh with {', '.join(experiments)} (peers/_experiments.py)")
    return None


# --------------------------------------------------------------------------- one tool run

def tool_python(tool: Tool, root: Path) -> str:
    """The python for ``tool``: ours, or ``root/venv-<tool>`` with its packages (made once)."""
    return ensure_venv(tool.name, tool.packages, root)


def measure(tool: Tool, python: str, targets_file: Path, hosts: int, creds: dict[str, str], batch: int,
            env: dict[str, str], nofile: int | None, timeout: float, sample_interval: float,
            fleet: FleetCPU | None, busy_before: float = 0.0, reaper: OrphanReaper | None = None,
            extra: tuple[str, ...] = ()) -> Measurement:
    """Run one tool once (connect + true + whoami + close) as its own process and measure the whole of it."""
    argv = [python, str(PEERS / tool.script), *tool.args, *extra, "--targets", str(targets_file),
            "--user", creds["user"], "--batch", str(batch)]
    argv += ["--password", creds["password"]] if "password" in creds else ["--key", creds["key"]]
    return run_measured(tool.name, argv, hosts, env, nofile=nofile, timeout=timeout,
                        sample_interval=sample_interval, fleet=fleet, busy_before=busy_before, reaper=reaper,
                        phase_order=PHASES)


# --------------------------------------------------------------------------- summaries

def summarize(runs: list[Measurement]) -> dict:
    hosts = runs[0].hosts
    completed = [m.completed for m in runs]
    server = [m.server_cpu for m in runs if m.server_cpu is not None]
    return {
        "tool": runs[0].tool,
        "hosts": hosts,
        "runs": len(runs),
        "completed_min": min(completed),
        "completed_max": max(completed),
        "all_completed": all(c == hosts for c in completed),
        "timeouts": sum(m.timed_out for m in runs),
        "no_report": sum(m.report is None and not m.timed_out for m in runs),
        "wall_s": _median([m.wall for m in runs]),
        "wall_min_s": min(m.wall for m in runs),
        "wall_max_s": max(m.wall for m in runs),
        "cpu_s": _median([m.cpu for m in runs]),
        "cpu_ms_per_host": _median([m.cpu for m in runs]) * 1000 / hosts,
        "user_ms_per_host": _median([m.user for m in runs]) * 1000 / hosts,
        "sys_ms_per_host": _median([m.sys for m in runs]) * 1000 / hosts,
        "children_ms_per_host": _median([c for m in runs if (c := m.children_cpu) is not None]) * 1000 / hosts,
        "maxrss_mib": _median([m.maxrss_kib for m in runs]) / 1024,
        "pss_sum_mib": _median([m.pss_sum_kib for m in runs]) / 1024,
        "procs": max(m.procs for m in runs),
        "root_pss_mib": _median([m.root_pss_kib for m in runs]) / 1024,
        "rest_pss_mib": _median([m.rest_pss_kib for m in runs]) / 1024,
        "fleet_procs": max(m.fleet_procs for m in runs),
        "fleet_rss_mib": _median([m.fleet_rss_kib for m in runs]) / 1024,
        "mem_available_drop_mib": _median([m.mem_available_drop_kib for m in runs]) / 1024,
        "server_cpu_s": _median(server) if server else None,
        "server_cpu_ms_per_host": _median(server) * 1000 / hosts if server else None,
        "server_cpu_ms_min": min(server) * 1000 / hosts if server else None,
        "server_cpu_ms_max": max(server) * 1000 / hosts if server else None,
        "other_load_pct": _median([m.other_frac for m in runs]) * 100,
        "other_load_max_pct": max(m.other_frac for m in runs) * 100,
        "phases": {k: _median([m.phases[k] for m in runs if k in m.phases])
                   for k in dict.fromkeys(k for m in runs for k in m.phases)},
        "failures": next((m.report["failures"] for m in runs if m.report and m.report.get("failures")), []),
        "version": next((m.report["version"] for m in runs if m.report), "?"),
        "exit_codes": sorted({m.exit_code for m in runs}),
    }


def _ok(s: dict) -> str:
    lo, hi, n = s["completed_min"], s["completed_max"], s["hosts"]
    text = f"{lo}/{n}" if lo == hi else f"{lo}-{hi}/{n}"
    if s["timeouts"]:
        text += f" ({s['timeouts']} timed out)"
    if s["no_report"]:
        text += f" ({s['no_report']} crashed)"
    return text if lo == n else f"{text} FAILED"


def table(summaries: list[dict], base: str = "hussh") -> str:
    w = max([17] + [len(s["tool"]) + 1 for s in summaries])
    lines = []
    head = (f"{'tool':<{w}} {'version':<13} {'completed':<16} {'wall s':>7} {'(min-max)':>13} "
            f"{'CPU ms/host':>11} {'usr+sys':>11} {'children':>8} {'peak RSS MiB':>12} {'PSS sum MiB':>11} "
            f"{'procs':>5} {'sshd CPU ms/host (min-max)':>26} {'other load %':>12}")
    lines += [head, "-" * len(head)]
    for s in summaries:
        server = (f"{s['server_cpu_ms_per_host']:.2f} ({s['server_cpu_ms_min']:.2f}-{s['server_cpu_ms_max']:.2f})"
                  if s["server_cpu_ms_per_host"] is not None else "-")
        lines.append(
            f"{s['tool']:<{w}} {s['version']:<13.13} {_ok(s):<16} {s['wall_s']:>7.2f} "
            f"{'(' + format(s['wall_min_s'], '.2f') + '-' + format(s['wall_max_s'], '.2f') + ')':>13} "
            f"{s['cpu_ms_per_host']:>11.2f} "
            f"{format(s['user_ms_per_host'], '.2f') + '+' + format(s['sys_ms_per_host'], '.2f'):>11} "
            f"{s['children_ms_per_host']:>8.2f} {s['maxrss_mib']:>12.1f} {s['pss_sum_mib']:>11.1f} {s['procs']:>5} "
            f"{server:>26} "
            f"{format(s['other_load_pct'], '.0f') + ' (max ' + format(s['other_load_max_pct'], '.0f') + ')':>12}"
        )
    ref = next((s for s in summaries if s["tool"] == base), None)
    if ref is not None and len(summaries) > 1:
        lines += ["", f"{'ratio tool/' + base:<{w}} {'wall':>7} {'CPU/host':>9} {'peak RSS':>9} {'PSS sum':>8}"]
        for s in summaries:
            if s is ref:
                continue
            pss = s["pss_sum_mib"] / ref["pss_sum_mib"] if ref["pss_sum_mib"] else float("nan")
            lines.append(
                f"{s['tool']:<{w}} {s['wall_s'] / ref['wall_s']:>7.2f} "
                f"{s['cpu_ms_per_host'] / ref['cpu_ms_per_host']:>9.2f} {s['maxrss_mib'] / ref['maxrss_mib']:>9.2f} "
                f"{pss:>8.2f}"
            )
    lines += ["", "median phases, seconds (start = spawn to the runner's first line: interpreter start-up; "
                  "exit = last mark to reaped):"]
    for s in summaries:
        lines.append(f"  {s['tool']:<{w}} " + "  ".join(f"{k}={v:.3f}" for k, v in s["phases"].items()))
    failing = [s for s in summaries if s["failures"]]
    if failing:
        lines += ["", "failures (first failing run, grouped):"]
        for s in failing:
            for f in s["failures"][:4]:
                lines.append(f"  {s['tool']:<{w}} {f['count']:>5} x {f['error'][:110]}")
                lines.append(f"  {'':<{w}}         e.g. {f['example'][:140]}")
    return "\n".join(lines)


def check_targets(by_size: dict[int, list[dict]], nofile: int | None) -> list[str]:
    """The issue's targets, judged on whatever sizes and tools were measured."""
    verdicts = []

    def get(size: int, tool: str) -> dict | None:
        return next((s for s in by_size.get(size, []) if s["tool"] == tool), None)

    for size, _summaries in sorted(by_size.items()):
        ours = get(size, "hussh")
        if ours is None:
            continue
        if not ours["all_completed"]:
            verdicts.append(f"MISS  {size} hosts: hussh completed {_ok(ours)}")
        elif nofile:
            verdicts.append(f"ok    {size} hosts under nofile={nofile}: hussh completed all hosts")
        if nofile:
            continue
        up, plain = get(size, "upstream"), get(size, "asyncssh")
        if size >= 1000:
            if up:
                r = ours["wall_s"] / up["wall_s"]
                verdicts.append(f"{'ok  ' if r <= 1.0 else 'MISS'}  {size} hosts: wall hussh/upstream = {r:.2f} "
                                "(target <= 1.00)")
            if plain:
                r = ours["wall_s"] / plain["wall_s"]
                verdicts.append(f"{'ok  ' if r <= 0.85 else 'MISS'}  {size} hosts: wall hussh/asyncssh = {r:.2f} "
                                "(target <= 0.85)")
            cpu = ours["cpu_ms_per_host"]
            verdicts.append(f"{'ok  ' if cpu <= 2.5 else 'MISS'}  {size} hosts: hussh client CPU = {cpu:.2f} ms/host "
                            "(target <= 2.5)")
        if size <= 10 and up:
            d = ours["wall_s"] - up["wall_s"]
            verdicts.append(f"{'ok  ' if d <= 0.5 else 'MISS'}  {size} hosts: wall hussh - upstream = {d:+.3f} s "
                            "(target <= +0.5 s)")
    return verdicts




# --------------------------------------------------------------------------- main

def _sizes(text: str) -> list[int]:
    sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("--hosts takes positive integers, e.g. 3,100,1000")
    return sizes


def read_targets(path: str) -> list[str]:
    targets = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            host, sep, port = line.rpartition(":")
            if not sep or not port.isdigit():
                raise SystemExit(f"{path}: expected host:port lines, got {line!r}")
            targets.append(line)
    return targets


def plot(by_size: dict[int, list[dict]], tools: list[str], path: Path, title: str) -> None:
    """Median wall seconds against host count, one line per tool (matplotlib, from the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(by_size)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for index, tool in enumerate(tools):
        walls = [next(s["wall_s"] for s in by_size[size] if s["tool"] == tool) for size in sizes]
        ax.plot(sizes, walls, marker="o", label=tool, linewidth=2.5 if index == 0 else 1.5)
    ax.set_xlabel("hosts")
    ax.set_ylabel("wall seconds (whole process, median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"[bench] plot written to {path}", file=sys.stderr)


def write_readme_section(by_size: dict[int, list[dict]], sizes: list[int], args: argparse.Namespace,
                         fleet_kind: str, limit: str) -> None:
    """Replace the text between scale/README.md's markers for this kind of fleet with this run's tables."""
    readme = Path(__file__).with_name("README.md")
    text = readme.read_text()
    kind = args.section or ("compose" if args.compose else "loopback")
    start, end = f"<!-- bench-results:{kind}:start -->", f"<!-- bench-results:{kind}:end -->"
    if start not in text or end not in text:
        text = text.rstrip() + f"\n\n{start}\n{end}\n"
    command = "python -m scale.bench " + " ".join(a for a in (sys.argv[1:] if sys.argv[1:] else []))
    body = [start, "", f"Generated by `{command.strip()}` on {time.strftime('%Y-%m-%d')}: {fleet_kind}, "
            f"batch {args.batch_size}, {args.repeat} rep(s) (median), {limit}.", ""]
    for size in sizes:
        body += [f"**{size} hosts**", "", "```text", table(by_size[size]), "```", ""]
    if args.plot:
        body += [f"![wall seconds against hosts]({args.plot.name})", ""]
    readme.write_text(text[:text.index(start)] + "\n".join(body) + text[text.index(end):])
    print(f"[bench] tables written to {readme}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=_sizes, default=None,
                        help="host counts, comma-separated (default 1000; with --targets: all targets)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per size (default 3); median reported")
    parser.add_argument("--tools", default=DEFAULT_TOOLS, help=f"comma-separated, from {','.join(TOOLS)} "
                        f"(default {DEFAULT_TOOLS}); hussh+EXP[+EXP] runs hussh with candidate optimizations "
                        f"patched in, EXP from {','.join(EXPERIMENTS)} (hussh+all: every one)")
    parser.add_argument("--batch-size", type=int, default=100, help="concurrent hosts, same for every tool")
    parser.add_argument("--nofile", type=int, default=None, help="RLIMIT_NOFILE (soft and hard) for every tool")
    parser.add_argument("--auth", choices=("password", "key"), default="password",
                        help="loopback fleet: password user or key user (default password)")
    parser.add_argument("--targets", help="file of host:port lines: benchmark these instead of a loopback fleet")
    parser.add_argument("--user", help="login user for --targets (default: the fleet's)")
    parser.add_argument("--password", help="password for --targets")
    parser.add_argument("--key", help="private key for --targets")
    parser.add_argument("--second-octet", type=int, default=90, help="loopback fleet: 127.<this>.x.y (default 90)")
    parser.add_argument("--port", type=int, default=2290, help="loopback fleet port (default 2290)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a tool run is killed")
    parser.add_argument("--sample-interval", type=float, default=0.1,
                        help="seconds between PSS samples of a tool's process tree (0: off)")
    parser.add_argument("--quiet-threshold", type=float, default=0.15,
                        help="before each run, wait until the machine is less busy than this share of all "
                             "cores (other work steals the cores a run measures; default 0.15)")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="longest wait for that, in seconds (then the run starts anyway; 0: never wait)")
    parser.add_argument("--no-warmup", action="store_true", help="skip each tool's untimed 3-host warm-up run")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT,
                        help=f"where peer venvs live (default {DEFAULT_VENV_ROOT}; env HUSSH_BENCH_VENVS)")
    parser.add_argument("--json", help="write every run and summary to this file")
    parser.add_argument("--compose", type=int, metavar="N",
                        help="benchmark a docker compose fleet of N sshd endpoints (hussh.testing.ComposeFleet), "
                             "brought up for the run and removed after, instead of the loopback fleet")
    parser.add_argument("--plot", type=Path, help="save a PNG of median wall seconds against hosts, one line per tool")
    parser.add_argument("--readme", action="store_true",
                        help="write the result tables into scale/README.md between its bench-results markers "
                             "(one pair for the loopback fleet, one for --compose)")
    parser.add_argument("--section", help="README markers to write between (default loopback, or compose)")
    args = parser.parse_args(argv)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if tool_named(t) is None]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}, "
                     f"and hussh+EXP[+EXP...] with EXP from {', '.join(EXPERIMENTS)}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install '.[bench]' (make bench-compose does)")
    specs = {name: tool_named(name) for name in tools}
    pythons = {name: tool_python(specs[name], args.venv_root) for name in tools}

    compose = None
    if args.compose:
        from hussh.testing import ComposeFleet

        compose = ComposeFleet(args.compose, project="hussh-bench")
        started = time.perf_counter()
        endpoints = compose.up().endpoints
        print(f"[bench] compose fleet: {len(endpoints)} sshd endpoints in {len(compose.nodes())} containers, "
              f"up in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        args.targets = str(Path(tempfile.mkdtemp(prefix="hussh-compose-")) / "targets.txt")
        Path(args.targets).write_text("".join(f"{h}:{port}\n" for h, port in endpoints))
    if args.targets:
        names = read_targets(args.targets)
        sizes = args.hosts or [len(names)]
        if sizes[-1] > len(names):
            parser.error(f"--hosts {sizes[-1]} but {args.targets} lists {len(names)} targets")
        if args.key:
            creds = {"user": args.user or KEY_USER, "key": args.key}
        else:
            creds = {"user": args.user or PASSWORD_USER, "password": args.password or PASSWORD}
    else:
        sizes = args.hosts or [1000]
        names = [f"{a}:{args.port}" for a in loopback_addresses(sizes[-1], second_octet=args.second_octet)]

    workdir = Path(tempfile.mkdtemp(prefix="hussh-bench-"))
    home = workdir / "home"
    home.mkdir()
    # PYTHONDONTWRITEBYTECODE (set on some machines) would keep the warm-up from writing .pyc files for
    # the editable hussh tree, which would then recompile on every run while pip-installed peers do not.
    unset = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "SSH_AUTH_SOCK", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["HOME"] = str(home)  # no ~/.ssh config, keys or known_hosts of this machine's user
    fleet: LoopbackFleet | None = None
    fleet_cpu: FleetCPU | None = None
    info = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "sizes": sizes}
    print(f"[bench] {info['machine']['cpus']} CPUs ({info['machine']['cpu']}), {info['machine']['mem_gib']} GiB, "
          f"{info['machine']['openssh']}, Python {info['machine']['python']}", file=sys.stderr, flush=True)
    all_runs: list[Measurement] = []
    by_size: dict[int, list[dict]] = {}
    reaper = OrphanReaper()
    try:
        if not args.targets:
            started = time.perf_counter()
            fleet = LoopbackFleet(loopback_addresses(sizes[-1], second_octet=args.second_octet), port=args.port)
            try:
                fleet.up(timeout=120)
            except BaseException:
                fleet = None
                raise
            fleet_cpu = FleetCPU(fleet.pids(), reaper)
            reaper.known.update(fleet.pids())
            if args.auth == "key":
                key = workdir / "client_key"
                shutil.copy(fleet.client_key, key)
                creds = {"user": KEY_USER, "key": str(key)}
            else:
                creds = {"user": PASSWORD_USER, "password": PASSWORD}
            print(f"[bench] loopback fleet: {sizes[-1]} addresses 127.{args.second_octet}.x.y:{args.port}, "
                  f"{len(fleet.nodes())} sshd processes, started in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)

        reaper.start()

        def run_one(name: str, size: int) -> Measurement:
            targets_file = workdir / f"targets-{size}.txt"
            if not targets_file.exists():
                targets_file.write_text("".join(f"{n}\n" for n in names[:size]))
            busy = wait_quiet(args.quiet_threshold, args.quiet_wait) if args.quiet_wait > 0 else 0.0
            # A fresh HOME per run: every run meets the fleet for the first time (hussh records its
            # host keys), never a known_hosts half filled by the tool that ran before it.
            run_env = {**env, "HOME": tempfile.mkdtemp(prefix="home-", dir=workdir)}
            return measure(specs[name], pythons[name], targets_file, size, creds, args.batch_size, run_env,
                           args.nofile, args.timeout, args.sample_interval, fleet_cpu, busy, reaper)

        if not args.no_warmup:  # .pyc files, page cache, first-use venv costs: not what a run measures
            for name in tools:
                m = run_one(name, min(3, len(names)))
                print(f"[bench] warm-up {name}: {m.completed}/{m.hosts} hosts, {m.wall:.2f} s",
                      file=sys.stderr, flush=True)

        for size in sizes:
            runs: dict[str, list[Measurement]] = {name: [] for name in tools}
            for rep in range(args.repeat):
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]
                for name in order:
                    m = run_one(name, size)
                    runs[name].append(m)
                    all_runs.append(m)
                    note = "" if m.completed == size else f"  <-- {size - m.completed} hosts FAILED"
                    if m.timed_out:
                        note += " (timed out, killed)"
                    elif m.report is None:
                        note += f" (runner exited {m.exit_code} without a report: {m.stderr_tail.strip()[-300:]})"
                    print(f"[bench] {size} hosts rep {rep + 1}/{args.repeat} {name:<16} {m.completed}/{size} "
                          f"wall {m.wall:6.2f} s  CPU {m.cpu * 1000 / size:6.2f} ms/host  "
                          f"RSS {m.maxrss_kib / 1024:6.1f} MiB  other load {m.other_frac:4.0%} "
                          f"(before {m.busy_before:4.0%}){note}", file=sys.stderr, flush=True)
            by_size[size] = [summarize(runs[name]) for name in tools]
    finally:
        if fleet is not None:
            fleet.down()
        if compose is not None:
            compose.down()
        if reaper.is_alive():
            reaper.stop()
        reaper.reap()
        shutil.rmtree(workdir, ignore_errors=True)

    limit = f"ulimit -n {args.nofile}" if args.nofile else f"ulimit -n {info['machine']['nofile'][0]} (default)"
    print("\ntools: " + "; ".join(f"{name} = {specs[name].label or name}" for name in tools))
    for size in sizes:
        print(f"\n== {size} hosts: connect + true + whoami + close, batch {args.batch_size}, "
              f"{args.repeat} reps (median), {limit}, {args.auth if not args.targets else 'targets file'} auth ==")
        print(table(by_size[size]))
    verdicts = check_targets(by_size, args.nofile)
    if verdicts:
        print("\ntargets:")
        for v in verdicts:
            print(f"  {v}")
    fleet_kind = (f"docker compose fleet, {args.compose} endpoints" if args.compose
                  else "targets file" if args.targets else "loopback sshd fleet")
    if args.plot:
        plot(by_size, tools, args.plot, f"connect + true + whoami + close, batch {args.batch_size}, {fleet_kind}")
    if args.readme:
        write_readme_section(by_size, sizes, args, fleet_kind, limit)
    if args.json:
        Path(args.json).write_text(json.dumps({
            **info, "summaries": by_size, "runs": [m.as_json() for m in all_runs], "targets": verdicts,
        }, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
