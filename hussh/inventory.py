"""Inventories and groups: one resolver for the library and the command line.

``Inventory.load(path)`` reads Ansible inventories (INI, YAML, JSON, or an executable dynamic
inventory script run with ``--list``), ClusterShell's ``groups.conf`` (with its ``groups.d`` YAML
files and command-based ``map``/``list``/``all`` sources) and pdsh's genders file. Hosts keep the
address, port and user the inventory gives them (``ansible_host``, ``ansible_port``,
``ansible_user``), which ``MultiConnection.from_inventory`` puts in each host's spec.

Two pattern languages select hosts, with the same meaning: Ansible's (``select``:
``web:&prod:!web3``, ``web,db``, ``web*``, ``~regex``) and clush's/pdsh's node sets (``nodes``:
``@web,@db``, ``web[1-9]!web3``, ``-web3``, ``^file``). In both, the plain terms are joined first,
then every ``&`` term intersects, then every ``!`` (or ``-``) term removes. Parsing is linear in
the size of the files (``scale/bench_inventory.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .hostlist import expand, read_hosts_file

__all__ = ["ENV", "HostVars", "Inventory", "InventoryError", "default_paths", "load"]

ENV = "HUSSH_INVENTORY"
"""Environment variable naming inventory files (``os.pathsep``-separated) when none is given."""

USER_INVENTORY = "~/.config/hussh/inventory"
CLUSH_GROUPS = ("~/.config/clustershell/groups.conf", "/etc/clustershell/groups.conf")
GENDERS = "/etc/genders"


class InventoryError(ValueError):
    """A malformed inventory or a pattern naming nothing; one line, naming ``file:line`` when it can."""


@dataclass(frozen=True, slots=True)
class HostVars:
    """How the inventory says to reach a host; ``None`` leaves it to the caller and the ssh config."""

    address: str | None = None
    port: int | None = None
    user: str | None = None

    def over(self, base: HostVars) -> HostVars:
        """These values where set, ``base``'s elsewhere."""
        return HostVars(self.address or base.address, self.port or base.port, self.user or base.user)


NO_VARS = HostVars()


