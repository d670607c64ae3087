"""Hashed known_hosts entries (``HashKnownHosts yes``, Debian's default): checked by the key the
server presents, so a big hashed file costs a few HMACs per host, not one per entry per host; and
the host key types hussh asks for, which decide what it records."""

from __future__ import annotations

import hmac
import socket
import struct
import subprocess
import threading

import pytest

import hussh
from hussh import _known_hosts
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from sshcheck import whoami

DECOYS = 3000  # entries for other hosts, each with its own salt, as ssh writes them


def hashed_file(path, lines: list[str], decoys: int = DECOYS) -> None:
    """``lines`` plus ``decoys`` entries for hosts that are not ours, every name hashed by ssh-keygen."""
    key = lines[0].split(None, 1)[1]
    decoy_lines = [f"decoy-{n}.example.net {key}" for n in range(decoys)]
    path.write_text("".join(decoy_lines[: decoys // 2] + lines + decoy_lines[decoys // 2 :]))
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], check=True, capture_output=True, timeout=30)
    assert all(line.startswith("|1|") for line in path.read_text().splitlines())


def shared(fleet, known, **options) -> MultiConnection:
    return MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                            port=fleet.port, known_hosts=known, ssh_config=False, **options)


@pytest.fixture
def hmac_count(monkeypatch):
    """HMACs computed in this process, by hussh (``hmac.digest``) or asyncssh (``hmac.new``)."""
    calls = [0]
    digest, new = hmac.digest, hmac.new

    def counted_digest(*args, **kwargs):
        calls[0] += 1
        return digest(*args, **kwargs)

    def counted_new(*args, **kwargs):
        calls[0] += 1
        return new(*args, **kwargs)

    monkeypatch.setattr(hmac, "digest", counted_digest)
    monkeypatch.setattr(hmac, "new", counted_new)
    return calls


def test_listed_hosts_cost_a_few_hmacs_not_one_per_entry(fleet, tmp_path, hmac_count):
    known = tmp_path / "known_hosts"
    hashed_file(known, [fleet.known_hosts_line(a) for a in fleet.addresses])
    users = [whoami(address, username=PASSWORD_USER, password=PASSWORD, port=fleet.port, known_hosts=known,
                    host_key_checking="strict") for address in fleet.addresses]
    assert users == [PASSWORD_USER] * len(fleet.addresses)
    # Matching every entry by name would be len(addresses) x 3004 HMACs; by key it is the few
    # entries holding each presented key (all decoys here share one fleet key: at most ~1500).
    assert hmac_count[0] < DECOYS, hmac_count[0]


def test_workers_check_hosts_against_the_hashed_entries_they_are_shipped(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    first, *rest = fleet.addresses
    wrong = f"[{first}]:{fleet.port} {fleet.host_public_key(rest[0])}\n"
    hashed_file(known, [wrong] + [fleet.known_hosts_line(a) for a in rest])
    with shared(fleet, known, host_key_checking="strict", workers=2) as mc:
        result = mc.execute("id -un")
    assert [result[a].stdout.strip() for a in rest] == [PASSWORD_USER] * len(rest)
    assert result[first].status == -1 and result[first].stderr.startswith("HostKeyError")
    assert "does not match" in result[first].stderr


def test_strict_refuses_a_host_the_hashed_file_does_not_list(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    first, *rest = fleet.addresses
    hashed_file(known, [fleet.known_hosts_line(a) for a in rest], decoys=10)
    with pytest.raises(hussh.HostKeyError, match=f"{first}.* is not listed in .* strict"):
        whoami(first, username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                    known_hosts=known, host_key_checking="strict")


def test_an_unlisted_host_is_accepted_and_recorded_once(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    first, *rest = fleet.addresses
    hashed_file(known, [fleet.known_hosts_line(a) for a in rest], decoys=10)
    before = len(known.read_text().splitlines())
    for _ in range(2):
        with shared(fleet, known) as mc:
            assert not mc.execute("true").failed
    lines = known.read_text().splitlines()
    assert len(lines) == before + 1
    found = subprocess.run(["ssh-keygen", "-F", f"[{first}]:{fleet.port}", "-f", str(known)],
                           capture_output=True, text=True, timeout=10)
    assert found.returncode == 0 and fleet.host_public_key(first) in found.stdout


def test_a_host_listed_only_with_another_key_type_is_retried_with_it_and_refused(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    first = fleet.addresses[0]
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp_path / "other")],
                   check=True, capture_output=True, timeout=30)
    ecdsa = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    hashed_file(known, [f"[{first}]:{fleet.port} {ecdsa}\n"], decoys=10)
    # The fleet's sshd has only an ed25519 key: the retry that asks for ECDSA finds none to offer.
    with pytest.raises(hussh.HostKeyError, match="only with ecdsa-sha2-nistp256"):
        whoami(first, username=PASSWORD_USER, password=PASSWORD, port=fleet.port, known_hosts=known)
    assert len(known.read_text().splitlines()) == 11  # nothing recorded


def test_index_parses_what_ssh_keygen_writes(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    address = fleet.addresses[0]
    hashed_file(known, [fleet.known_hosts_line(address)], decoys=4)
    parsed = _known_hosts.parse(str(known), known.read_text())
    assert parsed.hashed is not None and len(parsed.hashed.table.entries) == 5
    key = " ".join(fleet.host_public_key(address).split()[:2])
    assert parsed.hashed.holds(f"[{address}]:{fleet.port}", key)
    assert not parsed.hashed.holds(f"[{address}]:{fleet.port + 1}", key)
    assert parsed.hashed.keys_of(f"[{address}]:{fleet.port}") == [key]


def offered_host_key_types(known, record: str = "", **kwargs) -> list[str]:
    """The host key types hussh's first packet (KEXINIT, sent in clear) asks for, in its order,
    with ``known`` holding ``record`` (a key) for the probe's address."""
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()[:2]
    known.write_text(f"[{host}]:{port} {record}" if record else "")
    server.settimeout(10)
    offered: list[str] = []

    def serve() -> None:
        with server, server.accept()[0] as conn:
            conn.settimeout(10)
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 probe\r\n")
            data = b""
            while b"\r\n" not in data:
                data += conn.recv(4096)
            packet = data.split(b"\r\n", 1)[1]
            while len(packet) < 4 or len(packet) < 4 + struct.unpack(">I", packet[:4])[0]:
                packet += conn.recv(65536)
            payload = packet[5 + 1 + 16:]  # length, padding length, KEXINIT, cookie
            kex_len = struct.unpack(">I", payload[:4])[0]
            hostkey = payload[4 + kex_len:]
            offered.extend(hostkey[4 : 4 + struct.unpack(">I", hostkey[:4])[0]].decode().split(","))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(hussh.HusshError):
        whoami(host, port=port, username="nobody", password="x", known_hosts=known, **kwargs)
    thread.join(10)
    return offered


def test_an_unknown_host_is_asked_for_ed25519_first_as_ssh_does(tmp_path):
    offered = offered_host_key_types(tmp_path / "known_hosts")
    plain = [t for t in offered if "cert" not in t]
    assert offered and offered[0] == "ssh-ed25519" and plain.index("ecdsa-sha2-nistp256") < plain.index("rsa-sha2-512")


def test_a_host_on_record_is_asked_for_its_key_type(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa")],
                   check=True, capture_output=True, timeout=30)
    rsa = (tmp_path / "rsa.pub").read_text()
    offered = offered_host_key_types(tmp_path / "known_hosts", rsa, host_key_checking="strict")
    assert offered and offered[0].startswith("rsa-sha2") and "ssh-ed25519" not in offered[:3]
