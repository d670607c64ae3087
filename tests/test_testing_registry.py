"""hussh.testing's fleet registry on a shared machine: whoever else can write in /tmp cannot make
the fleet tooling (often root) delete their choice of directory, nor read or plant its records.

Every test has a registry of its own (a private XDG_RUNTIME_DIR, or the /tmp fallback moved into
tmp_path): none touches a real user's.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_PORT
from hussh import cli as hussh_cli
from hussh.testing import FleetError, LoopbackFleet, _registry, loopback_addresses
from hussh.testing import cli as fleet_cli

NOBODY = 65534
BOUND = 120.0


def private_registry(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the registry under ``tmp_path``: in a private XDG_RUNTIME_DIR, or where it goes without one."""
    if where == "xdg":
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        expected = runtime / "hussh-testing"
    else:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        monkeypatch.setattr(_registry, "SHARED_PARENT", tmp_path)
        expected = tmp_path / f"hussh-testing-{os.getuid()}"
    assert _registry.state_dir() == expected
    return expected


@pytest.fixture(params=["xdg", "tmp"])
def state(request, tmp_path, monkeypatch) -> Path:
    """This test's registry, in each of the places it can be."""
    return private_registry(request.param, tmp_path, monkeypatch)


@pytest.fixture
def xdg_state(tmp_path, monkeypatch) -> Path:
    """This test's registry, where a subprocess finds it too (through XDG_RUNTIME_DIR)."""
    return private_registry("xdg", tmp_path, monkeypatch)


def a_record(workdir: Path, **fields: object) -> dict[str, object]:
    """A well-formed loopback record for ``workdir``, owned by no one (as ``hussh fleet up`` writes it)."""
    return {"id": workdir.name, "backend": "loopback", "workdir": str(workdir), "token": "ab" * 16,
            "owner": None, "cli": {}, **fields}


def plant(state: Path, record: object, name: str | None = None) -> Path:
    """Write ``record`` straight into the registry, as something other than the fleet could."""
    state.mkdir(mode=0o700, exist_ok=True)
    path = state / (name or f"{record['id']}.json")  # type: ignore[index]
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return path


def canary(parent: Path, name: str) -> Path:
    """A directory of the machine's that nothing may remove: this test's check that nothing did."""
    directory = parent / name
    directory.mkdir()
    (directory / "precious").write_text("still here\n")
    return directory


def assert_alive(directory: Path) -> None:
    assert (directory / "precious").read_text() == "still here\n"


# ----------------------------------------------------------------------------- the state directory

def refuses(state: Path, problem: str) -> None:
    """Every use of the registry (a fleet's start included) fails naming the directory and what is wrong."""
    for use in (_registry.reap_orphans, _registry.records,
                lambda: _registry.register(a_record(Path("/tmp/hussh-fleet-x")))):
        with pytest.raises(FleetError, match=f"^fleet registry {state} {problem}.*remove it") as caught:
            use()
    with pytest.raises(FleetError, match=f"^fleet registry {state} {problem}"):
        LoopbackFleet(["127.89.0.1"], port=TEST_PORT).up()
    assert "uses it only when it is a directory of uid 0 with mode 0700" in str(caught.value)


def test_a_state_dir_of_another_user_is_refused(state):
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    refuses(state, f"belongs to uid {NOBODY}")
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o750, 0o701])
def test_a_state_dir_open_to_others_is_refused(state, mode):
    state.mkdir()
    state.chmod(mode)
    refuses(state, f"has mode {mode:04o}, open to other users")
    assert list(state.iterdir()) == []


def test_a_symlink_in_its_place_is_refused(state, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)  # ours and private: only the link itself is wrong
    state.symlink_to(target)
    refuses(state, "is a symbolic link")
    assert list(target.iterdir()) == []