class Inventory:
    """Hosts (in the order first seen), groups of them, and each host's ``HostVars``.

    A group holds hosts and child groups; ``hosts_of(group)`` is every host under it. Groups that
    come from a command (clush ``map``) are asked for only when used, once.
    """

    def __init__(self) -> None:
        self._hosts: dict[str, HostVars] = {}
        self._members: dict[str, dict[str, None]] = {}  # group -> its own hosts, ordered
        self._children: dict[str, dict[str, None]] = {}
        self._group_vars: dict[str, HostVars] = {}
        self._lazy: list[Callable[[str], list[str] | None]] = []  # command sources: group -> hosts or None
        self._lazy_lists: list[Callable[[], list[str]]] = []  # command sources: every group name
        self._lazy_all: list[Callable[[], list[str]]] = []
        self._effective: dict[str, HostVars] | None = None
        self._expanded: dict[str, list[str]] = {}
        self.sources: list[str] = []

    # -- building (the format readers call these)

    def add_host(self, host: str, group: str | None = None, host_vars: HostVars = NO_VARS) -> None:
        """Add ``host`` (to ``group`` too, when given); vars given for it again take the later values."""
        known = self._hosts.get(host)
        if known is None or known is NO_VARS:
            self._hosts[host] = host_vars
        elif host_vars is not NO_VARS:
            self._hosts[host] = host_vars.over(known)
        if group is not None:
            self._members.setdefault(group, {})[host] = None
        self._effective = None

    def add_group(self, group: str, parent: str | None = None, group_vars: HostVars | None = None) -> None:
        self._members.setdefault(group, {})
        if parent is not None:
            self._members.setdefault(parent, {})
            self._children.setdefault(parent, {})[group] = None
        if group_vars is not None:
            self._group_vars[group] = group_vars.over(self._group_vars.get(group, NO_VARS))
        self._expanded.clear()
        self._effective = None

    def add_lazy(self, lookup: Callable[[str], list[str] | None], names: Callable[[], list[str]],
                 every: Callable[[], list[str]] | None = None) -> None:
        """A command-backed source: ``lookup(group)`` (``None``: not mine), ``names()``, ``every()`` host."""
        self._lazy.append(lookup)
        self._lazy_lists.append(names)
        if every is not None:
            self._lazy_all.append(every)

    def update(self, other: Inventory) -> None:
        """Add another inventory's hosts, groups and sources (its host vars win where both say)."""
        for host, host_vars in other._hosts.items():
            self.add_host(host, None, host_vars)
        for group, members in other._members.items():
            self._members.setdefault(group, {}).update(members)
        for group, children in other._children.items():
            self._children.setdefault(group, {}).update(children)
        for group, group_vars in other._group_vars.items():
            self._group_vars[group] = group_vars.over(self._group_vars.get(group, NO_VARS))
        self._lazy += other._lazy
        self._lazy_lists += other._lazy_lists
        self._lazy_all += other._lazy_all
        self.sources += other.sources
        self._expanded.clear()
        self._effective = None

    # -- reading

    @property
    def hosts(self) -> list[str]:
        """Every host the files name, in the order first seen (command sources: see ``all_hosts``)."""
        return list(self._hosts)

    def all_hosts(self) -> list[str]:
        """Every host: the files' and those of command sources (their ``all``, else every group's)."""
        found = dict.fromkeys(self._hosts)
        for every in self._lazy_all:
            found.update(dict.fromkeys(every()))
        if not self._lazy_all:
            for group in self._lazy_group_names():
                found.update(dict.fromkeys(self.hosts_of(group)))
        return list(found)

    def groups(self) -> list[str]:
        """Every group name, command sources' included."""
        return list(dict.fromkeys([*self._members, *self._lazy_group_names()]))

    def _lazy_group_names(self) -> list[str]:
        return [name for names in self._lazy_lists for name in names()]

    def has_group(self, group: str) -> bool:
        return group in self._members or group in self._expanded or self._lazy_lookup(group) is not None

    def hosts_of(self, group: str) -> list[str]:
        """The hosts of ``group`` and of its children, in order; ``InventoryError`` if there is none."""
        found = self._expanded.get(group)
        if found is None:
            found = self._expand(group)
        return found

    def vars(self, host: str) -> HostVars:
        """``host``'s address, port and user: its own values, else its groups' (deeper groups first)."""
        if self._effective is None:
            self._effective = self._resolve_vars()
        return self._effective.get(host, NO_VARS)

    def _expand(self, group: str) -> list[str]:
        if group == "all" and "all" not in self._members:
            return self.all_hosts()
        if group not in self._members:
            hosts = self._lazy_lookup(group)
            if hosts is None:
                raise InventoryError(f"no group {group!r} in {self.describe()}")
            self._expanded[group] = hosts
            return hosts
        result: dict[str, None] = {}
        stack, seen = [group], set()
        order: list[str] = []
        while stack:  # depth-first, each group once (a cycle in children is harmless)
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            order.append(name)
            stack.extend(reversed(list(self._children.get(name, ()))))
        for name in order:
            result.update(self._members.get(name, {}))
        if group == "all":
            result.update(dict.fromkeys(self._hosts))
        hosts = self._expanded[group] = list(result)
        return hosts

    def _lazy_lookup(self, group: str) -> list[str] | None:
        for lookup in self._lazy:
            hosts = lookup(group)
            if hosts is not None:
                for host in hosts:
                    self._hosts.setdefault(host, NO_VARS)
                return hosts
        return None

    def _resolve_vars(self) -> dict[str, HostVars]:
        """Host vars over group vars, a child group's over its parent's (Ansible's order)."""
        effective = dict(self._hosts)
        if not self._group_vars:
            return effective
        depth = self._depths()
        inherited: dict[str, HostVars] = {}
        for group in sorted(self._group_vars, key=lambda g: (-depth.get(g, 0), g)):
            for host in self.hosts_of(group):
                inherited[host] = inherited.get(host, NO_VARS).over(self._group_vars[group])
        for host, group_vars in inherited.items():
            effective[host] = effective.get(host, NO_VARS).over(group_vars)
        return effective

    def _depths(self) -> dict[str, int]:
        """Each group's depth under the roots (a group under two parents takes the deeper)."""
        depth: dict[str, int] = {}
        children_of = self._children
        roots = set(self._members) - {c for cs in children_of.values() for c in cs}
        frontier = [(root, 0) for root in sorted(roots or self._members)]
        while frontier:
            group, level = frontier.pop()
            if depth.get(group, -1) >= level or level > len(self._members):
                continue
            depth[group] = level
            frontier.extend((child, level + 1) for child in children_of.get(group, ()))
        return depth

    def describe(self) -> str:
        return ", ".join(self.sources) if self.sources else "the inventory (none given)"

    # -- patterns

    def select(self, pattern: str) -> list[str]:
        """Hosts of an Ansible pattern: ``web:&prod:!web3``, ``web,db``, ``all``, ``web*``, ``~web\\d+``.

        Terms are separated by ``:`` or ``,``; each names a group, a host, a wildcard or a regex
        (``~``) over hosts and groups. A term matching nothing is an error, as a typo should be.
        """
        union, inter, minus = _split_terms(_split_pattern(pattern, ":,"), pattern)
        return _combine(union, inter, minus, self._ansible_term)

    def nodes(self, pattern: str) -> list[str]:
        """Hosts of a clush/pdsh node set: ``@web,@db``, ``web[1-9]!web3``, ``@web&@prod``, ``-web3``, ``^file``.

        Hosts not in the inventory are allowed (``user@host:port`` too), as with pdsh's ``-w``.
        """
        items: list[str] = []
        for item in _split_pattern(pattern, ","):
            items.extend(_split_infix(item.strip()))
        union, inter, minus = _split_terms(items, pattern, "@*")
        return _combine(union, inter, minus, self._node_term)

    def _ansible_term(self, term: str) -> list[str]:
        if term in ("all", "*"):
            return self.hosts_of("all")
        if term.startswith("@"):
            return self._node_term(term)
        if term.startswith("~"):
            try:
                regex = re.compile(term[1:])
            except re.error as exc:
                raise InventoryError(f"bad regular expression in pattern {term!r}: {exc}") from None
            return self._matching(regex.search)
        if any(ch in term for ch in "*?"):
            return self._matching(lambda name: fnmatchcase(name, term))
        if self.has_group(term):
            return self.hosts_of(term)
        if term in self._hosts:
            return [term]
        names = _expand_ranges(term)
        if "[" in term and all(name in self._hosts for name in names):
            return names
        raise InventoryError(f"no group or host {term!r} in {self.describe()}")

    def _matching(self, match: Callable[[str], object]) -> list[str]:
        found: dict[str, None] = {}
        for group in self.groups():
            if match(group):
                found.update(dict.fromkeys(self.hosts_of(group)))
        found.update((host, None) for host in self.hosts_of("all") if match(host))
        return list(found)

    def _node_term(self, term: str) -> list[str]:
        if term.startswith("@"):
            name = term[1:]
            if name in ("*", ""):
                return self.hosts_of("all")
            if not self.has_group(name):
                raise InventoryError(f"no group {name!r} in {self.describe()}")
            return self.hosts_of(name)
        if term.startswith("^"):
            try:
                return read_hosts_file(term[1:])
            except OSError as exc:
                raise InventoryError(f"cannot read host file {exc.filename}: {exc.strerror}") from None
        return expand(term)


