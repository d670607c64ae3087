"""The fault proxy: takes a node's endpoints over while a network fault is applied to it.

``blackhole`` accepts TCP connections and never sends a byte; ``slow`` relays each connection to
the real sshd, holding every chunk back ``--delay`` seconds in each direction (a long link, not a
narrow one). It runs as its own process, started only where a fault is applied, prints ``ready``
once it listens, and exits when its owner (its parent) does, so a fault never outlives the fleet.

    python -m hussh.testing._proxy --owner PID blackhole 127.80.0.1:2401 ...
    python -m hussh.testing._proxy --owner PID slow --delay 0.05 127.80.0.1:2401=127.80.0.1:40123 ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from ._errors import FleetError

CHUNK = 65536
OWNER_POLL = 0.5

Address = tuple[str, int]


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Blackhole: read and drop whatever arrives, answer nothing, until the client gives up."""
    try:
        while await reader.read(CHUNK):
            pass
    except OSError:
        pass
    finally:
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk sent ``delay`` seconds after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((loop.time() + delay, data))
        except OSError:
            pass
        queue.put_nowait((loop.time() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        receiving.cancel()
        writer.close()


async def _relay(upstream: Address, delay: float, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """Slow: relay one client connection to ``upstream`` through two delayed pipes."""
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))


async def _serve(args: argparse.Namespace) -> None:
    servers = []
    for spec in args.listen:
        listen, _, upstream = spec.partition("=")
        handler = _hold if args.mode == "blackhole" else partial(_relay, _address(upstream), args.delay)
        servers.append(await asyncio.start_server(handler, *_address(listen), reuse_address=True))
    print("ready", flush=True)
    while os.getppid() == args.owner:
        await asyncio.sleep(OWNER_POLL)


def command(mode: str, specs: list[str], delay: float = 0.05) -> list[str]:
    """The command line of a proxy owned by this process."""
    return [sys.executable, "-m", "hussh.testing._proxy", "--owner", str(os.getpid()),
            "--delay", str(delay), mode, *specs]


def await_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait (bounded) for the proxy's ``ready`` line; kill it and raise if it never comes."""
    deadline = time.monotonic() + timeout
    stdout = proc.stdout
    assert stdout is not None, "the proxy is started with stdout=PIPE"
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            if stdout.readline().strip() == b"ready":
                return
            break
    proc.kill()
    proc.wait()
    raise FleetError(f"fault proxy did not start: {log.read_text(errors='replace').strip()[-500:]}")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until the owner process is gone."""
    parser = argparse.ArgumentParser(prog="python -m hussh.testing._proxy", description=__doc__)
    parser.add_argument("--owner", type=int, required=True, help="exit once this parent process is gone")
    parser.add_argument("--delay", type=float, default=0.05, help="slow: seconds each chunk is held back")
    parser.add_argument("mode", choices=("blackhole", "slow"))
    parser.add_argument("listen", nargs="+", help="HOST:PORT (blackhole) or HOST:PORT=UPSTREAM_HOST:PORT (slow)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
