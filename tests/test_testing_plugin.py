"""hussh.testing as users get it: the pytest plugin in a throwaway project, the command line, the packaging,
and docker-compose.yml on its own. Every fleet made here is checked for leftovers after its teardown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_PORT
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, _registry
from hussh.testing._probe import wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
BOUND = 90.0  # seconds any subprocess here may take: far above need, short of a hang


def inner_project(pytester: pytest.Pytester, octet: int, tests: str) -> Path:
    """A throwaway project whose fleets live at 127.<octet>.x.y on TEST_PORT, apart from ours."""
    pytester.makeconftest(f"""
        import pytest
        from hussh.testing.plugin import FleetOptions

        @pytest.fixture(scope="session")
        def hussh_fleet_options():
            return FleetOptions(port={TEST_PORT}, second_octet={octet}, base_port={27000 + TEST_PORT % 300 * 10},
                                project="hussh-plugin-{TEST_PORT}")
    """)
    return pytester.makepyfile(tests)


def recorded_fleets(pytester: pytest.Pytester) -> list[dict]:
    """The records the inner tests wrote down (one line each) of the fleets they were given."""
    path = pytester.path / "fleets.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


RECORD = """
import json, pathlib

def record(fleet):
    with open(pathlib.Path(__file__).parent / "fleets.jsonl", "a") as out:
        out.write(json.dumps(fleet.record) + "\\n")
"""


def test_one_fleet_serves_every_size_the_tests_ask_for_and_faults_are_healed(pytester):
    inner_project(pytester, 82, RECORD + """
import pytest
from hussh.multi_conn import MultiConnection

@pytest.mark.hussh_fleet(3)
def test_three_and_a_fault_left_behind(hussh_fleet):
    record(hussh_fleet)
    assert len(hussh_fleet.hosts) == 3
    hussh_fleet.pause(hussh_fleet.hosts[:1])

@pytest.mark.hussh_fleet(5)
def test_five_all_answering(hussh_fleet):
    record(hussh_fleet)
    with MultiConnection.from_shared_auth(hussh_fleet.hosts, connect_timeout=5,
                                          **hussh_fleet.credentials.password_auth()) as mc:
        assert len(mc.execute("true").succeeded) == 5

@pytest.mark.parametrize("hussh_fleet", [2, {"size": 4, "per_node": 1}], indirect=True)
def test_parametrized(hussh_fleet):
    record(hussh_fleet)
    assert len(hussh_fleet.hosts) in (2, 4)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=BOUND)
    result.assert_outcomes(passed=4)
    fleets = recorded_fleets(pytester)
    assert len(fleets) == 4 and len({f["id"] for f in fleets}) == 1  # one fleet, started once, of 5
    assert _registry.leftovers(fleets[0]) == []


def test_tests_deselected_by_k_do_not_size_the_fleet(pytester):
    inner_project(pytester, 86, """
import pytest

@pytest.mark.hussh_fleet(900)
def test_big(hussh_fleet):
    pass

@pytest.mark.hussh_fleet(2)
def test_small(hussh_fleet):
    assert len(hussh_fleet.fleet.endpoints) == 2
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "small", timeout=BOUND).assert_outcomes(
        passed=1, deselected=1)


def test_a_failing_test_is_healed_after_and_the_fleet_torn_down_at_the_end(pytester):
    inner_project(pytester, 83, RECORD + """
import pytest
from hussh.multi_conn import MultiConnection

@pytest.mark.hussh_fleet(2)
def test_fails_with_its_fleet_faulted(hussh_fleet):
    record(hussh_fleet)
    hussh_fleet.kill(hussh_fleet.hosts[:1])
    hussh_fleet.blackhole(hussh_fleet.hosts[1:])
    assert False, "this test fails on purpose"

@pytest.mark.hussh_fleet(2)
def test_next_test_gets_a_healthy_fleet(hussh_fleet):
    with MultiConnection.from_shared_auth(hussh_fleet.hosts, connect_timeout=5,
                                          **hussh_fleet.credentials.password_auth()) as mc:
        assert len(mc.execute("true").succeeded) == 2
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=BOUND)
    result.assert_outcomes(passed=1, failed=1)
    [fleet] = recorded_fleets(pytester)
    assert _registry.leftovers(fleet) == []


