"""hussh's (``--impl hussh``) or upstream hussh's (``--impl upstream``) ``MultiConnection`` through one workload.

The two share upstream's API, so one runner drives both, each in its own interpreter (the
project's venv with the working tree first on ``sys.path``, or the upstream venv). Workloads:

* ``rounds``: connect, then ``--rounds`` x ``execute("true")`` on every host (persistent connections);
* ``sftp-write``: connect, ``sftp_write(--local, --remote)`` (the remote may be /dev/null);
* ``sftp-read``: connect, ``sftp_read(--remote)`` into memory; ``--size`` is the expected length;
* ``tail``: connect, ``tail_map({host: --tail-dir/<host>.log})``, ``read()`` every ``--interval``
  seconds for ``--duration`` seconds while the bench's appender writes to those files;
* ``outputs``: connect, ``execute(--command)`` printing ``--size`` bytes per host.

Each phase is marked; the report carries the phase's own CPU (this process and its live workers,
from /proc), per-round and per-read figures, and the bytes the servers sent (``ss``) where it matters.
"""

from _common import (  # first: marks the runner's start
    Tally,
    parse_args,
    timed_rounds,
    tree_cpu,
    tree_pss_kib,
    wire_bytes,
)

# isort: split

import inspect
import json
import os
import statistics
import sys
import time


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--impl", choices=("hussh", "upstream"), required=True)
    parser.add_argument("--workload", choices=("rounds", "sftp-write", "sftp-read", "tail", "outputs"), required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local", help="sftp-write: the local file")
    parser.add_argument("--remote", help="sftp-write / sftp-read: the remote path")
    parser.add_argument("--size", type=int, default=0, help="sftp-read / outputs: expected bytes per host")
    parser.add_argument("--tail-dir", help="tail: directory of <host>.log files")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--command", help="outputs: the command every host runs")
    parser.add_argument("--mc-kwargs", default="{}",
                        help="JSON keyword arguments for from_shared_auth (e.g. max_output, max_call_output, "
                             "workers); ones this hussh does not take are reported, not passed")
    parser.add_argument("--experiments", default="", help="hussh only: names from _experiments.py")


run = parse_args(__doc__, _options)
opts = run.options
experiments = [e for e in opts.experiments.split(",") if e]
if opts.impl == "hussh":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if experiments:
        import _experiments
    import hussh
    VERSION = hussh.__version__
else:
    from importlib.metadata import version

    VERSION = version("hussh")  # read now: once every descriptor is in use, reading package metadata fails
from hussh.multi_conn import MultiConnection  # noqa: E402

if experiments:
    _experiments.apply(experiments)
run.mark("imported")

port = run.common_port
if port is None:
    sys.exit("this runner needs every target on one port (a loopback fleet)")
wanted = json.loads(opts.mc_kwargs)
accepted = inspect.signature(MultiConnection.from_shared_auth).parameters if opts.impl == "hussh" else {}
kwargs = {k: v for k, v in wanted.items() if k in accepted}
ignored = sorted(set(wanted) - set(kwargs))
auth = {"password": run.password} if run.password is not None else {"key_path": run.key}
mc = MultiConnection.from_shared_auth(run.hosts, username=run.user, port=port, batch_size=run.batch, **auth, **kwargs)
tally = Tally(run)
extra: dict[str, object] = {"impl": opts.impl, "workload": opts.workload, "mc_kwargs": kwargs,
                            "mc_kwargs_ignored": ignored, "experiments": experiments}


def failed(results, host: str) -> str | None:  # type: ignore[no-untyped-def]
    """Why ``host``'s result is a failure, or None."""
    result = results.get(host, None)
    if result is None:
        return "no result for this host"
    if result.status != 0:
        return (result.stderr or f"status {result.status}").strip()[:300] or f"status {result.status}"
    return None


def phase(name: str, call):  # type: ignore[no-untyped-def]
    """Run ``call()`` as the phase ``name``: its wall and CPU go into the report."""
    cpu, wall = tree_cpu(), time.perf_counter()
    value = call()
    extra[f"{name}_s"] = time.perf_counter() - wall
    extra[f"{name}_cpu_s"] = tree_cpu() - cpu
    run.mark(name)
    return value


def rounds() -> None:
    extra.update(timed_rounds(run, tally, opts.rounds, lambda: mc.execute("true"), failed))


def sftp_write() -> None:
    results = phase("transfer", lambda: mc.sftp_write(opts.local, opts.remote))
    for host in run.hosts:
        error = failed(results, host)
        tally.check(host, error is None, error)


def sftp_read() -> None:
    results = phase("transfer", lambda: mc.sftp_read(opts.remote))
    for host in run.hosts:
        error = failed(results, host)
        if error is None and len(results[host].stdout) != opts.size:
            error = f"read {len(results[host].stdout)} characters, expected {opts.size}"
        tally.check(host, error is None, error)


def tail() -> None:
    files = {host: os.path.join(opts.tail_dir, f"{host}.log") for host in run.hosts}
    tailer = mc.tail_map(files)
    got = dict.fromkeys(run.hosts, 0)
    reads: list[dict[str, float]] = []
    with tailer:
        run.mark("tail-open")
        sent0, received0 = wire_bytes(port)
        cpu0 = tree_cpu()
        start = time.monotonic()
        tick = start
        while tick - start < opts.duration - 1e-9:
            tick += opts.interval
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cpu, wall = tree_cpu(), time.perf_counter()
            new = tailer.read()
            size = 0
            for host, text in new.items():
                got[host] += len(text)
                size += len(text)
            reads.append({"wall_s": time.perf_counter() - wall, "cpu_s": tree_cpu() - cpu, "chars": size})
        cpu1 = tree_cpu()
        sent1, received1 = wire_bytes(port)
        run.mark("tailing")
    run.mark("tail-closed")
    n = len(reads)
    extra.update(reads=n, read_wall_median_s=statistics.median(r["wall_s"] for r in reads) if n else None,
                 read_cpu_median_s=statistics.median(r["cpu_s"] for r in reads) if n else None,
                 cpu_per_read_s=(cpu1 - cpu0) / n if n else None,
                 wire_sent_per_read=(sent1 - sent0) / n if n else None,
                 wire_received_per_read=(received1 - received0) / n if n else None,
                 chars_per_read=sum(r["chars"] for r in reads) / n if n else None,
                 tail_seconds=time.monotonic() - start, per_read=reads)
    for host in run.hosts:
        tally.check(host, got[host] > 0, None if got[host] else "no text read while the file grew")


def outputs() -> None:
    results = phase("execute", lambda: mc.execute(opts.command))
    for host in run.hosts:
        error = failed(results, host)
        if error is None and len(results[host].stdout) < opts.size:
            error = f"printed {len(results[host].stdout)} characters, expected at least {opts.size}"
        tally.check(host, error is None, error)
    extra["stdout_chars"] = sum(len(r.stdout) for r in results.values())


WORKLOADS = {"rounds": rounds, "sftp-write": sftp_write, "sftp-read": sftp_read, "tail": tail, "outputs": outputs}

try:
    with mc:
        run.mark("connected")
        extra["pss_connected_kib"] = tree_pss_kib()
        if opts.impl == "hussh":
            extra["workers"] = mc._pool.count if getattr(mc, "_pool", None) else None
        WORKLOADS[opts.workload]()
        extra["pss_end_kib"] = tree_pss_kib()
except Exception as exc:  # noqa: BLE001 - a failure of the whole call fails every host, reported as such
    tally = Tally(run)
    for host in run.hosts:
        tally.check(host, False, f"the whole call raised {type(exc).__name__}: {exc}")
run.mark("closed")
tally.report(opts.impl + "".join(f"+{e}" for e in experiments), VERSION, **extra)
