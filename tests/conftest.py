"""Shared fixtures: the session's loopback sshd fleet (hussh.testing's plugin), credentials, a silent TCP
listener, an isolated HOME."""

from __future__ import annotations

import fcntl
import gc
import os
import secrets
import shutil
import signal
import socket
import stat
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from hussh import Connection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from hussh.testing.plugin import FleetOptions, FleetSpec
from scale.ports import listening_nowhere

pytest_plugins = ["pytester"]

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # Started in the background without job control (nohup ... &): SIGINT is ignored and every child
    # would inherit that, so the Ctrl-C tests could not interrupt anything. A handler here is reset
    # to the default in the processes the tests start.
    signal.signal(signal.SIGINT, signal.default_int_handler)


SUITE_DIR = Path(f"/tmp/hussh-suite-{os.getuid()}")
"""This uid's test runs' own state, apart from a user's: their fleet registry (as XDG_RUNTIME_DIR) and port locks."""
PORTS = range(2600, 2700, 2)
"""The session ports to choose from. A session takes one, P, and uses P, P+1, P+101 and P+102 (tests/test_bastions.py):
even ports 100 apart at most never share one. Away from the defaults of users' fleets (``hussh fleet up``: 2200,
the pytest plugin's: 2222), the benchmarks' (2290-2299), the demo's (2300 up) and the ephemeral range."""
_HELD: list[int] = []  # the lock of this session's port, held until the process ends


def _private_dir(path: Path) -> Path:
    """``path`` made mode 0700, refused unless it is a real directory of this uid closed to others (in /tmp)."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise pytest.UsageError(f"{path} is not a private directory of uid {os.getuid()}: remove it")
    return path


def _claim_port() -> int:
    """A port of PORTS that no other test run of this uid holds and nothing listens on (with its P+1, P+101,
    P+102); its lock file stays locked while this process lives, so concurrent runs never take the same one."""
    locks = _private_dir(SUITE_DIR / "ports")
    for port in PORTS:
        fd = os.open(locks / f"{port}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if all(listening_nowhere(port + offset) for offset in (0, 1, 101, 102)):
            _HELD.append(fd)
            return port
        os.close(fd)
    raise pytest.UsageError(f"no free test port in {PORTS.start}-{PORTS.stop - 1}: set HUSSH_TEST_PORT")


_private_dir(SUITE_DIR)
# HUSSH_TEST_PORT, when set, is used as given; else a free one, exported so that the processes tests start
# (the command line, nested pytest runs of the plugin's tests) use it too.
TEST_PORT = int(os.environ.get("HUSSH_TEST_PORT") or _claim_port())
os.environ["HUSSH_TEST_PORT"] = str(TEST_PORT)


@pytest.fixture(scope="session")
def hussh_fleet_options(pytestconfig) -> FleetOptions:
    """The plugin's fleets, apart from other runs': loopback 127.77.x.y on TEST_PORT, compose
    projects named and numbered after it (host ports below the ephemeral range)."""
    return FleetOptions(backend=pytestconfig.getoption("hussh_fleet_backend") or "loopback",
                        port=TEST_PORT, second_octet=77, base_port=26000 + TEST_PORT % 300 * 20,
                        project=f"hussh-pytest-{TEST_PORT}")


@pytest.fixture(scope="session")
def fleet(hussh_fleet_pool):
    """Four real sshd processes on 127.77.0.1-4, one per address, each with its own host key."""
    return hussh_fleet_pool.get(FleetSpec(4, backend="loopback", per_node=1))


@pytest.fixture
def creds(fleet) -> dict[str, object]:
    return dict(username=PASSWORD_USER, password=PASSWORD, port=fleet.port)


@pytest.fixture
def key_creds(fleet) -> dict[str, object]:
    return dict(username=KEY_USER, private_key=str(fleet.client_key), port=fleet.port)


@pytest.fixture
def connect():
    """``connect(host, **kwargs)``: a blocking ``Connection``, closed when the test ends."""
    opened: list[Connection] = []

    def make(host: str, **kwargs: Any) -> Connection:
        opened.append(Connection(host, **kwargs))
        return opened[-1]

    yield make
    for connection in opened:
        connection.close()


class _Blackhole:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte; ``accepted`` holds them."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.server.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.getsockname()[:2]

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(client)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.server.close()
        for client in self.accepted:
            client.close()


@pytest.fixture(scope="session")
def blackhole():
    hole = _Blackhole()
    try:
        yield hole.address
    finally:
        hole.close()


@pytest.fixture
def silent_listener():
    """A black hole of this test's own: ``.address``, and ``.accepted`` counts the dials."""
    hole = _Blackhole()
    try:
        yield hole
    finally:
        hole.close()


