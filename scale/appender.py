"""Appends lines to one log per host, as busy services would: the source of the tail benchmark's traffic.

    python -m scale.appender DIR HOST [HOST...] --rate 100 --duration 90

Every ``--tick`` seconds it appends ``rate * tick`` numbered lines (``--line-bytes`` each, distinct per
host and line) to ``DIR/<host>.log``, through descriptors kept open with O_APPEND, until killed or
``--duration`` runs out. The files are world-readable: the fleet's login users read them over SFTP.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("hosts", nargs="+")
    parser.add_argument("--rate", type=float, default=100.0, help="lines per second per host")
    parser.add_argument("--tick", type=float, default=0.1, help="seconds between bursts")
    parser.add_argument("--line-bytes", type=int, default=80)
    parser.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fds = []
    for host in args.hosts:
        path = os.path.join(args.dir, f"{host}.log")
        fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        os.chmod(path, 0o644)
    per_tick = max(1, round(args.rate * args.tick))
    pad = "x" * args.line_bytes
    start = next_tick = time.monotonic()
    seq = 0
    while next_tick - start < args.duration:
        for host, fd in zip(args.hosts, fds):
            lines = "".join(f"{host} {seq + i:09d} {pad}"[: args.line_bytes - 1] + "\n" for i in range(per_tick))
            os.write(fd, lines.encode())
        seq += per_tick
        next_tick += args.tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
