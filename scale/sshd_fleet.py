"""A fleet of real OpenSSH ``sshd`` processes on loopback addresses, for tests, demo and benchmarks.

Each sshd process listens on up to 16 distinct 127.x.y.z addresses (OpenSSH 9.2's limit per
process) with its own host key, so N hosts need ceil(N / 16) processes. Logins go to two
dedicated users whose shell is ``/bin/sh`` with no rc files and whose password hash is cheap,
so the fleet's own CPU cost per login stays small and does not drown the client's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PASSWORD_USER = "hussh"
PASSWORD = "hussh"
KEY_USER = "hussh-key"
KEY_PASSPHRASE = "hussh-passphrase"
ADDRESSES_PER_SSHD = 16  # OpenSSH 9.2 refuses more ListenAddress sockets per process.


def loopback_addresses(count: int, second_octet: int = 77) -> list[str]:
    """``count`` distinct loopback addresses 127.<second_octet>.x.y (Linux routes all of 127/8 to lo)."""
    return [f"127.{second_octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ensure_test_users() -> None:
    """Create the fleet's login users once per machine (idempotent; needs root)."""
    for user in (PASSWORD_USER, KEY_USER):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            _run("useradd", "--create-home", "--shell", "/bin/sh", user)
    # "*": no password login, yet not locked ("!"), which would refuse key logins too under UsePAM no.
    _run("usermod", "-p", "*", KEY_USER)
    # SHA-512 with 1000 rounds: a login costs the server well under a millisecond (yescrypt: ~18 ms).
    subprocess.run(
        ["chpasswd", "-c", "SHA512", "-s", "1000"],
        input=f"{PASSWORD_USER}:{PASSWORD}\n".encode(),
        check=True,
    )


def _keygen(path: Path, key_type: str = "ed25519", passphrase: str = "") -> Path:
    _run("ssh-keygen", "-q", "-t", key_type, "-N", passphrase, "-C", path.name, "-f", str(path))
    return path


@dataclass
class SSHDFleet:
    """Start ``len(addresses)`` SSH endpoints on ``port``; ``with SSHDFleet(...) as fleet:`` stops them after."""

    addresses: list[str]
    port: int = 2222
    per_process: int = ADDRESSES_PER_SSHD
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hussh-fleet-")))
    processes: list[subprocess.Popen] = field(default_factory=list, init=False)
    host_keys: dict[str, Path] = field(default_factory=dict, init=False)

    @property
    def client_key(self) -> Path:
        """Unencrypted ed25519 private key authorized for ``KEY_USER``."""
        return self.workdir / "client_ed25519"

    @property
    def encrypted_client_key(self) -> Path:
        """RSA private key encrypted with ``KEY_PASSPHRASE``, authorized for ``KEY_USER``."""
        return self.workdir / "client_rsa_encrypted"

    def host_public_key(self, address: str) -> str:
        """The ``type base64`` public host key that ``address`` presents."""
        return " ".join(self.host_keys[address].with_suffix(".pub").read_text().split()[:2])

    def known_hosts_line(self, address: str) -> str:
        host = address if self.port == 22 else f"[{address}]:{self.port}"
        return f"{host} {self.host_public_key(address)}\n"

    def start(self, timeout: float = 60.0) -> "SSHDFleet":
        ensure_test_users()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._write_client_keys()
        for index in range(0, len(self.addresses), self.per_process):
            self._start_one(index // self.per_process, self.addresses[index : index + self.per_process])
        self.wait_ready(timeout)
        return self

    def _write_client_keys(self) -> None:
        keys_dir = self.workdir / "authorized_keys"
        keys_dir.mkdir(exist_ok=True)
        self.workdir.chmod(0o755)  # sshd reads authorized_keys as the login user
        _keygen(self.client_key)
        _keygen(self.encrypted_client_key, "rsa", KEY_PASSPHRASE)
        public = [Path(f"{k}.pub").read_text() for k in (self.client_key, self.encrypted_client_key)]
        (keys_dir / KEY_USER).write_text("".join(public))

    def _start_one(self, number: int, addresses: list[str]) -> None:
        host_key = _keygen(self.workdir / f"host_ed25519_{number}")
        for address in addresses:
            self.host_keys[address] = host_key
        config = self.workdir / f"sshd_{number}.conf"
        listen = "".join(f"ListenAddress {a}\n" for a in addresses)
        config.write_text(
            f"Port {self.port}\n{listen}HostKey {host_key}\nPidFile none\n"
            "UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
            f"PubkeyAuthentication yes\nAuthorizedKeysFile {self.workdir}/authorized_keys/%u\n"
            "StrictModes no\nMaxStartups 100000\nMaxSessions 1000\nMaxAuthTries 20\n"
            "LoginGraceTime 120\nUseDNS no\nPermitRootLogin no\nPrintMotd no\nPrintLastLog no\n"
            f"AllowUsers {PASSWORD_USER} {KEY_USER}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        log = open(self.workdir / f"sshd_{number}.log", "wb")
        self.processes.append(
            subprocess.Popen([SSHD, "-D", "-e", "-r", "-f", str(config)], stdout=log, stderr=log, start_new_session=True)
        )
        log.close()

    def wait_ready(self, timeout: float) -> None:
        """Block until every address answers with an SSH banner, or raise ``RuntimeError``."""
        deadline = time.monotonic() + timeout
        pending = list(self.addresses)
        while pending:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd exited with {proc.returncode}; see logs in {self.workdir}")
            pending = [a for a in pending if not _answers(a, self.port)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} sshd endpoints not ready after {timeout}s, e.g. {pending[0]}")
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "SSHDFleet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False
