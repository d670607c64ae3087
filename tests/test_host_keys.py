"""Host-key policy: known_hosts files, accept-new / strict / off, the default file, parse caching."""

from __future__ import annotations

import os
import subprocess

import pytest

import hussh
from hussh import Connection
from hussh._known_hosts import _load
from hussh.aio import AsyncConnection
from sshcheck import whoami


def wrong_line(fleet, address: str, other: str) -> str:
    """A known_hosts line naming ``address`` with the host key that ``other`` presents."""
    assert fleet.host_public_key(address) != fleet.host_public_key(other)
    return f"[{address}]:{fleet.port} {fleet.host_public_key(other)}\n"


@pytest.fixture
def hosts(fleet) -> list[str]:
    return fleet.addresses


def test_matching_key_in_known_hosts_file(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(hosts[0]) + fleet.known_hosts_line(hosts[1]))
    assert whoami(hosts[0], **creds, known_hosts=known) == "hussh"
    assert whoami(hosts[1], **creds, known_hosts=str(known), host_key_checking="strict") == "hussh"


def test_mismatching_key_is_refused_naming_the_host(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, hosts[0], hosts[1]))
    with pytest.raises(hussh.HostKeyError) as info:
        whoami(hosts[0], **creds, known_hosts=known)
    assert f"{hosts[0]}:{fleet.port}" in str(info.value)
    assert isinstance(info.value, hussh.ConnectError) and isinstance(info.value, OSError)


def test_mismatching_key_is_refused_by_the_sync_connection(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, hosts[3], hosts[2]))
    with pytest.raises(hussh.HostKeyError, match=hosts[3]):
        Connection(hosts[3], **creds, known_hosts=known)


def test_hashed_known_hosts_entries_are_checked(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, hosts[0], hosts[1]) + fleet.known_hosts_line(hosts[1]))
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True, timeout=10)
    assert hosts[0] not in known.read_text()
    with pytest.raises(hussh.HostKeyError):
        whoami(hosts[0], **creds, known_hosts=known)
    assert whoami(hosts[1], **creds, known_hosts=known, host_key_checking="strict") == "hussh"


def test_unlisted_host_is_accepted_and_recorded(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(hosts[1]))
    assert whoami(hosts[0], **creds, known_hosts=known, ssh_config=False) == "hussh"
    assert known.read_text() == fleet.known_hosts_line(hosts[1]) + fleet.known_hosts_line(hosts[0])


def test_strict_refuses_an_unlisted_host(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(hosts[1]))
    with pytest.raises(hussh.HostKeyError, match=f"{hosts[0]}:{fleet.port}"):
        whoami(hosts[0], **creds, known_hosts=known, host_key_checking="strict")


def test_strict_without_any_known_hosts_file_refuses(hosts, creds):
    with pytest.raises(hussh.HostKeyError, match="strict"):
        whoami(hosts[0], **creds, host_key_checking="strict")


def test_off_accepts_a_mismatching_key_for_public_key_logins(fleet, hosts, key_creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, hosts[0], hosts[1]))
    assert whoami(hosts[0], **key_creds, known_hosts=known, host_key_checking="off") == key_creds["username"]


def test_missing_explicit_known_hosts_file_is_created_on_first_use(fleet, hosts, creds, tmp_path):
    known = tmp_path / "new" / "known_hosts"
    assert whoami(hosts[0], **creds, known_hosts=known, ssh_config=False) == "hussh"
    assert known.read_text() == fleet.known_hosts_line(hosts[0])
    assert whoami(hosts[0], **creds, known_hosts=known, host_key_checking="strict") == "hussh"


def test_invalid_policy_is_refused(hosts):
    with pytest.raises(ValueError, match="host_key_checking"):
        AsyncConnection(hosts[0], host_key_checking="ask")  # type: ignore[arg-type]  # bad input on purpose


def test_default_known_hosts_is_home_ssh_known_hosts(fleet, hosts, creds, isolated_home):
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    known = ssh_dir / "known_hosts"
    known.write_text(wrong_line(fleet, hosts[0], hosts[1]) + fleet.known_hosts_line(hosts[1]))
    with pytest.raises(hussh.HostKeyError, match=hosts[0]):
        whoami(hosts[0], **creds)
    assert whoami(hosts[1], **creds, host_key_checking="strict") == "hussh"
    with pytest.raises(hussh.HostKeyError, match="strict"):
        whoami(hosts[2], **creds, host_key_checking="strict")
    assert known.read_text().count("\n") == 2


def test_known_hosts_is_parsed_once_per_process(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("".join(fleet.known_hosts_line(address) for address in hosts))
    _load.cache_clear()
    for address in hosts:
        assert whoami(address, **creds, known_hosts=known, host_key_checking="strict") == "hussh"
    with Connection(hosts[0], **creds, known_hosts=known, host_key_checking="strict") as conn:
        assert conn.execute("true").status == 0
    info = _load.cache_info()
    assert (info.misses, info.hits) == (1, len(hosts))


def test_known_hosts_is_parsed_again_after_it_changes(fleet, hosts, creds, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(hosts[0]))
    _load.cache_clear()
    assert whoami(hosts[0], **creds, known_hosts=known) == "hussh"
    known.write_text(wrong_line(fleet, hosts[0], hosts[1]))
    stat = os.stat(known)
    os.utime(known, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(hussh.HostKeyError):
        whoami(hosts[0], **creds, known_hosts=known)
    assert _load.cache_info().misses == 2
