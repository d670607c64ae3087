"""Host keys as OpenSSH treats them: ``@revoked`` keys refused under every policy (by the caller and
by workers, plain, pattern or hashed entries), ``@cert-authority`` host certificates accepted, no
password or keyboard-interactive answer for a server whose key changed (``off`` connects, as
``StrictHostKeyChecking no`` does, for public key logins only), and only plain resolved host names
recorded in known_hosts.

The real loopback sshd fleet serves the connection tests; a small asyncssh server on loopback
records what the client sends after a key change, and presents a CA-signed host certificate.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncssh
import pytest

import hussh
from hussh import Connection
from hussh._known_hosts import hashed_name, record
from hussh._spec import ConnectSpec, HostKeyChecking
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER
from sshcheck import whoami

POLICIES = ["strict", "accept-new", "off"]
SECRET = "observed-secret"  # the asyncssh server's password


def revoked_line(fleet, address: str, form: str) -> str:
    """``@revoked`` for the key ``address`` presents: by its name, by a ``*`` pattern, or hashed."""
    name = f"[{address}]:{fleet.port}"
    host = {"plain": name, "pattern": "*", "hashed": hashed_name(name)}[form]
    return f"@revoked {host} {fleet.host_public_key(address)}\n"


def wrong_line(fleet, address: str, other: str) -> str:
    """A known_hosts line naming ``address`` with the key ``other`` presents: ``address``'s key changed."""
    return f"[{address}]:{fleet.port} {fleet.host_public_key(other)}\n"


# ------------------------------------------------------------------------------------ revoked


@pytest.mark.parametrize("form", ["plain", "pattern", "hashed"])
@pytest.mark.parametrize("policy", POLICIES)
def test_a_revoked_key_is_refused_under_every_policy(fleet, key_creds, tmp_path, policy, form):
    address, other = fleet.addresses[0], fleet.addresses[1]
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(other) + revoked_line(fleet, address, form))
    before = known.read_text()
    with pytest.raises(hussh.HostKeyError) as info:
        whoami(address, **key_creds, known_hosts=known, host_key_checking=policy)
    message = str(info.value)
    assert "REVOKED HOST KEY DETECTED" in message and f"{address}:{fleet.port}" in message
    assert f"{known}:2" in message  # where it is revoked
    assert known.read_text() == before  # never recorded as trusted


@pytest.mark.parametrize("policy", POLICIES)
def test_a_revoked_key_is_refused_even_where_it_is_also_trusted(fleet, key_creds, tmp_path, policy):
    address = fleet.addresses[0]
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_line(address) + revoked_line(fleet, address, "pattern"))
    with pytest.raises(hussh.HostKeyError, match="REVOKED HOST KEY DETECTED"):
        whoami(address, **key_creds, known_hosts=known, host_key_checking=policy)


@pytest.mark.parametrize("policy", ["accept-new", "off"])
def test_workers_refuse_revoked_keys_plain_and_hashed(fleet, tmp_path, policy):
    first, second, *rest = fleet.addresses
    known = tmp_path / "known_hosts"
    known.write_text(revoked_line(fleet, first, "plain") + revoked_line(fleet, second, "hashed"))
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, known_hosts=known, ssh_config=False,
                                          host_key_checking=policy, workers=2) as mc:
        result = mc.execute("id -un")
    for address in (first, second):
        assert result[address].status == -1, result[address]
        assert result[address].stderr.startswith("HostKeyError") and "REVOKED" in result[address].stderr
    assert [result[a].stdout.strip() for a in rest] == [PASSWORD_USER] * len(rest)
    assert first not in known.read_text().replace(revoked_line(fleet, first, "plain"), "")


# ------------------------------------------------------------------------------ changed keys


def test_off_gives_no_password_to_a_server_whose_key_changed(fleet, creds, tmp_path):
    address = fleet.addresses[0]
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, address, fleet.addresses[1]))
    with pytest.raises(hussh.AuthenticationError) as info:
        whoami(address, **creds, known_hosts=known, host_key_checking="off")
    message = str(info.value)
    assert f"{address}:{fleet.port}" in message and "host key" in message and "password" in message
    assert known.read_text() == wrong_line(fleet, address, fleet.addresses[1])


