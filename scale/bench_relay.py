"""The network relay's own cost: its process's CPU per connection and per MB relayed.

    python -m scale.bench_relay [--connections 1000] [--megabytes 200]

One relay process (``hussh.testing._relay``, as the fleets start it) in front of a TCP echo and
sink server in this process; the relay's CPU is read from /proc/<pid>/stat (utime + stime) around
each workload, so the client's and the server's CPU never count. Connections: each opens, sends 64
bytes, reads them back and closes, 100 at a time. Megabytes: one connection streams them one way.
Both with no conditions (the relay's direct path) and at 50 ms rtt (every chunk through the delay
queue and its timer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from hussh.testing import NetworkConditions
from hussh.testing._relay import RelayProcess, conditions_dict

CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK = 1 << 16


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo what arrives while it is short (the connection test); swallow a stream (the MB test)."""
    while data := await reader.read(CHUNK):
        if len(data) <= 64:
            writer.write(data)
            await writer.drain()
    writer.close()


async def _one(address: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"x" * 64)
    await reader.readexactly(64)
    writer.close()
    await writer.wait_closed()


async def connections(address: tuple[str, int], count: int) -> None:
    for first in range(0, count, 100):
        await asyncio.gather(*(_one(address) for _ in range(min(100, count - first))))


async def stream(address: tuple[str, int], megabytes: int) -> None:
    _, writer = await asyncio.open_connection(*address)
    block = b"y" * (1 << 20)
    for _ in range(megabytes):
        writer.write(block)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def measure(relay: RelayProcess, address: tuple[str, int], args: argparse.Namespace) -> list[str]:
    lines = []
    for rtt in (0.0, 0.05):
        conditions = conditions_dict(NetworkConditions(rtt=rtt))
        relay.command("set", links=[f"{address[0]}:{address[1]}"], conditions=conditions)
        before = cpu_seconds(relay.pid)
        await connections(address, args.connections)
        per_conn = (cpu_seconds(relay.pid) - before) / args.connections
        before = cpu_seconds(relay.pid)
        await stream(address, args.megabytes)
        await asyncio.sleep(rtt * 2)  # the tail of the stream leaves the relay
        per_mb = (cpu_seconds(relay.pid) - before) / args.megabytes
        lines.append(f"| {rtt * 1000:.0f} ms | {per_conn * 1e3:.3f} ms | {per_mb * 1e3:.2f} ms | "
                     f"{1 / per_mb if per_mb else float('inf'):.0f} MB/s |")
    return lines


async def main_async(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayProcess(Path(tmp) / "relay.sock", Path(tmp) / "relay.log", subprocess.Popen)
        try:
            port = _free_port()
            relay.command("listen", links=[[f"127.0.0.1:{port}", f"127.0.0.1:{upstream}",
                                            conditions_dict(NetworkConditions())]])
            lines = await measure(relay, ("127.0.0.1", port), args)
        finally:
            relay.stop()
    server.close()
    print(f"relay CPU (/proc/<pid>/stat), {args.connections} connections of 64 bytes echoed, "
          f"{args.megabytes} MB streamed one way\n")
    print("| rtt | CPU per connection | CPU per MB | MB/s one core |\n| --- | ---: | ---: | ---: |")
    print("\n".join(lines))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--megabytes", type=int, default=200)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
