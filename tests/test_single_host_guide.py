"""The examples of the single-host guides (blocking ``Connection``, ``AsyncConnection``), run against the fleet.

Each test is one example in our own words: host names, users and credentials are the fleet's;
paths live in a fresh ``remote_dir``; services the fleet lacks (systemd, syslog, ``myapp``) are
replaced by shell commands with the same effect; long sleeps and timeouts are scaled down, and
fixed waits for logs become reads of what was written. The printed output is then checked.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from hussh import AuthenticationError, Connection
from hussh.aio import AsyncConnection
from hussh.testing import KEY_PASSPHRASE, KEY_USER, PASSWORD, PASSWORD_USER


@pytest.fixture
def host(fleet) -> str:
    return fleet.addresses[0]


@pytest.fixture
def port(fleet) -> int:
    return fleet.port


@pytest.fixture
def conn(host, port):
    connection = Connection(host=host, port=port, username=PASSWORD_USER, password=PASSWORD)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def agent(fleet, tmp_path, monkeypatch):
    """An ssh-agent holding the fleet's client key, as ``SSH_AUTH_SOCK`` (``isolated_home`` unset it)."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(fleet.client_key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True, timeout=10)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def writable(path: Path, text: str = "") -> Path:
    path.write_text(text)
    path.chmod(0o666)
    return path


# --- Synchronous guide: authentication and lifecycle ------------------------------------------------

def test_password_authentication(host, port):
    conn = Connection(host=host, username=PASSWORD_USER, password=PASSWORD, port=port)
    assert conn.execute("whoami").stdout == f"{PASSWORD_USER}\n"
    conn.close()
    # Leaving out the username logs in as root; the fleet refuses root, so the attempt shows it.
    with pytest.raises(AuthenticationError, match=f"root@{host}"):
        Connection(host=host, password=PASSWORD, port=port)


def test_key_based_authentication(fleet, host, port):
    conn = Connection(host=host, private_key=str(fleet.client_key), username=KEY_USER, port=port)
    assert conn.execute("whoami").stdout == f"{KEY_USER}\n"
    conn.close()
    conn = Connection(host=host, private_key=str(fleet.encrypted_client_key), password=KEY_PASSPHRASE,
                      username=KEY_USER, port=port)
    assert conn.execute("whoami").stdout == f"{KEY_USER}\n"
    conn.close()


def test_ssh_agent_authentication(agent, host, port):
    conn = Connection(host, username=KEY_USER, port=port)
    assert conn.execute("whoami").stdout == f"{KEY_USER}\n"
    conn.close()


def test_explicit_close(host, port):
    conn = Connection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port)
    assert conn.execute("true").status == 0
    conn.close()
    assert repr(conn).endswith("not connected)")


def test_context_manager(host, port):
    with Connection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
        result = conn.execute("ls")
    assert result.status == 0
    assert repr(conn).endswith("not connected)")


# --- Synchronous guide: executing commands ----------------------------------------------------------

def test_execute_prints_stdout_stderr_status(conn, capsys):
    result = conn.execute("whoami")
    print(result.stdout, result.stderr, result.status)
    assert capsys.readouterr().out == f"{PASSWORD_USER}\n  0\n"


def test_execute_examples(conn, remote_dir, capsys):
    (remote_dir / "syslog").write_text("".join(f"line {n}\n" for n in range(150)))
    result = conn.execute("ls -la /")
    print(result.stdout)
    result = conn.execute("systemctl status nginx")  # no systemd in the fleet: the failure branch
    if result.status == 0:
        print("nginx is running")
    else:
        print(f"nginx check failed: {result.stderr}")
    result = conn.execute(f"cd {remote_dir} && tail -n 100 syslog")
    out = capsys.readouterr().out
    assert "etc" in out and "nginx check failed: " in out and "nginx is running" not in out
    assert result.stdout.splitlines() == [f"line {n}" for n in range(50, 150)]


# --- Synchronous guide: SFTP, copies between connections, SCP -----------------------------------

