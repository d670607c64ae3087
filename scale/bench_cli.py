"""Benchmark of the command line: ``hussh run`` against ``clush -b`` and pssh on N loopback hosts, the
command's overhead over the library call it wraps, and the parent's peak memory while grouping.

    python -m scale.bench_cli --hosts 1000 --repeat 5
    python -m scale.bench_cli --hosts 1000 --repeat 5 --tools hussh,library     # the overhead alone

Every tool runs ``whoami`` once on every host, 100 hosts at a time, logging in as the fleet's key
user with the same ed25519 key, as its own process, in one run, in a rotated order each
repetition (after the previous run's per-connection sshds have exited and the machine is quiet).
Measured from spawn to exit: wall time and CPU (the process and the descendants it reaped: hussh's
workers, clush's and pssh's ssh processes).
Each tool's output is checked: a run counts only hosts that printed the right user.

* ``hussh``: ``python -m hussh run -f 100 --hostfile HOSTS --port PORT -l USER -i KEY whoami`` (lines into a file);
* ``library``: ``peers/run_once_hussh.py``, the ``MultiConnection`` call the command wraps, printing the
  same lines; the command's overhead is its wall over this one's (target: at most 5%);
* ``clush``: ``clush -b -f 100`` from ClusterShell (PyPI, in its own venv under ``--venv-root``), which
  runs the system ``ssh`` per host (``-F /dev/null``, no known_hosts, batch mode);
* ``pssh``: the classic pssh command (Debian's ``pssh`` package: ``parallel-ssh -i -p 100``), also
  over the system ``ssh``;
* ``pssh-lib``: the parallel-ssh library (libssh2; its package has no command), ``peers/run_once_pssh.py``.

The command's own work is also measured without a fleet and its noise: importing ``hussh.cli``
against ``hussh.multi_conn``, and parsing, expanding and printing N hosts' results.

Then, once: ``hussh run -B`` and ``-q`` on every host printing the same 1 MB, run in a fresh process
that reports its own peak RSS (``VmHWM``): identical outputs are held once, so the peak stays far
below the N MB that went through the pipes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hussh.testing import KEY_USER, LoopbackFleet, loopback_addresses
from scale.bench import DEFAULT_VENV_ROOT, FleetCPU, Tool, tool_python, wait_quiet

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "scale" / "peers"
COMMAND = "whoami"
CLUSTERSHELL = Tool("clustershell", "", ("ClusterShell==1.10.1",))
PARALLEL_SSH = Tool("pssh", "", ("parallel-ssh==2.16.0.post1",))  # the venv scale/bench.py makes too
SSH_OPTIONS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30"]
ALL_TOOLS = ("hussh", "library", "clush", "pssh", "pssh-lib")


@dataclass
class Setup:
    """What every tool needs to reach the fleet."""

    hosts: list[str]
    port: int
    key: str
    batch: int
    work: Path
    venv_root: Path

    @property
    def names_file(self) -> Path:
        return self.work / "hosts.txt"

    @property
    def targets_file(self) -> Path:
        return self.work / "targets.txt"


def argv_of(tool: str, s: Setup) -> list[str]:
    """The command line that runs ``tool`` once."""
    if tool == "hussh":
        return [sys.executable, "-m", "hussh", "run", "-f", str(s.batch), "--hostfile", str(s.names_file),
                "--port", str(s.port),
                "-l", KEY_USER, "-i", s.key, COMMAND]
    if tool == "library":
        return [sys.executable, str(PEERS / "run_once_hussh.py"), "--targets", str(s.names_file), "--port",
                str(s.port), "--user", KEY_USER, "--key", s.key, "--batch", str(s.batch), COMMAND]
    if tool == "clush":
        clush = str(Path(tool_python(CLUSTERSHELL, s.venv_root)).parent / "clush")
        ssh_options = " ".join(["-p", str(s.port), "-i", s.key, *SSH_OPTIONS])
        return [clush, "-b", "-f", str(s.batch), "-l", KEY_USER, "-o", ssh_options, "-w", ",".join(s.hosts), COMMAND]
    if tool == "pssh":
        options = [arg for pair in zip(SSH_OPTIONS[2::2], SSH_OPTIONS[3::2]) for arg in ("-O", pair[1])]
        return ["parallel-ssh", "-i", "-p", str(s.batch), "-t", "0", "-l", KEY_USER, "-h", str(s.targets_file),
                "-x", f"-F /dev/null -i {s.key}", *options, COMMAND]
    if tool == "pssh-lib":
        return [tool_python(PARALLEL_SSH, s.venv_root), str(PEERS / "run_once_pssh.py"), "--targets",
                str(s.targets_file), "--user", KEY_USER, "--key", s.key, "--batch", str(s.batch), COMMAND]
    raise ValueError(f"unknown tool {tool!r}; known: {', '.join(ALL_TOOLS)}")


def completed(tool: str, output: str, hosts: list[str]) -> int:
    """Hosts whose output shows the right user, read the way each tool prints it."""
    if tool == "clush":  # gathered: "----\n<nodeset> (count)\n----\nhussh-key"
        return sum(int(n) for n in re.findall(rf"^-+\n.+ \((\d+)\)\n-+\n{KEY_USER}$", output, re.MULTILINE))
    if tool == "pssh":  # "[7] 12:00:00 [SUCCESS] host:port" then the output
        return len(re.findall(rf"\[SUCCESS\] \S+\n{KEY_USER}$", output, re.MULTILINE))
    wanted = {f"{host}: {KEY_USER}" for host in hosts}
    return len(wanted & set(output.splitlines()))


def measure(tool: str, s: Setup, timeout: float) -> dict:
    """Run ``tool`` once as its own process; wall and CPU from spawn to exit, and how many hosts it completed."""
    argv = argv_of(tool, s)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(s.work / "home")}
    env.pop("PYTHONUNBUFFERED", None)
    out_path, err_path = s.work / f"{tool}.out", s.work / f"{tool}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=s.work,
                                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:  # wait4 with a deadline: a stuck tool is killed, with its session
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.01)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"tool": tool, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "exit": proc.returncode,
            "completed": completed(tool, out_path.read_text(errors="replace"), s.hosts),
            "stderr_tail": err_path.read_text(errors="replace")[-300:]}


def grouping_memory(s: Setup, mode: str) -> dict:
    """Peak RSS of a fresh process running ``hussh run MODE`` where every host prints the same 1 MB."""
    code = f"""
