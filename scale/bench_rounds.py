"""Persistent rounds: connect N hosts once, then ``--rounds`` x ``execute("true")`` on all of them.

    python -m scale.bench_rounds --hosts 1000 --rounds 20 --repeat 5 [--readme]

What a monitoring loop or a config-management run costs once connections are up: the median
wall (and client CPU) of one round, per tool, alternating tools run by run. Target: hussh's median
round at most upstream's.
"""

from __future__ import annotations

import argparse
import sys

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

FIELDS = ("round_median_s", "round_cpu_median_s", "connected")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_rounds", description=__doc__.split("\n\n")[0])
    common_options(parser, hosts=1000, tools="hussh,upstream,pssh")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    with LoopbackBench("rounds", args) as bench:
        runs = bench.alternate(tools, args.hosts, lambda t: ["--workload", "rounds", "--rounds", str(args.rounds)],
                               warmup=lambda t: ["--workload", "rounds", "--rounds", "2"])
        summaries = [summarize(runs[t], FIELDS) for t in tools]
        for s, _t in zip(summaries, tools):
            s["connect_s"] = s["phases"].get("connected")
        columns = COMMON_COLUMNS[:3] + [
            ("connect s", lambda s: s["connect_s"], ".2f"),
            ("round s (median)", lambda s: s["round_median_s"], ".3f"),
            ("round CPU s", lambda s: s["round_cpu_median_s"], ".3f"),
            ("round ms/host", lambda s: s["round_median_s"] and s["round_median_s"] * 1000 / s["hosts"], ".3f"),
        ] + COMMON_COLUMNS[3:]
        table = render(summaries, columns)
        r = ratio(summaries, "round_median_s", "hussh")
        verdict = (f"hussh/upstream median round wall = {r:.2f} (target <= 1.00: {'met' if r <= 1 else 'MISSED'})"
                   if r is not None else "")
        text = "\n\n".join(x for x in (table, verdict, failures_text(summaries)) if x)
        print(f"\n== {args.hosts} hosts, {args.rounds} rounds of `true` on live connections ==\n{text}")
        bench.save(summaries)
        if args.readme:
            write_readme("rounds", bench.header(command_line("scale.bench_rounds"),
                                                f"{args.rounds} rounds of `true` after one connect")
                         + f"\n\n```text\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
