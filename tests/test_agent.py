"""The ssh-agent in every path (workers included), one agent connection per worker, agent forwarding."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import hussh
from hussh import Connection
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER
from sshcheck import whoami


class Agent:
    """A real ``ssh-agent`` in debug mode on a private socket; its log counts client connections."""

    def __init__(self, directory: Path) -> None:
        self.socket = str(directory / "agent.sock")
        self.log = directory / "agent.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["ssh-agent", "-d", "-a", self.socket], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not Path(self.socket).exists():
            assert time.monotonic() < deadline and self.process.poll() is None, self.log.read_text()
            time.sleep(0.02)

    def add(self, key: Path) -> None:
        subprocess.run(["ssh-add", str(key)], env={"SSH_AUTH_SOCK": self.socket}, check=True,
                       capture_output=True, timeout=10)

    def connections(self) -> int:
        return self.log.read_text().count("new_socket: type = CONNECTION")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def agent(fleet, tmp_path, monkeypatch):
    running = Agent(tmp_path)
    running.add(fleet.client_key)
    monkeypatch.setenv("SSH_AUTH_SOCK", running.socket)
    baseline = running.connections()  # ssh-add's own
    running.baseline = baseline  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.stop()


def test_workers_log_in_with_the_agent_over_one_agent_connection_each(fleet, agent):
    hosts = fleet.addresses * 1
    mc = MultiConnection.from_shared_auth(hosts, username=KEY_USER, port=fleet.port, workers=2)
    with mc:
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * len(hosts)
        assert [r.stdout for r in mc.execute("whoami").values()] == [f"{KEY_USER}\n"] * len(hosts)
    assert agent.connections() - agent.baseline == 2  # asyncssh alone opens one per login


def test_single_host_connections_use_the_agent(fleet, agent):
    assert whoami(fleet.addresses[0], username=KEY_USER, port=fleet.port) == KEY_USER
    with Connection(fleet.addresses[1], username=KEY_USER, port=fleet.port) as conn:
        assert conn.execute("whoami").stdout == f"{KEY_USER}\n"


def test_identity_agent_from_the_config(fleet, agent, monkeypatch, tmp_path):
    monkeypatch.delenv("SSH_AUTH_SOCK")
    config = tmp_path / "config"
    config.write_text(f"Host *\n    IdentityAgent {agent.socket}\n    User {KEY_USER}\n    Port {fleet.port}\n")
    assert whoami(fleet.addresses[0], ssh_config=config) == KEY_USER
    config.write_text(f"Host *\n    IdentityAgent none\n    User {KEY_USER}\n    Port {fleet.port}\n")
    monkeypatch.setenv("SSH_AUTH_SOCK", agent.socket)
    with pytest.raises(hussh.AuthenticationError, match="no credentials"):
        whoami(fleet.addresses[0], ssh_config=config)


def test_agent_forwarding_on_request(fleet, agent, tmp_path):
    with Connection(fleet.addresses[0], username=KEY_USER, port=fleet.port, forward_agent=True) as conn:
        listed = conn.execute("ssh-add -l")
    assert listed.status == 0 and "ED25519" in listed.stdout
    with Connection(fleet.addresses[0], username=KEY_USER, port=fleet.port) as conn:
        assert conn.execute("ssh-add -l").status == 2  # no agent over there unless asked
    config = tmp_path / "config"
    config.write_text("Host *\n    ForwardAgent yes\n")
    with MultiConnection.from_shared_auth(fleet.addresses, username=KEY_USER, port=fleet.port,
                                          ssh_config=config) as mc:
        assert all(r.status == 0 and "ED25519" in r.stdout for r in mc.execute("ssh-add -l").values())


def test_an_agent_that_went_away_is_named_in_the_error(fleet, agent):
    agent.stop()
    with pytest.raises(hussh.AuthenticationError, match="ssh-agent"):
        whoami(fleet.addresses[0], username=KEY_USER, port=fleet.port)
