"""A private network namespace with a resolver of our own, for DNS tests and benchmarks.

``command(argv, directory)`` runs ``argv`` under ``unshare --net --mount`` (root): the namespace
has only loopback, and /etc/resolv.conf and /etc/nsswitch.conf are bind-mounted there with files
of ours that send every lookup to 127.0.0.1:53 in that namespace, so no query can leave the
machine or reach its own resolver. ``python -m scale.dns_namespace serve`` (run inside) is that
resolver: a minimal UDP responder that answers ``A`` queries for ``ip-127-A-B-C.<anything>`` with
127.A.B.C, says NXDOMAIN for every other name and NODATA for other types, or never answers
(``--silent``), optionally after a delay per query (``--delay``, as a resolver across a network).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import socket
import struct
import subprocess
import sys
from pathlib import Path

RESOLV_CONF = "nameserver 127.0.0.1\n"  # glibc's defaults otherwise: 5 s timeout, 2 attempts
NSSWITCH = "hosts: files dns\n"  # no nss module that could ask a daemon outside the namespace
_NAME = re.compile(rb"ip-127-(\d{1,3})-(\d{1,3})-(\d{1,3})(?:\.|$)", re.IGNORECASE)
QTYPE_A = 1
NXDOMAIN = 3
SO_RCVBUFFORCE = 33  # Linux; root may exceed net.core.rmem_max
RECEIVE_BUFFER = 16 << 20


def command(argv: list[str], directory: Path) -> list[str]:
    """``argv`` wrapped to run in a new network and mount namespace that resolves through 127.0.0.1."""
    resolv, nsswitch = directory / "resolv.conf", directory / "nsswitch.conf"
    resolv.write_text(RESOLV_CONF)
    nsswitch.write_text(NSSWITCH)
    setup = (f"ip link set lo up && mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf && "
             f"mount --bind {shlex.quote(str(nsswitch))} /etc/nsswitch.conf && exec \"$@\"")
    return ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-ec", setup, "sh", *argv]


def start_server(silent: bool = False, delay: float = 0.0, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the responder (inside the namespace) and return once it listens; ``log`` gets each query's name."""
    argv = [sys.executable, "-m", "scale.dns_namespace", "serve", "--delay", str(delay)]
    argv += (["--silent"] if silent else []) + (["--log", str(log)] if log else [])
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert server.stdout is not None
    if server.stdout.readline().strip() != b"ready":
        server.kill()
        raise RuntimeError(f"the DNS responder did not start (exit status {server.wait()})")
    return server


def question(query: bytes) -> tuple[bytes, int, int] | None:
    """The name and type one query packet asks for, and where its question ends (None: not a query)."""
    if len(query) < 12 or query[2] & 0x80 or struct.unpack("!H", query[4:6])[0] != 1:
        return None
    labels, at = [], 12
    while at < len(query) and query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]])
        at += 1 + query[at]
    if at + 5 > len(query):
        return None
    return b".".join(labels), struct.unpack("!H", query[at + 1 : at + 3])[0], at + 5


def answer(query: bytes) -> bytes | None:
    """The response to one query packet (None: not a query worth answering)."""
    asked = question(query)
    if asked is None:
        return None
    name, qtype, end = asked
    header, body = query[:2], query[12:end]
    found = _NAME.match(name)
    octets = [int(x) for x in found.groups()] if found else []
    if not octets or max(octets) > 255:
        return header + struct.pack("!HHHHH", 0x8180 | NXDOMAIN, 1, 0, 0, 0) + body
    if qtype != QTYPE_A:
        return header + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + body  # the name exists, no such record
    record = struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, 60, 4) + bytes([127, *octets])
    return header + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + body + record


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, silent: bool, delay: float, log: str) -> None:
        self.silent, self.delay = silent, delay
        self.log = open(log, "a", buffering=1) if log else None  # open while the responder runs
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asked = question(data) if self.log else None
        if self.log and asked:
            self.log.write(f"{asked[0].decode('ascii', 'replace')} {asked[1]}\n")
        reply = None if self.silent else answer(data)
        if reply is None or self.transport is None:
            return
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)


async def serve(silent: bool, delay: float, log: str) -> None:
    """Answer on 127.0.0.1:53 until killed; say ``ready`` on stdout once bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)  # a burst of queries is not dropped here
    sock.bind(("127.0.0.1", 53))
    await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Responder(silent, delay, log), sock=sock)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("serve", help="the responder, on 127.0.0.1:53 (inside a namespace from command())")
    run.add_argument("--silent", action="store_true", help="never answer")
    run.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    run.add_argument("--log", default="", help="a file to append each query's name and type to")
    args = parser.parse_args()
    asyncio.run(serve(args.silent, args.delay, args.log))


if __name__ == "__main__":
    main()
