"""What a new user tripped on (issue 22, item 7 and "What went wrong"), each against real sshd."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest
import uvloop

from clirun import env, hussh
from conftest import TEST_PORT
from hussh import _asyncssh_internals as internals
from hussh.hostlist import fold
from hussh.testing import KEY_USER

# ----------------------------------------------------------------------------- | head


@pytest.mark.hussh_fleet(200)
@pytest.mark.parametrize("mode", [[], ["--json"]])
def test_pipe_into_head_exits_141_without_a_word_on_stderr(hussh_fleet, mode):
    """The caller dies of SIGPIPE; its workers see end of file mid-connect and stop without a traceback."""
    fleet = hussh_fleet.fleet
    argv = [sys.executable, "-m", "hussh", "run", "-w", fold([e.host for e in fleet.endpoints]), "-l", KEY_USER,
            "-i", str(fleet.client_key), "--port", str(fleet.port), *mode, "seq 1000"]
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {shlex.join(argv)} | head -2"], capture_output=True,
                          text=True, timeout=60, env=env(), stdin=subprocess.DEVNULL)
    assert len(done.stdout.splitlines()) == 2
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")


def test_a_flush_for_a_transport_closed_by_a_cancelled_connect_is_a_no_op():
    """uvloop closes the transport of a connect cancelled as the socket opens without marking it closing;
    the version string asyncssh queued in ``connection_made`` must not be written to it."""
    async def main() -> list[dict[str, object]]:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        options = asyncssh.SSHClientConnectionOptions(known_hosts=None, client_keys=None, agent_path=None)
        options.waiter = loop.create_future()
        build = internals.connection_factory(loop, options, password_only=False)
        built: list[internals.FleetConnection] = []

        def factory() -> internals.FleetConnection:
            conn = build()
            assert isinstance(conn, internals.FleetConnection)
            built.append(conn)
            made = conn.connection_made

            def connection_made(transport: asyncio.BaseTransport) -> None:
                task.cancel()  # the caller goes away just as the socket opens
                made(transport)
            conn.connection_made = connection_made  # type: ignore[method-assign]
            return conn

        with socket.create_server(("127.0.0.1", 0)) as server:
            task = asyncio.create_task(loop.create_connection(factory, *server.getsockname()[:2]))
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):  # the flush runs on a following loop turn
                if built and built[0]._unsent is None:
                    break
                await asyncio.sleep(0)
        assert built and built[0]._unsent is None
        assert repr(built[0]._transport).startswith("<TCPTransport closed=True")
        return errors

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(main(), 30)) == []


# ----------------------------------------------------------------------------- hussh fleet down, then up

FLEET_OCTET = 86  # of this file's command-line fleets: apart from the session's (77) and the plugin tests'


def fleet_cli(*arguments: str, state: Path) -> subprocess.CompletedProcess[str]:
    """``hussh fleet ...`` with its records in ``state`` (and the test's private HOME)."""
    return hussh("fleet", *arguments, timeout=120, XDG_RUNTIME_DIR=str(state))


def fleet_up(state: Path) -> dict[str, str]:
    up = fleet_cli("up", "3", "--json", "--port", str(TEST_PORT), "--second-octet", str(FLEET_OCTET), state=state)
    assert up.returncode == 0, up.stderr
    return json.loads(up.stdout)


def run_by_address(info: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``hussh run`` on the fleet's addresses as a user would, recording keys in ~/.ssh/known_hosts."""
    hosts = [line.rsplit(":", 1)[0] for line in Path(info["hosts"]).read_text().split()]
    return hussh("run", "-w", fold(hosts), "--port", str(TEST_PORT), "-l", info["key_user"], "-i", info["key"],
                 "--connect-timeout", "10", "id -un")


def test_fleet_down_then_up_keeps_its_host_keys(tmp_path, isolated_home):
    known_hosts = isolated_home / ".ssh" / "known_hosts"
    info = fleet_up(tmp_path)
    try:
        first = run_by_address(info)
        assert first.returncode == 0, first.stderr
        recorded = known_hosts.read_text()
        assert len(recorded.splitlines()) == 3
    finally:
        assert fleet_cli("down", state=tmp_path).returncode == 0
    info = fleet_up(tmp_path)
    try:
        again = run_by_address(info)
        assert again.returncode == 0, again.stderr  # not HostKeyError: the same keys as before
        assert known_hosts.read_text() == recorded
    finally:
        assert fleet_cli("down", state=tmp_path).returncode == 0
    store = Path(info["host_keys"])
    assert store.is_relative_to(isolated_home / ".local" / "state" / "hussh")
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert [stat.S_IMODE(key.stat().st_mode) for key in store.iterdir()] == [0o600]  # 3 endpoints, one sshd


def test_fleet_ssh_config_leaves_the_users_known_hosts_alone(tmp_path, isolated_home):
    info = fleet_up(tmp_path)
    try:
        config = fleet_cli("ssh-config", state=tmp_path)
        assert config.returncode == 0 and config.stdout == Path(info["ssh_config"]).read_text()
        blocks = re.findall(r"^Host (\S+) (\S+)\n((?:    .*\n)+)", config.stdout, re.M)
        assert [alias for alias, _, _ in blocks] == ["fleet1", "fleet2", "fleet3"]
        for _, _, options in blocks:
            assert f"    UserKnownHostsFile {info['known_hosts']}\n" in options
            assert "    StrictHostKeyChecking yes\n" in options and f"    User {info['key_user']}\n" in options
        path = tmp_path / "fleet.conf"
        path.write_text(config.stdout)
        ran = hussh("run", "-F", str(path), "-w", "fleet[1-3]", "id -un")
        assert ran.returncode == 0, ran.stderr
        assert sorted(ran.stdout.splitlines()) == [f"fleet{n}: {info['key_user']}" for n in (1, 2, 3)]
        ssh = subprocess.run(["ssh", "-F", str(path), "-o", "BatchMode=yes", "fleet2", "id -un"],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert (ssh.returncode, ssh.stdout) == (0, f"{info['key_user']}\n"), ssh.stderr
    finally:
        assert fleet_cli("down", state=tmp_path).returncode == 0
    assert not (isolated_home / ".ssh" / "known_hosts").exists()


def test_fleet_up_refuses_kept_host_keys_others_may_read(tmp_path, isolated_home):
    info = fleet_up(tmp_path)
    assert fleet_cli("down", state=tmp_path).returncode == 0
    store = Path(info["host_keys"])
    store.chmod(0o755)
    refused = fleet_cli("up", "3", "--port", str(TEST_PORT), "--second-octet", str(FLEET_OCTET), state=tmp_path)
    if refused.returncode == 0:  # the defence is gone: leave no fleet up behind the failure
        fleet_cli("down", state=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: kept host keys {store} belongs to uid {os.getuid()} with mode 0755")
    assert fleet_cli("hosts", state=tmp_path).stderr == "error: no fleet is up: hussh fleet up N\n"