import json, os, re, sys
sys.path.insert(0, {str(REPO)!r})
from hussh.cli import main
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
before = hwm()
real, sys.stdout = sys.stdout, open(os.devnull, "w")
code = main(["run", {mode!r}, "-f", "{s.batch}", "--hostfile", {str(s.names_file)!r}, "--port", "{s.port}",
             "-l", {KEY_USER!r},
             "-i", {s.key!r}, "head -c 1000000 /dev/zero | tr '\\\\0' x"])
real.write(json.dumps({{"exit": code, "before_kib": before, "peak_kib": hwm()}}) + "\\n")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HOME": str(s.work / "home")}, cwd=s.work)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {"mode": mode, **report, "summary": done.stderr.strip().splitlines()[-1]}


def command_own_work(s: Setup, repeat: int = 7) -> dict:
    """What the command adds to the library call, measured without a fleet (so without its noise), in
    fresh interpreters (median of ``repeat``): importing ``hussh.cli`` once ``hussh.multi_conn`` is
    imported, and parsing, expanding the hosts and showing N hosts' results (lines into /dev/null, summary)."""
    code = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
import hussh.multi_conn
started = time.perf_counter()
import hussh.cli
imported = time.perf_counter()
from hussh import SSHResult
from hussh._cli_args import hosts_of, inventory_of, parse
from hussh._cli_output import Display
devnull = open(os.devnull, "w")
began = time.perf_counter()
args = parse(["run", "--hostfile", {str(s.names_file)!r}, "--port", "{s.port}", "whoami"])
hosts = hosts_of(args, inventory_of(args))
display = Display("lines", len(hosts), stdout=devnull, stderr=devnull)
for host in hosts:
    display.host(host, SSHResult("hussh-key\\n"), 0.1)
