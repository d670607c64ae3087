"""Result views of ``MultiResult``: grouping (without copying outputs), outcome summary, JSON lines."""

from __future__ import annotations

import json
import tracemalloc

from hussh import SSHResult
from hussh._views import Summary, outcome, summarize
from hussh.multi_conn import MultiConnection, MultiResult
from hussh.testing import KEY_USER

REFUSED = SSHResult("", "ConnectError: connection refused by {}:22", -1, "ConnectError")


def refused(host: str) -> SSHResult:
    return SSHResult("", REFUSED.stderr.format(host), -1, "ConnectError")


def sample() -> MultiResult:
    up, down = SSHResult("up\n"), SSHResult("", "boom\n", 1)
    results = {f"web{i}": up for i in range(1, 6)} | {"web6": down, "web7": down, "db1": SSHResult("db\n")}
    results |= {"web8": refused("web8"), "web9": refused("web9")}
    results["web10"] = SSHResult("", "CommandTimeout: command timed out after 5 seconds", -1, "CommandTimeout")
    return MultiResult(results, {host: 0.25 for host in results})


def test_outcome_names_ok_exit_status_and_error_kind():
    assert [outcome(r) for r in (SSHResult("x"), SSHResult(status=3), refused("a"),
                                 SSHResult("", "odd", -1))] == ["ok", "exit 3", "ConnectError", "exit -1"]


def test_grouped_largest_first_with_folded_hosts():
    groups = sample().grouped()
    assert [(g.folded, len(g.hosts), g.outcome) for g in groups] == [
        ("web[1-5]", 5, "ok"), ("web[6-7]", 2, "exit 1"), ("db1", 1, "ok"),
        ("web8", 1, "ConnectError"), ("web9", 1, "ConnectError"), ("web10", 1, "CommandTimeout"),
    ]
    assert groups[0].hosts == ["web1", "web2", "web3", "web4", "web5"]
    assert groups[0].result == SSHResult("up\n")


def test_grouped_by_error_kind_gathers_failures_whose_messages_differ():
    groups = sample().grouped(by_error_kind=True)
    assert [(g.folded, g.outcome) for g in groups] == [
        ("web[1-5]", "ok"), ("web[6-7]", "exit 1"), ("web[8-9]", "ConnectError"), ("db1", "ok"),
        ("web10", "CommandTimeout"),
    ]
    assert groups[2].result.stderr == "ConnectError: connection refused by web8:22"  # the first host's, as example


def test_grouping_a_thousand_identical_megabytes_copies_none_of_them():
    big = "x" * (1 << 20) + "\n"
    results = MultiResult({f"web{i:04d}": SSHResult(big) for i in range(1000)})  # one string, as the pool hands it over
    tracemalloc.start()
    try:
        groups = results.grouped()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(groups) == 1 and groups[0].folded == "web[0000-0999]"
    assert groups[0].result.stdout is big
    assert peak < len(big), f"grouping allocated {peak} bytes at peak, more than one copy of one output"


def test_summary_counts_ok_first_then_most_common_failures():
    summary = sample().summary()
    assert summary == Summary({"ok": 6, "ConnectError": 2, "exit 1": 2, "CommandTimeout": 1})
    assert (summary.total, summary.failed) == (11, 5)
    assert str(summary) == "6 ok, 2 ConnectError, 2 exit 1, 1 CommandTimeout"
    assert summary.format(12.34) == "6 ok, 2 ConnectError, 2 exit 1, 1 CommandTimeout in 12.3 s"
    assert summary.format(1.0, unfinished=3).endswith(", 3 not finished in 1.0 s")
    assert summarize([]).format(0.0) == "no hosts in 0.0 s"
    assert str(summarize([SSHResult(status=2)])) == "1 exit 2"


def test_json_lines_one_object_per_host_with_the_stable_fields():
    lines = list(sample().json_lines())
    assert len(lines) == 11 and all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    first, timeout = json.loads(lines[0]), json.loads(lines[-1])
    assert first == {"host": "web1", "status": 0, "stdout": "up\n", "stderr": "", "error": "", "seconds": 0.25}
    assert list(first) == ["host", "status", "stdout", "stderr", "error", "seconds"]
    assert timeout["error"] == "CommandTimeout" and timeout["status"] == -1


def test_streaming_seconds_and_shared_outputs_from_the_real_pool(fleet):
    """``on_timed_result`` sees each host's ``seconds``; identical outputs arrive as one string object."""
    hosts = [f"{address}:{fleet.port}" for address in fleet.addresses]
    streamed: dict[str, float] = {}
    mc = MultiConnection.from_shared_auth(hosts, username=KEY_USER, private_key=str(fleet.client_key))
    try:
        results = mc.execute("head -c 1000000 /dev/zero | tr '\\0' x",
                             on_timed_result=lambda host, result, seconds: streamed.__setitem__(host, seconds))
    finally:
        mc.close()
    assert streamed == results.seconds and all(s > 0 for s in streamed.values())
    outputs = [r.stdout for r in results.values()]
    assert len(outputs[0]) == 1_000_000 and all(o is outputs[0] for o in outputs)
    [group] = results.grouped()
    assert group.hosts == hosts and group.result.stdout is outputs[0]
