"""OpenSSH's real limits for a bastion: direct-tcpip channels one login carries, and hussh's behaviour near them.

    python -m scale.bastion_limits [--limits 1024,20000] [--max-channels 20000] \\
        [--hussh-hosts 1200 --hussh-limits 512,1024]

1. Channels per login: one asyncssh connection to a bastion sshd (a LoopbackFleet of one endpoint,
   key login) opens direct-tcpip channels, 100 at a time, to a local sink that accepts and holds TCP
   connections, until one fails or ``--max-channels`` are open; with the bastion's open-file limit
   (``prlimit`` on its listener, inherited by each session's processes) at each of ``--limits``.
   Reported: channels open at the first failure, the failure (code and reason as sshd sent it), and
   whether the login survived it.
2. hussh near the limit: ``--hussh-hosts`` targets through that bastion with ``workers=1`` (so one
   worker's link must carry them all), the bastion's limit at each of ``--hussh-limits``: hosts
   completed, and how many bastion logins hussh opened (the bastion's session processes / 2).
   hussh caps a link at ``hussh._bastions.CHANNELS_PER_LINK`` channels and opens another login when
   a channel is refused for lack of resources.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hussh.testing import KEY_USER, LoopbackFleet, loopback_addresses

from .measure import FleetSampler, OrphanReaper, run_measured, runner_env
from .suite import PEERS, write_readme

SINK = ("127.98.0.1", 2298)


async def sink(host: str, port: int) -> None:
    """Accept TCP connections and hold them open, reading and discarding (the channels' far end)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(hold, host, port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def open_channels(bastion: tuple[str, int], key: Path, limit: int) -> dict[str, object]:
    """Open direct-tcpip channels through one login until one fails or ``limit`` are open."""
    import asyncssh

    conn = await asyncssh.connect(bastion[0], bastion[1], username=KEY_USER, client_keys=[str(key)], known_hosts=None)
    opened: list[object] = []
    failure = ""
    started = time.monotonic()
    try:
        while len(opened) < limit and not failure:
            batch = await asyncio.gather(*(conn.open_connection(*SINK) for _ in range(min(100, limit - len(opened)))),
                                         return_exceptions=True)
            for result in batch:
                if isinstance(result, BaseException):
                    code = getattr(result, "code", "")
                    failure = failure or f"{type(result).__name__} code {code}: {getattr(result, 'reason', result)}"
                else:
                    opened.append(result)
        await asyncio.sleep(0.5)
        alive = not conn.is_closed()
        if alive:  # does the login still open a session after the failure?
            try:
                result = await asyncio.wait_for(conn.run("true"), 10)
                session = f"exit {result.exit_status}"
            except Exception as exc:  # noqa: BLE001 - what happened is the finding
                session = f"{type(exc).__name__}: {exc}"
        else:
            session = "login closed"
    finally:
        conn.abort()
    return {"channels": len(opened), "failure": failure or f"none up to {limit}", "login_alive": alive,
            "session_after": session, "seconds": round(time.monotonic() - started, 1)}


def set_nofile(fleet: LoopbackFleet, limit: int, reaper: OrphanReaper) -> None:
    """A fresh listener (limits only go down without CAP_SYS_RESOURCE), then its open-file limit set to ``limit``."""
    fleet.refuse(fleet.endpoints)
    fleet.heal(fleet.endpoints)
    reaper.known.update(fleet.pids())
    for pid in fleet.pids():
        if Path(f"/proc/{pid}/comm").read_text().strip() != "sshd":
            continue  # the namespace holder
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bastion_limits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", default=f"1024,{resource.getrlimit(resource.RLIMIT_NOFILE)[1]}",
                        help="bastion open-file limits to try (default 1024 and this process's hard limit)")
    parser.add_argument("--max-channels", type=int, default=20000)
    parser.add_argument("--hussh-hosts", type=int, default=1200)
    parser.add_argument("--hussh-limits", default="512,1024")
    parser.add_argument("--experiments", default="", help="hussh+EXP runs too: comma-separated names from "
                        "peers/_experiments.py applied in a second hussh run per limit (e.g. chacha)")
    parser.add_argument("--readme", action="store_true")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        asyncio.run(sink(*SINK))
        return 0
    lines = []
    reaper = OrphanReaper()
    reaper.start()
    workdir = Path(tempfile.mkdtemp(prefix="hussh-bastion-limits-"))
    (workdir / "home").mkdir()
    bastion = LoopbackFleet(loopback_addresses(1, second_octet=97), port=2297)
    sink_proc = subprocess.Popen([sys.executable, "-m", "scale.bastion_limits", "--sink"], stdout=subprocess.PIPE,
                                 cwd=Path(__file__).resolve().parent.parent)
    try:
        assert sink_proc.stdout is not None
        sink_proc.stdout.readline()
        with bastion:
            reaper.known.update(bastion.pids())
            key = workdir / "bastion_key"
            shutil.copy(bastion.client_key, key)
            endpoint = bastion.endpoints[0]
            for limit in (int(x) for x in args.limits.split(",")):
                set_nofile(bastion, limit, reaper)
                result = asyncio.run(open_channels((endpoint.host, endpoint.port), key, args.max_channels))
                lines.append(f"bastion sshd open-file limit {limit}: {result['channels']} direct-tcpip channels "
                             f"open at the first failure ({result['failure']}); login alive after: "
                             f"{result['login_alive']}, a new session on it: {result['session_after']} "
                             f"({result['seconds']} s)")
                print(lines[-1], flush=True)
            if args.hussh_hosts:
                targets = LoopbackFleet(loopback_addresses(args.hussh_hosts, second_octet=99), port=2299)
                with targets:
                    reaper.known.update(targets.pids())
                    listing = workdir / "targets.txt"
                    listing.write_text("".join(f"{h}\n" for h in targets.hosts))
                    target_key = workdir / "target_key"
                    shutil.copy(targets.client_key, target_key)
                    variants = [""] + ([args.experiments] if args.experiments else [])
                    for limit, variant in ((int(x), v) for x in args.hussh_limits.split(",") for v in variants):
                        set_nofile(bastion, limit, reaper)
                        sampler = FleetSampler(bastion.pids(), None, interval=0.5)
                        sampler.start()
                        m = run_measured("hussh-bastion",
                                         [sys.executable, str(PEERS / "hussh_multi.py"), "--workers", "1",
                                          "--jump", f"{KEY_USER}@{endpoint.host}:{endpoint.port}",
                                          "--jump-key", str(key),
                                          *(["--experiments", variant] if variant else []),
                                          "--targets", str(listing), "--user", KEY_USER, "--key", str(target_key),
                                          "--batch", "100"],
                                         args.hussh_hosts, runner_env(workdir / "home"), reaper=reaper)
                        sampler.stop()
                        failures = (m.report or {}).get("failures") or []
                        name = "hussh" + "".join(f"+{e}" for e in variant.split(",") if e)
                        lines.append(f"{name}, {args.hussh_hosts} hosts through the bastion with workers=1, bastion "
                                     f"open-file limit {limit}: {m.completed}/{args.hussh_hosts} completed in "
                                     f"{m.wall:.1f} s; peak bastion session processes {sampler.peak_procs} "
                                     f"(~{sampler.peak_procs / 2:.0f} logins)"
                                     + (f"; failures: {failures[0]['count']} x {failures[0]['example'][:200]}"
                                        if failures else ""))
                        print(lines[-1], flush=True)
    finally:
        sink_proc.kill()
        sink_proc.wait()
        reaper.stop()
        reaper.reap()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.readme:
        write_readme("bastion-limits", f"Generated by `python -m scale.bastion_limits {' '.join(sys.argv[1:])}` on "
                     f"{time.strftime('%Y-%m-%d')} (OpenSSH 9.2p1 bastion).\n\n```text\n" + "\n".join(lines) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
