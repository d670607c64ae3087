"""Every way of logging in: password, key file, encrypted key, ssh-agent, default ~/.ssh key."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import asyncssh
import pytest

import hussh
import hussh._connector
from hussh import Connection
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_PASSPHRASE, KEY_USER, PASSWORD_USER
from sshcheck import whoami


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[2]


@pytest.fixture
def ssh_agent(fleet, monkeypatch):
    """A private ssh-agent holding ``fleet.client_key``, exported through SSH_AUTH_SOCK."""
    workdir = Path(tempfile.mkdtemp(prefix="hussh-agent-"))
    sock = workdir / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        deadline = time.monotonic() + 10
        while subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, timeout=10).returncode == 2:
            assert agent.poll() is None, "ssh-agent exited"
            assert time.monotonic() < deadline, "ssh-agent is not answering on its socket"
            time.sleep(0.05)
        subprocess.run(["ssh-add", str(fleet.client_key)], env=env, check=True, capture_output=True, timeout=10)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=5)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def test_password_login(host, creds):
    assert whoami(host, **creds) == PASSWORD_USER


def test_wrong_password_is_an_authentication_error(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=f"{PASSWORD_USER}@{host}:{fleet.port}"):
        whoami(host, username=PASSWORD_USER, password="wrong", port=fleet.port)


def test_private_key_file_login(host, key_creds):
    assert whoami(host, **key_creds) == KEY_USER


def test_private_key_accepts_a_path_object_and_tilde(host, fleet, isolated_home):
    (isolated_home / "keys").mkdir()
    shutil.copy(fleet.client_key, isolated_home / "keys" / "mine")
    assert whoami(host, username=KEY_USER, private_key=Path("~/keys/mine"), port=fleet.port) == KEY_USER


def test_key_is_refused_for_a_user_it_is_not_authorized_for(host, fleet):
    with pytest.raises(hussh.AuthenticationError):
        whoami(host, username=PASSWORD_USER, private_key=fleet.client_key, port=fleet.port)


def test_encrypted_key_with_password_as_passphrase(host, fleet):
    assert whoami(host, username=KEY_USER, private_key=fleet.encrypted_client_key,
                  password=KEY_PASSPHRASE, port=fleet.port) == KEY_USER


def test_encrypted_key_with_the_sync_connection(host, fleet):
    with Connection(host, port=fleet.port, username=KEY_USER, password=KEY_PASSPHRASE,
                    private_key=str(fleet.encrypted_client_key)) as conn:
        assert conn.execute("id -un").stdout == f"{KEY_USER}\n"


def test_encrypted_key_with_a_wrong_passphrase(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=str(fleet.encrypted_client_key)):
        whoami(host, username=KEY_USER, private_key=fleet.encrypted_client_key, password="nope", port=fleet.port)


def test_encrypted_key_without_a_passphrase(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=str(fleet.encrypted_client_key)):
        whoami(host, username=KEY_USER, private_key=fleet.encrypted_client_key, port=fleet.port)


@pytest.fixture
def key_reads(monkeypatch, tmp_path) -> Path:
    """A file that gets one line (the reading pid) per private key read, in any process, from now on."""
    log = tmp_path / "key-reads"
    log.touch()
    read = asyncssh.read_private_key

    def logged(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return read(*args, **kwargs)

    monkeypatch.setattr(asyncssh, "read_private_key", logged)
    monkeypatch.setattr(hussh._connector, "_profiles", {})  # forget profiles earlier tests prepared
    monkeypatch.setattr(hussh._credentials, "_materials", {})  # and the keys they read
    return log


@pytest.mark.parametrize("passphrase, expected", [(KEY_PASSPHRASE, f"{KEY_USER}\n"), ("nope", None)])
def test_a_key_is_read_once_in_the_parent_for_every_worker(fleet, key_reads, passphrase, expected):
    mc = MultiConnection.from_shared_auth(fleet.addresses, username=KEY_USER, password=passphrase, port=fleet.port,
                                          private_key=fleet.encrypted_client_key, workers=2)
    with mc:
        results = mc.execute("id -un")
    if expected is None:  # a wrong passphrase: every host says so, and the bcrypt rounds ran once
        assert all(r.status == -1 and r.stderr.startswith("AuthenticationError: ") for r in results.values())
    else:
        assert [r.stdout for r in results.values()] == [expected] * 4
    assert key_reads.read_text() == f"{os.getpid()}\n"


def test_ssh_agent_login(host, fleet, ssh_agent):
    assert whoami(host, username=KEY_USER, port=fleet.port) == KEY_USER


def test_no_credentials_and_no_agent_or_default_key_is_refused(host, fleet):
    with pytest.raises(hussh.AuthenticationError, match=f"{KEY_USER}@{host}"):
        whoami(host, username=KEY_USER, port=fleet.port)


def test_no_credentials_errors_begin_with_upstreams_words(host, fleet):
    """Upstream's own tests match ``RuntimeError`` on these phrases: async, then blocking; hussh's detail follows."""
    with pytest.raises(RuntimeError, match="^Failed to authenticate with default SSH keys: ") as caught:
        whoami(host, username=KEY_USER, port=fleet.port)
    assert f"no credentials for {KEY_USER}@{host}" in str(caught.value)
    with pytest.raises(hussh.AuthenticationError,
                       match="^Failed to authenticate with ssh-agent and default SSH keys: ") as caught:
        Connection(host, port=fleet.port, username=KEY_USER)
    assert "no ssh-agent (SSH_AUTH_SOCK is not set)" in str(caught.value)


def test_default_key_in_home_ssh(host, fleet, isolated_home):
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    shutil.copy(fleet.client_key, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    assert whoami(host, username=KEY_USER, port=fleet.port) == KEY_USER
    with Connection(host, port=fleet.port, username=KEY_USER) as conn:
        assert conn.execute("id -un").stdout == f"{KEY_USER}\n"


def test_agent_and_default_key_profiles_follow_the_environment(host, fleet, ssh_agent, monkeypatch):
    assert whoami(host, username=KEY_USER, port=fleet.port) == KEY_USER
    monkeypatch.delenv("SSH_AUTH_SOCK")
    with pytest.raises(hussh.AuthenticationError):
        whoami(host, username=KEY_USER, port=fleet.port)
