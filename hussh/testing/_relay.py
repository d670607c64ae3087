"""The network relay: one process, one event loop, a listening socket per host, conditions per host.

Each link (a listening address) relays every connection it accepts to its host's sshd, through a
one-way delay of ``rtt / 2`` each way (plus jitter that never reorders bytes), a token bucket per
connection direction (``bandwidth``) and a connect delay that stands for the TCP handshake's round
trip (1.5 ``rtt``: the client's first bytes reach sshd when they would after SYN, SYN-ACK, ACK)
plus ``slow_start``. Faults act on a link while it runs: ``freeze`` stops forwarding both ways
and leaves both sockets open (a link that silently drops every packet), ``reset`` sends RST to
both sides of every connection (SO_LINGER 0), ``refuse`` closes the listening socket,
``blackhole`` holds new connections silent. Its own process, so its CPU is measurable apart.

The owner controls it over a Unix socket (mode 0600): one JSON object per line, answered by one::

    {"op": "listen", "links": [["127.70.0.1:2200", "127.70.0.1:40123", {"rtt": 0.05}], ...]}
    {"op": "set", "links": ["127.70.0.1:2200"], "conditions": {"rtt": 0.2, "bandwidth": 1000000}}
    {"op": "freeze" | "thaw" | "reset" | "refuse" | "accept" | "blackhole" | "restore", "links": [...]}
    {"op": "slow", "links": [...], "delay": 0.05}
    {"op": "stats"}

    python -m hussh.testing._relay --control /path/relay.sock [--owner PID]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ._errors import FleetError

OWNER_POLL = 0.5
QUEUE_CAP = 4 << 20  # bytes a direction holds back before it stops reading (a TCP window's worth)
BURST = 16384  # token bucket depth: a handshake's small packets are never held by the cap
CONTROL_TIMEOUT = 30.0
CONTROL_LIMIT = 64 << 20  # longest control line: a listen of 10,000 links is ~1.3 MB, past asyncio's 64 KiB
EOF = b""


@dataclass(frozen=True)
class NetworkConditions:
    """A link's conditions: round-trip delay and jitter (seconds), a cap per connection direction
    (bytes/s, None: none) and a slow start (seconds before a new connection's first bytes pass)."""

    rtt: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    slow_start: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rtt", "jitter", "slow_start"):
            if not 0 <= getattr(self, name) < 3600:
                raise FleetError(f"network condition {name} must be 0..3600 seconds, not {getattr(self, name)!r}")
        if self.bandwidth is not None and not self.bandwidth >= 1:
            raise FleetError(f"network condition bandwidth must be >= 1 byte/s, not {self.bandwidth!r}")

    @classmethod
    def parse(cls, text: str) -> NetworkConditions:
        """From ``rtt=50ms,jitter=5ms,bandwidth=1M,slow_start=2s`` (seconds and bytes/s by default)."""
        fields: dict[str, float] = {}
        for part in filter(None, text.split(",")):
            name, sep, value = part.partition("=")
            if not sep or name not in {"rtt", "jitter", "bandwidth", "slow_start"}:
                raise FleetError(f"bad network condition {part!r}: rtt=, jitter=, bandwidth= or slow_start=")
            fields[name] = _number(value, name)
        return cls(**fields)


def _number(text: str, name: str) -> float:
    """``50ms`` / ``0.05`` / ``2s`` as seconds; ``1M`` / ``64k`` / ``1000`` as bytes/s."""
    units = {"bandwidth": {"k": 1e3, "M": 1e6, "G": 1e9}}.get(name, {"ms": 1e-3, "s": 1.0})
    scale = next((factor for unit, factor in units.items() if text.endswith(unit)), 1.0)
    digits = next((text[: -len(unit)] for unit in units if text.endswith(unit)), text)
    try:
        return float(digits) * scale
    except ValueError:
        raise FleetError(f"bad value {text!r} for network condition {name}") from None


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# ------------------------------------------------------------------------------------------------ the relay


class Side(asyncio.Protocol):
    """One socket of a relayed connection; reading pauses while any reason to hold it stands."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.holds: set[str] = set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.holds:
            transport.pause_reading()
        self.conn.made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.received(self, data)

    def eof_received(self) -> bool:
        self.conn.received(self, EOF)
        return True  # keep the other half open until the EOF has passed through the delay

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conn.lost(self, exc)

    def pause_writing(self) -> None:
        self.conn.peer(self).hold("writing")

    def resume_writing(self) -> None:
        self.conn.peer(self).release("writing")

    def hold(self, reason: str) -> None:
        if not self.holds and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self.holds:
            self.holds.discard(reason)
            if not self.holds and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0) rather than FIN."""
        if self.transport is not None and not self.closed:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


class Direction:
    """Bytes from one side to the other: each chunk due after the one-way delay, never before the
    chunk ahead of it, and after its bandwidth share; flushed by one timer at the head's due time."""

    def __init__(self, conn: Conn, src: Side, dst: Side) -> None:
        self.conn, self.src, self.dst = conn, src, dst
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.tokens = float(BURST)
        self.stamp = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False  # the source's EOF is queued
        self.done = False  # ... and passed on

    def push(self, data: bytes) -> None:
        link, loop = self.conn.link, self.conn.loop
        self.ended = self.ended or not data
        now = loop.time()
        cond = link.conditions
        if not (self.queue or cond.rtt or cond.bandwidth or link.frozen or not self.conn.connected):
            self.write(data)  # the fast path: nothing to hold back
            return
        send_at = now
        if cond.bandwidth:
            self.tokens = min(float(BURST), self.tokens + (now - self.stamp) * cond.bandwidth)
            self.stamp = now
            self.tokens -= len(data)
            send_at = now + max(0.0, -self.tokens / cond.bandwidth)
        delay = cond.rtt / 2 + (random.uniform(-cond.jitter, cond.jitter) if cond.jitter else 0.0)
        due = max(send_at + max(0.0, delay), self.last_due)
        self.last_due = due
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > QUEUE_CAP:
            self.src.hold("queue")
        self.schedule()

    def schedule(self) -> None:
        if self.timer is None and self.queue and self.conn.connected and not self.conn.link.frozen:
            self.timer = self.conn.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.conn.link.frozen:
            return
        now = self.conn.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.done:
            _, data = self.queue.popleft()
            self.queued -= len(data)
            self.write(data)
        if self.queued <= QUEUE_CAP // 2:
            self.src.release("queue")
        self.schedule()

    def write(self, data: bytes) -> None:
        transport = self.dst.transport
        if transport is None or self.dst.closed:
            return
        if data:
            transport.write(data)
        elif not self.done:  # EOF (or the source closed): pass it on, then stop
            self.done = True
            if transport.can_write_eof():
                transport.write_eof()
            self.conn.finish()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Conn:
    """One relayed TCP connection: the client's socket, sshd's, and a direction each way."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.loop = link.relay.loop
        self.client = Side(self)
        self.upstream = Side(self)
        self.upstream.hold("connecting")
        self.to_server = Direction(self, self.client, self.upstream)
        self.to_client = Direction(self, self.upstream, self.client)
        self.connected = False
        self.blackholed = link.mode == "blackhole"
        self.dial: asyncio.TimerHandle | None = None

    def peer(self, side: Side) -> Side:
        return self.upstream if side is self.client else self.client

    def made(self, side: Side) -> None:
        if side is self.client:
            self.link.conns.add(self)
            if self.link.frozen:
                self.client.hold("frozen")
            if not self.blackholed:
                cond = self.link.conditions
                self.dial = self.loop.call_later(1.5 * cond.rtt + cond.slow_start, self.connect)
        else:
            self.connected = True
            if self.link.frozen:
                self.upstream.hold("frozen")
            self.upstream.release("connecting")
            self.to_server.flush()  # what the client sent meanwhile

    def connect(self) -> None:
        self.dial = None
        task = self.loop.create_task(self._connect())
        self.link.relay.tasks.add(task)
        task.add_done_callback(self.link.relay.tasks.discard)

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.upstream, *self.link.upstream)
        except OSError:
            self.close(reset=True)  # sshd is gone: the client sees its connection reset

    def received(self, side: Side, data: bytes) -> None:
        self.link.bytes += len(data)
        if self.blackholed:
            return
        (self.to_server if side is self.client else self.to_client).push(data)

    def lost(self, side: Side, exc: Exception | None) -> None:
        direction = self.to_server if side is self.client else self.to_client
        if exc is not None:  # reset: the other side is reset at once
            self.close(reset=True)
        elif self.blackholed:
            self.close()
        elif not direction.ended:
            direction.push(EOF)

    def finish(self) -> None:
        """Close both sockets once both directions have passed their EOF."""
        if self.to_server.done and self.to_client.done:
            self.close()

    def close(self, reset: bool = False) -> None:
        if self.dial is not None:
            self.dial.cancel()
        for direction in (self.to_server, self.to_client):
            direction.stop()
            direction.done = True
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.closed:
                side.reset() if reset else side.transport.close()
        self.link.conns.discard(self)

    def freeze(self, frozen: bool) -> None:
        for side in (self.client, self.upstream):
            side.hold("frozen") if frozen else side.release("frozen")
        for direction in (self.to_server, self.to_client):
            direction.stop() if frozen else direction.flush()


class Link:
    """One listening address and where it relays to, with its conditions and faults."""

    def __init__(self, relay: Relay, address: tuple[str, int], upstream: tuple[str, int] | None,
                 conditions: NetworkConditions) -> None:
        self.relay, self.address, self.upstream = relay, address, upstream or ("", 0)
        self.conditions = conditions
        self.configured = conditions  # what "restore" returns to
        self.mode = "relay" if upstream else "blackhole"
        self.frozen = False
        self.server: asyncio.Server | None = None
        self.conns: set[Conn] = set()
        self.bytes = 0
        self.accepted = 0

    async def open(self) -> None:
        if self.server is None:
            self.server = await self.relay.loop.create_server(self._accept, *self.address, reuse_address=True,
                                                              backlog=4096)

    def _accept(self) -> Side:
        self.accepted += 1
        return Conn(self).client

    def refuse(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def freeze(self, frozen: bool) -> None:
        self.frozen = frozen
        for conn in list(self.conns):
            conn.freeze(frozen)

    def reset(self) -> None:
        for conn in list(self.conns):
            conn.close(reset=True)


class Relay:
    """Every link of one relay process, and the control commands that act on them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.links: dict[str, Link] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "listen":  # links: [[address, upstream or null, conditions], ...]
            for name, upstream, conditions in request["links"]:
                if name in self.links:
                    raise ValueError(f"{name} is already a link")
                link = Link(self, _address(name), _address(upstream) if upstream else None,
                            NetworkConditions(**conditions))
                await link.open()
                self.links[name] = link
            return {}
        if op == "stats":
            return {"links": len(self.links), "connections": sum(len(k.conns) for k in self.links.values()),
                    "accepted": sum(k.accepted for k in self.links.values()),
                    "bytes": sum(k.bytes for k in self.links.values()), "cpu": time.process_time()}
        links = [self.links[name] for name in request.get("links", [])]
        if op == "set":
            conditions = NetworkConditions(**request["conditions"])
            for link in links:
                link.conditions = link.configured = conditions
        elif op in ("freeze", "thaw"):
            for link in links:
                link.freeze(op == "freeze")
        elif op == "reset":
            for link in links:
                link.reset()
        elif op == "refuse":
            for link in links:
                link.refuse()
        elif op == "accept":
            for link in links:
                await link.open()
        elif op == "blackhole":
            for link in links:
                link.mode = "blackhole"
        elif op == "slow":
            for link in links:
                link.conditions = replace(link.configured, rtt=link.configured.rtt + 2 * float(request["delay"]))
        elif op == "restore":
            for link in links:
                link.mode, link.conditions = ("relay" if link.upstream[0] else "blackhole"), link.configured
                link.freeze(False)
                await link.open()
        else:
            raise ValueError(f"unknown op {op!r}")
        return {}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one control connection's requests, a line each, until it closes."""
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, **await self.handle(json.loads(line))}
                except (ValueError, KeyError, TypeError, OSError, FleetError) as error:
                    reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    relay = Relay(asyncio.get_running_loop())
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(relay.control, args.control, limit=CONTROL_LIMIT)
    finally:
        os.umask(old)
    print("ready", flush=True)
    async with server:
        while args.owner is None or os.getppid() == args.owner:
            await asyncio.sleep(OWNER_POLL)