@pytest.mark.parametrize("protocol", ["sftp", "scp"])
def test_writing_and_reading_files(conn, remote_dir, tmp_path, capsys, protocol):
    local = tmp_path / "my-file"
    local.write_text("local content\n")
    dest = str(remote_dir / "file")
    write, write_data, read = (getattr(conn, f"{protocol}_{op}") for op in ("write", "write_data", "read"))
    write(local_path=str(local), remote_path=dest)
    assert Path(dest).read_text() == "local content\n"
    write_data(data="Hello there!", remote_path=dest)
    read(remote_path=dest, local_path=str(local))
    assert local.read_text() == "Hello there!"
    contents = read(remote_path=dest)
    print(contents)
    assert capsys.readouterr().out == "Hello there!\n"


def test_copy_files_between_connections(agent, fleet, remote_dir):
    myfile = writable(remote_dir / "myfile.txt", "copied between hosts\n")
    source_conn = Connection(fleet.addresses[0], username=KEY_USER, port=fleet.port)
    dest_conn = Connection(fleet.addresses[1], password=PASSWORD, username=PASSWORD_USER, port=fleet.port)
    # Same path: the fleet's hosts share one filesystem, so this copies the file onto itself.
    source_conn.remote_copy(source_path=str(myfile), dest_conn=dest_conn)
    assert myfile.read_text() == "copied between hosts\n"
    source_conn.remote_copy(
        source_path=str(myfile),
        dest_conn=dest_conn,
        dest_path=str(remote_dir / "tmp-myfile.txt"),
    )
    assert (remote_dir / "tmp-myfile.txt").read_text() == "copied between hosts\n"
    source_conn.close()
    dest_conn.close()


# --- Synchronous guide: tailing files ---------------------------------------------------------------

def test_tailing_a_file(conn, remote_dir, capsys):
    path = writable(remote_dir / "file.txt", "already there\n")
    with conn.tail(str(path)) as tf:
        conn.execute(f"echo 'new line' >> {path}")
        new_content = tf.read()
        print(new_content)
        conn.execute(f"echo 'another line' >> {path}")
    print(tf.contents)
    assert capsys.readouterr().out == "new line\n\nnew line\nanother line\n\n"


def test_tail_use_cases(conn, remote_dir, capsys):
    app_log = writable(remote_dir / "app.log")
    with conn.tail(str(app_log)) as tf:
        conn.execute(f"echo 'myapp restarted' >> {app_log}")  # stands in for: systemctl restart myapp
        print("Startup logs:", tf.read())
    syslog = writable(remote_dir / "syslog")
    with conn.tail(str(syslog)) as tf:
        conn.execute(f"echo 'hussh: Test message from hussh' >> {syslog}")  # stands in for: logger '...'
        if "Test message" in tf.read():
            print("Message logged successfully!")
    assert capsys.readouterr().out == "Startup logs: myapp restarted\n\nMessage logged successfully!\n"


# --- Synchronous guide: interactive shell -----------------------------------------------------------

def test_shell_basic_usage(conn, capsys):
    with conn.shell() as shell:
        shell.send("cd /var/log")
        shell.send("ls -la")
        shell.send("pwd")
    print(shell.result.stdout)
    out = capsys.readouterr().out
    assert "total" in out and out.endswith("/var/log\n\n")


def test_shell_environment_and_directory_persist(conn, remote_dir, capsys):
    with conn.shell() as shell:
        shell.send("export MY_VAR='hello'")
        shell.send("echo $MY_VAR")
        shell.send(f"cd {remote_dir} && mkdir -p test_dir && cd test_dir")
        shell.send("pwd")
    print(shell.result.stdout)
    assert capsys.readouterr().out == f"hello\n{remote_dir}/test_dir\n\n"


def test_shell_runs_a_python_heredoc(conn, capsys):
    with conn.shell() as shell:
        shell.send("python3 << 'EOF'")
        shell.send("import sys")
        shell.send("print(f'Python {sys.version}')")
        shell.send("EOF")
    print(shell.result.stdout)
    assert capsys.readouterr().out.startswith("Python 3.")


# --- Asynchronous guide: authentication, lifecycle, quick start --------------------------------------

def test_async_password_authentication(host, port, capsys):
    async def main():
        async with AsyncConnection(host=host, username=PASSWORD_USER, password=PASSWORD, port=port) as conn:
            result = await conn.execute("whoami")
            print(result.stdout)

    asyncio.run(main())
    assert capsys.readouterr().out == f"{PASSWORD_USER}\n\n"


