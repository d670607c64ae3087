"""The OpenSSH client config: resolved as ``ssh -G`` resolves it, precedence, and real logins through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hussh
from hussh import ConnectOptions
from hussh._config import ConfigResolver, HostConfig
from hussh._make_spec import make_spec
from hussh.aio import AsyncConnection
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config with Host patterns, negation, Include, Match, %-tokens and the options hussh honours."""
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "apps.conf").write_text(textwrap.dedent("""\
        Host app-*
            User app
            HostName %h.internal.example
            ProxyJump jump-user@bastion.example:2200
    """))
    path = tmp_path / "config"
    path.write_text(textwrap.dedent(f"""\
        Include {included}/*.conf
        Host web-* !web-legacy
            User deploy
            Port 2201
            IdentityFile ~/.ssh/deploy_key
            IdentitiesOnly yes
            ConnectTimeout 7
            ServerAliveInterval 20
            ServerAliveCountMax 5
            StrictHostKeyChecking yes
        Host web-legacy
            User legacy
            StrictHostKeyChecking no
            HashKnownHosts yes
        Match host db*
            User dbadmin
            ForwardAgent yes
            IdentityAgent /run/agent.sock
        Host *
            User fallback
            UserKnownHostsFile {tmp_path}/known_hosts {tmp_path}/known_hosts2
            StrictHostKeyChecking accept-new
    """))
    return path


def ssh_g(config: Path, host: str) -> dict[str, list[str]]:
    """What OpenSSH's own client resolves for ``host`` (``ssh -G``), option -> values."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    options: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, []).append(value)
    return options


_STRICT = {"yes": "true", "no": "false", "accept-new": "accept-new", "ask": "ask", None: "ask"}


@pytest.mark.parametrize("host", ["web-1", "web-legacy", "app-7", "db3", "other", "WEB-2"])
def test_resolution_matches_ssh_minus_g(config_file, host):
    ours = ConfigResolver(config_file).resolve(host)
    theirs = ssh_g(config_file, host)
    assert (ours.hostname or host.lower()) == theirs["hostname"][0]
    assert (ours.user or "root") == theirs["user"][0]
    assert str(ours.port or 22) == theirs["port"][0]
    if ours.identity_files is not None:
        assert list(ours.identity_files) == theirs["identityfile"]
    assert (ours.proxy_jump or None) == (theirs["proxyjump"][0] if "proxyjump" in theirs else None)
    assert (str(int(ours.connect_timeout)) if ours.connect_timeout else "none") == theirs["connecttimeout"][0]
    assert str(int(ours.server_alive_interval or 0)) == theirs["serveraliveinterval"][0]
    assert str(ours.server_alive_count_max or 3) == theirs["serveralivecountmax"][0]
    assert _STRICT[ours.strict_host_key_checking] == theirs["stricthostkeychecking"][0]
    assert list(ours.user_known_hosts_files or ()) == theirs["userknownhostsfile"][0].split()
    assert ("yes" if ours.hash_known_hosts else "no") == theirs["hashknownhosts"][0]
    assert ("yes" if ours.forward_agent else "no") == theirs["forwardagent"][0]
    assert ("yes" if ours.identities_only else "no") == theirs["identitiesonly"][0]
    if ours.identity_agent is not None:
        assert ours.identity_agent == theirs["identityagent"][0]


def test_hostname_case_follows_ssh(config_file):
    """ssh lowercases the name it matches; so does the resolution used for WEB-2 above."""
    assert ConfigResolver(config_file).resolve("WEB-2").user == ssh_g(config_file, "WEB-2")["user"][0]


def test_explicit_arguments_beat_the_config_which_beats_the_defaults(config_file):
    resolver = ConfigResolver(config_file)
    spec = make_spec("web-1", resolver=resolver)
    assert (spec.username, spec.port, spec.connect_timeout, spec.keepalive_interval) == ("deploy", 2201, 7.0, 20.0)
    assert spec.host_key_checking == "strict" and spec.keepalive_count_max == 5
    assert spec.identities == (str(Path("~/.ssh/deploy_key").expanduser()),) and spec.identities_only
    spec = make_spec("web-1", ConnectOptions(username="root", port=22, connect_timeout=3, host_key_checking="off"),
                     resolver)
    assert (spec.username, spec.port, spec.connect_timeout, spec.host_key_checking) == ("root", 22, 3.0, "off")
    spec = make_spec("app-1", resolver=resolver)
    assert spec.hostname == "app-1.internal.example" and spec.jump is not None
    assert (spec.jump.host, spec.jump.username, spec.jump.port) == ("bastion.example", "jump-user", 2200)
    assert make_spec("app-1", ConnectOptions(proxy_jump="none"), resolver).jump is None
    spec = make_spec("web-legacy", resolver=resolver)
    assert (spec.username, spec.host_key_checking, spec.hash_known_hosts) == ("legacy", "off", True)
    spec = make_spec("db9", resolver=resolver)
    assert (spec.username, spec.forward_agent, spec.agent) == ("dbadmin", True, "/run/agent.sock")
    assert make_spec("db9", ConnectOptions(password="x"), resolver).agent is None  # a password login needs no agent
    spec = make_spec("plain", ConnectOptions(ssh_config=False))
    assert (spec.username, spec.port, spec.host_key_checking) == ("root", 22, "accept-new")


def test_port_and_user_in_a_host_string_beat_the_arguments(config_file):
    mc = MultiConnection.from_shared_auth(["alice@web-1:2299", "web-2"], username="bob", ssh_config=config_file)
    assert {h: (s.username, s.port) for h, s in mc.specs.items()} == {"alice@web-1:2299": ("alice", 2299),
                                                                     "web-2": ("bob", 2201)}


def test_defaults_read_the_users_config_and_off_reads_none(isolated_home, tmp_path):
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text("Host fromhome\n    User homeuser\n    Port 2022\n")
    assert make_spec("fromhome").username == "homeuser"
    assert make_spec("fromhome", ConnectOptions(ssh_config=False)).username == "root"
    other = tmp_path / "other"
    other.write_text("Host fromhome\n    User other\n")
    assert make_spec("fromhome", ConnectOptions(ssh_config=other)).port == 22  # only that file, like ssh -F


@pytest.mark.parametrize("text, where", [
    ("Host a\n    Port notanumber\n", "line 2"),
    ("Host a\n    StrictHostKeyChecking\n", "line 2"),
    ('Host a\n    User "unterminated\n', "line 2"),
    ("Host a\n    ConnectTimeout 5 6\n", "line 2"),
])
def test_a_malformed_config_is_one_clear_error_naming_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad_config"
    path.write_text(text)
    with pytest.raises(hussh.ConfigError) as info:
        MultiConnection.from_shared_auth(["a"], ssh_config=path)
    assert str(path) in str(info.value) and where in str(info.value) and "\n" not in str(info.value)


def test_a_missing_explicit_config_file_is_an_error(tmp_path):
    with pytest.raises(hussh.ConfigError, match="does not exist"):
        AsyncConnection("a", ssh_config=tmp_path / "absent")


RELAY = """
import os, selectors, socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with open(sys.argv[3], "a") as log:
    log.write(f"{sys.argv[1]}:{sys.argv[2]}\\n")
