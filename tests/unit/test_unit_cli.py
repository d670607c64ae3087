"""The command line's gathering and output on the MockEngine: the options parsed as ``hussh run`` parses them,
the operation and display of ``hussh.cli`` on a MultiConnection answered by a handler. tests/test_cli.py runs
the real command on real sshd."""

from __future__ import annotations

import json

import pytest

import hussh
from hussh import SSHResult
from hussh._cli_args import parse
from hussh.cli import perform, prepare
from hussh.multi_conn import MultiConnection
from hussh.testing import MockEngine, MockRequest

HOSTS = ["web1", "web2", "web3", "db1"]


def handler(request: MockRequest) -> SSHResult | str | None:
    if request.kind == "execute":
        if request.host == "web3":
            return SSHResult("", "boom\n", 2)
        if request.host == "db1":
            raise hussh.ConnectTimeout("db1:22: no answer within 15 seconds")
        return "up 3 days\n"
    return None


def run(argv: list[str], engine: MockEngine | None = None) -> int:
    """``hussh run -H HOSTS ARGV`` on ``engine`` (stdin not read unless ``--stdin`` says so)."""
    args = parse(["run", "-H", ",".join(HOSTS), *(["--no-stdin"] if "--stdin" not in argv else []), *argv])
    mc = MultiConnection.from_shared_auth(HOSTS, engine=engine or MockEngine(handler), ssh_config=False)
    return perform(mc, prepare(mc, args), args)


def test_lines_are_prefixed_and_the_summary_counts_outcomes(capsys):
    assert run(["uptime"]) == 1
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == ["web1: up 3 days", "web2: up 3 days"]
    assert "web3: boom" in err and "db1: ConnectTimeout: db1:22: no answer within 15 seconds" in err
    assert err.splitlines()[-1].startswith("2 ok, 1 ConnectTimeout, 1 exit 2 in ")


def test_gathered_output_groups_identical_hosts(capsys):
    assert run(["-b", "uptime"]) == 1
    out = capsys.readouterr().out
    assert "web[1-2] (2)" in out and "web3 (1) exit 2" in out and "db1 (1) ConnectTimeout" in out
    assert out.index("web[1-2] (2)") < out.index("web3 (1)")  # the largest group first


def test_json_lines_one_per_host_in_the_given_order(capsys):
    run(["--json", "uptime"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["host"] for line in lines] == HOSTS
    assert [(line["status"], line["error"]) for line in lines] == [(0, ""), (0, ""), (2, ""), (-1, "ConnectTimeout")]


@pytest.mark.parametrize("flag, status", [([], 1), (["-S"], 255)])
def test_exit_status_is_1_on_any_failure_or_the_largest_with_max_status(flag, status, capsys):
    assert run([*flag, "uptime"]) == status


def test_outdir_keeps_each_hosts_output(tmp_path, capsys):
    run(["--outdir", str(tmp_path), "uptime"])
    saved = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert (saved["web1.out"], saved["web3.err"], saved["web3.status"]) == ("up 3 days\n", "boom\n", "2\n")
    assert (saved["db1.err"], saved["db1.status"]) == ("ConnectTimeout: db1:22: no answer within 15 seconds", "-1\n")


def test_stdin_from_a_file_reaches_every_command(tmp_path, capsys):
    plan = tmp_path / "plan.sql"
    plan.write_bytes(b"ALTER TABLE t;\n")
    engine = MockEngine(handler)
    run(["--stdin", str(plan), "psql"], engine)
    assert {r.stdin for r in engine.requests if r.kind == "execute"} == {b"ALTER TABLE t;\n"}
