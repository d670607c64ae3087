"""A test run shares the machine with a user's own fleet, and with other test runs (issue 24, item 6).

The "user" starts ``hussh fleet up 4`` with every default: 127.70.0.1-4:2200, its record in the
user's XDG_RUNTIME_DIR, its host keys under the user's HOME. Then two runs of a part of this suite
start at once in that user's environment, as a user starts them (no HUSSH_TEST_PORT: each picks a
free port of its own), while this run's fleet holds yet another. Both must pass, and the user's
fleet must still be up and answer afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SUITE_DIR
from hussh.multi_conn import MultiConnection
from scale.ports import listening_nowhere

REPO = Path(__file__).resolve().parent.parent
USER_PORT = 2200  # `hussh fleet up 4`'s defaults (hussh/testing/cli.py), which a test run must leave to the user
USER_ADDRESSES = [f"127.70.0.{i}" for i in range(1, 5)]
SUBSET = [  # tests that start fleets: the docs' `hussh fleet up` (the user's defaults, as written), the session's
    "tests/test_docs.py::test_shell_examples[scale-testing.md]",
    "tests/test_docs.py::test_python_examples[scale-testing.md]",
    "tests/test_papercuts.py::test_fleet_down_then_up_keeps_its_host_keys",
    "tests/test_multi_semantics.py::test_results_keep_the_given_order_whatever_finishes_first",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def user(tmp_path):
    """The environment of a user of this machine: a HOME and an XDG_RUNTIME_DIR of their own, no test port."""
    home, runtime = tmp_path / "user-home", tmp_path / "user-runtime"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    environment = {name: value for name, value in os.environ.items() if name != "HUSSH_TEST_PORT"}
    return {**environment, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO)}


@pytest.fixture
def user_fleet(user):
    """``hussh fleet up 4`` as the user types it; down at the end. One test run at a time takes the defaults."""
    with open(SUITE_DIR / "user-fleet.lock", "a") as lock:  # held while the fleet is up
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = [address for address in USER_ADDRESSES if not listening_nowhere(USER_PORT, address)]
        if taken:
            pytest.skip(f"{taken[0]}:{USER_PORT} is taken already (a fleet of the user's?): no room for the test's")
        up = subprocess.run([sys.executable, "-m", "hussh", "fleet", "up", "4", "--json"], env=user,
                            capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr
        try:
            yield json.loads(up.stdout)
        finally:
            down = subprocess.run([sys.executable, "-m", "hussh", "fleet", "down"], env=user, capture_output=True,
                                  text=True, timeout=300)
            assert down.returncode == 0, down.stderr


def answers(info: dict[str, str]) -> dict[str, str]:
    """Each host of the user's fleet -> what ``hostname`` gave or the error (with the fleet's own known_hosts)."""
    hosts = Path(info["hosts"]).read_text().split()
    with MultiConnection.from_shared_auth(hosts, username=info["key_user"], key_path=info["key"],
                                          known_hosts=info["known_hosts"], host_key_checking="strict") as mc:
        return {host: result.stdout.strip() or result.stderr for host, result in mc.execute("echo up").items()}


def test_two_test_runs_pass_beside_a_users_fleet_which_survives_them(user, user_fleet):
    hosts = Path(user_fleet["hosts"]).read_text().split()
    assert hosts == [f"{address}:{USER_PORT}" for address in USER_ADDRESSES]
    assert set(answers(user_fleet).values()) == {"up"}
    runs = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET], cwd=REPO,
                             env=user, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=800)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-4000:]
    assert set(answers(user_fleet).values()) == {"up"}
    still = subprocess.run([sys.executable, "-m", "hussh", "fleet", "hosts"], env=user, capture_output=True, text=True,
                           timeout=60)
    assert still.stdout.split() == hosts, still.stderr