def test_off_logs_in_with_a_key_to_a_server_whose_key_changed_and_says_so(fleet, key_creds, tmp_path, caplog):
    address = fleet.addresses[0]
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, address, fleet.addresses[1]))
    with caplog.at_level(logging.WARNING, logger="hussh"):
        assert whoami(address, **key_creds, known_hosts=known, host_key_checking="off") == key_creds["username"]
    assert f"host key of {address}:{fleet.port} changed" in caplog.text and "SHA256:" in caplog.text


def test_stricthostkeychecking_no_in_the_config_withholds_the_password_too(fleet, creds, tmp_path):
    address = fleet.addresses[0]
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, address, fleet.addresses[1]))
    config = tmp_path / "config"
    config.write_text(f"Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile {known}\n")
    with pytest.raises(hussh.AuthenticationError, match="host key"):
        whoami(address, **creds, ssh_config=config)


def test_workers_give_no_password_to_a_server_whose_key_changed(fleet, tmp_path):
    first, *rest = fleet.addresses
    known = tmp_path / "known_hosts"
    known.write_text(wrong_line(fleet, first, rest[0]) + "".join(fleet.known_hosts_line(a) for a in rest))
    with MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                          port=fleet.port, known_hosts=known, ssh_config=False,
                                          host_key_checking="off", workers=2) as mc:
        result = mc.execute("id -un")
    assert result[first].status == -1 and result[first].stderr.startswith("AuthenticationError")
    assert "host key" in result[first].stderr
    assert [result[a].stdout.strip() for a in rest] == [PASSWORD_USER] * len(rest)


class _Recorder(asyncssh.SSHServer):
    """Logs every password and keyboard-interactive answer it is sent (``methods`` are offered)."""

    def __init__(self, sent: list[tuple[str, object]], methods: set[str]) -> None:
        self.sent = sent
        self.methods = methods

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return "password" in self.methods

    def validate_password(self, username: str, password: str) -> bool:
        self.sent.append(("password", password))
        return password == SECRET

    def kbdint_auth_supported(self) -> bool:
        return "keyboard-interactive" in self.methods

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> tuple[str, str, str, list]:
        return "", "", "", [("Password: ", False)]

    def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        self.sent.append(("keyboard-interactive", list(responses)))
        return responses == [SECRET]


def _answer(process: asyncssh.SSHServerProcess) -> None:
    process.stdout.write("observed\n")
    process.exit(0)


class ObservedServer:
    """An asyncssh server on 127.0.0.1 (a free port) in its own thread and event loop."""

    def __init__(self, host_keys: list, methods: set[str]) -> None:
        self.sent: list[tuple[str, object]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="observed-sshd", daemon=True)
        self.thread.start()

        async def start() -> asyncssh.SSHAcceptor:
            return await asyncssh.create_server(lambda: _Recorder(self.sent, methods), "127.0.0.1", 0,
                                                server_host_keys=host_keys, process_factory=_answer)

        self.server = self._call(start())
        self.port = self.server.sockets[0].getsockname()[1]

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        self._call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def observed(request) -> Iterator[ObservedServer]:
    server = ObservedServer([asyncssh.generate_private_key("ssh-ed25519")], request.param)
    yield server
    server.close()


def login(server: ObservedServer, known: Path, policy: HostKeyChecking) -> str:
    """Log in to ``server`` with its password (``Connection``), run a command, return its output."""
    with Connection("127.0.0.1", port=server.port, username="someone", password=SECRET, known_hosts=known,
                    host_key_checking=policy, ssh_config=False) as conn:
        return conn.execute("anything").stdout.strip()


@pytest.mark.parametrize("observed", [{"password", "keyboard-interactive"}], indirect=True, ids=["password"])
@pytest.mark.parametrize("policy", POLICIES)
def test_a_changed_key_never_gets_a_password_or_keyboard_interactive_answer(observed, tmp_path, policy):
    known = tmp_path / "known_hosts"
    assert login(observed, known, "accept-new") == "observed"  # learns the key; the server saw the secret
    assert len(observed.sent) == 1 and observed.sent[0][1] in (SECRET, [SECRET])
    observed.sent.clear()
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    known.write_text(f"[127.0.0.1]:{observed.port} {stranger}")  # the server's key "changed"
    expected = hussh.AuthenticationError if policy == "off" else hussh.HostKeyError
    with pytest.raises(expected, match=f"127.0.0.1:{observed.port}"):
        login(observed, known, policy)
    assert observed.sent == []


# ---------------------------------------------------------------------------- cert-authority