def _split_pattern(pattern: str, separators: str) -> list[str]:
    """Split at ``separators`` outside brackets (``web[1:3]`` and ``[v6::1]`` stay whole)."""
    parts, start, depth = [], 0, 0
    for index, ch in enumerate(pattern):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch in separators and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
    parts.append(pattern[start:])
    return [part.strip() for part in parts if part.strip()]


def _split_infix(item: str) -> list[str]:
    """clush's ``a!b&c`` as ``["a", "!b", "&c"]`` (outside brackets); a leading operator stays on its term."""
    out, start, depth = [], 0, 0
    for index, ch in enumerate(item):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch in "!&" and depth == 0 and index > start:
            out.append(item[start:index])
            start = index
    out.append(item[start:])
    return [part for part in out if part]


def _split_terms(terms: Iterable[str], pattern: str, everything: str = "all") -> tuple[list[str], list[str], list[str]]:
    union: list[str] = []
    inter: list[str] = []
    minus: list[str] = []
    for term in terms:
        kind, name = (inter, term[1:]) if term[0] == "&" else (minus, term[1:]) if term[0] in "!-" else (union, term)
        if not name.strip():
            raise InventoryError(f"empty term in pattern {pattern!r}")
        kind.append(name.strip())
    if not union and (inter or minus):
        union.append(everything)  # "!web3" alone: everything but web3, as Ansible reads it
    return union, inter, minus


