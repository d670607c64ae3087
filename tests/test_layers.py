"""The package's layers, checked from the source: an import that climbs back up fails here.

    api        hussh (the package), Connection, MultiConnection, the command line, journal, inventory, ray
     |
    engine     workers/* (sharding, the pools, the worker process)
     |
    transport  AsyncConnection (aio) and what reaches and authenticates one host: _connector, _spec, ...
     |
    base       errors, results, host lists: plain values every layer uses
     |
    asyncssh

A module may import its own layer and those below it, never one above. Every runtime import counts,
also one deferred into a function (it still ties the modules together); imports under
``if TYPE_CHECKING:`` do not. Runtime imports form no circle either. ``hussh.testing`` (fleets for
users' tests) stands apart: it imports nothing of the library it tests, and only the command line's
``hussh fleet`` imports it. What breaks these rules today is listed in ``KNOWN``, each with why, to
be emptied by the engine-core work (issue 24, item 1); an entry that no longer applies fails too, so
the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANKS = {"base": 0, "transport": 1, "engine": 2, "api": 3}

LAYERS = {
    "base": {"hussh.errors", "hussh._result", "hussh.hostlist", "hussh._fast_import", "hussh.rollout"},
    "transport": {"hussh.aio", "hussh._connector", "hussh._spec", "hussh._config", "hussh._credentials",
                  "hussh._known_hosts", "hussh._bastions", "hussh._asyncssh_internals", "hussh._stall",
                  "hussh._local_files", "hussh._loop", "hussh._remote_copy", "hussh._scp", "hussh._shell",
                  "hussh._sftp_dirs", "hussh._resolve", "hussh._shared_output", "hussh._sudo", "hussh._proxy_command"},
    "api": {"hussh", "hussh.__main__", "hussh._sync", "hussh.multi_conn", "hussh._views", "hussh.cli",
            "hussh.journal", "hussh.inventory", "hussh._inventory_formats", "hussh._inventory_yaml", "hussh.ray"},
}
"""Each module's layer; every module of ``workers`` is the engine, every ``hussh._cli_*`` the api."""

KNOWN = {
    # Two-way runtime ties inside the transport, each hidden by an import deferred into a function:
    # the bastion pool should receive its opener instead of importing the connector ...
    ("hussh._bastions", "hussh._connector"): "circle: the bastion pool opens bastions through the connector",
    # ... and resolution (make_spec, chains, finalized) should be its own module below known_hosts.
    ("hussh._spec", "hussh._known_hosts"): "circle: ConnectSpec.finalized looks up known_hosts",
    # The inventory reads its formats, which build Inventory objects: one module split in two.
    ("hussh.inventory", "hussh._inventory_formats"): "circle: Inventory.read defers to the format readers",
}
"""(importer, imported) -> why it is still allowed. Remove an entry with the import it names."""

TESTING_DOOR = ("hussh.cli", "hussh.testing.cli")  # `hussh fleet ...`: the one way into hussh.testing


def modules() -> dict[str, Path]:
    """Every module of hussh/ and workers/ by dotted name."""
    found = {}
    for package in ("hussh", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _named(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` an import statement loads (a name imported from a package may be a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        names = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports at run time (module level or deferred)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                found.update(_named(child, package, known))
            else:
                visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found - {name}


def layer(name: str) -> str:
    if name.startswith("hussh.testing"):
        return "testing"
    if name == "workers" or name.startswith("workers."):
        return "engine"
    if name.startswith("hussh._cli_"):
        return "api"
    placed = [layer for layer, names in LAYERS.items() if name in names]
    assert placed, f"{name} has no layer: add it to LAYERS in {Path(__file__).name}"
    return placed[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer(name)
    stale = {name for names in LAYERS.values() for name in names} - set(graph)
    assert not stale, f"LAYERS names modules that are gone: {sorted(stale)}"


def climbing(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports from a layer to one above it, and from or into hussh.testing except through its door."""
    found = set()
    for importer, imported in ((a, b) for a, targets in graph.items() for b in targets):
        mine, theirs = layer(importer), layer(imported)
        if "testing" in (mine, theirs):
            if mine != theirs and (importer, imported) != TESTING_DOOR:
                found.add((importer, imported))
        elif RANKS[theirs] > RANKS[mine]:
            found.add((importer, imported))
    return found


def circles(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The edges that close a circle: (a, b) where b imports a, directly or through others."""

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for target in graph[todo.pop()]:
                if target == goal:
                    return True
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return False

    return {(a, b) for a, targets in graph.items() for b in targets if reaches(b, a)}


def test_no_import_climbs_to_a_higher_layer(graph):
    found = climbing(graph) - KNOWN.keys()
    assert not found, "imports that climb back up (see the layers in this file's docstring):\n" + "\n".join(
        f"  {a} ({layer(a)}) imports {b} ({layer(b)})" for a, b in sorted(found))


def test_runtime_imports_form_no_circle(graph):
    """A circle is reported by each of its edges; the known ones are allowed by any one of theirs."""
    found = circles(graph)
    allowed = {edge for edge in found if any(known in found and _same_circle(graph, edge, known) for known in KNOWN)}
    assert not found - allowed, "imports that close a circle:\n" + "\n".join(
        f"  {a} imports {b}" for a, b in sorted(found - allowed))


def _same_circle(graph: dict[str, set[str]], edge: tuple[str, str], known: tuple[str, str]) -> bool:
    """Whether ``edge`` lies on a circle only through ``known``: without it, the circle opens."""
    pruned = {name: targets - ({known[1]} if name == known[0] else set()) for name, targets in graph.items()}
    return edge not in circles(pruned)


def test_the_known_exceptions_still_exist(graph):
    """An exception whose import is gone must leave the list, so that it cannot come back unnoticed."""
    live = climbing(graph) | circles(graph)
    gone = [edge for edge in KNOWN if edge not in live]
    assert not gone, f"remove from KNOWN (the import is gone or no longer breaks a rule): {gone}"
