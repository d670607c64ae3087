"""The frame every workload benchmark of scale/ shares: fleet, runners, alternating repetitions, medians, README.

A benchmark script (``scale/bench_rounds.py``...) says which runner arguments each tool gets and
which report fields to tabulate; this module starts one loopback sshd fleet for the whole run,
gives every tool its own venv and process (``scale.measure.run_measured``), alternates the tools
repetition by repetition (rotated order, so drift and warm caches hit every tool alike), waits for
a quiet machine before each run (or records how busy it was), and writes medians as a text table,
to JSON and, with ``--readme``, into scale/README.md between ``<!-- bench-results:NAME:... -->``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER, LoopbackFleet, NetworkConditions, loopback_addresses

from .measure import (
    DEFAULT_VENV_ROOT,
    FleetCPU,
    Measurement,
    OrphanReaper,
    ensure_venv,
    machine_info,
    machine_line,
    median,
    run_measured,
    runner_env,
    wait_quiet,
)

SCALE = Path(__file__).resolve().parent
PEERS = SCALE / "peers"
RESULTS = SCALE / "results"
README = SCALE / "README.md"
UPSTREAM = ("hussh==0.3.3",)
PSSH = ("parallel-ssh==2.16.0.post1",)


@dataclass(frozen=True)
class Runner:
    """A tool as a workload benchmark runs it: its venv's packages, its runner script and fixed arguments."""

    name: str
    packages: tuple[str, ...]
    script: str
    args: tuple[str, ...] = ()


def runner(name: str) -> Runner:
    """``hussh``, ``upstream``, ``pssh``, or ``hussh+EXP[+EXP]`` (hussh with peers/_experiments.py patches)."""
    if name == "upstream":
        return Runner(name, UPSTREAM, "mc_workloads.py", ("--impl", "upstream"))
    if name == "pssh":
        return Runner(name, PSSH, "pssh_workloads.py")
    base, *experiments = name.split("+")
    if base == "hussh":
        return Runner(name, (), "mc_workloads.py",
                      ("--impl", "hussh", *(("--experiments", ",".join(experiments)) if experiments else ())))
    raise SystemExit(f"unknown tool {name!r}: hussh, hussh+EXP, upstream or pssh")


def common_options(parser: argparse.ArgumentParser, hosts: int, tools: str, repeat: int = 5) -> None:
    """Options every workload benchmark takes."""
    parser.add_argument("--hosts", type=int, default=hosts, help=f"hosts (default {hosts})")
    parser.add_argument("--repeat", type=int, default=repeat,
                        help=f"alternating repetitions, medians reported (default {repeat}; quote >= 5)")
    parser.add_argument("--tools", default=tools, help=f"comma-separated (default {tools}); hussh+EXP too")
    parser.add_argument("--batch-size", type=int, default=100, help="concurrent hosts, same for every tool")
    parser.add_argument("--auth", choices=("password", "key"), default="password")
    parser.add_argument("--second-octet", type=int, default=92, help="loopback fleet: 127.<this>.x.y")
    parser.add_argument("--port", type=int, default=2292, help="loopback fleet port")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a tool run is killed")
    parser.add_argument("--memory-limit-gib", type=float, default=12.0,
                        help="memory cgroup limit per tool run, so a runaway run dies alone (default 12)")
    parser.add_argument("--quiet-threshold", type=float, default=0.15,
                        help="before each run, wait until the machine is less busy than this share of all cores")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for that, seconds (0: never)")
    parser.add_argument("--no-warmup", action="store_true", help="skip each tool's untimed warm-up run")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT)
    parser.add_argument("--json", type=Path, help="write every run here (default scale/results/<bench>.json)")
    parser.add_argument("--readme", action="store_true", help="write the tables into scale/README.md")


