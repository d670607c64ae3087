"""File fan-out: ``sftp_write`` of one local file to N hosts, and ``sftp_read`` of a remote file from N hosts.

    python -m scale.bench_files --hosts 1000 --write-mb 10 --read-mb 1 --repeat 5 [--readme]

The write goes to ``--remote-write`` (default: one path in a per-run directory on /dev/shm, a
tmpfs: the loopback fleet shares this machine's disk, so 1000 x 10 MB would be 10 GB of writes
measuring the disk, not the tools; not /dev/null, where upstream fails every host because it
fsyncs the file after writing: "Failed to flush remote file: Bad message"). The read file
is the same path on every host (one shared file here; its pages stay cached). Reported per tool:
the call's own wall and CPU, the peak PSS of the whole client and its growth over the connected
state (flat = the payload is held once, not once per host), and, from one extra untimed run under
``strace -e openat``, how many times the tool opened the local file. Target: wall <= 0.9x upstream.
parallel-ssh writes with ``copy_file`` (SFTP); it has no in-memory read, so it sits the read out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .suite import (
    COMMON_COLUMNS,
    LoopbackBench,
    command_line,
    common_options,
    failures_text,
    ratio,
    render,
    summarize,
    write_readme,
)

FIELDS = ("transfer_s", "transfer_cpu_s", "pss_connected_kib", "pss_end_kib")


def opens_of(bench: LoopbackBench, tool: str, size: int, extra: list[str], path: Path) -> int | None:
    """How many times ``tool`` opened ``path`` in one (untimed) run, counted by strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    log = bench.workdir / f"strace-{tool}.log"
    bench.run(tool, size, extra, record=False,
              wrap=[strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=open,openat", "-e", "signal=none",
                    "-o", str(log)])
    count = sum(1 for line in log.read_text(errors="replace").splitlines() if str(path) in line and "= -1" not in line)
    log.unlink()
    return count


def columns(kind: str) -> list:
    return COMMON_COLUMNS[:3] + [
        (f"{kind} s", lambda s: s["transfer_s"], ".2f"),
        (f"{kind} CPU s", lambda s: s["transfer_cpu_s"], ".2f"),
        ("PSS growth MiB", lambda s: s["pss_growth_mib"], ".1f"),
        ("local opens", lambda s: s.get("opens"), ""),
    ] + COMMON_COLUMNS[3:]


def tabulate(bench: LoopbackBench, tools: list[str], runs: dict, kind: str,
             opens: dict[str, int | None]) -> tuple[str, list]:
    summaries = [summarize(runs[t], FIELDS) for t in tools]
    for s in summaries:
        s["pss_growth_mib"] = s["pss_sum_mib"] - (s["pss_connected_kib"] or 0) / 1024
        s["opens"] = opens.get(s["tool"])
    table = render(summaries, columns(kind))
    r = ratio(summaries, "transfer_s", "hussh")
    verdict = f"hussh/upstream {kind} wall = {r:.2f} (target <= 0.90: {'met' if r <= 0.9 else 'MISSED'})" if r else ""
    return "\n\n".join(x for x in (table, verdict, failures_text(summaries)) if x), summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_files", description=__doc__.split("\n\n")[0])
    common_options(parser, hosts=1000, tools="hussh,upstream,pssh")
    parser.add_argument("--write-mb", type=float, default=10.0)
    parser.add_argument("--read-mb", type=float, default=1.0)
    parser.add_argument("--remote-write", help="remote path written (default: /dev/shm/<per-run dir>/payload.bin)")
    parser.add_argument("--only", choices=("write", "read"), help="run one of the two")
    parser.add_argument("--section", default="files", help="README section name (default files)")
    parser.add_argument("--no-strace", action="store_true", help="skip the untimed strace run counting opens")
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    sections = []
    shm = Path(tempfile.mkdtemp(prefix="hussh-files-", dir="/dev/shm"))
    shm.chmod(0o1777)  # the fleet's login users write here
    args.remote_write = args.remote_write or str(shm / "payload.bin")
    with LoopbackBench("files", args) as bench, contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, shm, True)
        local = bench.workdir / "payload.bin"
        with open(local, "wb") as handle:
            handle.write(os.urandom(int(args.write_mb * 2**20)))
        remote = bench.workdir / "remote.txt"
        size = int(args.read_mb * 2**20)
        line = b"".join(bytes([33 + i % 90]) for i in range(79)) + b"\n"
        remote.write_bytes((line * (size // len(line) + 1))[:size])
        remote.chmod(0o644)
        all_summaries = {}
        if args.only != "read":
            extra = ["--workload", "sftp-write", "--local", str(local), "--remote", args.remote_write]
            runs = bench.alternate(tools, args.hosts, lambda t: extra, warmup=lambda t: extra, label="write ")
            opens = {} if args.no_strace else {t: opens_of(bench, t, min(args.hosts, 100), extra, local) for t in tools}
            text, all_summaries["write"] = tabulate(bench, tools, runs, "write", opens)
            title = f"sftp_write of a {args.write_mb:g} MB file to {args.hosts} hosts ({args.remote_write})"
            print(f"\n== {title} ==\n{text}")
            sections.append(f"**{title}**\n\n```text\n{text}\n```")
        if args.only != "write":
            read_tools = [t for t in tools if t != "pssh"]
            extra = ["--workload", "sftp-read", "--remote", str(remote), "--size", str(size)]
            runs = bench.alternate(read_tools, args.hosts, lambda t: extra, warmup=lambda t: extra, label="read ")
            text, all_summaries["read"] = tabulate(bench, read_tools, runs, "read", {})
            title = f"sftp_read of a {args.read_mb:g} MB file from {args.hosts} hosts, into memory"
            print(f"\n== {title} ==\n{text}")
            sections.append(f"**{title}**\n\n```text\n{text}\n```")
        bench.save(all_summaries)
        if args.readme:
            write_readme(args.section, bench.header(command_line("scale.bench_files"),
                                               "local opens counted in one more run under strace (at most 100 hosts)")
                         + "\n\n" + "\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
