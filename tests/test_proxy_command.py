"""ProxyCommand: the command's stdin and stdout carry the SSH connection, its stderr stays apart from
them (``ssh -v -W`` and friends talk there throughout), and a command that ends before the handshake
is named in the error, with its exit status and the last thing it said."""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

import hussh
from hussh import Connection
from hussh.aio import AsyncConnection
from hussh.testing import PASSWORD, PASSWORD_USER

CHATTY_RELAY = """
import os, selectors, socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
selector = selectors.DefaultSelector()
selector.register(0, selectors.EVENT_READ)
selector.register(sock, selectors.EVENT_READ)
relayed = 0
while True:
    for key, _ in selector.select():
        data = os.read(0, 65536) if key.fileobj == 0 else sock.recv(65536)
        if not data:
            sys.exit(0)
        if key.fileobj == 0:
            sock.sendall(data)
        else:
            os.write(1, data)
        relayed += 1
        os.write(2, f"debug1: relayed chunk {relayed}\\n".encode())  # as `ssh -v -W` talks on stderr
"""


@pytest.fixture
def chatty_relay(tmp_path: Path) -> str:
    """A ProxyCommand relaying to %h:%p that writes a line to stderr after every chunk it relays."""
    script = tmp_path / "chatty_relay.py"
    script.write_text(CHATTY_RELAY)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} %h %p"


def test_a_proxy_commands_stderr_is_not_mixed_into_the_connection(fleet, chatty_relay):
    """Lines on the command's stderr after the server's banner would corrupt the SSH packets if read
    as part of the stream (asyncssh's own ProxyCommand tunnel does that)."""
    with Connection(fleet.addresses[0], port=fleet.port, username=PASSWORD_USER, password=PASSWORD,
                    proxy_command=chatty_relay, ssh_config=False) as conn:
        assert conn.execute("echo through the proxy").stdout == "through the proxy\n"


def test_async_proxy_commands_stderr_is_not_mixed_into_the_connection(fleet, chatty_relay):
    async def body() -> str:
        async with AsyncConnection(fleet.addresses[1], port=fleet.port, username=PASSWORD_USER, password=PASSWORD,
                                   proxy_command=chatty_relay, ssh_config=False) as conn:
            return (await conn.execute("echo async through the proxy")).stdout

    assert asyncio.run(body()) == "async through the proxy\n"


def test_a_proxy_command_that_exits_is_named_with_its_status_and_last_words(caplog):
    """What ``ssh -W`` prints before giving up (here: refused by the bastion) is the error's reason,
    quoted with control characters escaped; all it said is logged at debug level."""
    said = "printf 'bastion: Permission denied (publickey).\\033]0;x\\007\\n' >&2; exit 255"
    with caplog.at_level(logging.DEBUG, logger="hussh"), pytest.raises(hussh.ConnectError) as caught:
        Connection("127.0.0.1", port=22, username=PASSWORD_USER, password=PASSWORD, ssh_config=False,
                   proxy_command=f"sh -c {shlex.quote(said)}")
    message = str(caught.value)
    assert message.startswith("127.0.0.1:22: the SSH handshake ended: the ProxyCommand 'sh' exited with status 255; "
                              "it said: 'bastion: Permission denied (publickey).\\x1b]0;x\\x07'"), message
    assert "\x1b" not in message
    assert "Permission denied (publickey)" in caplog.text


def test_a_proxy_command_that_closes_its_output_and_lingers_is_named_and_killed(caplog):
    """A command that stops relaying without exiting ends the connection too, and is killed."""
    lingers = ("import os, sys, time; os.closerange(3, 4096); os.close(0); os.close(1); "  # every copy of stdout
               "sys.stderr.write(f'pid {os.getpid()}\\nclosing my output\\n'); sys.stderr.flush(); time.sleep(60)")
    with caplog.at_level(logging.DEBUG, logger="hussh"), pytest.raises(
            hussh.ConnectError, match=r"the ProxyCommand '.*' closed its output; it said: 'closing my output'"):
        Connection("127.0.0.1", port=22, username=PASSWORD_USER, password=PASSWORD, ssh_config=False,
                   proxy_command=shlex.join([sys.executable, "-c", lingers]))
    pids = [int(pid) for pid in re.findall(r"pid (\d+)", caplog.text)]
    assert pids
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _running(pid)]


def _running(pid: int) -> bool:
    """Whether ``pid`` is alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between the listing and the read
        return False