class LoopbackBench:
    """One loopback fleet and the runners measured against it (a context manager)."""

    def __init__(self, name: str, args: argparse.Namespace, fleet_size: int | None = None,
                 network: NetworkConditions | None = None) -> None:
        self.name = name
        self.network = network  # set: every endpoint behind one relay process (its CPU kept apart from sshd's)
        self.args = args
        self.size = fleet_size or args.hosts
        self.fleet: LoopbackFleet | None = None
        self.fleet_cpu: FleetCPU | None = None
        self.reaper = OrphanReaper()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hussh-{name}-"))
        self.workdir.chmod(0o755)  # the fleet's users read files the benchmarks put here
        (self.workdir / "home").mkdir()
        self.env = runner_env(self.workdir / "home")
        self.info = machine_info()
        self.creds: dict[str, str] = {}
        self.pythons: dict[str, str] = {}
        self.runs: list[Measurement] = []
        self.started = time.strftime("%Y-%m-%d")

    def __enter__(self) -> LoopbackBench:
        print(f"[{self.name}] {machine_line(self.info)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        addresses = loopback_addresses(self.size, second_octet=self.args.second_octet)
        self.fleet = LoopbackFleet(addresses, port=self.args.port, network=self.network)
        try:
            self.fleet.up(timeout=120 + 0.05 * self.size)
        except BaseException:
            self.fleet = None
            self.cleanup()
            raise
        relays = self.fleet.relay_pids()
        self.fleet_cpu = FleetCPU([p for p in self.fleet.pids() if p not in relays], self.reaper)
        self.reaper.known.update(self.fleet.pids())
        if self.args.auth == "key":
            key = self.workdir / "client_key"
            shutil.copy(self.fleet.client_key, key)
            self.creds = {"user": KEY_USER, "key": str(key)}
        else:
            self.creds = {"user": PASSWORD_USER, "password": PASSWORD}
        self.reaper.start()
        print(f"[{self.name}] loopback fleet: {self.size} addresses 127.{self.args.second_octet}.x.y:{self.args.port}, "
              f"{len(self.fleet.nodes())} sshd processes, up in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        if self.fleet is not None:
            self.fleet.down()
            self.fleet = None
        if self.reaper.is_alive():
            self.reaper.stop()
        self.reaper.reap()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def hosts(self) -> list[str]:
        assert self.fleet is not None
        return [e.host for e in self.fleet.endpoints]

    def targets(self, size: int) -> Path:
        path = self.workdir / f"targets-{size}.txt"
        if not path.exists():
            path.write_text("".join(f"{h}:{self.args.port}\n" for h in self.hosts[:size]))
        return path

    def python(self, tool: Runner) -> str:
        if tool.name not in self.pythons:
            self.pythons[tool.name] = ensure_venv(tool.name.split("+")[0], tool.packages, self.args.venv_root)
        return self.pythons[tool.name]

    def run(self, name: str, size: int, extra: Sequence[str], *, script: str | None = None,
            nofile: int | None = None, timeout: float | None = None, record: bool = True,
            wrap: Sequence[str] = ()) -> Measurement:
        """One measured run of tool ``name`` on the first ``size`` hosts with runner arguments ``extra``
        (``wrap``: a command line the runner is started under, such as strace)."""
        tool = runner(name)
        argv = [*wrap, self.python(tool), str(PEERS / (script or tool.script)), *tool.args, *extra,
                "--targets", str(self.targets(size)), "--user", self.creds["user"],
                "--batch", str(self.args.batch_size)]
        argv += ["--password", self.creds["password"]] if "password" in self.creds else ["--key", self.creds["key"]]
        return self.measure(name, argv, size, nofile=nofile, timeout=timeout, record=record)

    def measure(self, name: str, argv: list[str], size: int, *, nofile: int | None = None,
                timeout: float | None = None, record: bool = True) -> Measurement:
        """Measure ``argv`` as tool ``name`` on ``size`` hosts (after waiting for a quiet machine)."""
        busy = wait_quiet(self.args.quiet_threshold, self.args.quiet_wait) if self.args.quiet_wait > 0 else 0.0
        m = run_measured(name, argv, size, self.env, nofile=nofile, timeout=timeout or self.args.timeout,
                         fleet=self.fleet_cpu, busy_before=busy, reaper=self.reaper,
                         memory_limit=int(self.args.memory_limit_gib * 2**30) if self.args.memory_limit_gib else None)
        if record:
            self.runs.append(m)
        return m

    def alternate(self, tools: list[str], size: int, extra: Callable[[str], Sequence[str]],
                  before: Callable[[str], None] | None = None, after: Callable[[str], None] | None = None,
                  warmup: Callable[[str], Sequence[str]] | None = None, nofile: int | None = None,
                  label: str = "") -> dict[str, list[Measurement]]:
        """``args.repeat`` repetitions, each running every tool once in a rotated order; ``before``/``after``
        wrap each run."""
        if not self.args.no_warmup and warmup is not None:
            for name in tools:
                if before:
                    before(name)
                try:
                    m = self.run(name, min(3, size), warmup(name), nofile=nofile, record=False)
                finally:
                    if after:
                        after(name)
                print(f"[{self.name}] warm-up {name}: {m.completed}/{m.hosts}, {m.wall:.2f} s", file=sys.stderr,
                      flush=True)
        runs: dict[str, list[Measurement]] = {name: [] for name in tools}
        for rep in range(self.args.repeat):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for name in order:
                if before:
                    before(name)
                try:
                    m = self.run(name, size, extra(name), nofile=nofile)
                finally:
                    if after:
                        after(name)
                runs[name].append(m)
                print(f"[{self.name}] {label}{size} hosts rep {rep + 1}/{self.args.repeat} {name:<14} "
                      f"{progress_note(m)}", file=sys.stderr, flush=True)
        return runs

    def header(self, command: str, detail: str) -> str:
        """The line above a README section: command, date, machine, fleet, method."""
        return (f"Generated by `{command}` on {self.started}; {machine_line(self.info)}; loopback sshd fleet "
                f"({self.size} addresses, 16 per sshd process, {self.args.auth} login), batch "
                f"{self.args.batch_size}, {self.args.repeat} alternating repetition(s), medians; {detail}.")

    def save(self, summaries: Any, path: Path | None = None) -> Path:
        path = path or self.args.json or RESULTS / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"bench": self.name, "date": self.started, "machine": self.info,
                                    "args": {k: str(v) for k, v in vars(self.args).items()},
                                    "summaries": summaries, "runs": [m.as_json() for m in self.runs]},
                                   indent=1, default=str))
        print(f"[{self.name}] results in {path}", file=sys.stderr)
        return path


