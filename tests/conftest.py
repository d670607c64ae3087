"""Shared fixtures: a real loopback sshd fleet, credentials, a silent TCP listener, an isolated HOME."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scale.sshd_fleet import KEY_USER, PASSWORD, PASSWORD_USER, SSHDFleet, loopback_addresses  # noqa: E402

@pytest.fixture(scope="session")
def fleet():
    """Four real sshd processes, one per address 127.77.0.1-4, each with its own host key."""
    port = int(os.environ.get("HUSSH_TEST_PORT", "2222"))  # lets two test runs share the machine
    sshd_fleet = SSHDFleet(loopback_addresses(4, second_octet=77), port=port, per_process=1)
    try:
        sshd_fleet.start(timeout=30)
    except BaseException:
        sshd_fleet.stop()
        raise
    try:
        yield sshd_fleet
    finally:
        sshd_fleet.stop()


@pytest.fixture
def creds(fleet) -> dict[str, object]:
    return dict(username=PASSWORD_USER, password=PASSWORD, port=fleet.port)


@pytest.fixture
def key_creds(fleet) -> dict[str, object]:
    return dict(username=KEY_USER, private_key=str(fleet.client_key), port=fleet.port)


class _Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.server.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.getsockname()[:2]

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.server.close()
        for client in self.accepted:
            client.close()


@pytest.fixture(scope="session")
def blackhole():
    hole = _Blackhole()
    try:
        yield hole.address
    finally:
        hole.close()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh empty HOME (so ``~/.ssh`` is empty) and no ssh-agent, for every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def remote_dir():
    """A fresh directory that the fleet's login users can write (the fleet runs on this machine)."""
    path = Path(f"/tmp/hussh-test-{uuid.uuid4().hex[:12]}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