def test_async_key_based_and_agent_authentication(agent, fleet, host, port):
    async def main():
        users = []
        async with AsyncConnection(host=host, private_key=str(fleet.client_key), username=KEY_USER, port=port) as conn:
            users.append((await conn.execute("whoami")).stdout)
        async with AsyncConnection(
            host=host,
            private_key=str(fleet.encrypted_client_key),
            password=KEY_PASSPHRASE,
            username=KEY_USER,
            port=port,
        ) as conn:
            users.append((await conn.execute("whoami")).stdout)
        async with AsyncConnection(host, username=KEY_USER, port=port) as conn:  # the agent's key
            users.append((await conn.execute("whoami")).stdout)
        return users

    assert asyncio.run(main()) == [f"{KEY_USER}\n"] * 3


def test_async_lifecycle(host, port):
    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            first = await conn.execute("ls")
        conn = AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port)
        await conn.connect()
        try:
            second = await conn.execute("ls")
        finally:
            await conn.close()
        return first.status, second.status, conn.connected

    assert asyncio.run(main()) == (0, 0, False)


def test_async_quickstart(host, port, remote_dir, capsys):
    (remote_dir / "listed-file").touch()

    async def main():
        async with AsyncConnection(host=host, username=PASSWORD_USER, password=PASSWORD, port=port) as conn:
            result = await conn.execute(f"ls {remote_dir}")
        print(result.stdout)

    asyncio.run(main())
    assert capsys.readouterr().out == "listed-file\n\n"


# --- Asynchronous guide: timeouts (scaled down: seconds, not tens of seconds) --------------------------

def test_async_timeouts(host, port, capsys):
    creds = dict(username=PASSWORD_USER, password=PASSWORD, port=port)

    async def main():
        async with AsyncConnection(host=host, timeout=10, **creds) as conn:
            assert (await conn.execute("sleep 0.5")).status == 0  # within the connection's 10 s
        async with AsyncConnection(host=host, timeout=30, **creds) as conn:
            await conn.execute("true")  # stands in for: quick_command
            try:
                await conn.execute("sleep 60", timeout=1)
            except TimeoutError:
                print("Command timed out!")
            await conn.execute("true", timeout=300)  # stands in for: long_running_backup
        async with AsyncConnection(host=host, timeout=10, **creds) as conn:
            try:
                await conn.execute("sleep 20", timeout=1)
            except TimeoutError:
                print("The command took too long!")

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 20
    assert capsys.readouterr().out == "Command timed out!\nThe command took too long!\n"


# --- Asynchronous guide: executing commands --------------------------------------------------------

def test_async_execute(host, port, capsys):
    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            result = await conn.execute("whoami")
            print(result.stdout, result.stderr, result.status)

    asyncio.run(main())
    assert capsys.readouterr().out == f"{PASSWORD_USER}\n  0\n"


def test_async_concurrent_command_execution(fleet, capsys):
    async def check_server(host, password):
        async with AsyncConnection(host=host, password=password, username=PASSWORD_USER, port=fleet.port) as conn:
            result = await conn.execute("uptime")
            return host, result.stdout

    async def main():
        hosts = fleet.addresses[:3]
        tasks = [check_server(host, PASSWORD) for host in hosts]
        results = await asyncio.gather(*tasks)
        for host, uptime in results:
            print(f"{host}: {uptime}")

    asyncio.run(main())
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [line.split(": ")[0] for line in lines] == fleet.addresses[:3]
    assert all("load average" in line for line in lines)


# --- Asynchronous guide: SFTP ----------------------------------------------------------------------

def test_async_sftp(host, port, remote_dir, tmp_path, capsys):
    local = tmp_path / "my-file"
    local.write_text("from here\n")
    dest = str(remote_dir / "file")
    uploads = []
    for n in (1, 2, 3):
        uploads.append(tmp_path / f"file{n}.txt")
        uploads[-1].write_text(f"file {n}\n")

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            await conn.sftp_write(local_path=str(local), remote_path=dest)
            await conn.sftp_write_data(data="Hello there!", remote_path=dest)
            await conn.sftp_read(remote_path=dest, local_path=str(local))
            contents = await conn.sftp_read(remote_path=dest)
            print(contents)
            await asyncio.gather(*(conn.sftp_write(str(p), str(remote_dir / p.name)) for p in uploads))
            files = await conn.sftp_list(str(remote_dir))
            for file in files:
                print(file)

    asyncio.run(main())
    assert local.read_text() == "Hello there!"
    assert capsys.readouterr().out == "Hello there!\nfile\nfile1.txt\nfile2.txt\nfile3.txt\n"
    assert [(remote_dir / p.name).read_text() for p in uploads] == ["file 1\n", "file 2\n", "file 3\n"]


