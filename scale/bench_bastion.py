"""Bastion: connect + ``true`` + ``whoami`` + close on N hosts through one bastion, against direct, in one run.

    python -m scale.bench_bastion --hosts 1000 --repeat 5 [--readme]

Targets: a loopback fleet of N endpoints (key login). Bastion: a LoopbackFleet of one endpoint on
other addresses, logged in to with its own key. Tools, alternating run by run, each its own process:

* ``hussh`` direct, and ``hussh-bastion``: ``proxy_jump=AsyncConnection(bastion, key)`` (each worker
  keeps one bastion connection and opens every host through it as a direct-tcpip channel);
* ``ssh-J``: OpenSSH's client under ``xargs -P <batch>``, ``ssh -F cfg -J bastion host 'true && whoami'``
  per host (a bastion login and an ``ssh -W`` process per host), and ``ssh`` the same direct;
* ``pssh-bastion``: parallel-ssh's ``proxy_host=`` (and ``pssh`` direct).

Targets: through the bastion hussh costs at most 1.5x its own direct wall time, and beats both peers
through the bastion. The fleet CPU column counts both fleets (targets and bastion).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hussh.testing import KEY_USER, LoopbackFleet, loopback_addresses

from .measure import Measurement, ensure_venv
from .suite import (
    COMMON_COLUMNS,
    PEERS,
    PSSH,
    LoopbackBench,
    command_line,
    common_options,
    failures_text,
    render,
    summarize,
    write_readme,
)

TOOLS = "hussh,hussh-bastion,ssh,ssh-J,pssh,pssh-bastion"


def ssh_config(path: Path, bastion: str, bastion_port: int, bastion_key: Path, key: Path) -> Path:
    path.write_text(
        f"Host bastion\n  HostName {bastion}\n  Port {bastion_port}\n  User {KEY_USER}\n  IdentityFile {bastion_key}\n"
        f"Host *\n  User {KEY_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 60\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_bastion", description=__doc__.split("\n\n")[0])
    common_options(parser, hosts=1000, tools=TOOLS)
    parser.add_argument("--bastion-octet", type=int, default=96)
    parser.add_argument("--bastion-port", type=int, default=2296)
    parser.set_defaults(auth="key")
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    bastion_fleet = LoopbackFleet(loopback_addresses(1, second_octet=args.bastion_octet), port=args.bastion_port)
    with LoopbackBench("bastion", args) as bench, bastion_fleet:
        assert bench.fleet_cpu is not None
        bench.fleet_cpu.pids = bench.fleet_cpu.pids + bastion_fleet.pids()  # the bastion's CPU is the fleet's too
        bench.reaper.known.update(bastion_fleet.pids())
        bastion = bastion_fleet.endpoints[0]
        bastion_key = bench.workdir / "bastion_key"
        shutil.copy(bastion_fleet.client_key, bastion_key)
        bastion_key.chmod(0o600)
        key = Path(bench.creds["key"])
        key.chmod(0o600)
        config = ssh_config(bench.workdir / "ssh_config", bastion.host, bastion.port, bastion_key, key)
        jump = f"{KEY_USER}@{bastion.host}:{bastion.port}"
        python = sys.executable
        pssh = ensure_venv("pssh", PSSH, args.venv_root)
        specs = {
            "hussh": (python, "hussh_multi.py", []),
            "hussh-bastion": (python, "hussh_multi.py", ["--jump", jump, "--jump-key", str(bastion_key)]),
            "ssh": (python, "ssh_xargs.py", ["--config", str(config)]),
            "ssh-J": (python, "ssh_xargs.py", ["--config", str(config), "--jump", "bastion"]),
            "pssh": (pssh, "pssh_parallel.py", []),
            "pssh-bastion": (pssh, "pssh_parallel.py", ["--proxy", jump, "--proxy-key", str(bastion_key)]),
        }

        def one(name: str, size: int, record: bool = True) -> Measurement:
            interpreter, script, extra = specs[name]
            argv_ = [interpreter, str(PEERS / script), *extra, "--targets", str(bench.targets(size)),
                     "--user", KEY_USER, "--key", str(key), "--batch", str(args.batch_size)]
            return bench.measure(name, argv_, size, record=record)

        if not args.no_warmup:
            for name in tools:
                m = one(name, 3, record=False)
                print(f"[bastion] warm-up {name}: {m.completed}/{m.hosts}, {m.wall:.2f} s", file=sys.stderr, flush=True)
        runs: dict[str, list[Measurement]] = {name: [] for name in tools}
        for rep in range(args.repeat):
            for name in tools[rep % len(tools):] + tools[:rep % len(tools)]:
                m = one(name, args.hosts)
                runs[name].append(m)
                print(f"[bastion] {args.hosts} hosts rep {rep + 1}/{args.repeat} {name:<14} {m.completed}/{m.hosts} "
                      f"wall {m.wall:7.2f} s CPU {m.cpu:6.2f} s other load {m.other_frac:4.0%}",
                      file=sys.stderr, flush=True)
        summaries = [summarize(runs[t]) for t in tools]
        for s in summaries:
            s["sshd_ms_host"] = s["server_cpu_s"] * 1000 / s["hosts"] if s["server_cpu_s"] is not None else None
            s["cpu_ms_host"] = s["cpu_s"] * 1000 / s["hosts"]
        columns = COMMON_COLUMNS[:5] + [
            ("CPU ms/host", lambda s: s["cpu_ms_host"], ".2f"),
            ("fleet CPU ms/host", lambda s: s["sshd_ms_host"], ".2f"),
            ("procs", lambda s: s["procs"], ""),
        ] + COMMON_COLUMNS[6:8] + COMMON_COLUMNS[9:]
        table = render(summaries, columns)
        wall = {s["tool"]: s["wall_s"] for s in summaries}
        lines = [table]
        if "hussh" in wall and "hussh-bastion" in wall:
            r = wall["hussh-bastion"] / wall["hussh"]
            lines.append(f"hussh through the bastion / hussh direct = {r:.2f} "
                         f"(target <= 1.5: {'met' if r <= 1.5 else 'MISSED'})")
            for peer in ("ssh-J", "pssh-bastion"):
                if peer in wall:
                    lines.append(f"hussh-bastion / {peer} wall = {wall['hussh-bastion'] / wall[peer]:.2f} "
                                 f"(target < 1: {'met' if wall['hussh-bastion'] < wall[peer] else 'MISSED'})")
        lines.append(failures_text(summaries))
        text = "\n\n".join(x for x in lines if x)
        print(f"\n== {args.hosts} hosts through one bastion vs direct ==\n{text}")
        bench.save(summaries)
        if args.readme:
            write_readme("bastion", bench.header(command_line("scale.bench_bastion"),
                                                 f"bastion: one sshd at {bastion}, key login; fleet CPU includes it")
                         + f"\n\n```text\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
