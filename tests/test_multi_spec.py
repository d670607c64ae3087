"""The examples of spec/multi-connection.md, run as written against the loopback fleet.

Adapted only in host names (the fleet's loopback addresses), credentials and, for tailing, a log
file the fleet can write, where the spec's ``time.sleep(1)`` becomes a wait for the line to be
there; each example's printed output is then checked.
"""

from __future__ import annotations

import pytest

from hussh import Connection
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection, PartialFailureException
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from procs import wait_until


@pytest.fixture
def hosts(fleet) -> list[str]:
    return [f"{address}:{fleet.port}" for address in fleet.addresses]


def shared(hosts: list[str], **kwargs) -> MultiConnection:
    return MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, **kwargs)


def test_overview(hosts, capsys):
    mc = MultiConnection.from_shared_auth(hosts=hosts, username=PASSWORD_USER, password=PASSWORD)
    with mc:
        results = mc.execute("whoami")
        for host, result in results.items():
            print(f"{host}: {result.stdout.strip()}")
    assert capsys.readouterr().out.splitlines() == [f"{h}: {PASSWORD_USER}" for h in hosts]


def test_creating_from_async_connections(fleet):
    a, b, c = fleet.addresses[:3]
    connections = [
        AsyncConnection(a, username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
        AsyncConnection(b, username=KEY_USER, private_key=str(fleet.client_key), port=fleet.port),
        AsyncConnection(c, username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
    ]
    mc = MultiConnection(connections, batch_size=50)
    assert repr(mc) == "MultiConnection(3 hosts, batch_size=50)"
    with mc:
        results = mc.execute("whoami")
    assert {h: r.stdout for h, r in results.items()} == {a: "hussh\n", b: "hussh-key\n", c: "hussh\n"}


def test_creating_from_sync_connections(fleet):
    connections = [
        Connection(fleet.addresses[0], username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
        Connection(fleet.addresses[1], username=PASSWORD_USER, password=PASSWORD, port=fleet.port),
    ]
    mc = MultiConnection.from_connections(connections)
    with mc:
        assert set(mc.execute("echo ok").succeeded.keys()) == set(fleet.addresses[:2])
    for conn in connections:
        conn.close()


def test_shared_auth_with_password_and_with_key(fleet, hosts):
    mc = MultiConnection.from_shared_auth(
        hosts=fleet.addresses, username=PASSWORD_USER, password=PASSWORD, port=fleet.port, batch_size=100,
    )
    assert mc.hosts == fleet.addresses and mc.batch_size == 100
    with mc:
        assert len(mc.execute("true").succeeded) == len(hosts)
    mc = MultiConnection.from_shared_auth(hosts=hosts, username=KEY_USER, private_key=str(fleet.client_key))
    with mc:
        assert [r.stdout for r in mc.execute("whoami").values()] == ["hussh-key\n"] * len(hosts)


def test_same_command_on_all_hosts(hosts, capsys):
    with shared(hosts) as mc:
        results = mc.execute("uptime")
        for host, result in results.items():
            print(f"{host}: {result.stdout.strip()}")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == hosts
    assert all("load average" in line for line in lines)


def test_different_commands_per_host(hosts, capsys):
    web1, web2, db1, cache1 = hosts
    with shared(hosts) as mc:
        command_map = {
            web1: "systemctl status nginx",
            web2: "systemctl status nginx",
            db1: "systemctl status postgresql",
            cache1: "true  # stands in for: systemctl status redis",
        }
        results = mc.execute_map(command_map)
        for host, result in results.items():
            status = "running" if result.status == 0 else "stopped"
            print(f"{host}: {status}")
    # No systemd in the fleet, so systemctl fails: only cache1 "runs".
    assert capsys.readouterr().out.splitlines() == [
        f"{web1}: stopped", f"{web2}: stopped", f"{db1}: stopped", f"{cache1}: running"]


def test_multiresult_basic_usage(hosts, capsys):
    with shared(hosts) as mc:
        results = mc.execute("whoami")
        for host, result in results.items():
            print(f"{host}: status={result.status}")
        print(results[hosts[0]].stdout)
        print(list(results.keys()))
        print(list(results.values()))
    out = capsys.readouterr().out
    assert f"{hosts[0]}: status=0" in out and "hussh\n" in out and str(hosts) in out
    assert "SSHResult(stdout='hussh\\n', stderr='', status=0)" in out


def test_filtering_by_success_and_failure(hosts, capsys):
    with shared(hosts) as mc:
        results = mc.execute_map({h: ("true" if i % 2 else "echo nope >&2; exit 3") for i, h in enumerate(hosts)})
        succeeded = results.succeeded
        print(f"Succeeded on {len(succeeded)} hosts")
        failed = results.failed
        print(f"Failed on {len(failed)} hosts")
        for host, result in failed.items():
            print(f"{host} failed: {result.stderr}")
    out = capsys.readouterr().out
    assert "Succeeded on 2 hosts" in out and "Failed on 2 hosts" in out
    assert f"{hosts[0]} failed: nope" in out and f"{hosts[2]} failed: nope" in out


def test_partial_failures_checked_manually(hosts, capsys):
    with shared(hosts) as mc:
        results = mc.execute("some_command_that_does_not_exist")
        if results.failed:
            print("Some hosts failed:")
            for host, result in results.failed.items():
                print(f"  {host}: {result.stderr}")
        if results.succeeded:
            print("Succeeded on:")
    out = capsys.readouterr().out
    assert "Some hosts failed:" in out and "not found" in out and "Succeeded on:" not in out


def test_partial_failures_raise(hosts, capsys):
    with shared(hosts) as mc:
        results = mc.execute_map({h: f"exit {i % 2}" for i, h in enumerate(hosts)})
        try:
            results.raise_if_any_failed()
            print("All hosts succeeded!")
        except PartialFailureException as e:
            print(f"Partial failure: {e}")
            print(f"Succeeded: {list(e.succeeded.keys())}")
            print(f"Failed: {list(e.failed.keys())}")
            for host, result in e.failed.items():
                print(f"  {host}: exit code {result.status}")
    out = capsys.readouterr().out
    assert "Partial failure: Operation failed on 2 of 4 host(s)" in out
    assert f"Succeeded: {[hosts[0], hosts[2]]}" in out and f"  {hosts[1]}: exit code 1" in out


def test_sftp_examples(hosts, remote_dir, tmp_path, capsys):
    config = remote_dir / "config.txt"
    app = tmp_path / "app.tar.gz"
    app.write_bytes(bytes(range(256)) * 1000)
    with shared(hosts) as mc:
        mc.sftp_write_data("config_value=123", str(config))
        mc.sftp_write(str(app), str(remote_dir / "app.tar.gz"))
        results = mc.sftp_read(str(config))
        for host, result in results.items():
            print(f"=== {host} ===")
            print(result.stdout[:500])
            print()
    assert config.read_text() == "config_value=123"
    assert (remote_dir / "app.tar.gz").read_bytes() == app.read_bytes()
    assert capsys.readouterr().out.count("config_value=123") == len(hosts)


def test_deployment_example(hosts, remote_dir, tmp_path, capsys):
    local = tmp_path / "nginx.conf"
    local.write_text("worker_processes 1;\n")
    with shared(hosts) as mc:
        mc.sftp_write(str(local), str(remote_dir / "nginx.conf"))
        results = mc.execute("systemctl restart nginx")
        if results.failed:
            print("Failed to restart nginx on:")
            for host in results.failed.keys():
                print(f"  {host}")
    assert (remote_dir / "nginx.conf").read_text() == "worker_processes 1;\n"
    assert capsys.readouterr().out.splitlines() == ["Failed to restart nginx on:"] + [f"  {h}" for h in hosts]


def test_tailing_same_file(hosts, remote_dir, capsys):
    log = remote_dir / "syslog"
    log.write_text("old line\n")
    log.chmod(0o666)
    with shared(hosts[:1]) as mc:
        with mc.tail(str(log)) as tailer:
            mc.execute(f"echo 'Test message from hussh' >> {log}")
            wait_until(lambda: "Test message from hussh" in log.read_text(), 10, "the line to be logged")
            contents = tailer.read()
            for host, content in contents.items():
                print(f"{host}: {content}")
    assert capsys.readouterr().out == f"{hosts[0]}: Test message from hussh\n\n"
    assert tailer.contents == {hosts[0]: "Test message from hussh\n"}


def test_tailing_different_files(hosts, remote_dir, capsys):
    web1, web2, app1, db1 = hosts
    files = {h: remote_dir / f"{i}.log" for i, h in enumerate(hosts)}
    for path in files.values():
        path.write_text("before\n")
        path.chmod(0o666)
    with shared(hosts) as mc:
        file_map = {host: str(path) for host, path in files.items()}
        with mc.tail_map(file_map) as tailer:
            mc.execute_map({h: f"echo health-$(whoami) >> {files[h]}" for h in (web1, app1)})
            wait_until(lambda: all("health" in files[h].read_text() for h in (web1, app1)), 10, "the checks")
            contents = tailer.read()
            for host, content in contents.items():
                if content:
                    print(f"{host}: {content[:200]}...")
    assert capsys.readouterr().out.splitlines() == [f"{web1}: health-hussh", "...", f"{app1}: health-hussh", "..."]


def test_manual_connection_management(hosts, blackhole, capsys):
    silent = f"{blackhole[0]}:{blackhole[1]}"
    mc = MultiConnection.from_shared_auth(hosts + [silent], username=PASSWORD_USER, password=PASSWORD,
                                          connect_timeout=1)
    connect_results = mc.connect()
    if connect_results.failed:
        print("Failed to connect to:")
        for host in connect_results.failed.keys():
            print(f"  {host}")
    results = mc.execute("whoami")
    mc.close()
    assert capsys.readouterr().out == f"Failed to connect to:\n  {silent}\n"
    assert len(results.succeeded) == len(hosts) and "ConnectTimeout" in results[silent].stderr


def test_pruning_failed_connections(hosts, capsys):
    all_hosts = hosts + ["127.0.0.1:1"]
    mc = MultiConnection.from_shared_auth(all_hosts, username=PASSWORD_USER, password=PASSWORD)
    mc.connect(prune_failures=True)
    print(f"Connected to {len(mc.hosts)} out of {len(all_hosts)} hosts")
    results = mc.execute("whoami")
    mc.close()
    assert capsys.readouterr().out == f"Connected to {len(hosts)} out of {len(all_hosts)} hosts\n"
    assert list(results.keys()) == hosts


def test_batch_size_example(hosts):
    large_host_list = hosts * 1  # the spec's 1000-host version runs in test_multi_scale.py
    mc = MultiConnection.from_shared_auth(hosts=large_host_list, username=PASSWORD_USER, password=PASSWORD,
                                          batch_size=2)
    with mc:
        results = mc.execute("true && echo upgraded")
        print(f"Succeeded: {len(results.succeeded)}")
    assert len(results.succeeded) == len(hosts) and mc.batch_size == 2
