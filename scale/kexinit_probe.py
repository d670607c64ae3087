"""What each SSH client offers and so negotiates with this machine's OpenSSH sshd: its KEXINIT, read off the wire.

    python -m scale.kexinit_probe [--clients hussh,upstream,pssh,ssh]

A listener on 127.0.0.1 sends an OpenSSH banner, reads the client's banner and its first (still
unencrypted) packet, the KEXINIT, and decodes its name-lists; each client is started against it in
its own venv and fails right after (nothing answers its KEXINIT). The server side's lists come
from ``sshd -T`` with an ed25519 host key only, as the loopback fleet runs; what is negotiated is
the first client algorithm the server also has (RFC 4253 7.1). Part of finding where the fleet
spends more CPU serving hussh than upstream: key exchange, cipher, MAC and compression are the
per-connection crypto a client chooses for the server.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .measure import ensure_venv
from .suite import PSSH, SCALE, UPSTREAM, write_readme

FIELDS = ("kex", "host key", "cipher c2s", "cipher s2c", "mac c2s", "mac s2c", "compression c2s", "compression s2c")
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"

CLIENTS = {
    "hussh": ((), "import sys; sys.path.insert(0, {root!r}); from hussh import Connection\n"
                  "try: Connection('127.0.0.1', port={port}, username='u', password='p', timeout=5000)"
                  ".execute('true')\n"
                  "except Exception: pass"),
    "upstream": (UPSTREAM, "from hussh import Connection\n"
                           "try: Connection('127.0.0.1', port={port}, username='u', password='p', timeout=5000)\n"
                           "except Exception: pass"),
    "pssh": (PSSH, "from pssh.clients import SSHClient\n"
                   "try: SSHClient('127.0.0.1', port={port}, user='u', password='p', num_retries=1, timeout=3)\n"
                   "except Exception: pass"),
}


def _read_packet(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 5:
        chunk = sock.recv(5 - len(head))
        if not chunk:
            raise ConnectionError("closed before a packet")
        head += chunk
    length, padding = struct.unpack(">IB", head)
    body = b""
    while len(body) < length - 1:
        chunk = sock.recv(length - 1 - len(body))
        if not chunk:
            raise ConnectionError("closed inside a packet")
        body += chunk
    return body[: length - 1 - padding]


def decode_kexinit(payload: bytes) -> dict[str, list[str]]:
    if payload[0] != 20:
        raise ValueError(f"first packet is message {payload[0]}, not KEXINIT")
    pos, lists = 17, []
    for _ in range(10):
        (size,) = struct.unpack_from(">I", payload, pos)
        lists.append(payload[pos + 4: pos + 4 + size].decode().split(",") if size else [])
        pos += 4 + size
    return dict(zip(FIELDS + ("lang c2s", "lang s2c"), lists))


def capture(argv: list[str], timeout: float = 20.0, debug: bool = False) -> dict[str, list[str]]:
    """Run ``argv`` (with ``{port}`` filled in) against a one-shot listener; its KEXINIT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(timeout)
    port = server.getsockname()[1]
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], stdout=subprocess.DEVNULL,
                            stderr=None if debug else subprocess.DEVNULL, cwd=tempfile.gettempdir())
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            conn.sendall(BANNER)
            banner = b""
            while not banner.endswith(b"\n"):
                banner += conn.recv(1)
            result = decode_kexinit(_read_packet(conn))
            result["banner"] = [banner.decode(errors="replace").strip()]
            return result
    finally:
        server.close()
        threading.Timer(0, proc.kill).start()
        proc.wait()


def server_lists() -> dict[str, list[str]]:
    """The fleet's sshd lists (``sshd -T``, an ed25519 host key only)."""
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        out = subprocess.run(["/usr/sbin/sshd", "-T", "-f", "/dev/null", "-h", str(key)], capture_output=True,
                             text=True, check=True).stdout
    config = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    compression = ["none", "zlib@openssh.com"] if config.get("compression") in ("yes", "delayed") else ["none"]
    return {"kex": config["kexalgorithms"].split(","), "host key": ["ssh-ed25519"],
            "cipher c2s": config["ciphers"].split(","), "cipher s2c": config["ciphers"].split(","),
            "mac c2s": config["macs"].split(","), "mac s2c": config["macs"].split(","),
            "compression c2s": compression, "compression s2c": compression}


def negotiate(client: dict[str, list[str]], server: dict[str, list[str]], aead: set[str]) -> dict[str, str]:
    chosen = {f: next((a for a in client[f] if a in server[f]), "NONE") for f in FIELDS}
    for direction in ("c2s", "s2c"):
        if chosen[f"cipher {direction}"] in aead:
            chosen[f"mac {direction}"] = "(AEAD)"
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.kexinit_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="hussh,upstream,pssh,ssh")
    parser.add_argument("--readme", action="store_true", help="write the table into scale/README.md")
    args = parser.parse_args(argv)
    server = server_lists()
    aead = {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}
    rows = []
    for name in args.clients.split(","):
        if name == "ssh":
            command = ["ssh", "-p", "{port}", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                       "-o", "UserKnownHostsFile=/dev/null", "u@127.0.0.1", "true"]
        else:
            packages, code = CLIENTS[name]
            command = [ensure_venv(name, packages), "-c", code.format(root=str(SCALE.parent), port="{port}")]
        print(f"[probe] {name}", file=sys.stderr, flush=True)
        offered = capture(command)
        rows.append((name, offered, negotiate(offered, server, aead)))
    text = []
    for name, offered, chosen in rows:
        text.append(f"{name} ({offered['banner'][0]}):")
        for f in FIELDS:
            text.append(f"  {f:<16} negotiated {chosen[f]:<32} offered first: {', '.join(offered[f][:4])}")
    print("\n".join(text))
    if args.readme:
        write_readme("negotiated", f"Generated by `python -m scale.kexinit_probe {' '.join(sys.argv[1:])}` on "
                     f"{time.strftime('%Y-%m-%d')} against this machine's sshd lists (ed25519 host key only, as the "
                     "loopback fleet):\n\n```text\n" + "\n".join(text) + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
