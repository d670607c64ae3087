"""Upstream hussh's own single-host tests (tests/test_connection.py, tests/test_async_connection.py of
its sdist, MIT licensed) run against this hussh and a loopback fleet.

The sdist is fetched at test time (``HUSSH_UPSTREAM_SDIST`` names a local copy instead); nothing of
it is kept in this repository. Its tests expect a docker sshd as root on localhost:8022 with password
``toor``: a copy of them is pointed at the fleet (address, port, password, the password user's home
for ``/root``, the fleet's keys for theirs) and run by pytest in a subprocess with a conftest of ours
in place of theirs (no docker; coroutine tests run with asyncio). The count is printed.
"""

from __future__ import annotations

import gc
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from hussh import Connection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

VERSION = "0.3.3"
SINGLE_HOST = ("test_connection.py", "test_async_connection.py")
REPO = Path(__file__).resolve().parent.parent
PASSING = 59  # of 61 (test_connection.py 35, test_async_connection.py 26): raise it as parity grows

CONFTEST = '''
import asyncio, inspect, ipaddress, os, socket, subprocess
import pytest


def _loopback_only(connect):
    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            raise RuntimeError(f"refused: {address[0]} is outside loopback; upstream's tests may reach no other host")
        return connect(sock, address)
    return guarded


socket.socket.connect = _loopback_only(socket.socket.connect)
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)

ADDRESS, SECOND, PORT = os.environ["UPSTREAM_ADDRESS"], os.environ["UPSTREAM_SECOND"], int(os.environ["UPSTREAM_PORT"])


class Server:
    def __init__(self, address):
        self.address = address


def container_internal_address(container, port=22):
    return container.address, PORT


def pytest_configure(config):
    config.addinivalue_line("markers", "asyncio: a coroutine test, run with asyncio.run")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None


@pytest.fixture(scope="session")
def run_test_server():
    return Server(ADDRESS)


@pytest.fixture(scope="session")
def run_second_server():
    return Server(SECOND)


@pytest.fixture
def setup_agent_auth():
    out = subprocess.check_output(["ssh-agent", "-s"], text=True)
    env = dict(part.split("=", 1) for line in out.splitlines() for part in [line.split(";")[0]] if "=" in part)
    os.environ.update(SSH_AUTH_SOCK=env["SSH_AUTH_SOCK"], SSH_AGENT_PID=env["SSH_AGENT_PID"])
    subprocess.run(["ssh-add", "-q", "tests/data/test_key"], check=True, capture_output=True)
    yield
    subprocess.run(["kill", env["SSH_AGENT_PID"]], check=False)
    for name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):  # their async client ignores an agent; ours uses it, as ssh
        os.environ.pop(name)


SKIP: dict[str, str] = {}  # tests hussh differs from on purpose (docs/single-host.md): none today


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name in SKIP:
            item.add_marker(pytest.mark.skip(reason=f"docs/single-host.md: {SKIP[item.name]}"))
'''


