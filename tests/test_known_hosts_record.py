"""Host keys recorded on first use (``accept-new``), as OpenSSH records them, once, under a lock."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hussh._known_hosts import hashed_name
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared(fleet, known: Path, **options) -> MultiConnection:
    options.setdefault("ssh_config", False)
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, known_hosts=known, **options)


def test_new_keys_are_recorded_once_by_the_caller_then_checked(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    with shared(fleet, known, workers=2) as mc:
        assert not mc.execute("true").failed
    expected = "".join(fleet.known_hosts_line(address) for address in fleet.addresses)
    assert sorted(known.read_text().splitlines()) == sorted(expected.splitlines())
    before = known.stat().st_mtime_ns
    with shared(fleet, known, host_key_checking="strict") as mc:  # the next run is protected by them
        assert not mc.execute("true").failed
    assert known.stat().st_mtime_ns == before  # nothing new: nothing written


def test_hash_known_hosts_from_the_config_hashes_the_names(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    config = tmp_path / "config"
    config.write_text("Host *\n    HashKnownHosts yes\n")
    with shared(fleet, known, ssh_config=config) as mc:
        assert not mc.execute("true").failed
    text = known.read_text()
    assert all(line.startswith("|1|") for line in text.splitlines()) and fleet.addresses[0] not in text
    for address in fleet.addresses:  # OpenSSH's own tool finds every host in the hashed file
        found = subprocess.run(["ssh-keygen", "-F", f"[{address}]:{fleet.port}", "-f", str(known)],
                               capture_output=True, text=True, timeout=10)
        assert found.returncode == 0 and fleet.host_public_key(address) in found.stdout


def test_hashed_name_is_what_ssh_keygen_writes(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"[example.com]:2222 {fleet.host_public_key(fleet.addresses[0])}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True, timeout=10)
    theirs = known.read_text().split()[0]
    salt = base64.b64decode(theirs.split("|")[2])
    assert hashed_name("[example.com]:2222", salt) == theirs


def test_a_changed_key_is_refused_and_never_written(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    wrong = f"[{fleet.addresses[0]}]:{fleet.port} {fleet.host_public_key(fleet.addresses[1])}\n"
    known.write_text(wrong)
    with shared(fleet, known) as mc:
        results = mc.execute("true")
    assert results[fleet.addresses[0]].error == "HostKeyError"
    assert len(results.succeeded) == len(fleet.addresses) - 1
    lines = known.read_text().splitlines()
    assert lines[0] == wrong.strip() and not any(line.startswith(f"[{fleet.addresses[0]}]") for line in lines[1:])
    assert len(lines) == len(fleet.addresses)


def test_dev_null_or_an_unwritable_file_records_nothing_and_fails_nobody(fleet, tmp_path):
    with shared(fleet, Path(os.devnull)) as mc:
        assert not mc.execute("true").failed
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with shared(fleet, blocker / "known_hosts") as mc:  # cannot be created, even by root
        assert not mc.execute("true").failed
    assert blocker.read_text() == ""


def test_two_runs_at_once_record_each_host_once(fleet, tmp_path):
    """Two processes learn the same four hosts at the same moment: four lines, none torn or doubled."""
    known = tmp_path / "known_hosts"
    script = textwrap.dedent(f"""
        import json, sys
        from hussh.multi_conn import MultiConnection
        hosts = json.loads(sys.argv[1])
        for _ in range(3):
            with MultiConnection.from_shared_auth(hosts, username={PASSWORD_USER!r}, password={PASSWORD!r},
                                                  port={fleet.port}, known_hosts={str(known)!r},
                                                  ssh_config=False) as mc:
                assert not mc.execute("true").failed
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    runs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(fleet.addresses)], env=env,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    lines = known.read_text().splitlines()
    assert sorted(lines) == sorted(fleet.known_hosts_line(a).strip() for a in fleet.addresses)


def test_a_single_connection_records_and_then_trusts_only_that_key(fleet, tmp_path):
    import asyncio

    known = tmp_path / "known_hosts"

    async def body() -> AsyncConnection:
        async with AsyncConnection(fleet.addresses[2], username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                                   known_hosts=known, ssh_config=False) as conn:
            assert (await conn.execute("true")).status == 0
        return conn

    conn = asyncio.run(body())
    assert known.read_text() == fleet.known_hosts_line(fleet.addresses[2])
    assert conn.spec.host_keys is not None
    assert conn.spec.host_keys.trusted == (fleet.host_public_key(fleet.addresses[2]),)