selector = selectors.DefaultSelector()
selector.register(0, selectors.EVENT_READ)
selector.register(sock, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        data = os.read(0, 65536) if key.fileobj == 0 else sock.recv(65536)
        if not data:
            sys.exit(0)
        if key.fileobj == 0:
            sock.sendall(data)
        else:
            os.write(1, data)
"""


@pytest.fixture
def relay(tmp_path) -> tuple[Path, Path]:
    """A ProxyCommand that relays stdin/stdout to host:port and logs where it went."""
    script = tmp_path / "relay.py"
    script.write_text(RELAY)
    return script, tmp_path / "relay.log"


def test_proxy_command_from_the_config_and_as_an_argument(fleet, tmp_path, relay):
    script, log = relay
    path = tmp_path / "config"
    path.write_text(f"Host viacommand\n    HostName {fleet.addresses[0]}\n    Port {fleet.port}\n"
                    f"    ProxyCommand {sys.executable} {script} %h %p {log}\n")
    mc = MultiConnection.from_shared_auth(["viacommand", f"{fleet.addresses[1]}:{fleet.port}"],
                                          username=PASSWORD_USER, password=PASSWORD, ssh_config=path)
    with mc:
        results = mc.execute("echo $SSH_CONNECTION")
    assert [r.stdout.split()[2] for r in results.values()] == fleet.addresses[:2]
    assert log.read_text() == f"{fleet.addresses[0]}:{fleet.port}\n"  # only the configured host went through it
    command = f"{sys.executable} {script} %h %p {log}"
    with hussh.Connection(fleet.addresses[2], port=fleet.port, username=PASSWORD_USER, password=PASSWORD,
                          proxy_command=command, ssh_config=False) as conn:
        assert conn.proxy_command == f"{sys.executable} {script} {fleet.addresses[2]} {fleet.port} {log}"
        assert conn.execute("whoami").stdout == f"{PASSWORD_USER}\n"
    assert log.read_text().splitlines()[-1] == f"{fleet.addresses[2]}:{fleet.port}"


def test_hosts_are_reached_by_their_config_names(fleet, tmp_path):
    """HostName, User, Port and IdentityFile all come from the config; no credentials in the code."""
    path = tmp_path / "config"
    lines = [f"Host node-{i}\n    HostName {address}\n" for i, address in enumerate(fleet.addresses)]
    lines.append(f"Host node-*\n    User {KEY_USER}\n    Port {fleet.port}\n    IdentityFile {fleet.client_key}\n")
    path.write_text("".join(lines))
    names = [f"node-{i}" for i in range(len(fleet.addresses))]
    with MultiConnection.from_shared_auth(names, ssh_config=path) as mc:
        results = mc.execute("echo $(whoami) $SSH_CONNECTION")
    assert list(results) == names
    for name, address in zip(names, fleet.addresses):
        user, *_, server_address, server_port = results[name].stdout.split()
        assert (user, server_address, server_port) == (KEY_USER, address, str(fleet.port))
    with hussh.Connection("node-0", ssh_config=path) as conn:
        assert conn.execute("whoami").stdout == f"{KEY_USER}\n"


def test_host_config_defaults_say_nothing():
    assert HostConfig() == ConfigResolver(False).resolve("anything")
