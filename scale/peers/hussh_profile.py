"""Where hussh's client CPU goes: one worker's code path, in this process, under cProfile.

Not a benchmark peer: a diagnostic for ``scale/bench.py``'s hussh numbers. It drives the real
``hussh.workers.main.Worker`` (the code every forked worker runs: uvloop, ``AsyncConnection``, msgspec
``HostDone`` frames) on one event loop for every target, with the replies kept in memory instead
of written to a pipe, and makes the benchmark's calls: Connect, Execute ``true``, Execute
``whoami``, then close. The hosts' specs are made first (the caller's work, shown apart), then the
garbage collector is set as a worker sets it. The profiler's clock is ``time.process_time`` (CPU, not
wall, so other load on the machine does not inflate it; its own per-call cost does, mostly as system time).
Garbage collection is timed through ``gc.callbacks``.

    .venv/bin/python scale/peers/hussh_profile.py --targets t.txt --user hussh --password hussh \\
        --batch 50 --hosts 500 [--no-profile] [--experiments chacha] \\
        [--server-pids PID,PID] [--sort tottime] [--top 40] [--pstats out.pstats]

``--no-profile`` runs the same without cProfile, for honest CPU per host. ``--server-pids`` (the
fleet's sshd listeners) adds the server CPU they and their reaped children used, plus what init
reaped meanwhile (sshd processes orphaned by their parent end up there).
"""

from _common import parse_args  # first: marks the runner's start

# isort: split

import cProfile
import gc
import os
import pstats
import resource
import sys
import time


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--hosts", type=int, help="use only the first N targets")
    parser.add_argument("--no-profile", action="store_true", help="measure without cProfile")
    parser.add_argument("--experiments", default="", help="comma-separated names from _experiments.py")
    parser.add_argument("--server-pids", default="", help="sshd listener pids, comma-separated")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative...)")
    parser.add_argument("--top", type=int, default=45, help="functions listed")
    parser.add_argument("--pstats", help="also save the profile here")


run = parse_args(__doc__, _options)
opts = run.options
if opts.hosts:
    run.targets = run.targets[:opts.hosts]
experiments = [e for e in opts.experiments.split(",") if e]
server_pids = [int(x) for x in opts.server_pids.split(",") if x]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if experiments:
    import _experiments

import msgspec  # noqa: E402
import uvloop  # noqa: E402

from hussh._make_spec import make_spec  # noqa: E402
from hussh._options import ConnectOptions  # noqa: E402
from hussh.workers import protocol as p  # noqa: E402
from hussh.workers.main import Worker, raise_fd_limit, tune_gc  # noqa: E402

if experiments:
    _experiments.apply(experiments)


class Sink:
    """Stands in for the worker's result pipe: keeps the frames, decoded only after the measured run."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def failures(self) -> dict[int, int]:
        """Hosts with a wrong result, per call (1 connect, 2 true, 3 whoami)."""
        decoder = msgspec.msgpack.Decoder(p.Reply)
        bad: dict[int, int] = {}
        data = memoryview(b"".join(self.frames))  # a write may carry several frames
        while data:
            (size,) = p.HEADER.unpack_from(data)
            message = decoder.decode(data[p.HEADER.size:p.HEADER.size + size])
            data = data[p.HEADER.size + size:]
            if isinstance(message, p.HostDone):
                result = message.result
                if result.status != 0 or (message.req == 3 and result.stdout.strip() != run.user.encode()):
                    bad[message.req] = bad.get(message.req, 0) + 1
        return bad


gc_time = 0.0
gc_runs = [0, 0, 0]
_gc_started = 0.0


def _gc_callback(phase: str, info: dict) -> None:
    global gc_time, _gc_started
    if phase == "start":
        _gc_started = time.process_time()
    else:
        gc_time += time.process_time() - _gc_started
        gc_runs[info["generation"]] += 1


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return sum(int(f) for f in handle.read().rsplit(")", 1)[1].split()[11:15])
    except OSError:
        return 0


def server_cpu() -> float:
    """Listeners' own and reaped children's CPU, plus init's reaped children (orphaned sshds)."""
    return sum(_ticks(pid) for pid in [*server_pids, 1]) / os.sysconf("SC_CLK_TCK")


def server_settle(limit: float = 15.0) -> None:
    def busy(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                return bool(handle.read().strip())
        except OSError:
            return False

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(busy(pid) for pid in server_pids):
        time.sleep(0.05)
    time.sleep(0.3)  # orphans still exiting


async def main() -> tuple[dict[str, float], Sink]:
    sink = Sink()
    encoder = msgspec.msgpack.Encoder()
    worker = Worker(lambda message: sink.write(b"".join(p.encode_frame(encoder, message))), raise_fd_limit())
    auth = {"password": run.password} if run.password is not None else {"private_key": run.key}
    phases: dict[str, float] = {}
    started = time.process_time()
    hosts = [(i, make_spec(t.host, ConnectOptions(port=t.port, username=run.user, **auth)))
             for i, t in enumerate(run.targets)]
    phases["specs (caller)"] = time.process_time() - started
    tune_gc()  # as a worker starts
    worker.assign(p.Assign(hosts, run.batch))
    indices = [i for i, _ in hosts]
    calls = [("connect", p.Connect(1, indices)), ("true", p.Execute(2, [(i, "true") for i in indices])),
             ("whoami", p.Execute(3, [(i, "whoami") for i in indices]))]
    for name, call in calls:
        started = time.process_time()
        worker.grant(p.Grant(call.req, run.batch))  # the lanes a call comes with (the caller's part)
        await worker.handle(call)
        phases[name] = time.process_time() - started
    started = time.process_time()
    await worker.close_all()
    phases["close"] = time.process_time() - started
    return phases, sink


gc.callbacks.append(_gc_callback)
profiler = None if opts.no_profile else cProfile.Profile(time.process_time)
server_before = server_cpu()
before = resource.getrusage(resource.RUSAGE_SELF)
wall = time.perf_counter()
if profiler:
    profiler.enable()
phases, sink = uvloop.run(main())
if profiler:
    profiler.disable()
wall = time.perf_counter() - wall
after = resource.getrusage(resource.RUSAGE_SELF)
if server_pids:
    server_settle()
server = server_cpu() - server_before
user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
n = len(run.targets)
print(f"hosts {n}, batch {run.batch}, profiler {'on (CPU clock)' if profiler else 'off'}, "
      f"gc threshold {gc.get_threshold()}, experiments: {', '.join(experiments) or 'none'}")
print(f"wall {wall:.2f} s; CPU {user + system:.3f} s = {(user + system) * 1000 / n:.2f} ms/host "
      f"(user {user * 1000 / n:.2f}, sys {system * 1000 / n:.2f})")
if server_pids:
    print(f"sshd CPU {server * 1000 / n:.2f} ms/host")
print("CPU by call, ms/host: " + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in phases.items())
      + f"; the worker's four calls {sum(v for k, v in phases.items() if 'caller' not in k) * 1000 / n:.2f}")
print(f"gc: {gc_time:.3f} s = {gc_time * 1000 / n:.2f} ms/host ({gc_time / max(user + system, 1e-9):.0%} of CPU), "
      f"collections per generation {gc_runs}; {len(sink.frames)} result frames, "
      f"wrong results per call (1 connect, 2 true, 3 whoami): {sink.failures() or 'none'}")
if profiler:
    stats = pstats.Stats(profiler)
    if opts.pstats:
        stats.dump_stats(opts.pstats)
    stats.sort_stats(opts.sort).print_stats(opts.top)
