"""What a new user tripped on (issue 22, item 7 and "What went wrong"), each against real sshd."""

from __future__ import annotations

import asyncio
import shlex
import signal
import socket
import subprocess
import sys

import asyncssh
import pytest
import uvloop

from clirun import env
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
            "-i", str(fleet.client_key), "-p", str(fleet.port), *mode, "seq 1000"]
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