# Ray (tests/raycluster.py, docs/beyond-one-machine.md) for the whole session: token authentication with
# one token that every cluster and driver gets from the environment, whatever HOME a test has (Ray's
# default token lives in ~/.ray, and a process keeps the mode and token it first used); Ray's
# one-machine mode (every node is 127.0.0.1, its servers listen there only); no usage reports.
RAY_SESSION = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


USER_STATE = ("HUSSH_STATE_DIR", "XDG_STATE_HOME",  # where the journal and kept fleet host keys go
              "HUSSH_CONFIG", "XDG_CONFIG_HOME")  # and the command line's config file


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory):
    """Module and session fixtures connect before ``isolated_home`` applies: give them an empty HOME
    too, so no test ever reads or records host keys in the real ``~/.ssh``, and the suite's own fleet
    registry, so no test sees (or tears down, or is refused by) a fleet of the user's."""
    saved = {name: os.environ.get(name) for name in ("HOME", "SSH_AUTH_SOCK", "RAY_AUTH_TOKEN", *RAY_SESSION,
                                                     *USER_STATE, "XDG_RUNTIME_DIR")}
    os.environ["HOME"] = str(tmp_path_factory.mktemp("session-home"))
    os.environ.pop("SSH_AUTH_SOCK", None)
    for name in USER_STATE:
        os.environ.pop(name, None)
    os.environ["XDG_RUNTIME_DIR"] = str(SUITE_DIR)  # the fleet registry: the suite's, never the user's
    os.environ.update(RAY_SESSION, RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh empty HOME (so ``~/.ssh`` is empty, and the journal is under it) and no ssh-agent, for every test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    for state in USER_STATE:  # the command line's journal and config file go under this HOME too
        monkeypatch.delenv(state, raising=False)
    return home


@pytest.fixture
def remote_dir():
    """A fresh directory that the fleet's login users can write (the fleet runs on this machine)."""
    path = Path(f"/tmp/hussh-test-{uuid.uuid4().hex[:12]}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def log(remote_dir: Path) -> Path:
    """A log file in ``remote_dir`` holding ``first\\n``, which the fleet's users may append to."""
    path = remote_dir / "app.log"
    path.write_text("first\n")
    path.chmod(0o666)
    return path


def append(path: Path, data: bytes | str) -> None:
    """Append to a file the fleet serves (text as UTF-8), as a logging program would."""
    with open(path, "ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Resource warnings of a test fail it once it has run, instead of being raised where they occur.

    Raised as an error inside uvloop's ``loop.close()`` (an unclosed transport when an
    ``asyncio.Runner`` ends), uvloop 0.23 hangs in that close for ever: the suite would hang
    instead of naming the leak. Every other warning stays an error where it occurs.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            result = yield
        finally:
            gc.collect()  # what this test left unreferenced warns now, under its name, not a later test's
    leaks = []
    for warning in caught:
        if issubclass(warning.category, ResourceWarning):
            leaks.append(f"{warning.filename}:{warning.lineno}: {warning.message}")
        else:  # shown (not an error) under the suite's filters: hand it on to pytest's own record
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if leaks:
        raise AssertionError("the test left resources open:\n" + "\n".join(leaks))
    return result
