"""dsh group files, as pdsh's ``dshgroup`` module reads them for ``-g NAME`` and ``-X NAME``.

A group is a file named like it: ``~/.dsh/group/NAME`` if readable, else ``NAME`` in the first
directory of ``$DSHGROUP_PATH`` (``:``-separated; ``/etc/dsh/group`` when unset) that has it. Each
line holds host names or patterns (``web[1-4]``, several per line separated by commas or spaces,
``user@host`` as dsh writes them); ``#`` starts a comment, and ``#include FILE`` at the start of a
line reads another file: an absolute path, one starting with ``./`` or ``../`` (from the current
directory, as pdsh does), else a name looked up along the same directories. Files are read only
when their group is asked for.
"""

from __future__ import annotations

import os
import re

from ._inventory_model import Inventory, InventoryError, read_text
from .hostlist import expand

ENV = "DSHGROUP_PATH"
DEFAULT_PATH = "/etc/dsh/group"
USER_DIR = "~/.dsh/group"
MAX_INCLUDE_DEPTH = 32
"""How deep ``#include`` may nest: a hostile chain of files gets an error, not a stack overflow."""

_INCLUDE = re.compile(r"#include[ \t]+(\S+)")


def search_path() -> list[str]:
    """Where pdsh looks for group files: ``~/.dsh/group``, then ``$DSHGROUP_PATH``'s directories."""
    return [os.path.expanduser(USER_DIR), *(d for d in os.environ.get(ENV, DEFAULT_PATH).split(":") if d)]


def groups(directories: list[str] | None = None, *, in_all: bool = True) -> Inventory:
    """An inventory whose groups are the dsh group files of ``directories`` (default: ``search_path()``),
    read when asked for; ``in_all``: whether their hosts count for ``all`` (``-a``)."""
    source = _DshGroups(directories if directories is not None else search_path())
    inventory = Inventory()
    inventory.add_lazy(source.lookup, source.names, in_all=in_all)
    return inventory


class _DshGroups:
    """The group files of some directories, each read once, when its group is first asked for."""

    def __init__(self, directories: list[str]) -> None:
        self.directories = directories

    def lookup(self, group: str) -> list[str] | None:
        if not group or "/" in group or group.startswith(".") or "\0" in group:
            return None  # not a file name: never a path out of the group directories
        path = self._find(group)
        if path is None:
            return None
        return list(dict.fromkeys(self._read(path, set(), 0)))

    def names(self) -> list[str]:
        found: dict[str, None] = {}
        for directory in self.directories:
            try:
                entries = sorted(os.listdir(directory))
            except OSError:
                continue
            found.update((entry, None) for entry in entries
                         if not entry.startswith(".") and os.path.isfile(os.path.join(directory, entry)))
        return list(found)

    def _find(self, name: str) -> str | None:
        for directory in self.directories:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.R_OK):
                return path
        return None

    def _read(self, path: str, seen: set[str], depth: int) -> list[str]:
        if depth > MAX_INCLUDE_DEPTH:
            raise InventoryError(f"{path}: #include nested more than {MAX_INCLUDE_DEPTH} deep")
        real = os.path.realpath(path)
        if real in seen:
            return []  # included twice (or in a circle): pdsh skips it too
        seen.add(real)
        text = read_text(path, "dsh group file ")
        hosts: list[str] = []
        for number, line in enumerate(text.split("\n"), 1):
            include = _INCLUDE.match(line)
            if include is not None:
                hosts.extend(self._read(self._included(include.group(1), path, number), seen, depth + 1))
                continue
            for word in line.partition("#")[0].split():
                try:
                    hosts.extend(expand(word))
                except ValueError as exc:
                    raise InventoryError(f"{path}:{number}: {exc}") from None
        return hosts

    def _included(self, name: str, path: str, number: int) -> str:
        if name.startswith(("/", "./", "../")):
            return name
        found = self._find(name) if "/" not in name else None
        if found is None:
            raise InventoryError(f"{path}:{number}: #include {name}: no such file in {':'.join(self.directories)}")
        return found
