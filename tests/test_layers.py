"""The package's layers, checked from the source: an import that climbs back up fails here.

    api        hussh (the package), Connection, MultiConnection, the command line, journal, inventory, ray
     |
    engine     hussh.workers (source: the workers/ folder): sharding, the call core, the pools, the worker process
     |
    transport  AsyncConnection (aio) and what reaches and authenticates one host: _connector, _spec, ...
     |
    base       errors, results, host lists: plain values every layer uses
     |
    asyncssh

A module may import its own layer and those below it, never one above. Every import counts: one
deferred into a function and one under ``if TYPE_CHECKING:`` still tie the modules together (a
helper that names ``AsyncConnection`` for its types depends on it). Imports form no circle either.
``hussh.testing`` (fleets for users' tests) stands apart: it imports nothing of the library it
tests, and only the command line's ``hussh fleet`` imports it. Its ``MockEngine``
(``hussh.testing.mock``) is of the api layer instead: it drives the real call core and workers, and
``hussh.testing`` loads it only when asked for it. Nothing breaks these rules (``KNOWN``, where an
exception would be listed with why, is empty); an entry that no longer applies fails too, so the
list only shrinks.
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
                  "hussh._sftp_dirs", "hussh._resolve", "hussh._shared_output", "hussh._sudo", "hussh._transport",
                  "hussh._proxy_command", "hussh._link", "hussh._uploads", "hussh._options", "hussh._make_spec",
                  "hussh._held_file"},
    "api": {"hussh", "hussh.__main__", "hussh._sync", "hussh.multi_conn", "hussh._views", "hussh.cli",
            "hussh.journal", "hussh.inventory", "hussh._inventory_formats", "hussh._inventory_model",
            "hussh._inventory_yaml", "hussh._inventory_vars", "hussh._inventory_dsh", "hussh.ray"},
}
"""Each module's layer; every module of ``hussh.workers`` is the engine, every ``hussh._cli_*`` the api."""

KNOWN: dict[tuple[str, str], str] = {}
"""(importer, imported) -> why it is still allowed; empty since issue 24 (an entry must say why, and
goes with the import it names)."""

ENGINE_DOORS = {
    "hussh._transport": "what a shard ships, a worker installs, a call shares and is closed at the end",
    "hussh.aio": "AsyncConnection: what a worker runs each host with",
    "hussh._spec": "the value types: ConnectSpec, Retry, HashedHosts",
    "hussh._local_files": "the safety rules for files created from remote input (the Ray engine's downloads)",
}
"""The transport modules the engine may import: everything else it reaches through ``_transport``."""

TESTING_DOORS = {
    ("hussh.cli", "hussh.testing.cli"): "`hussh fleet ...`: the one way from the library into hussh.testing",
    ("hussh.testing", "hussh.testing.mock"): "`from hussh.testing import MockEngine`, loaded on first use",
}
MOCK = {"hussh.testing.mock", "hussh.testing._mock_host"}
"""The MockEngine's modules: api layer, though they live in hussh.testing."""


def modules() -> dict[str, Path]:
    """Every module of hussh/ and of the engine (workers/, installed as hussh.workers) by dotted name."""
    found = {}
    for package, folder in (("hussh", ROOT / "hussh"), ("hussh.workers", ROOT / "workers")):
        for path in sorted(folder.rglob("*.py")):  # does not descend into the hussh/workers link
            parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


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
    """The modules of ``known`` that ``name`` imports (module level, deferred, or for types only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_named(node, package, known))
    return found - {name}


def layer(name: str) -> str:
    if name in MOCK:
        return "api"
    if name.startswith("hussh.testing"):
        return "testing"
    if name == "hussh.workers" or name.startswith("hussh.workers."):
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


def test_the_engine_reaches_the_transport_through_its_doors(graph):
    """A worker is set up through ``_transport``, not by reaching into credentials, known hosts, bastions..."""
    found = {(importer, imported) for importer, targets in graph.items() for imported in targets
             if layer(importer) == "engine" and layer(imported) == "transport" and imported not in ENGINE_DOORS}
    assert not found, f"the engine reaches past hussh._transport: {sorted(found)}"


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
            if mine != theirs and (importer, imported) not in TESTING_DOORS:
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


def test_imports_form_no_circle(graph):
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


def test_the_engine_installs_under_hussh_only():
    """The engine is ``hussh.workers``: a top-level ``workers`` package would collide with users' own code.

    hussh/workers links to the workers/ folder, the wheel lists only ``hussh.*`` packages, and no code of the
    checkout imports the folder by its top-level name (that would load every engine module twice)."""
    import tomllib

    link = ROOT / "hussh" / "workers"
    assert link.is_symlink() and link.resolve() == (ROOT / "workers").resolve()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert all(name == "hussh" or name.startswith("hussh.") for name in packages), packages
    top_level = []
    for folder in ("hussh", "workers", "tests", "scale"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    named = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    named = [node.module or ""]
                else:
                    continue
                top_level += [f"{path.relative_to(ROOT)}:{node.lineno}" for name in named
                              if name == "workers" or name.startswith("workers.")]
    assert not top_level, f"import hussh.workers, not the top-level folder: {top_level}"
