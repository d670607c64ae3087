"""How every benchmark in scale/ measures one tool run: a process from spawn to exit, and the machine around it.

Shared by ``scale.bench`` (connect + commands) and the workload benchmarks (``scale.bench_*``):

* :func:`run_measured` spawns one runner as its own session and measures the whole of it: wall
  (spawn .. ``os.wait4``), CPU of the process and every descendant it reaped (``ru_utime +
  ru_stime``), the largest single process (``ru_maxrss``), the peak over time of the summed PSS of
  its live tree (root and descendants apart: hussh's parent and its workers), the fleet's CPU and
  the machine's other load meanwhile; optionally under ``ulimit -n`` and a memory cgroup, so a
  runaway run is killed alone instead of the machine's other work;
* :class:`OrphanReaper` and :class:`FleetCPU` account for the loopback sshd fleet's CPU;
* :func:`wait_quiet` / :func:`machine_busy` keep other load out of the figures, or flag it;
* :func:`ensure_venv` gives each peer tool its own venv under ``/opt/hussh-bench``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_VENV_ROOT = Path(os.environ.get("HUSSH_BENCH_VENVS", "/opt/hussh-bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
MEMORY_CGROUP_ROOT = Path("/sys/fs/cgroup/memory")  # cgroup v1 memory controller (this machine's layout)


# --------------------------------------------------------------------------- venvs

def base_python() -> str:
    """The interpreter behind this venv (venvs are made from it, not nested in ours)."""
    candidate = getattr(sys, "_base_executable", None) or sys.executable
    return candidate if os.path.exists(candidate) else shutil.which("python3") or sys.executable


def ensure_venv(name: str, packages: Sequence[str], root: Path = DEFAULT_VENV_ROOT) -> str:
    """The python of ``root/venv-<name>`` holding ``packages`` (ours when there are none); made once, idempotently."""
    if not packages:
        return sys.executable
    venv = root / f"venv-{name}"
    python = venv / "bin" / "python"
    marker = venv / "hussh-bench.json"
    wanted = {"packages": list(packages)}
    try:
        if python.exists() and json.loads(marker.read_text()) == wanted:
            return str(python)
    except (OSError, ValueError):
        pass
    print(f"[bench] preparing {venv} with {' '.join(packages)}", file=sys.stderr, flush=True)
    if not python.exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
                   check=True)
    marker.write_text(json.dumps(wanted))
    return str(python)


def runner_env(home: Path) -> dict[str, str]:
    """The environment every runner gets: an empty HOME (no ~/.ssh config, keys, known_hosts), no agent,
    no PYTHONPATH. PYTHONDONTWRITEBYTECODE is dropped too: the warm-up must leave .pyc files for the
    editable hussh tree, as pip-installed peers have them."""
    unset = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "SSH_AUTH_SOCK", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["HOME"] = str(home)
    return env


# --------------------------------------------------------------------------- process trees

def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                kids.extend(int(k) for k in handle.read().split())
    except OSError:
        pass
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants, ``pid`` first."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children(current))
    return pids


def rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB, (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def proc_cpu(pid: int, reaped: bool = True) -> float:
    """CPU seconds of one live process (utime + stime, plus its reaped children's if ``reaped``)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15 if reaped else 13]) / CLK_TCK


class TreeSampler(threading.Thread):
    """Peaks over time of a process tree: summed RSS and PSS, the root's PSS, the rest's, and the process count.

    The root is the tool's own process (hussh's parent); the rest its descendants (hussh's workers).
    """

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.peak_rss_sum = self.peak_pss_sum = self.peak_procs = 0
        self.peak_root_pss = self.peak_rest_pss = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        pids = tree(self.pid)
        rss = pss = root = 0
        for pid in pids:
            r, p = rollup(pid)
            rss, pss = rss + r, pss + p
            if pid == self.pid:
                root = p
        if rss:  # an exiting process reads as empty; keep the peak of real samples
            self.peak_rss_sum = max(self.peak_rss_sum, rss)
            self.peak_pss_sum = max(self.peak_pss_sum, pss)
            self.peak_root_pss = max(self.peak_root_pss, root)
            self.peak_rest_pss = max(self.peak_rest_pss, pss - root)
            self.peak_procs = max(self.peak_procs, len(pids))

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


class FleetSampler(threading.Thread):
    """Peaks over time of the sshd fleet's per-connection processes: their count and summed RSS (``statm``,
    cheap enough for thousands of processes; shared pages counted in each), plus the machine's lowest
    MemAvailable. What says whether a machine can hold N connected OpenSSH sessions at once."""

    def __init__(self, roots: list[int], reaper: OrphanReaper | None, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.roots, self.reaper, self.interval = roots, reaper, interval
        self.stop_event = threading.Event()
        self.peak_procs = self.peak_rss_kib = 0
        self.min_available_kib = mem_available_kib()
        self.page_kib = os.sysconf("SC_PAGE_SIZE") // 1024

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            pids = [p for root in self.roots for p in tree(root)[1:]]
            if self.reaper is not None:  # sessions orphaned under the bench
                pids += [p for p in children(os.getpid()) if p not in self.reaper.known]
            rss = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/statm") as handle:
                        rss += int(handle.read().split()[1]) * self.page_kib
                except (OSError, IndexError, ValueError):
                    pass
            self.peak_procs = max(self.peak_procs, len(pids))
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.min_available_kib = min(self.min_available_kib, mem_available_kib())

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def mem_available_kib() -> int:
    with open("/proc/meminfo") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("MemAvailable:"))


# --------------------------------------------------------------------------- the machine

def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from ``/proc/stat``."""
    with open("/proc/stat") as handle:
        fields = [int(f) for f in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def busy_fraction(window: float = 1.0) -> float:
    """The machine's busy share of all cores over the next ``window`` seconds."""
    before = machine_busy()
    time.sleep(window)
    return (machine_busy() - before) / (window * len(os.sched_getaffinity(0)))


def wait_quiet(threshold: float, limit: float, window: float = 0.5) -> float:
    """Wait (up to ``limit`` s) until the machine is less than ``threshold`` busy over ``window`` s.

    Other work on the machine (other test suites, containers) steals the cores a run measures;
    returns the busy fraction last seen, so a run that had to start anyway can be flagged.
    """
    deadline = time.monotonic() + limit
    while True:
        busy = busy_fraction(window)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return {
        "cpu": cpu, "cpus": len(os.sched_getaffinity(0)), "mem_gib": round(mem / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "openssh": (ssh.stderr or ssh.stdout).strip(), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "pid_max": int(Path("/proc/sys/kernel/pid_max").read_text()),
    }


def machine_line(info: dict) -> str:
    return (f"{info['cpus']} CPUs ({info['cpu']}), {info['mem_gib']} GiB, {info['openssh']}, "
            f"Python {info['python']}, kernel {info['kernel']}")


# --------------------------------------------------------------------------- the fleet's CPU

class OrphanReaper(threading.Thread):
    """Makes the bench a child subreaper and reaps, with their CPU, the processes orphaned under it.

    sshd's per-connection processes can outlive their parent (seen: hundreds per 1000-host run,
    depending on how the client disconnects); an orphan is reparented to the nearest subreaper
    ancestor, normally init, and its CPU would vanish from the fleet's account. With the bench as
    subreaper they come here: an orphan from a tool's session (the runner's session id) is that
    tool's CPU, any other one the fleet's.
    """

    PR_SET_CHILD_SUBREAPER = 36

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.known: set[int] = set()  # our own children, reaped by their owners (Popen, wait4)
        self.tool_sessions: set[int] = set()
        self.server_cpu = 0.0
        self.tool_cpu = 0.0
        self.reaped = 0
        self.stop_event = threading.Event()
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self.enabled = libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            self.reap()

    def reap(self) -> int:
        """Reap exited orphans; return how many orphans are still running."""
        running = 0
        with self.lock:
            for pid in children(os.getpid()):
                if pid in self.known:
                    continue
                try:
                    with open(f"/proc/{pid}/stat") as handle:
                        session = int(handle.read().rsplit(")", 1)[1].split()[3])
                    done, _, usage = os.wait4(pid, os.WNOHANG)
                except (OSError, ValueError, IndexError):
                    continue
                if not done:
                    running += 1
                    continue
                self.reaped += 1
                if session in self.tool_sessions:
                    self.tool_cpu += usage.ru_utime + usage.ru_stime
                else:
                    self.server_cpu += usage.ru_utime + usage.ru_stime
        return running

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


class FleetCPU:
    """CPU the sshd listeners, the per-connection sshds they reaped and the orphans we reaped have used."""

    def __init__(self, pids: list[int], reaper: OrphanReaper | None = None) -> None:
        self.pids = pids
        self.reaper = reaper

    def cpu(self) -> float:
        return sum(proc_cpu(pid) for pid in self.pids) + (self.reaper.server_cpu if self.reaper else 0.0)

    def quiesce(self, limit: float = 15.0) -> None:
        """Wait until no per-connection sshd is left, so their CPU is counted and the next run starts clean."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            orphans = self.reaper.reap() if self.reaper else 0
            if not orphans and not any(children(pid) for pid in self.pids):
                return
            time.sleep(0.05)


# --------------------------------------------------------------------------- one measured run

@dataclass
class Measurement:
    tool: str
    hosts: int
    wall: float
    cpu: float  # seconds, user + system, tool process plus reaped descendants
    user: float
    sys: float
    orphan_cpu: float  # CPU of the tool's processes that it left behind (orphans the bench reaped)
    maxrss_kib: int
    pss_sum_kib: int
    rss_sum_kib: int
    procs: int
    server_cpu: float | None
    exit_code: int
    timed_out: bool
    report: dict | None
    stderr_tail: str
    phases: dict[str, float] = field(default_factory=dict)
    other_cpu: float = 0.0  # machine CPU during the run spent neither by the tool nor by the fleet
    other_frac: float = 0.0  # the same as a share of all cores over the run
    busy_before: float = 0.0  # machine busy fraction just before the run
    root_pss_kib: int = 0  # peak PSS of the tool's own process (hussh: the parent)
    rest_pss_kib: int = 0  # peak summed PSS of its descendants (hussh: the workers)
    oom_killed: bool = False  # the memory cgroup's limit killed it
    fleet_procs: int = 0  # peak count of the fleet's per-connection sshd processes during the run
    fleet_rss_kib: int = 0  # their peak summed RSS
    mem_available_drop_kib: int = 0  # MemAvailable before the run minus its lowest value during it

    @property
    def completed(self) -> int:
        return int(self.report["completed"]) if self.report else 0

    @property
    def children_cpu(self) -> float | None:
        """CPU of the processes the tool had reaped when it reported (hussh: its workers)."""
        if not self.report or "cpu_children" not in self.report:
            return None
        return self.report["cpu_children"]["user"] + self.report["cpu_children"]["sys"]

    def as_json(self) -> dict:
        data = dict(self.__dict__)
        data["completed"] = self.completed
        return data


class MemoryCgroup:
    """A cgroup v1 memory limit for one run: past it the kernel kills the tool, not the machine's other work."""

    def __init__(self, limit_bytes: int) -> None:
        self.path = MEMORY_CGROUP_ROOT / f"hussh-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        with contextlib.suppress(OSError):  # no swap here; where there is, cap it too
            (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))

    def join(self) -> None:
        """In the child before exec: move this process (and so its descendants) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        try:
            stats = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
            return int(stats.get("oom_kill", 0))
        except (OSError, ValueError):
            return 0

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def memory_cgroup_available() -> bool:
    return (MEMORY_CGROUP_ROOT / "memory.limit_in_bytes").exists() and os.access(MEMORY_CGROUP_ROOT, os.W_OK)


def parse_report(stdout: str) -> dict | None:
    """The runner's last JSON line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_measured(name: str, argv: list[str], hosts: int, env: dict[str, str], *, nofile: int | None = None,
                 timeout: float = 900.0, sample_interval: float = 0.1, fleet: FleetCPU | None = None,
                 busy_before: float = 0.0, reaper: OrphanReaper | None = None, memory_limit: int | None = None,
                 phase_order: Sequence[str] | None = None, fleet_interval: float = 1.0) -> Measurement:
    """Run ``argv`` once as its own process (own session) and measure the whole of it.

    ``phase_order`` names the runner's marks in order; by default every mark in the order reported.
    ``fleet_interval``: seconds between samples of the fleet's sessions (0: off).
    """
    cgroup = MemoryCgroup(memory_limit) if memory_limit and memory_cgroup_available() else None

    def setup_child() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if cgroup is not None:
            cgroup.join()

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server_before = fleet.cpu() if fleet else 0.0
        machine_before = machine_busy()
        spawned = time.monotonic()
        started = time.perf_counter()
        orphans_before = reaper.tool_cpu if reaper else 0.0
        with reaper.lock if reaper else contextlib.nullcontext():
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                    cwd=tempfile.gettempdir(), start_new_session=True, preexec_fn=setup_child)
            if reaper:
                reaper.known.add(proc.pid)
                reaper.tool_sessions.add(proc.pid)
        sampler = TreeSampler(proc.pid, sample_interval) if sample_interval > 0 else None
        if sampler:
            sampler.start()
        available_before = mem_available_kib()
        fleet_sampler = FleetSampler(fleet.pids, reaper) if fleet and fleet_interval > 0 else None
        if fleet_sampler:
            fleet_sampler.start()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only the tool's processes

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if reaper:
            reaper.known.discard(proc.pid)
        watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler:
            sampler.stop()
        if fleet_sampler:
            fleet_sampler.stop()
        with contextlib.suppress(ProcessLookupError):  # workers the tool could not reap
            os.killpg(proc.pid, signal.SIGKILL)
        if reaper:
            reaper.reap()
        orphan_cpu = (reaper.tool_cpu - orphans_before) if reaper else 0.0
        server_cpu = None
        if fleet:
            fleet.quiesce()  # per-connection sshds still closing: their CPU belongs to this run
            server_cpu = fleet.cpu() - server_before
        machine_during = machine_busy() - machine_before
        window = time.monotonic() - spawned
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    oom = False
    if cgroup is not None:
        oom = cgroup.oom_kills() > 0
        cgroup.remove()
    report = parse_report(stdout)
    phases: dict[str, float] = {}
    if report:
        marks = report.get("marks", {})
        previous = spawned
        for mark in (phase_order or list(marks)):
            if mark in marks:
                phases[mark] = round(marks[mark] - previous, 4)
                previous = marks[mark]
        phases["exit"] = round(spawned + wall - previous, 4)
    tool_cpu = usage.ru_utime + usage.ru_stime + orphan_cpu
    other = max(0.0, machine_during - tool_cpu - (server_cpu or 0.0))
    return Measurement(
        tool=name, hosts=hosts, wall=wall, cpu=tool_cpu, user=usage.ru_utime, sys=usage.ru_stime,
        orphan_cpu=orphan_cpu, maxrss_kib=usage.ru_maxrss,
        pss_sum_kib=sampler.peak_pss_sum if sampler else 0, rss_sum_kib=sampler.peak_rss_sum if sampler else 0,
        procs=sampler.peak_procs if sampler else 0, server_cpu=server_cpu, exit_code=proc.returncode,
        timed_out=timed_out.is_set(), report=report, stderr_tail=stderr[-2000:], phases=phases,
        other_cpu=other, other_frac=other / (window * len(os.sched_getaffinity(0))), busy_before=busy_before,
        root_pss_kib=sampler.peak_root_pss if sampler else 0, rest_pss_kib=sampler.peak_rest_pss if sampler else 0,
        oom_killed=oom, fleet_procs=fleet_sampler.peak_procs if fleet_sampler else 0,
        fleet_rss_kib=fleet_sampler.peak_rss_kib if fleet_sampler else 0,
        mem_available_drop_kib=available_before - fleet_sampler.min_available_kib if fleet_sampler else 0,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
