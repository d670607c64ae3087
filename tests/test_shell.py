"""Interactive shells (blocking ``InteractiveShell``, ``AsyncInteractiveShell``) against real sshd.

Timings asserted here are upstream hussh's, measured: the async ``read()`` waits up to 2 s for output
to start and returns at its first 50 ms pause. Every test bounds its waits.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import hussh
from hussh import Connection, InteractiveShell
from hussh.aio import AsyncConnection, AsyncInteractiveShell
from hussh.testing import PASSWORD_USER


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[2]


@pytest.fixture
def conn(host, creds):
    """Commands and shells bounded to 20 s (milliseconds here), so a regression fails fast instead of hanging."""
    connection = Connection(host, **creds, timeout=20_000)
    try:
        yield connection
    finally:
        connection.close()


def test_state_persists_and_result_is_set_when_the_block_ends(conn, remote_dir):
    with conn.shell() as shell:
        assert isinstance(shell, InteractiveShell) and shell.result is None
        shell.send("export GREETING='hello'")
        shell.send("echo $GREETING")
        shell.send(f"cd {remote_dir} && mkdir -p sub && cd sub")
        shell.send("pwd")
        shell.send("echo oops >&2; exit 3")
        shell.send("echo never")
    assert shell.result == hussh.SSHResult(f"hello\n{remote_dir}/sub\n", "oops\n", 3)


def test_without_pty_there_is_no_echo_and_lines_end_in_newline(conn):
    with conn.shell(pty=False) as shell:
        shell.send("echo one")
        shell.send("printf two", add_newline=False)
        shell.send("")
    assert shell.result.stdout == "one\ntwo"


def test_pty_echoes_input_uses_crlf_and_merges_stderr(conn):
    with conn.shell(pty=True) as shell:
        shell.send("echo T=$TERM; stty size")
        shell.send("echo to-stderr >&2")
    out = shell.result.stdout
    assert "echo T=$TERM; stty size\r\n" in out  # the terminal echoes what was typed
    assert "T=xterm\r\n24 80\r\n" in out
    assert "to-stderr\r\n" in out and shell.result.stderr == ""
    assert "\n" not in out.replace("\r\n", "")
    assert shell.result.status == 0


def test_pty_exit_status_is_reported(conn):
    with conn.shell(pty=True) as shell:
        shell.send("exit 7")
    assert shell.result.status == 7


def test_read_sends_eof_and_later_sends_fail(conn):
    shell = conn.shell()
    shell.send("echo a")
    assert shell.read() == hussh.SSHResult("a\n", "", 0)
    with pytest.raises(BrokenPipeError, match="input is closed"):
        shell.send("echo b")
    with shell:
        pass
    assert shell.result == hussh.SSHResult("", "", 0)  # everything was already read


def test_read_with_a_pty_does_not_hang(conn):
    shell = conn.shell(pty=True)
    shell.send("echo hi")
    started = time.monotonic()
    result = shell.read()  # a terminal ignores EOF: read() types ``exit`` for it
    assert time.monotonic() - started < 10
    assert "hi\r\n" in result.stdout and result.status == 0


def test_exception_in_the_block_still_collects_the_output(conn):
    with pytest.raises(KeyError):
        with conn.shell() as shell:
            shell.send("echo kept")
            raise KeyError("boom")
    assert shell.result == hussh.SSHResult("kept\n", "", 0)


def test_exiting_early_with_close_does_not_wait_for_the_command(conn):
    started = time.monotonic()
    shell = conn.shell()
    shell.send("sleep 30")
    shell.close()
    assert time.monotonic() - started < 5
    assert shell.result is None
    assert conn.execute("echo alive").stdout == "alive\n"


@pytest.mark.parametrize("pty", [False, True])
def test_server_hanging_up_inside_the_shell_returns_at_once(conn, pty):
    started = time.monotonic()
    with conn.shell(pty=pty) as shell:
        shell.send("kill -9 $PPID")  # the session's sshd process: the server drops the connection
    assert time.monotonic() - started < 10
    assert shell.result.status == -1
    assert "ConnectionLost" in shell.result.stderr
    assert conn.execute("echo reconnected").stdout == "reconnected\n"


def test_shell_killed_by_a_signal_reports_128_plus_signal(conn):
    with conn.shell() as shell:
        shell.send("kill -9 $$")
    assert shell.result.status == 128 + 9


def test_connection_timeout_bounds_the_blocking_read(host, creds):
    with Connection(host, **{**creds, "timeout": 800}) as conn:  # milliseconds
        started = time.monotonic()
        shell = conn.shell()
        shell.send("echo partial; sleep 30")
        with pytest.raises(hussh.CommandTimeout, match="hung up") as caught:
            shell.read()
        assert time.monotonic() - started < 10
        assert caught.value.result == hussh.SSHResult("partial\n", "", -1)


def _running(marker: Path) -> bool:
    """Whether a process whose command line names ``marker`` still runs (the fleet runs on this machine)."""
    return subprocess.run(["pgrep", "-f", str(marker)], capture_output=True).returncode == 0


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("pty", [False, True])
def test_leaving_the_block_while_a_command_runs_hangs_up_and_keeps_the_result(host, creds, remote_dir, pty):
    """Upstream's test_hangup_shell_context: ``tail -f`` outlives the timeout; the block ends without an
    exception, ``result`` keeps what the shell said, and the command is gone."""
    marker = remote_dir / "followed"
    marker.touch()
    with Connection(host, **{**creds, "timeout": 3000}) as conn:  # milliseconds, as upstream's test
        with conn.shell(pty=pty) as shell:
            shell.send(f"echo started; tail -f /dev/random {marker}")
            _wait_until(lambda: _running(marker), "following")
        assert shell.result is not None and shell.result.status == -1
        assert "started" in shell.result.stdout
        assert "CommandTimeout: " in shell.result.stderr and "hung up" in shell.result.stderr
        _wait_until(lambda: not _running(marker), "hung up")
        assert conn.execute("echo alive").stdout == "alive\n"


def test_shell_output_above_max_output_raises_with_the_first_bytes(host, creds):
    async def body():
        async with AsyncConnection(host, **creds, max_output=1000) as conn:
            shell = await conn.shell()
            await shell.send("head -c 100000 /dev/zero | tr '\\0' x")
            with pytest.raises(hussh.OutputLimitExceeded) as caught:
                await shell.finish()
            return caught.value.result

    result = run(body())
    assert 1000 <= len(result.stdout) < 100000 and set(result.stdout) == {"x"}
    assert result.status == -1


# --- async ---------------------------------------------------------------------------------

def test_async_shell_runs_several_send_read_cycles(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                assert isinstance(shell, AsyncInteractiveShell)
                await shell.send("whoami")
                first = await shell.read()
                await shell.send("cd /tmp")
                await shell.send("pwd")
                second = await shell.read()
                await shell.send("echo err >&2")
                third = await shell.read()
                return first, second, third

    first, second, third = run(body())
    assert first == hussh.SSHResult(f"{PASSWORD_USER}\n", "", 0)
    assert second == hussh.SSHResult("/tmp\n", "", 0)
    assert third == hussh.SSHResult("", "err\n", 0)


def test_async_read_waits_two_seconds_for_silence_then_returns_empty(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                await shell.send("true")
                started = time.monotonic()
                result = await shell.read()
                return result, time.monotonic() - started

    result, elapsed = run(body())
    assert result == hussh.SSHResult("", "", 0)
    assert 1.9 <= elapsed < 4


def test_async_read_returns_at_the_first_pause_and_keeps_the_rest(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                await shell.send("echo a; sleep 0.5; echo b")
                started = time.monotonic()
                first = await shell.read()
                took = time.monotonic() - started
                second = await shell.read()
                return first, took, second

    first, took, second = run(body())
    assert first.stdout == "a\n" and took < 0.45
    assert second.stdout == "b\n"


def test_async_read_timeout_waits_longer_for_slow_output(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                await shell.send("sleep 2.5; echo slow")
                return await shell.read(timeout=10)

    assert run(body()).stdout == "slow\n"


def test_async_read_keeps_a_split_utf8_character_for_the_next_read(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                await shell.send("printf 'a\\303'; sleep 0.4; printf '\\274\\n'")
                return await shell.read(), await shell.read()

    first, second = run(body())
    assert first.stdout == "a" and second.stdout == "ü\n"


def test_async_read_after_exit_reports_the_status_without_waiting(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell() as shell:
                await shell.send("echo bye; exit 4")
                last = await shell.read()
                started = time.monotonic()
                after = await shell.read()
                took = time.monotonic() - started
                with pytest.raises(BrokenPipeError):
                    await shell.send("echo again")
                return last, after, took

    last, after, took = run(body())
    assert last == hussh.SSHResult("bye\n", "", 4)
    assert after == hussh.SSHResult("", "", 4) and took < 0.5


def test_async_pty_shell_shows_echo_and_prompt(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell(pty=True) as shell:
                await shell.send("echo hi")
                return await shell.read()

    result = run(body())
    assert result.stdout.startswith("echo hi\r\n") and "hi\r\n" in result.stdout[9:]
    assert result.status == 0


@pytest.mark.parametrize("pty", [False, True])
def test_async_server_hang_up_ends_reads_and_exit_at_once(host, creds, pty):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            started = time.monotonic()
            async with await conn.shell(pty=pty) as shell:
                await shell.send("kill -9 $PPID")
                result = await shell.read(timeout=10)
            took = time.monotonic() - started
            again = await conn.execute("echo reconnected")
            return result, took, again

    result, took, again = run(body())
    assert result.status == -1 and "ConnectionLost" in result.stderr
    assert took < 5
    assert again.stdout == "reconnected\n"


@pytest.mark.parametrize("pty", [False, True])
def test_async_leaving_the_block_hangs_up_a_running_command(host, creds, remote_dir, pty):
    marker = remote_dir / "followed"
    marker.touch()

    async def body() -> str:
        async with AsyncConnection(host, **creds) as conn:
            async with await conn.shell(pty=pty) as shell:
                await shell.send(f"tail -f /dev/random {marker}")
                await asyncio.to_thread(_wait_until, lambda: _running(marker), "following")
            await asyncio.to_thread(_wait_until, lambda: not _running(marker), "hung up")
            return (await conn.execute("echo alive")).stdout

    assert run(body()) == "alive\n"


def test_async_leaving_early_does_not_wait_for_a_running_command(host, creds):
    async def body():
        async with AsyncConnection(host, **creds) as conn:
            started = time.monotonic()
            async with await conn.shell() as shell:
                await shell.send("sleep 30")
            took = time.monotonic() - started
            return took, await conn.execute("echo alive")

    took, alive = run(body())
    assert took < 1
    assert alive.stdout == "alive\n"