def _combine(union: list[str], inter: list[str], minus: list[str],
             resolve: Callable[[str], list[str]]) -> list[str]:
    hosts: dict[str, None] = {}
    for term in union:
        hosts.update(dict.fromkeys(resolve(term)))
    for term in inter:
        keep = set(resolve(term))
        hosts = {host: None for host in hosts if host in keep}
    for term in minus:
        for host in resolve(term):
            hosts.pop(host, None)
    return list(hosts)


_ANSIBLE_RANGE = re.compile(r"\[([0-9]+|[a-zA-Z]):([0-9]+|[a-zA-Z])(?::([0-9]+))?\]")


def _expand_ranges(name: str) -> list[str]:
    """Ansible's host ranges: ``web[01:20]`` (width kept), ``db-[a:f]``, ``node[0:10:2]``; several multiply."""
    if "[" not in name:
        return [name]
    match = _ANSIBLE_RANGE.search(name)
    if match is None:
        if "[" in name and "-" in name[name.index("[") :]:
            return expand(name)  # hussh's own web[1-3] form
        return [name]
    first, last, step = match.group(1), match.group(2), int(match.group(3) or 1)
    if step < 1:
        raise InventoryError(f"bad step in host range {name!r}")
    if first.isdigit() != last.isdigit():
        raise InventoryError(f"host range {name!r} mixes letters and numbers")
    if first.isdigit():
        if int(first) > int(last):
            raise InventoryError(f"host range {name!r}: start is greater than end")
        width = len(first) if first.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(first), int(last) + 1, step)]
    else:
        if first > last:
            raise InventoryError(f"host range {name!r}: start is greater than end")
        values = [chr(c) for c in range(ord(first), ord(last) + 1, step)]
    head, tail = name[: match.start()], name[match.end() :]
    return [f"{head}{value}{rest}" for value in values for rest in _expand_ranges(tail)]


def default_paths() -> list[str]:
    """Where inventories come from when none is given: ``$HUSSH_INVENTORY``, else the first of
    ``~/.config/hussh/inventory``, clush's ``groups.conf`` (user's, then ``/etc``) and ``/etc/genders``
    that exists."""
    named = os.environ.get(ENV)
    if named:
        return [path for path in named.split(os.pathsep) if path]
    for candidate in (USER_INVENTORY, *CLUSH_GROUPS, GENDERS):
        path = os.path.expanduser(candidate)
        if os.path.exists(path):
            return [path]
    return []


def load(*paths: str | os.PathLike[str], format: str | None = None) -> Inventory:
    """One ``Inventory`` from every path, later files adding to earlier ones.

    ``format`` is ``ansible`` (INI, YAML or JSON), ``script`` (run with ``--list``), ``clush``
    (``groups.conf``), ``groups.d`` (clush's YAML groups) or ``genders``; by default it is told from
    the file (see docs/inventories.md). A path may also be written ``FORMAT:PATH``.
    """
    from ._inventory_formats import read  # noqa: PLC0415 - the readers import this module

    if len(paths) == 1:
        return read(os.fspath(paths[0]), format)
    inventory = Inventory()
    for path in paths:
        inventory.update(read(os.fspath(path), format))
    return inventory
