"""Tails: N hosts each appending ``--rate`` lines a second to their own log, followed with ``tail_map`` + ``read()``.

    python -m scale.bench_tail --hosts 1000 --rate 100 --duration 60 --repeat 5 [--readme]

An appender process on this machine (``scale.appender``) writes ``--rate`` numbered 80-byte lines
a second to ``<dir>/<host>.log`` for every host (a tmpfs dir under /dev/shm: the fleet shares this
machine's filesystem, and the disk is not what is measured). Each tool opens ``tail_map`` on those
files and calls ``read()`` every ``--interval`` second for ``--duration`` seconds. Per read: the
bytes the servers sent (``ss`` on the fleet's sockets: SSH framing and all), the text returned,
the client CPU (the tool's process and live workers, from /proc) and the read's wall. hussh keeps
each host's offset and fetches only new bytes; target: at least 10x fewer bytes and less CPU per
read than upstream. parallel-ssh has no tailer.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
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

FIELDS = ("reads", "wire_sent_per_read", "chars_per_read", "cpu_per_read_s", "read_wall_median_s", "read_cpu_median_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_tail", description=__doc__.split("\n\n")[0])
    common_options(parser, hosts=1000, tools="hussh,upstream")
    parser.add_argument("--rate", type=float, default=100.0, help="lines per second per host")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of reads")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between reads")
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    logs = Path(tempfile.mkdtemp(prefix="hussh-tail-", dir="/dev/shm"))
    logs.chmod(0o755)
    appender: list[subprocess.Popen[bytes]] = []

    with LoopbackBench("tail", args) as bench, contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, logs, True)
        hosts = bench.hosts[:args.hosts]

        def start(tool: str) -> None:
            for old in logs.glob("*.log"):
                old.unlink()
            appender.append(subprocess.Popen([sys.executable, "-m", "scale.appender", str(logs), *hosts,
                                              "--rate", str(args.rate)], cwd=Path(__file__).resolve().parent.parent))

        def stop(tool: str) -> None:
            while appender:
                proc = appender.pop()
                proc.terminate()
                proc.wait()

        stack.callback(stop, "")
        extra = ["--workload", "tail", "--tail-dir", str(logs), "--duration", str(args.duration),
                 "--interval", str(args.interval)]
        warm = ["--workload", "tail", "--tail-dir", str(logs), "--duration", "2", "--interval", str(args.interval)]
        runs = bench.alternate(tools, args.hosts, lambda t: extra, before=start, after=stop, warmup=lambda t: warm)
        summaries = [summarize(runs[t], FIELDS) for t in tools]
        columns = COMMON_COLUMNS[:3] + [
            ("reads", lambda s: s["reads"], ".0f"),
            ("wire KB/read", lambda s: s["wire_sent_per_read"] and s["wire_sent_per_read"] / 1000, ".0f"),
            ("text KB/read", lambda s: s["chars_per_read"] and s["chars_per_read"] / 1000, ".0f"),
            ("CPU ms/read", lambda s: s["cpu_per_read_s"] and s["cpu_per_read_s"] * 1000, ".0f"),
            ("read wall s", lambda s: s["read_wall_median_s"], ".3f"),
            ("wire/text", lambda s: s["chars_per_read"] and s["wire_sent_per_read"] / s["chars_per_read"], ".2f"),
            ("CPU ms/MB text",
             lambda s: s["chars_per_read"] and s["cpu_per_read_s"] * 1e9 / s["chars_per_read"], ".0f"),
        ] + COMMON_COLUMNS[3:]
        table = render(summaries, columns)
        lines = [table]
        wire = ratio(summaries, "wire_sent_per_read", "upstream", "hussh")
        cpu = ratio(summaries, "cpu_per_read_s", "upstream", "hussh")
        if wire and cpu:
            lines.append(f"upstream/hussh per read: {wire:.1f}x the bytes on the wire, {cpu:.1f}x the client CPU "
                         f"(target >= 10x: bytes {'met' if wire >= 10 else 'MISSED'}, "
                         f"CPU {'met' if cpu >= 10 else 'MISSED'})")
        lines.append("A read that takes longer than the interval makes the next one start at once and carry more new "
                     "text, so per-read figures are compared with the text each read returned beside them: wire/text "
                     "is the bytes on the wire per byte of new text, CPU ms/MB text the client CPU per MB of it.")
        lines.append(failures_text(summaries))
        text = "\n\n".join(x for x in lines if x)
        title = (f"{args.hosts} hosts appending {args.rate:g} lines/s each, read() every {args.interval:g} s "
                 f"for {args.duration:g} s")
        print(f"\n== {title} ==\n{text}")
        bench.save(summaries)
        if args.readme:
            write_readme("tail", bench.header(command_line("scale.bench_tail"), title)
                         + f"\n\n```text\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