def progress_note(m: Measurement) -> str:
    note = f"{m.completed}/{m.hosts} wall {m.wall:7.2f} s  CPU {m.cpu:7.2f} s  PSS {m.pss_sum_kib / 1024:7.1f} MiB  " \
           f"other load {m.other_frac:4.0%} (before {m.busy_before:4.0%})"
    if m.oom_killed:
        note += "  <-- killed at the memory cgroup limit"
    if m.timed_out:
        note += "  <-- timed out, killed"
    elif m.report is None:
        note += f"  <-- exited {m.exit_code} without a report: {m.stderr_tail.strip()[-300:]}"
    elif m.completed != m.hosts:
        failures = m.report.get("failures") or []
        note += f"  <-- {m.hosts - m.completed} FAILED" + (f": {failures[0]['example'][:160]}" if failures else "")
    return note


# --------------------------------------------------------------------------- summaries and tables

def field(m: Measurement, key: str) -> Any:
    """A report field of one run (None if the runner did not report it)."""
    return (m.report or {}).get(key)


def summarize(runs: list[Measurement], fields: Sequence[str] = ()) -> dict[str, Any]:
    """Medians of one tool's runs: the common figures, plus the named report fields."""
    hosts = runs[0].hosts
    server = [m.server_cpu for m in runs if m.server_cpu is not None]
    summary: dict[str, Any] = {
        "tool": runs[0].tool, "hosts": hosts, "runs": len(runs),
        "completed_min": min(m.completed for m in runs), "completed_max": max(m.completed for m in runs),
        "oom_killed": sum(m.oom_killed for m in runs), "timeouts": sum(m.timed_out for m in runs),
        "no_report": sum(m.report is None and not m.timed_out for m in runs),
        "wall_s": median([m.wall for m in runs]), "wall_min_s": min(m.wall for m in runs),
        "wall_max_s": max(m.wall for m in runs),
        "cpu_s": median([m.cpu for m in runs]),
        "maxrss_mib": median([m.maxrss_kib for m in runs]) / 1024,
        "pss_sum_mib": median([m.pss_sum_kib for m in runs]) / 1024,
        "root_pss_mib": median([m.root_pss_kib for m in runs]) / 1024,
        "rest_pss_mib": median([m.rest_pss_kib for m in runs]) / 1024,
        "procs": max(m.procs for m in runs),
        "server_cpu_s": median(server) if server else None,
        "other_load_pct": median([m.other_frac for m in runs]) * 100,
        "other_load_max_pct": max(m.other_frac for m in runs) * 100,
        "version": next((m.report["version"] for m in runs if m.report), "?"),
        "failures": next((m.report["failures"] for m in runs if m.report and m.report.get("failures")), []),
        "phases": {k: median([m.phases[k] for m in runs if k in m.phases])
                   for k in dict.fromkeys(k for m in runs for k in m.phases)},
    }
    for key in fields:
        values = [v for m in runs if isinstance(v := field(m, key), (int, float))]
        summary[key] = median(values) if values else None
    return summary


