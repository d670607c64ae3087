"""Dump upstream hussh's public API (names, signatures, defaults) as JSON, for the parity test.

Run it with upstream's interpreter, never ours (both packages are named ``hussh``)::

    python3 -m venv /opt/hussh-upstream && /opt/hussh-upstream/bin/pip install hussh==0.3.3
    /opt/hussh-upstream/bin/python scale/upstream_api.py > tests/data/upstream_api.json

Only introspection: nothing connects anywhere. pyo3 classes expose ``__text_signature__``, so
``inspect.signature`` gives their parameter names, positions and defaults.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import sys
import types
from typing import Any

MODULES = ("hussh", "hussh.aio", "hussh.multi_conn")

PROTOCOL_DUNDERS = (
    "__enter__", "__exit__", "__aenter__", "__aexit__",
    "__getitem__", "__contains__", "__iter__", "__len__",
)
"""Dunders that are part of the contract (``with``, ``async with``, mapping use); ``__repr__`` etc. every object has."""


def parameters(func: Any, drop_first: bool) -> list[dict[str, Any]] | None:
    """Each parameter's name, kind and (when it has one) default; ``None`` if no signature is exposed."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if drop_first and params and params[0].name in ("self", "cls"):
        params = params[1:]
    described = []
    for param in params:
        entry: dict[str, Any] = {"name": param.name, "kind": param.kind.name}
        if param.default is not inspect.Parameter.empty:
            entry["default"] = param.default
        described.append(entry)
    return described


def member(cls: type, name: str, raw: Any) -> dict[str, Any]:
    """What a class attribute is: method, classmethod, staticmethod or property, with its parameters."""
    kind = type(raw).__name__
    if isinstance(raw, (classmethod, types.ClassMethodDescriptorType)):
        return {"kind": "classmethod", "parameters": parameters(getattr(cls, name), drop_first=False)}
    if isinstance(raw, staticmethod):
        return {"kind": "staticmethod", "parameters": parameters(getattr(cls, name), drop_first=False)}
    if isinstance(raw, (property, types.GetSetDescriptorType, types.MemberDescriptorType)):
        return {"kind": "property"}
    if callable(raw):
        return {"kind": "method", "parameters": parameters(raw, drop_first=True)}
    return {"kind": "attribute", "type": kind}


def describe_class(cls: type) -> dict[str, Any]:
    """A class's bases, constructor (``None`` when Python code cannot create one) and public members."""
    own = vars(cls)
    is_exception = issubclass(cls, BaseException)
    constructible = is_exception or "__new__" in own or "__init__" in own
    members = {
        name: member(cls, name, raw)
        for name, raw in sorted(own.items())
        if (not name.startswith("_") or name in PROTOCOL_DUNDERS)
    }
    return {
        "kind": "exception" if is_exception else "class",
        "bases": [base.__name__ for base in cls.__bases__],
        "constructor": parameters(cls, drop_first=False) if constructible and not is_exception else None,
        "members": members,
    }


def describe_module(module: types.ModuleType) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType):
            names[name] = {"kind": "module"}
        elif isinstance(obj, type):
            names[name] = describe_class(obj)
        elif callable(obj):
            names[name] = {"kind": "function", "parameters": parameters(obj, drop_first=False)}
        else:
            names[name] = {"kind": "value", "value": repr(obj)}
    return {"all": list(module.__all__), "names": names}


def main() -> None:
    if hasattr(importlib.import_module("hussh"), "HusshError"):
        sys.exit("this is our hussh, not upstream's: run me with upstream's interpreter")
    modules = {name: describe_module(importlib.import_module(name)) for name in MODULES}
    snapshot = {
        "upstream": {"distribution": "hussh", "version": importlib.metadata.version("hussh")},
        "modules": modules,
    }
    json.dump(snapshot, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
