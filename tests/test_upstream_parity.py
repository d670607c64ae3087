"""Every public name of upstream hussh exists in ours, with the same parameters.

``tests/data/upstream_api.json`` is upstream's API as ``scale/upstream_api.py`` dumped it (run with
upstream's own interpreter). For each upstream parameter ours has the same name, the same position
(positional ones) and an equal default (``==``: the port/username defaults may be sentinels equal to
22 / "root"). We may add keyword-only parameters. The blocking ``Connection``'s ``timeout`` stays in
milliseconds, as upstream's.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hussh import Connection
from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "upstream_api.json").read_text())
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")

DELIBERATE = {
    "hussh.aio.AsyncConnection.shell": "upstream requires `pty`, yet its guide calls `await conn.shell()`: "
                                       "ours defaults to None",
    "hussh.multi_conn.AsyncConnection.shell": "the same class as hussh.aio.AsyncConnection",
    "hussh.multi_conn.MultiResult.get": "ours is Mapping.get: `default` is optional (upstream requires it)",
    "hussh.InteractiveShell": "upstream's constructor takes an ssh2 channel no Python code can make; "
                              "ours wraps the AsyncInteractiveShell that Connection.shell() opens",
}
"""Differences on purpose: the item is skipped, with the reason shown."""



def _items() -> list[Any]:
    """One test item per upstream module, name, constructor and class member."""
    items = []
    for module, described in SNAPSHOT["modules"].items():
        items.append(pytest.param(module, None, None, id=f"{module}.__all__"))
        for name, info in described["names"].items():
            items.append(_param(module, name, None))
            for member in info.get("members", {}):
                items.append(_param(module, name, member))
    return items


def _param(module: str, name: str, member: str | None) -> Any:
    item_id = ".".join(filter(None, (module, name, member)))
    marks = []
    if item_id in DELIBERATE:
        marks.append(pytest.mark.skip(reason=f"deliberate: {DELIBERATE[item_id]}"))
    return pytest.param(module, name, member, id=item_id, marks=marks)


def parameter_mismatches(upstream: list[dict[str, Any]], ours: inspect.Signature) -> list[str]:
    """Where our signature breaks a call that upstream's accepts (names, positions, defaults)."""
    params = [p for p in ours.parameters.values() if p.name not in ("self", "cls")]
    problems = []
    for index, up in enumerate(upstream):
        if up["kind"] in POSITIONAL:
            mine = params[index] if index < len(params) else None
            if mine is None or mine.name != up["name"] or mine.kind.name not in POSITIONAL:
                found = f"{mine.name} ({mine.kind.name})" if mine else "nothing"
                problems.append(f"position {index}: upstream has {up['name']}, ours {found}")
                continue
        else:
            mine = ours.parameters.get(up["name"])
            if mine is None or mine.kind.name != up["kind"] and up["kind"] != "KEYWORD_ONLY":
                problems.append(f"{up['name']}: upstream {up['kind']}, ours {mine.kind.name if mine else 'missing'}")
                continue
        has_default = mine.default is not inspect.Parameter.empty
        if "default" not in up and has_default:
            problems.append(f"{up['name']}: required upstream, ours defaults to {mine.default!r}")
        elif "default" in up and not (has_default and mine.default == up["default"]):
            problems.append(f"{up['name']}: upstream default {up['default']!r}, "
                            f"ours {mine.default!r}" if has_default else "ours is required")
    extra = [p for p in params[len(upstream):] if p.kind.name in POSITIONAL and p.name not in
             {u["name"] for u in upstream}]
    problems += [f"{p.name}: extra positional parameter (add keyword-only ones)" for p in extra]
    return problems


@pytest.fixture(scope="module")
def live(fleet, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Instances whose attributes are set per object, not on the class."""
    address, port = fleet.addresses[0], fleet.port
    conn = Connection(address, port=port, username=PASSWORD_USER, password=PASSWORD)
    shell = conn.shell()
    log = tmp_path_factory.mktemp("parity") / "log"
    log.touch()
    mc = MultiConnection.from_shared_auth([address], username=PASSWORD_USER, password=PASSWORD, port=port)
    try:
        yield {
            "hussh.InteractiveShell": shell,
            "hussh.FileTailer": conn.tail(str(log)),
            "hussh.aio.AsyncFileTailer": conn._async.tail(str(log)),
            "hussh.multi_conn.MultiFileTailer": mc.tail(str(log)),
        }
    finally:
        shell.close()
        conn.close()
        mc.close()


@pytest.mark.parametrize(("module", "name", "member"), _items())
def test_upstream_name_exists_with_the_same_parameters(live, module, name, member):
    ours_module = importlib.import_module(module)
    described = SNAPSHOT["modules"][module]
    if name is None:
        upstream_all = [n for n in described["all"] if described["names"][n]["kind"] != "module"]
        assert set(upstream_all) <= set(ours_module.__all__)
        return
    info = described["names"][name]
    if info["kind"] == "module":
        assert importlib.import_module(f"{module}.{name}") is getattr(ours_module, name)
        return
    assert hasattr(ours_module, name), f"{module}.{name} is missing"
    ours = getattr(ours_module, name)
    if member is None:
        assert isinstance(ours, type)
        if info["kind"] == "exception":
            assert issubclass(ours, Exception)
        elif info["constructor"] is not None:
            assert parameter_mismatches(info["constructor"], inspect.signature(ours)) == []
        return
    expected = info["members"][member]
    raw = inspect.getattr_static(ours, member, None)
    if raw is None:
        instance = live.get(f"{module}.{name}")
        assert instance is not None and hasattr(instance, member), f"{module}.{name}.{member} is missing"
        assert expected["kind"] == "property", f"{member} is a {expected['kind']} upstream"
        return
    if expected["kind"] == "property":
        assert not inspect.isfunction(raw), f"{member} is an attribute upstream, ours is a method"
        return
    if expected["kind"] == "classmethod":
        assert isinstance(raw, classmethod), f"{member} is a classmethod upstream"
    else:
        assert callable(raw) and not isinstance(raw, (classmethod, staticmethod, property))
    if member.startswith("__"):
        return  # protocol methods (__exit__...) are called positionally by Python itself
    assert parameter_mismatches(expected["parameters"], inspect.signature(getattr(ours, member))) == []


def test_the_comparison_catches_renames_moves_and_defaults():
    upstream: list[dict[str, Any]] = [{"name": "command", "kind": "POSITIONAL_OR_KEYWORD"},
                                      {"name": "timeout", "kind": "POSITIONAL_OR_KEYWORD", "default": None}]

    def sig(func: Any) -> inspect.Signature:
        return inspect.signature(func)

    assert parameter_mismatches(upstream, sig(lambda command, timeout=None, *, extra=1: 0)) == []
    assert parameter_mismatches(upstream, sig(lambda cmd, timeout=None: 0))
    assert parameter_mismatches(upstream, sig(lambda timeout=None, command="": 0))
    assert parameter_mismatches(upstream, sig(lambda command, timeout=0: 0))
    assert parameter_mismatches(upstream, sig(lambda command, timeout=None, extra=1: 0))
    assert parameter_mismatches(upstream, sig(lambda command, *, timeout=None: 0))
    assert parameter_mismatches(upstream, sig(lambda command="x", timeout=None: 0))