def test_records_are_written_private_and_whole(state, tmp_path):
    old = os.umask(0)  # what a mode left to the umask would get
    try:
        path = _registry.register(a_record(tmp_path / "hussh-fleet-x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == [path.name]  # no partial file left next to it
    assert _registry.records() == [a_record(tmp_path / "hussh-fleet-x")]


# ----------------------------------------------------------------------------- records and what they name

def planted_records(state: Path, tmp_path: Path, kind: str, via: str) -> Path:
    """A record naming a directory that is not a fleet's; return that directory (the canary)."""
    owner = {"owner": os.getpid(), "owner_start": -1} if via == "reap" else {}  # reap: its owner is "dead"
    if kind == "outside":  # a directory anywhere, even one holding the record's marker: the path is wrong
        victim = canary(tmp_path, "precious-data")
        (victim / _registry.MARKER).write_text("ab" * 16)
        record = a_record(tmp_path / "hussh-fleet-planted", **owner) | {"workdir": str(victim)}
    elif kind == "unmarked":  # the right form of path, but not a directory the fleet made
        victim = canary(tmp_path, "hussh-fleet-planted")
        record = a_record(victim, **owner)
    elif kind == "other-fleet":  # a fleet's directory, but not this record's fleet's
        victim = canary(tmp_path, "hussh-fleet-planted")
        (victim / _registry.MARKER).write_text("cd" * 16)
        record = a_record(victim, **owner)
    else:  # "other-user": someone else's directory, with a copy of the marker
        victim = canary(tmp_path, "hussh-fleet-planted")
        (victim / _registry.MARKER).write_text("ab" * 16)
        os.chown(victim, NOBODY, NOBODY)
        record = a_record(victim, **owner)
    plant(state, record, "hussh-fleet-planted.json")
    return victim


@pytest.mark.parametrize("via", ["reap", "down"])
@pytest.mark.parametrize("kind", ["outside", "unmarked", "other-fleet", "other-user"])
def test_a_planted_record_never_removes_what_it_names(state, tmp_path, caplog, capsys, kind, via):
    victim = planted_records(state, tmp_path, kind, via)
    with caplog.at_level(logging.WARNING, logger="hussh.testing"):
        if via == "reap":
            _registry.reap_orphans()
        else:
            assert fleet_cli.main(["down"]) == 0
    assert_alive(victim)
    assert str(victim) in caplog.text
    assert list(state.iterdir()) == []  # the record is dropped: it is not tried again


@pytest.mark.parametrize(("content", "name"), [
    ("not json", None), ("[1, 2]", None), (json.dumps({"id": 5}), None),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-x\n"))), "hussh-fleet-x\n.json"),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-x"), backend="cli")), None),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-x"), owner="1")), None),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-x"), uids={"hussh": "0"})), None),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-x"), token=None)), None),
    (json.dumps(a_record(Path("/tmp/../tmp/hussh-fleet-x"))), None),
    (json.dumps(a_record(Path("/tmp/hussh-fleet-y"))), None),
], ids=["text", "list", "int-id", "id-chars", "backend", "owner", "uids", "token", "dotdot", "id-mismatch"])
def test_an_unusable_record_is_dropped_with_a_warning(state, content, name, caplog):
    path = plant(state, content, name or "hussh-fleet-x.json")
    with caplog.at_level(logging.WARNING, logger="hussh.testing"):
        assert _registry.records() == []
    assert f"dropping fleet record {path}" in caplog.text and not path.exists()


def test_a_record_file_that_is_a_link_is_not_followed(state, tmp_path, caplog):
    elsewhere = tmp_path / "record.json"
    elsewhere.write_text(json.dumps(a_record(tmp_path / "hussh-fleet-x")))
    state.mkdir(mode=0o700)
    (state / "hussh-fleet-x.json").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="hussh.testing"):
        assert _registry.records() == []
    assert elsewhere.exists() and "cannot be opened" in caplog.text


# ----------------------------------------------------------------------------- what the fleet made still goes

def test_a_fleet_goes_up_and_down_and_leaves_nothing(state):
    fleet = LoopbackFleet(loopback_addresses(2, second_octet=89), port=TEST_PORT, per_process=1)
    try:
        fleet.up()
        assert fleet.record is not None and fleet.workdir is not None  # up() registered and made them
        record, workdir = dict(fleet.record), fleet.workdir
        [path] = state.iterdir()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and (workdir / _registry.MARKER).is_file()
        assert _registry.records() == [record] and fleet.pids()
    finally:
        fleet.down()
    assert fleet.leftovers() == [] and _registry.leftovers(record) == []
    assert not workdir.exists() and list(state.iterdir()) == []


def test_down_removes_the_directory_the_fleet_made(state, capsys):
    workdir, token = _registry.new_workdir("loopback")
    _registry.register(a_record(workdir, token=token))
    assert fleet_cli.main(["down"]) == 0
    assert not workdir.exists() and list(state.iterdir()) == []


def test_already_up_names_the_command_as_the_user_typed_it(xdg_state, capsys):
    workdir, token = _registry.new_workdir("loopback")
    _registry.register(a_record(workdir, token=token))
    try:
        assert hussh_cli.main(["fleet", "up", "1"]) == 1
        assert capsys.readouterr().err == "error: a fleet is already up: hussh fleet down\n"
        module = subprocess.run([sys.executable, "-m", "hussh.testing", "up", "1"], capture_output=True,
                                text=True, timeout=BOUND)
        assert module.stderr == "error: a fleet is already up: python -m hussh.testing down\n"
    finally:
        assert hussh_cli.main(["fleet", "down"]) == 0
    assert not workdir.exists()
