"""The suite tests MultiConnection through its public API: no test reaches a private attribute of one
(``mc._pool``, ``mc._specs``...), and none patches the engine's module globals (timings are engine options,
e.g. ``LocalEngine(stall_limit=...)``). Checked from the source, scripts in strings included."""

from __future__ import annotations

import ast
import functools
import re
import textwrap
from pathlib import Path

from hussh.multi_conn import MultiConnection

TESTS = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()  # its examples are reaches on purpose

ALLOWED: dict[tuple[str, str], str] = {}
"""(test file, attribute) -> why that test must reach it. Empty: every former reach has a public way now
(``MultiConnection.shards()``, ``.specs``, an engine given as ``engine=`` that keeps its pool)."""


def private_names() -> set[str]:
    """MultiConnection's private attributes and methods (dunders aside)."""
    names = {name for name in dir(MultiConnection) if name.startswith("_") and not name.startswith("__")}
    return names | {name for name in vars(MultiConnection([])) if name.startswith("_")}


@functools.cache
def nodes(source: str) -> list[ast.AST]:
    return list(ast.walk(ast.parse(source)))


def reaches(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, code)`` of every ``X._name`` (``X`` not ``self``) and ``getattr(X, "_name")`` in ``source``,
    and in the Python scripts its strings hold (tests run some in subprocesses)."""
    found = []
    for node in nodes(source):
        if isinstance(node, ast.Attribute) and node.attr in names and \
                not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in names:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value:
            script = re.sub(r"\{\{|\}\}", "", textwrap.dedent(node.value))  # an f-string's braces, or a .format's
            pattern = rf"\b(?!self\.|cls\.)\w+\.({'|'.join(map(re.escape, sorted(names)))})\b"
            found += [(node.lineno, match.group(0)) for match in re.finditer(pattern, script)]
    return found


def engine_patches(source: str) -> list[tuple[int, str]]:
    """``monkeypatch.setattr`` of a ``hussh.workers`` module's global (by module or by dotted string)."""
    found = []
    for node in nodes(source):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setattr" \
                and node.args:
            target = ast.unparse(node.args[0]).strip("'\"")
            if target.startswith("hussh.workers"):
                found.append((node.lineno, ast.unparse(node)))
    return found


def sources() -> list[Path]:
    return [path for path in sorted(TESTS.rglob("*.py")) if path != HERE]


def test_no_test_reaches_into_a_multiconnection():
    names = private_names()
    assert {"_pool", "_specs", "_keys", "_run"} <= names
    found = {(path.relative_to(TESTS).as_posix(), line, code)
             for path in sources() for line, code in reaches(path.read_text(), names)}
    unexplained = sorted(hit for hit in found if (hit[0], hit[2].rsplit(".", 1)[-1]) not in ALLOWED)
    assert not unexplained, ("tests reaching private attributes of a MultiConnection (use its public API, or an "
                             "engine= that keeps its pool; else allow it in ALLOWED, saying why):\n"
                             + "\n".join(f"  {path}:{line}: {code}" for path, line, code in unexplained))
    stale = set(ALLOWED) - {(path, code.rsplit(".", 1)[-1]) for path, _, code in found}
    assert not stale, f"ALLOWED entries no test needs any more: {sorted(stale)}"


def test_no_test_patches_the_engines_globals():
    found = [f"  {path.relative_to(TESTS)}:{line}: {code}"
             for path in sources() for line, code in engine_patches(path.read_text())]
    assert not found, "tests patching hussh.workers globals (give the knob an engine option):\n" + "\n".join(found)


def test_the_scan_sees_reaches_in_code_and_in_scripts():
    names = private_names()
    code = 'mc._pool.workers\nx = getattr(mc, "_specs")\nself._run()\nSCRIPT = """\n    print(mc._keys)\n"""\n'
    assert sorted(reaches(code, names)) == [(1, "mc._pool"), (2, "getattr(mc, '_specs')"), (4, "mc._keys")]
    assert [line for line, _ in engine_patches('monkeypatch.setattr(hussh.workers.core, "STALL_LIMIT", 1)\n'
                                               'monkeypatch.setattr("hussh.workers.pool.ABORT_WAIT", 1)\n')] == [1, 2]
