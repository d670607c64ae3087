"""Large outputs: N hosts each printing ``--mb`` MB of distinct text; wall and peak memory of the whole client.

    python -m scale.bench_outputs --hosts 1000 --mb 1 --repeat 5 [--readme]
    python -m scale.bench_outputs --hosts 1000 --mb 50 --tools hussh --repeat 1 --max-call-output 2000000000

Every host runs ``head -c B /dev/urandom | base64 -w 76`` (B = 3/4 of the size): random, so no two
hosts print the same text and no tool can share one copy. The client's peak memory is the peak
over time of the summed PSS of its whole process tree. Each run sits in a memory cgroup
(``--memory-limit-gib``, default 12): 1000 x 50 MB is 50 GB of output, more than this machine
has, and a tool that keeps it all is killed there, alone, and shown as OOM-killed.
``--max-call-output`` / ``--max-output`` are passed to hussh's ``from_shared_auth`` when this
tree's hussh takes them (the per-call output budget being added to the engine); when it does not,
the table says so instead of pretending.
"""

from __future__ import annotations

import argparse
import json
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

FIELDS = ("execute_s", "execute_cpu_s", "stdout_chars", "pss_connected_kib")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_outputs", description=__doc__.split("\n\n")[0])
    common_options(parser, hosts=1000, tools="hussh,upstream,pssh")
    parser.add_argument("--mb", type=float, default=1.0, help="MB (10^6 bytes) each host prints")
    parser.add_argument("--max-output", type=int, help="hussh: per-host output limit in bytes")
    parser.add_argument("--max-call-output", type=int, help="hussh: per-call output budget in bytes, if supported")
    parser.add_argument("--section", default=None, help="README section name (default outputs-<mb>mb)")
    args = parser.parse_args(argv)
    tools = args.tools.split(",")
    size = int(args.mb * 1_000_000)
    command = f"head -c {size * 3 // 4} /dev/urandom | base64 -w 76"
    hussh_kwargs = {k: v for k, v in (("max_output", args.max_output), ("max_call_output", args.max_call_output)) if v}

    def extra(tool: str) -> list[str]:
        argv = ["--workload", "outputs", "--command", command, "--size", str(size)]
        if tool.startswith("hussh") and hussh_kwargs:
            argv += ["--mc-kwargs", json.dumps(hussh_kwargs)]
        return argv

    with LoopbackBench("outputs", args) as bench:
        runs = bench.alternate(tools, args.hosts, extra, warmup=lambda t: ["--workload", "outputs", "--command",
                                                                            "echo hi", "--size", "2"])
        summaries = [summarize(runs[t], FIELDS) for t in tools]
        for s, t in zip(summaries, tools):
            ignored = next((m.report.get("mc_kwargs_ignored") for m in runs[t] if m.report), None)
            s["note"] = f"ignored: {','.join(ignored)}" if ignored else ""
        columns = COMMON_COLUMNS[:3] + [
            ("execute s", lambda s: s["execute_s"], ".2f"),
            ("execute CPU s", lambda s: s["execute_cpu_s"], ".2f"),
            ("output MB", lambda s: s["stdout_chars"] and s["stdout_chars"] / 1e6, ".0f"),
            ("parent PSS MiB", lambda s: s["root_pss_mib"], ".0f"),
            ("workers PSS MiB", lambda s: s["rest_pss_mib"], ".0f"),
        ] + COMMON_COLUMNS[3:] + [("note", lambda s: s["note"], "")]
        table = render(summaries, columns)
        lines = [table]
        wall, pss = ratio(summaries, "wall_s", "hussh"), ratio(summaries, "pss_sum_mib", "hussh")
        if wall and pss:
            lines.append(f"hussh/upstream: wall {wall:.2f}, peak PSS sum {pss:.2f}")
        lines.append(failures_text(summaries))
        text = "\n\n".join(x for x in lines if x)
        title = f"{args.hosts} hosts each printing {args.mb:g} MB of distinct text" + (
            f" (hussh: {json.dumps(hussh_kwargs)})" if hussh_kwargs else "")
        print(f"\n== {title} ==\n{text}")
        bench.save(summaries, args.json or None)
        if args.readme:
            section = args.section or f"outputs-{args.mb:g}mb"
            write_readme(section, bench.header(command_line("scale.bench_outputs"),
                                               f"memory cgroup limit {args.memory_limit_gib:g} GiB per run")
                         + f"\n\n**{title}**\n\n```text\n{text}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