RELAYS_FILE = "relays.json"
"""In a fleet's directory: each relay's control socket name (in that directory) and the links it serves."""
DESCRIPTORS_PER_LINK = 3
"""A link's listening socket, and the two sockets of a live connection through it (one per endpoint is
what a fleet's client holds: ``MultiConnection`` keeps every host connected)."""
SPARE_DESCRIPTORS = 64


def links_per_relay() -> int:
    """How many links one relay process takes: its descriptor limit (the hard limit this process passes
    on, which the relay raises its own soft limit to) over ``DESCRIPTORS_PER_LINK``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    return max(1, (limit - SPARE_DESCRIPTORS) // DESCRIPTORS_PER_LINK)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (what ``links_per_relay`` plans with); return it. A
    relay out of descriptors stops accepting: its peers' connections wait in the listen queues until they
    time out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and relay until killed (or until the owner process is gone)."""
    parser = argparse.ArgumentParser(prog="python -m hussh.testing._relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--control", required=True, help="path of the control socket to create")
    parser.add_argument("--owner", type=int, help="exit once this parent process is gone")
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(_serve(args))


# ------------------------------------------------------------------------------------------------ the owner's side


class RelayProcess:
    """A relay process and its control socket, seen from the process that started it."""

    def __init__(self, control: Path, log: Path, spawn: Callable[..., subprocess.Popen[bytes]],
                 owned: bool = True) -> None:
        self.control = control
        argv = [sys.executable, "-m", "hussh.testing._relay", "--control", str(control)]
        argv += ["--owner", str(os.getpid())] if owned else []
        with log.open("ab") as stderr:
            self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        _await_ready(self.proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its answer; FleetError if the relay refuses it or is gone."""
        return command(self.control, op, **fields)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(OSError):
            self.control.unlink()


def command(control: Path | str, op: str, **fields: Any) -> dict[str, Any]:
    """One request to the relay listening at ``control``; its answer, or FleetError."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(CONTROL_TIMEOUT)
            sock.connect(str(control))
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            answer = sock.makefile("rb").readline()
    except OSError as error:
        raise FleetError(f"the network relay at {control} does not answer: {error}") from None
    reply = json.loads(answer) if answer else {"ok": False, "error": "no answer"}
    if not reply.pop("ok"):
        raise FleetError(f"network relay: {op}: {reply['error']}")
    return reply


def conditions_dict(conditions: NetworkConditions) -> dict[str, Any]:
    """The conditions as the control protocol carries them."""
    return asdict(conditions)


def _await_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait (bounded) for the relay's ``ready`` line; kill it and raise if it never comes."""
    deadline = time.monotonic() + timeout
    stdout = proc.stdout
    assert stdout is not None, "the relay is started with stdout=PIPE"
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            if stdout.readline().strip() == b"ready":
                return
            break
    proc.kill()
    proc.wait()
    raise FleetError(f"network relay did not start: {log.read_text(errors='replace').strip()[-500:]}")


if __name__ == "__main__":
    main()