def _sdist(cache: Path) -> Path:
    """Upstream's sdist: ``HUSSH_UPSTREAM_SDIST`` or fetched from PyPI (its sha256 checked)."""
    local = os.environ.get("HUSSH_UPSTREAM_SDIST")
    if local:
        return Path(local)
    index = urllib.request.Request("https://pypi.org/simple/hussh/",  # the simple API: what pip itself reads
                                   headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(index, timeout=20) as answer:
        files = json.load(answer)["files"]
    sdist = next(f for f in files if f["filename"] == f"hussh-{VERSION}.tar.gz")
    with urllib.request.urlopen(sdist["url"], timeout=60) as answer:
        data = answer.read()
    with warnings.catch_warnings():  # urllib leaves its TLS sockets to the collector: the stdlib's, not ours
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    if hashlib.sha256(data).hexdigest() != sdist["hashes"]["sha256"]:
        raise OSError("upstream sdist does not match its sha256")
    path = cache / sdist["filename"]
    path.write_bytes(data)
    return path


_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_QUOTED_ADDRESS = re.compile(r"""(["'])([0-9A-Fa-f:.]+)\1([^()]*?\bport\s*=\s*)\d+""")


def _foreign(candidate: str) -> bool:
    """Whether ``candidate`` is an IP address outside loopback (127.0.0.0/8, ::1)."""
    try:
        return not ipaddress.ip_address(candidate).is_loopback
    except ValueError:
        return False


def foreign_addresses(text: str) -> list[str]:
    """Every IPv4/IPv6 literal in ``text`` that is not loopback: this machine may reach no other."""
    return [found for pattern in (_IPV4, _IPV6) for found in pattern.findall(text) if _foreign(found)]


def into_black_hole(text: str, host: str, port: int) -> str:
    """Upstream's unroutable addresses (``"10.255.255.1", ..., port=8022``, to provoke timeouts) as
    the runner's local black hole: the address and the port of the same call."""
    def swap(match: re.Match[str]) -> str:
        if not _foreign(match.group(2)):
            return match.group(0)
        return f"{match.group(1)}{host}{match.group(1)}{match.group(3)}{port}"
    return _QUOTED_ADDRESS.sub(swap, text)


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback TCP endpoint that completes handshakes (the kernel's backlog) and never speaks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()


def _point_at_fleet(text: str, address: str, second: str, port: int, home: str) -> str:
    """Upstream's docker endpoint, root login and passwords, as the fleet's."""
    text = re.sub(r'"localhost",(\s*)8023', rf'"{second}",\g<1>{port}', text)
    text = text.replace("root@localhost", f"{PASSWORD_USER}@{address}").replace('"localhost"', f'"{address}"')
    text = re.sub(r"\b802[23]\b", str(port), text)
    text = text.replace('"toor"', repr(PASSWORD)).replace('"husshtest"', repr(PASSWORD))
    text = text.replace('username="root"', f"username={PASSWORD_USER!r}").replace("/root", home)
    text = text.replace("port=22,", f"port={port},")  # their container's own sshd, for %h:%p through the proxy
    return text.replace('"command not found" in', '"not found" in')  # the fleet's /bin/sh is dash, not bash


@pytest.fixture
def upstream_tests(tmp_path_factory: pytest.TempPathFactory, fleet,
                   black_hole: tuple[str, int]) -> Path:
    work = tmp_path_factory.mktemp("upstream")
    try:
        sdist = _sdist(work)
    except (OSError, StopIteration, KeyError, ValueError) as exc:
        pytest.skip(f"upstream hussh {VERSION} sdist not available: {exc}")
    with tarfile.open(sdist) as archive:
        archive.extractall(work, filter="data")
    root = next(work.glob("hussh-*/"))
    tests = root / "tests"
    with Connection(fleet.addresses[0], username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                    host_key_checking="off") as conn:
        home = conn.execute("echo $HOME").stdout.strip()
    address, second = fleet.addresses[0], fleet.addresses[1]
    for name in SINGLE_HOST:
        path = tests / name
        text = into_black_hole(path.read_text(), *black_hole)
        path.write_text(_point_at_fleet(text, address, second, fleet.port, home))
    (tests / "conftest.py").write_text(CONFTEST)
    credentials = fleet.credentials
    for key, name in ((credentials.client_key, "test_key"), (credentials.encrypted_client_key, "auth_test_key")):
        # The pair, as upstream ships it: OpenSSH's `ssh -i KEY` offers KEY.pub's key when that file exists,
        # so upstream's own .pub left beside the fleet's key would be offered (and refused) instead.
        shutil.copyfile(key, tests / "data" / name)
        shutil.copyfile(key.with_name(key.name + ".pub"), tests / "data" / f"{name}.pub")
    for key in ("test_key", "auth_test_key"):
        (tests / "data" / key).chmod(0o600)  # ssh-add and ssh refuse a private key others can read
    for name in SINGLE_HOST:
        path = tests / name
        path.write_text(path.read_text().replace('"husshpuppy"', repr(credentials.key_passphrase)))
    for name in SINGLE_HOST:
        foreign = foreign_addresses((tests / name).read_text())
        if foreign:
            pytest.fail(f"refusing to run upstream's {name}: it still names {sorted(set(foreign))} "
                        "(only 127.0.0.0/8 and ::1 may be reached from here)")
    authorized = Path(fleet.workdir) / "authorized_keys"
    (authorized / PASSWORD_USER).write_text((authorized / KEY_USER).read_text())  # their keys log in as root
    user_home = work / "home"
    (user_home / ".ssh").mkdir(parents=True, mode=0o700)
    (user_home / ".ssh" / "config").write_text(f"Host *\n  User {PASSWORD_USER}\n  StrictHostKeyChecking no\n"
                                               "  UserKnownHostsFile /dev/null\n")
    return root


def test_upstream_single_host_suite(upstream_tests: Path, fleet) -> None:
    """Upstream's single-host tests against this hussh: the count is printed and may not fall below
    ``PASSING`` (59 of 61 today; failures and skips are listed in the output)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{upstream_tests / 'tests'}",
           "HOME": str(upstream_tests.parent / "home"), "UPSTREAM_ADDRESS": fleet.addresses[0],
           "UPSTREAM_SECOND": fleet.addresses[1], "UPSTREAM_PORT": str(fleet.port)}
    env.pop("SSH_AUTH_SOCK", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-o", "addopts=", "-W", "default", "-rfEs", *(f"tests/{name}" for name in SINGLE_HOST)],
                          cwd=upstream_tests, env=env, capture_output=True, text=True, timeout=600, check=False)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    print(f"upstream hussh {VERSION} single-host tests: {summary}")
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR", "SKIPPED"))))
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) >= PASSING, done.stdout[-6000:] + done.stderr[-2000:]


def test_foreign_addresses_are_found() -> None:
    """The guard that refuses to run upstream's tests sees every address this machine may not reach."""
    text = 'a = "10.255.255.1"; b = "2001:db8::1"; c = "::ffff:192.0.2.1"; d = "127.0.0.9"; e = "::1"'
    assert {"10.255.255.1", "2001:db8::1", "192.0.2.1"} <= set(foreign_addresses(text))
    assert not foreign_addresses('AsyncConnection("127.77.0.1", port=2222); x = "1.2.3"; "::1"')


def test_unroutable_addresses_become_the_black_hole() -> None:
    """``"10.255.255.1", ..., port=8022`` becomes the black hole's address and port; loopback stays."""
    text = 'AsyncConnection("10.255.255.1", username="root", port=8022)\nConnection("127.0.0.1", port=8022)'
    assert into_black_hole(text, "127.0.0.1", 4444) == (
        'AsyncConnection("127.0.0.1", username="root", port=4444)\nConnection("127.0.0.1", port=8022)')
