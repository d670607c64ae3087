"""Peak memory of the caller and of each worker when hosts stream hostile output past ``max_output``.

    python -m scale.bench_hostile_output [--hosts 1,8] [--kinds random,ff,utf8,emoji] [--ops execute,read,tail]
                                         [--max-output BYTES]

Every host streams twice ``max_output`` bytes of one kind, so each command is stopped at the
bound: ``random`` (/dev/urandom), ``ff`` (0xff bytes: each one becomes U+FFFD), ``utf8`` ('€',
valid three-byte characters) and ``emoji`` (ASCII with one four-byte character in every 16, which
widens the whole text to four bytes a character); or they append as much to a file that a
tailer reads (``tail``), or write a file read into memory (``read``: one host's file, read by
every host, since all hosts share one home here). Output starts with the host's name, so no two
hosts print the same and the caller cannot keep one copy for all. Each case runs in a fresh caller
process (``--probe``) with fresh workers on a loopback sshd fleet (root); the peaks are VmHWM from
/proc, the bases the same after connecting (before any output). The bound each is measured
against is the one docs/multi-connection.md states (see ``bounds``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys

KINDS = {
    "random": "head -c {n} /dev/urandom",
    "ff": "head -c {n} /dev/zero | tr '\\000' '\\377'",
    "utf8": "yes '€€€€€€€€€€€€€€€€€€€€' | tr -d '\\n' | head -c {n}",
    "emoji": "yes 'abcdefghijklmno😀' | tr -d '\\n' | head -c {n}",
}
WIDTH = {"random": 4, "ff": 2, "utf8": 1, "emoji": 4}
"""Bytes of memory a byte received takes at most as the caller's text, as docs/multi-connection.md
states it (hussh._result.MAX_TEXT_WIDTH): undecodable bytes 2, valid text 1, 4 once a character is
beyond U+FFFF (random bytes hold some)."""


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident memory of ``pid`` in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for {pid}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (workers, forked directly or by a zygote)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in map(int, children.read().split()):
                found += [child, *descendants(child)]
    return found


def probe(hosts: list[str], port: int, kind: str, max_output: int, op: str = "execute") -> dict[str, object]:
    """In a fresh process: connect, have every host stream (``execute``) or hold (``read`` into memory,
    ``tail``) hostile output, report the peaks before closing."""
    from hussh import SSHResult
    from hussh.multi_conn import MultiConnection
    from hussh.testing import PASSWORD, PASSWORD_USER

    mc = MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, port=port,
                                          host_key_checking="off", max_output=max_output, workers=1)
    stream = KINDS[kind].format(n=2 * max_output)
    files = {host: f"hostile-{host}.out" for host in hosts}  # in each host's home
    with mc:
        if op != "execute":
            mc.execute_map({host: f": > {files[host]}" for host in hosts})
        pids = descendants(os.getpid())
        base = {"caller": vm_hwm(), "workers": [vm_hwm(pid) for pid in pids]}
        if op == "execute":
            results = dict(mc.execute_map({host: f"printf '{host} '; {stream}" for host in hosts}))
        elif op == "tail":
            with mc.tail_map(files) as tailer:  # one read's peak: closing gathers everything once more
                mc.execute_map({host: f"{{ printf '{host} '; {stream}; }} >> {files[host]}" for host in hosts})
                texts = tailer.read()
                results = {host: SSHResult(texts[host], tailer.errors.get(host, ""), 0) for host in hosts}
                peak = {"caller": vm_hwm(), "workers": [vm_hwm(pid) for pid in pids]}
        else:  # read: one path for all hosts, so one host's file (a home shared by all would make them alike)
            mc.execute_map({hosts[0]: f"{{ printf '{hosts[0]} '; {stream}; }} > hostile.out"})
            results = dict(mc.sftp_read("hostile.out"))
        if op != "tail":
            peak = {"caller": vm_hwm(), "workers": [vm_hwm(pid) for pid in pids]}
        mc.execute_map({host: f"rm -f {files[host]} hostile.out" for host in hosts})
    kept = [len(r.stdout) for r in results.values()]
    errors = sorted({r.error or str(r.status) for r in results.values()})
    return {"base": base, "peak": peak, "kept_chars": kept, "errors": errors}


def run_case(hosts: list[str], port: int, kind: str, max_output: int, op: str = "execute") -> dict[str, object]:
    argv = [sys.executable, "-m", "scale.bench_hostile_output", "--probe", kind, "--port", str(port),
            "--max-output", str(max_output), "--host-list", ",".join(hosts), "--op", op]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"probe {kind} x{len(hosts)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bounds(kind: str, hosts: int, max_output: int) -> tuple[int, int]:
    """(caller, worker) bounds in bytes as documented: the worker holds the bytes received, at most
    ``max_output`` per host; the caller the text they become, ``WIDTH`` bytes a byte at most."""
    return WIDTH[kind] * hosts * max_output, hosts * max_output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_hostile_output", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="1,8", help="host counts to run, comma-separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds of output, comma-separated")
    parser.add_argument("--max-output", type=int, default=None, help="per-host bound (default: hussh's default)")
    parser.add_argument("--port", type=int, default=2291)
    parser.add_argument("--octet", type=int, default=91, help="fleet addresses are 127.<octet>.0.x")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--ops", default="execute", help="execute, read (sftp_read into memory), tail; comma-separated")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--op", default="execute", help=argparse.SUPPRESS)
    parser.add_argument("--host-list", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from hussh._spec import DEFAULT_MAX_OUTPUT

    max_output = args.max_output or DEFAULT_MAX_OUTPUT
    if args.probe:
        print(json.dumps(probe(args.host_list.split(","), args.port, args.probe, max_output, args.op)))
        return 0
    from hussh.testing import LoopbackFleet, loopback_addresses

    counts = [int(n) for n in args.hosts.split(",")]
    rows = []
    with LoopbackFleet(loopback_addresses(max(counts), args.octet), port=args.port) as fleet:
        for op, kind, count in itertools.product(args.ops.split(","), args.kinds.split(","), counts):
            case = run_case(fleet.addresses[:count], args.port, kind, max_output, op)
            caller_bound, worker_bound = bounds(kind, count, max_output)
            rows.append({"op": op, "kind": kind, "hosts": count, "max_output": max_output, **case,
                         "caller_bound": caller_bound, "worker_bound": worker_bound})
            print(_row(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


def growth(row: dict, who: str) -> float:
    """Peak over base of the caller (or the largest worker), as a multiple of its documented bound."""
    peak, base = row["peak"][who], row["base"][who]
    if who == "workers":
        peak, base = max(peak), max(base)
    return (peak - base) / row[f"{who.rstrip('s')}_bound"]


def _row(row: dict) -> str:
    mib = 1 << 20
    peak, base = row["peak"], row["base"]
    caller = (f"{peak['caller'] / mib:5.0f} MiB (base {base['caller'] / mib:2.0f}, "
              f"bound {row['caller_bound'] / mib:4.0f})")
    worker = (f"{max(peak['workers']) / mib:5.0f} MiB (base {max(base['workers']) / mib:2.0f}, "
              f"bound {row['worker_bound'] / mib:4.0f})")
    return (f"{row['op']:>7} {row['kind']:>6} x{row['hosts']}: caller {caller} {growth(row, 'caller'):4.2f}x"
            f" | worker {worker} {growth(row, 'workers'):4.2f}x | {','.join(row['errors'])},"
            f" kept {min(row['kept_chars'])} chars or more")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "default")
    sys.exit(main())