# --- Asynchronous guide: interactive shell -----------------------------------------------------------

def test_async_shell_basic_usage(host, port, remote_dir, capsys):
    (remote_dir / "listed-file").touch()

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with await conn.shell() as shell:
                await shell.send(f"ls {remote_dir}")
                result = await shell.read()
                print(result.stdout)

    asyncio.run(main())
    assert capsys.readouterr().out == "listed-file\n\n"


def test_async_shell_multiple_read_write_cycles(host, port, capsys):
    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with await conn.shell() as shell:
                await shell.send("whoami")
                result = await shell.read()
                print(f"User: {result.stdout.strip()}")
                await shell.send("pwd")
                result = await shell.read()
                print(f"Directory: {result.stdout.strip()}")
                await shell.send("cd /tmp")
                await shell.send("pwd")
                result = await shell.read()
                print(f"New directory: {result.stdout.strip()}")

    asyncio.run(main())
    assert capsys.readouterr().out == f"User: {PASSWORD_USER}\nDirectory: /home/{PASSWORD_USER}\nNew directory: /tmp\n"


def test_async_shell_interactive_session(host, port, remote_dir, capsys):
    bin_dir = remote_dir / "bin"
    bin_dir.mkdir()
    myapp = bin_dir / "myapp"
    myapp.write_text('#!/bin/sh\ncase "$1" in --version) echo "myapp 1.2.3";; status) echo "myapp is up";; esac\n')
    myapp.chmod(0o755)

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with await conn.shell() as shell:
                await shell.send(f"export PATH=$PATH:{bin_dir}")
                await shell.read()
                await shell.send("myapp --version")
                result = await shell.read()
                print(f"App version: {result.stdout}")
                await shell.send("myapp status")
                result = await shell.read()
                print(f"App status: {result.stdout}")

    asyncio.run(main())
    assert capsys.readouterr().out == "App version: myapp 1.2.3\n\nApp status: myapp is up\n\n"


# --- Asynchronous guide: tailing files ---------------------------------------------------------------

def test_async_tailing_a_file(host, port, remote_dir, capsys):
    path = writable(remote_dir / "file.txt", "old\n")

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with conn.tail(str(path)) as tf:
                await conn.execute(f"echo 'test' >> {path}")
                content = await tf.read()
                print(content)
            print(tf.contents)

    asyncio.run(main())
    assert capsys.readouterr().out == "test\n\ntest\n\n"


def test_async_monitoring_logs_during_operations(host, port, remote_dir, capsys):
    app_log = writable(remote_dir / "app.log")

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with conn.tail(str(app_log)) as tf:
                # stands in for: systemctl restart myapp (what it logs is written before execute returns)
                await conn.execute(f"echo 'myapp: Started successfully' >> {app_log}")
                logs = await tf.read()
                if "Started successfully" in logs:
                    print("Service started OK")
                else:
                    print(f"Startup logs: {logs}")

    asyncio.run(main())
    assert capsys.readouterr().out == "Service started OK\n"


def test_async_concurrent_tailing(host, port, remote_dir, capsys):
    syslog_path = writable(remote_dir / "syslog")
    auth_path = writable(remote_dir / "auth.log")

    async def main():
        async with AsyncConnection(host=host, password=PASSWORD, username=PASSWORD_USER, port=port) as conn:
            async with conn.tail(str(syslog_path)) as syslog:
                async with conn.tail(str(auth_path)) as authlog:
                    # stands in for: sudo -u testuser whoami (which logs to both files)
                    await conn.execute(f"echo 'sudo ran whoami' >> {syslog_path}; "
                                       f"echo 'session opened for testuser' >> {auth_path}")
                    print("Syslog:", await syslog.read())
                    print("Auth log:", await authlog.read())

    asyncio.run(main())
    assert capsys.readouterr().out == "Syslog: sudo ran whoami\n\nAuth log: session opened for testuser\n\n"