def test_ctrl_c_in_the_middle_of_a_test_tears_the_fleet_down(pytester):
    test_file = inner_project(pytester, 84, RECORD + """
import pathlib, time
import pytest

@pytest.mark.hussh_fleet(3)
def test_waits_for_ctrl_c(hussh_fleet):
    hussh_fleet.pause(hussh_fleet.hosts[:1])
    record(hussh_fleet)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until Ctrl-C arrives
        time.sleep(0.05)
""")
    inner = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(test_file)],
                             cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + BOUND
        while not recorded_fleets(pytester):
            assert inner.poll() is None and time.monotonic() < deadline, "the inner test never got its fleet"
            time.sleep(0.05)
        inner.send_signal(signal.SIGINT)
        output, _ = inner.communicate(timeout=BOUND)
    finally:
        inner.kill()
    assert "KeyboardInterrupt" in output and inner.returncode == 2, output
    [fleet] = recorded_fleets(pytester)
    assert _registry.leftovers(fleet) == []


def cli(*arguments: str, state: Path) -> subprocess.CompletedProcess[str]:
    """``python -m hussh.testing ...`` with its records in ``state``."""
    return subprocess.run([sys.executable, "-m", "hussh.testing", *arguments], capture_output=True, text=True,
                          timeout=BOUND, env={**os.environ, "XDG_RUNTIME_DIR": str(state)})


@pytest.mark.parametrize("backend", [
    pytest.param(["--port", str(TEST_PORT), "--second-octet", "85"], id="loopback"),
    pytest.param(["--compose", "--per-container", "2", "--base-port", str(27500 + TEST_PORT % 300),
                  "--project", f"hussh-cli-{TEST_PORT}"], id="compose", marks=pytest.mark.scale),
])
def test_command_line_up_hosts_down(tmp_path, backend):
    up = cli("up", "3", "--json", *backend, state=tmp_path)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    record = json.loads(Path(info["state"]).read_text())
    try:
        assert cli("up", "1", *backend, state=tmp_path).stderr.startswith("error: a fleet is already up")
        hosts = cli("hosts", state=tmp_path).stdout.split()
        assert hosts == Path(info["hosts"]).read_text().split() and len(hosts) == 3
        with MultiConnection.from_shared_auth(hosts, username=info["key_user"], private_key=info["key"],
                                              known_hosts=info["known_hosts"], host_key_checking="strict",
                                              connect_timeout=10) as mc:
            assert {r.stdout for r in mc.execute("id -un").values()} == {f"{info['key_user']}\n"}
    finally:
        down = cli("down", state=tmp_path)
    assert down.returncode == 0 and down.stderr.startswith("down in"), down.stderr
    assert _registry.leftovers(record) == [] and not Path(info["state"]).exists()
    assert cli("hosts", state=tmp_path).stderr == "error: no fleet is up: python -m hussh.testing up N\n"


def test_the_wheel_carries_the_fleet_its_data_and_the_plugin_entry_point(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info next to the sources
    for name in ("hussh", "workers"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                            str(source)], capture_output=True, text=True, timeout=BOUND * 2)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("hussh/testing/plugin.py", "hussh/testing/cli.py", "hussh/testing/docker/Dockerfile",
                 "hussh/testing/docker/entrypoint.sh", "hussh/testing/docker/sshd_config"):
        assert part in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "[pytest11]\nhussh = hussh.testing.plugin" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.scale
def test_docker_compose_yml_works_on_its_own(tmp_path):
    """``docker-compose up --scale sshd=N`` from the repository, once the base image exists: no bind mounts."""
    pytest.importorskip("docker")
    from hussh.testing.compose import _docker_client  # needs the docker package
    from hussh.testing.image import build_base, compose_command

    build_base(_docker_client())
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    compose = [*compose_command(), "--project-name", f"hussh-standalone-{TEST_PORT}"]
    env = {**os.environ, "HUSSH_AUTHORIZED_KEYS": Path(f"{key}.pub").read_text().strip()}

    def run(*arguments: str) -> str:
        done = subprocess.run([*compose, *arguments], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=BOUND * 3)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        run("up", "-d", "--build", "--scale", "sshd=2")
        hosts = [run("port", f"--index={i}", "sshd", "22").strip() for i in (1, 2)]
        wait_ready([(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts], BOUND)
        logins: list[dict[str, Any]] = [{"username": PASSWORD_USER, "password": PASSWORD},
                                        {"username": PASSWORD_USER, "private_key": str(key)}]
        for auth in logins:
            with MultiConnection.from_shared_auth(hosts, **auth, connect_timeout=30) as mc:
                assert {r.stdout for r in mc.execute("id -un").values()} == {f"{PASSWORD_USER}\n"}
    finally:
        run("down", "--volumes")
