"""Names at scale: lookups per second by design, and how long a silent resolver holds the command line.

Everything runs in a private network namespace whose only resolver is ours (``scale.dns_namespace``:
loopback only, /etc/resolv.conf and nsswitch.conf replaced there), so no query leaves the machine.

* ``names/s``: 10,000 distinct names, all asked at once in a fresh process per design, answered
  at once and after a delay per query (a resolver across a network): the event loop's own lookup
  as the connector did it before (uvloop: libuv's 4 threads), asyncio's default executor,
  ``hussh._resolve`` at several bounds, and c-ares through aiodns when ``--cares DIR`` holds them
  (they are not dependencies: ``pip download --no-deps aiodns pycares`` and unzip the wheels).
* ``hussh run -q`` over names that do not exist (NXDOMAIN after the delay): hosts/s;
  and with a resolver that never answers: when the summary is printed and when the process ends.
  ``--before REPO`` runs the command line from another checkout too (e.g. main before this change).

    python -m scale.bench_dns [--names 10000] [--delays 0,0.05] [--cares DIR] [--before /work/main]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import dns_namespace

REPO = Path(__file__).resolve().parent.parent
DESIGNS = ["uvloop", "asyncio-executor", "hussh-16", "hussh-64", "hussh-256", "cares-64", "cares-1000"]


def names(count: int) -> list[str]:
    """``count`` distinct names the responder answers (A: 127.1.x.y; AAAA: none)."""
    return [f"ip-127-1-{i // 250}-{i % 250 + 1}.bench.test" for i in range(count)]


async def _lookups(design: str, wanted: list[str]) -> int:
    """Resolve every name with ``design``, all asked at once; return how many resolved."""
    loop = asyncio.get_running_loop()
    if design in ("uvloop", "asyncio-executor"):
        async def one(name: str) -> bool:
            return bool(await loop.getaddrinfo(name, None, type=1))
    elif design.startswith("hussh-"):
        os.environ["HUSSH_DNS_CONCURRENCY"] = design.split("-")[1]
        from hussh import _resolve

        async def one(name: str) -> bool:
            return bool(await _resolve.resolve(name))
    else:
        import aiodns

        resolver, bound = aiodns.DNSResolver(loop=loop), asyncio.Semaphore(int(design.split("-")[1]))

        async def one(name: str) -> bool:
            async with bound:
                return bool((await resolver.getaddrinfo(name, type=1)).nodes)
    results = await asyncio.gather(*(one(n) for n in wanted), return_exceptions=True)
    return sum(1 for r in results if r is True)


def measure_lookups(design: str, count: int) -> dict[str, float]:
    """In this process: wall and CPU seconds for ``count`` lookups by ``design``."""
    import uvloop

    wanted = names(count)
    start, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    coro = _lookups(design, wanted)
    resolved = asyncio.run(coro) if design == "asyncio-executor" else uvloop.run(coro)
    wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return {"resolved": resolved, "seconds": wall, "names_per_s": count / wall, "cpu_s": used}


def run_cli(repo: Path, count: int, connect_timeout: float) -> dict[str, float]:
    """``hussh run -q`` over ``count`` names that do not resolve: when the summary came, when the process ended."""
    env = dict(os.environ, PYTHONPATH=str(repo), HOME=tempfile.mkdtemp(prefix="hussh-bench-dns-"))
    argv = [sys.executable, "-m", "hussh", "run", "-q", "--connect-timeout", str(connect_timeout),
            "-w", f"nosuch[1-{count}].bench.test", "true"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL,
                            cwd=env["HOME"])
    assert proc.stderr is not None and proc.stdout is not None
    lines, summary_at = [], 0.0
    for line in proc.stderr:
        lines.append(line.decode(errors="replace"))
        summary_at = summary_at or (time.monotonic() - start if " in " in lines[-1] else 0.0)
    proc.stdout.read()
    proc.wait()
    ended = time.monotonic() - start
    shutil.rmtree(env["HOME"], ignore_errors=True)
    text = "".join(lines)
    return {"summary_s": summary_at, "exit_s": ended, "hosts_per_s": count / (summary_at or ended),
            "unretrieved": text.count("Future exception was never retrieved"),
            "summary": next((line.strip() for line in lines if " in " in line), text[-200:].strip())}


def inner(args: argparse.Namespace) -> None:
    """Inside the namespace: every measurement, one JSON line each."""
    child = [sys.executable, "-m", "scale.bench_dns", "lookups", "--names", str(args.names)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), args.cares])))
    designs = [d for d in DESIGNS if args.cares or not d.startswith("cares")]
    repos = [("after", REPO)] + ([("before", Path(args.before))] if args.before else [])
    for delay in args.delays:
        server = dns_namespace.start_server(delay=delay)
        try:
            for design in designs:
                done = subprocess.run([*child, "--design", design], capture_output=True, text=True, env=env,
                                      timeout=900)
                figures = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}
                print(json.dumps({"what": "lookups", "delay": delay, "design": design, **figures}), flush=True)
            for label, repo in repos:
                figures = run_cli(repo, args.cli_names, 15)
                print(json.dumps({"what": "cli-nxdomain", "delay": delay, "code": label, **figures}), flush=True)
        finally:
            server.kill()
            server.wait()
    server = dns_namespace.start_server(silent=True)
    try:
        for label, repo in repos:
            figures = run_cli(repo, args.silent_names, 2)
            print(json.dumps({"what": "cli-silent", "code": label, **figures}), flush=True)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["all", "inner", "lookups"])
    parser.add_argument("--names", type=int, default=10_000, help="names per lookup measurement")
    parser.add_argument("--delays", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.05],
                        help="seconds the resolver waits before each answer, comma-separated")
    parser.add_argument("--cli-names", type=int, default=2000, help="hosts for `hussh run` over NXDOMAIN names")
    parser.add_argument("--silent-names", type=int, default=500, help="hosts for `hussh run` with a silent resolver")
    parser.add_argument("--cares", default="", help="a directory holding aiodns and pycares (unzipped wheels)")
    parser.add_argument("--before", default="", help="another checkout whose `hussh run` to measure too")
    parser.add_argument("--design", choices=DESIGNS, help="(lookups) the design to measure in this process")
    args = parser.parse_args()
    if args.what == "lookups":
        print(json.dumps(measure_lookups(args.design, args.names)))
    elif args.what == "inner":
        inner(args)
    else:
        with tempfile.TemporaryDirectory(prefix="hussh-bench-dns-") as directory:
            argv = [sys.executable, "-m", "scale.bench_dns", "inner", *(a for a in sys.argv[1:] if a != "all")]
            subprocess.run(dns_namespace.command(argv, Path(directory)), check=True, cwd=REPO)


if __name__ == "__main__":
    main()