display.finish(hosts, 1.0)
print(imported - started, time.perf_counter() - began)
"""
    samples = [subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                              cwd=s.work).stdout.split() for _ in range(repeat)]
    return {"import": statistics.median(float(a) for a, _ in samples),
            "work": statistics.median(float(b) for _, b in samples)}


def report(runs: list[dict], tools: list[str], hosts: int) -> str:
    """A table of medians (min-max) per tool, with the ratio of each wall to hussh's."""
    by_tool = {tool: [r for r in runs if r["tool"] == tool] for tool in tools}
    base = statistics.median(r["wall"] for r in by_tool["hussh"]) if by_tool.get("hussh") else None
    lines = [f"{'tool':<9} {'wall s (min-max)':>20} {'CPU s':>7} {'hosts ok':>10} {'wall / hussh':>12}"]
    for tool, mine in by_tool.items():
        walls = [r["wall"] for r in mine]
        wall = statistics.median(walls)
        ok = min(r["completed"] for r in mine)
        ratio = f"{wall / base:.2f}x" if base else "-"
        lines.append(f"{tool:<9} {wall:>8.2f} ({min(walls):.2f}-{max(walls):.2f}) "
                     f"{statistics.median(r['cpu'] for r in mine):>7.2f} {ok:>5}/{hosts:<4} {ratio:>12}")
    if by_tool.get("hussh") and by_tool.get("library"):
        lib = statistics.median(r["wall"] for r in by_tool["library"])
        lines.append(f"command overhead over the library call: {base - lib:+.3f} s = {(base - lib) / base:+.1%} "
                     "of the command's wall (target: at most 5%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--tools", default=",".join(ALL_TOOLS))
    parser.add_argument("--port", type=int, default=2531)
    parser.add_argument("--second-octet", type=int, default=79, help="fleet addresses 127.<this>.x.y")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one tool run may take")
    parser.add_argument("--no-memory", action="store_true", help="skip the grouping memory measurement")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    if "pssh" in tools and shutil.which("parallel-ssh") is None:
        parser.error("the pssh command is missing: apt-get install pssh (or leave 'pssh' out of --tools)")
    fleet = LoopbackFleet(loopback_addresses(args.hosts, args.second_octet), port=args.port)
    work = Path(tempfile.mkdtemp(prefix="hussh-bench-cli-"))
    try:
        fleet.up(timeout=120)
        setup = Setup(fleet.addresses, args.port, str(fleet.client_key), args.batch, work, args.venv_root)
        (work / "home").mkdir()
        setup.names_file.write_text("".join(f"{h}\n" for h in fleet.addresses))
        setup.targets_file.write_text("".join(f"{h}:{args.port}\n" for h in fleet.addresses))
        for tool in tools:
            argv_of(tool, setup)  # venvs made now, not inside a timed run
        runs: list[dict] = []
        for repetition in range(args.repeat):
            order = tools[repetition % len(tools):] + tools[:repetition % len(tools)]
            for tool in order:
                FleetCPU(fleet.pids()).quiesce()  # the last run's sshds are gone
                busy = wait_quiet(0.2, 30)
                run = measure(tool, setup, args.timeout)
                run.update(repetition=repetition, busy_before=round(busy, 3))
                runs.append(run)
                print(f"[{repetition + 1}/{args.repeat}] {tool:<9} {run['wall']:7.2f} s  cpu {run['cpu']:6.2f} s  "
                      f"{run['completed']}/{args.hosts} ok  exit {run['exit']}  (machine busy {busy:.0%} before)",
                      file=sys.stderr, flush=True)
        print(f"\n{args.hosts} loopback hosts, '{COMMAND}', batch {args.batch}, {args.repeat} runs each, medians:")
        print(report(runs, tools, args.hosts))
        own = command_own_work(setup)
        print(f"the command's own work, without a fleet (median of fresh interpreters): importing hussh.cli "
              f"on top of hussh.multi_conn {own['import'] * 1000:.1f} ms; parsing, expanding and showing "
              f"{args.hosts} hosts' results {own['work'] * 1000:.1f} ms")
        memory = []
        if not args.no_memory:
            for mode in ("-q", "-B"):
                memory.append(grouping_memory(setup, mode))
                m = memory[-1]
                print(f"hussh run {mode}, every host printing the same 1 MB: peak RSS of the command "
                      f"{m['peak_kib'] / 1024:.0f} MiB (at start {m['before_kib'] / 1024:.0f} MiB; "
                      f"{args.hosts} MB of output received); {m['summary']}")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "own_work": own, "memory": memory}, indent=1))
        return 0
    finally:
        fleet.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