def completed_text(s: dict[str, Any]) -> str:
    lo, hi, n = s["completed_min"], s["completed_max"], s["hosts"]
    text = f"{lo}/{n}" if lo == hi else f"{lo}-{hi}/{n}"
    for key, word in (("oom_killed", "OOM-killed"), ("timeouts", "timed out"), ("no_report", "crashed")):
        if s[key]:
            text += f" ({s[key]} {word})"
    return text


Column = tuple[str, Callable[[dict[str, Any]], Any], str]  # header, value, format


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec) if spec else str(value)


def render(summaries: list[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A fixed-width text table, one row per summary."""
    cells = [[fmt(get(s), spec) for _, get, spec in columns] for s in summaries]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, (h, _, _) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, ((h, _, _), w) in enumerate(zip(columns, widths)))]
    lines.append("-" * len(lines[0]))
    for row in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


COMMON_COLUMNS: list[Column] = [
    ("tool", lambda s: s["tool"], ""),
    ("version", lambda s: s["version"], ".12"),
    ("completed", completed_text, ""),
    ("wall s", lambda s: s["wall_s"], ".2f"),
    ("(min-max)", lambda s: f"({s['wall_min_s']:.2f}-{s['wall_max_s']:.2f})", ""),
    ("CPU s", lambda s: s["cpu_s"], ".2f"),
    ("peak RSS MiB", lambda s: s["maxrss_mib"], ".1f"),
    ("PSS sum MiB", lambda s: s["pss_sum_mib"], ".1f"),
    ("sshd CPU s", lambda s: s["server_cpu_s"], ".2f"),
    ("other load %", lambda s: f"{s['other_load_pct']:.0f} (max {s['other_load_max_pct']:.0f})", ""),
]


def failures_text(summaries: list[dict[str, Any]]) -> str:
    lines = []
    for s in summaries:
        for f in s["failures"][:3]:
            lines.append(f"  {s['tool']:<14} {f['count']:>5} x {f['error'][:110]}")
            lines.append(f"  {'':<14}         e.g. {f['example'][:150]}")
    return ("failures (first failing run, grouped):\n" + "\n".join(lines)) if lines else ""


def ratio(summaries: list[dict[str, Any]], key: str, tool: str, base: str = "upstream") -> float | None:
    """``tool``'s median ``key`` over ``base``'s (None when either is missing)."""
    a = next((s.get(key) for s in summaries if s["tool"] == tool), None)
    b = next((s.get(key) for s in summaries if s["tool"] == base), None)
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def write_readme(section: str, body: str) -> None:
    """Replace the text between scale/README.md's ``bench-results:<section>`` markers (appended if absent)."""
    text = README.read_text()
    start, end = f"<!-- bench-results:{section}:start -->", f"<!-- bench-results:{section}:end -->"
    block = f"{start}\n\n{body.strip()}\n\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    README.write_text(text)
    print(f"[bench] README section {section} written", file=sys.stderr)


def command_line(module: str) -> str:
    return " ".join(["python -m", module, *sys.argv[1:]])