@pytest.fixture(scope="module")
def host_ca(tmp_path_factory) -> dict[str, Path]:
    """A CA, a host key and its certificate for 127.0.0.1, and a second CA, made by ssh-keygen."""
    where = tmp_path_factory.mktemp("ca")
    for name in ("ca", "other-ca", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(where / name)],
                       check=True, capture_output=True, timeout=30)
    subprocess.run(["ssh-keygen", "-q", "-s", str(where / "ca"), "-I", "observed-host", "-h", "-n", "127.0.0.1",
                    str(where / "host.pub")], check=True, capture_output=True, timeout=30)
    return {name: where / name for name in ("ca", "other-ca", "host")}


@pytest.fixture
def certified(host_ca) -> Iterator[ObservedServer]:
    key = host_ca["host"]
    server = ObservedServer([(str(key), str(key) + "-cert.pub")], {"password"})
    yield server
    server.close()


def ca_line(host_ca, name: str, marker: str = "@cert-authority") -> str:
    return f"{marker} * {(host_ca[name].parent / (name + '.pub')).read_text().strip()}\n"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_host_certificate_signed_by_a_listed_ca_is_accepted(certified, host_ca, tmp_path, policy):
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(host_ca, "ca"))
    assert login(certified, known, policy) == "observed"
    assert known.read_text() == ca_line(host_ca, "ca")  # nothing to learn: the CA vouches for the host


def test_a_host_certificate_from_an_unlisted_ca_is_refused(certified, host_ca, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(host_ca, "other-ca"))
    with pytest.raises(hussh.HostKeyError, match=f"127.0.0.1:{certified.port}"):
        login(certified, known, "strict")
    assert certified.sent == []


@pytest.mark.parametrize("policy", POLICIES)
def test_a_revoked_ca_is_refused_under_every_policy(certified, host_ca, tmp_path, policy):
    known = tmp_path / "known_hosts"
    known.write_text(ca_line(host_ca, "ca") + ca_line(host_ca, "ca", "@revoked"))
    with pytest.raises(hussh.HostKeyError, match="REVOKED HOST KEY DETECTED"):
        login(certified, known, policy)
    assert certified.sent == []


# -------------------------------------------------------------------------- recorded names


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def learned(known: Path, host: str, port: int = 22, key: str = KEY) -> tuple[ConnectSpec, str]:
    return ConnectSpec(host=host, hostname=host, port=port, known_hosts=(str(known),)), key


@pytest.mark.parametrize("host", ["*", "web?", "!web", "web 1", "a,b", "web\n@cert-authority *", "|1|x|y",
                                  "#web", "@revoked", "web\tx", "[*]", "wéb"])
def test_record_refuses_anything_but_a_plain_host_name(tmp_path, caplog, host):
    known = tmp_path / "known_hosts"
    with caplog.at_level(logging.WARNING, logger="hussh"):
        assert record([learned(known, host), learned(known, host, 2222)]) == 0
    assert not known.exists()
    assert "not a plain host name" in caplog.text


def test_record_refuses_a_key_that_is_not_one_public_key(tmp_path, caplog):
    known = tmp_path / "known_hosts"
    with caplog.at_level(logging.WARNING, logger="hussh"):
        assert record([learned(known, "web1", key=f"{KEY}\n* {KEY}"), learned(known, "web2", key="ssh-ed25519 x")]) == 0
    assert not known.exists() and "not a public key" in caplog.text


def test_record_writes_plain_names_and_addresses(tmp_path):
    known = tmp_path / "known_hosts"
    hosts = [("Web-1.Example.com", 22), ("10.0.0.7", 2222), ("::1", 22), ("fe80::1%eth0", 2200), ("db_2", 22)]
    assert record([learned(known, host, port) for host, port in hosts]) == len(hosts)
    assert known.read_text() == (f"web-1.example.com {KEY}\n[10.0.0.7]:2222 {KEY}\n::1 {KEY}\n"
                                 f"[fe80::1%eth0]:2200 {KEY}\ndb_2 {KEY}\n")


def test_the_resolved_host_name_is_recorded_not_the_alias(fleet, key_creds, tmp_path):
    address = fleet.addresses[0]
    known = tmp_path / "known_hosts"
    config = tmp_path / "config"
    config.write_text(f"Host web-alias\n    HostName {address}\n")
    assert whoami("web-alias", **key_creds, known_hosts=known, ssh_config=config) == key_creds["username"]
    assert known.read_text() == fleet.known_hosts_line(address)

