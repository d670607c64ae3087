"""The inventory's model: hosts, groups, their variables and the two pattern languages (see
``hussh.inventory``, which reads files into it). The format readers build on this module."""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import NamedTuple

from .hostlist import expand, read_hosts_file

__all__ = ["NO_VARS", "HostVars", "Inventory", "InventoryError", "read_text"]

class InventoryError(ValueError):
    """A malformed inventory or a pattern naming nothing; one line, naming ``file:line`` when it can."""


class HostVars(NamedTuple):
    """How the inventory says to reach a host; ``None`` leaves it to the caller and the ssh config.

    (A named tuple: made once for each of a hundred thousand hosts, it costs a third of a frozen dataclass.)"""

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
        self._group_files: dict[str, HostVars] = {}  # from group_vars/ and host_vars/ (Ansible: they win)
        self._host_files: dict[str, HostVars] = {}
        self._lazy: list[Callable[[str], list[str] | None]] = []  # command sources: group -> hosts or None
        self._lazy_lists: list[Callable[[], list[str]]] = []  # command sources: every group name
        self._lazy_all: list[tuple[Callable[[], list[str]] | None, Callable[[], list[str]]]] = []
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
            members = self._members.get(group)
            if members is None:
                members = self._members[group] = {}
            members[host] = None
        self._effective = None

    def add_hosts(self, hosts: list[str], group: str | None = None) -> None:
        """Add ``hosts`` (no vars of their own), to ``group`` too when given: one call for a node set."""
        known = self._hosts
        for host in hosts:
            if host not in known:
                known[host] = NO_VARS
        self._effective = None
        if group is None:
            return
        members = self._members.get(group)
        if members is None:
            members = self._members[group] = {}
        members.update(dict.fromkeys(hosts))
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
                 every: Callable[[], list[str]] | None = None, *, in_all: bool = True) -> None:
        """A source asked only when used: ``lookup(group)`` (``None``: not mine), ``names()`` of its
        groups, and for ``all`` its ``every()`` host, else its groups' hosts (none if not ``in_all``)."""
        self._lazy.append(lookup)
        self._lazy_lists.append(names)
        if in_all:
            self._lazy_all.append((every, names))

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
        for mine, theirs in ((self._group_files, other._group_files), (self._host_files, other._host_files)):
            for name, file_vars in theirs.items():
                mine[name] = file_vars.over(mine.get(name, NO_VARS))
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
        """Every host: the files' and those of sources asked when used (their ``all``, else every group's)."""
        found = dict.fromkeys(self._hosts)
        for every, names in self._lazy_all:
            if every is not None:
                found.update(dict.fromkeys(every()))
            else:
                for group in names():
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
        """Ansible's precedence: ``host_vars/`` files, the host's own inventory vars, ``group_vars/``
        files, the inventory's group vars; among groups, a deeper one's over its parent's, the later
        name's over the earlier at one depth, and ``all``'s last."""
        effective = dict(self._hosts)
        for host, file_vars in self._host_files.items():
            effective[host] = file_vars.over(effective.get(host, NO_VARS))
        if not self._group_vars and not self._group_files:
            return effective
        depth = self._depths()
        for layer in (self._group_files, self._group_vars):  # the stronger layer first: its values stay
            inherited: dict[str, HostVars] = {}
            for group in sorted(layer, key=lambda g: (g != "all", depth.get(g, 0), g)):  # the weakest first
                for host in self.hosts_of(group):
                    inherited[host] = layer[group].over(inherited.get(host, NO_VARS))
            for host, group_vars in inherited.items():
                effective[host] = effective.get(host, NO_VARS).over(group_vars)
        return effective

    def add_vars_file(self, host_vars: HostVars, *, group: str | None = None, host: str | None = None) -> None:
        """Values from a ``group_vars/`` or ``host_vars/`` file: they beat the inventory's own, as in Ansible."""
        layer, name = (self._group_files, group) if group is not None else (self._host_files, host)
        if name is None:
            raise TypeError("add_vars_file needs group= or host=")
        layer[name] = host_vars.over(layer.get(name, NO_VARS))
        if group is not None:
            self._members.setdefault(group, {})
        self._effective = None

    def has_host(self, host: str) -> bool:
        """Whether the files name ``host`` (command sources' hosts once asked for)."""
        return host in self._hosts

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
        """Hosts of an Ansible pattern: ``web:&prod:!web3``, ``web,db``, ``all``, ``web*``, ``~web\\d+``, ``web[0:2]``.

        Terms are separated by ``:`` or ``,``; each names a group, a host, a wildcard or a regex
        (``~``) over hosts and groups, optionally followed by a subscript: ``[i]`` (``-1`` is the
        last host), ``[i:j]`` (both ends included), ``[i:]``, ``[:j]``. The plain terms are joined,
        then every ``&`` term intersects, then every ``!`` term removes. A term matching nothing is
        an error, as a typo should be.
        """
        union: list[str] = []
        inter: list[str] = []
        minus: list[str] = []
        for term in _split_pattern(pattern, ":,"):
            kind, name = ((inter, term[1:]) if term[0] == "&" else (minus, term[1:]) if term[0] in "!-"
                          else (union, term))
            if not name.strip():
                raise InventoryError(f"empty term in pattern {pattern!r}")
            kind.append(name.strip())
        if not union:
            union.append("all")  # "!web3" alone: everything but web3, as Ansible reads it
        hosts: dict[str, None] = {}
        for term in union:
            hosts.update(dict.fromkeys(self._ansible_term(term)))
        for term in inter:
            keep = set(self._ansible_term(term))
            hosts = {host: None for host in hosts if host in keep}
        for term in minus:
            for host in self._ansible_term(term):
                hosts.pop(host, None)
        return list(hosts)

    def nodes(self, pattern: str) -> list[str]:
        """Hosts of a clush/pdsh node set: ``@web,@db``, ``web[1-9]!web3``, ``@web&@prod``, ``@a^@b``,
        ``-web3``, ``^file``.

        As in ClusterShell, the operators ``,`` (union), ``!`` (difference), ``&`` (intersection) and
        ``^`` (symmetric difference) apply from left to right; a pattern starting with ``!`` or ``&``
        starts from every host. pdsh's ``-host`` items are taken out of the result at the end.
        Hosts not in the inventory are allowed (``user@host:port`` too), as with pdsh's ``-w``.
        """
        steps: list[tuple[str, str]] = []
        removed: list[str] = []
        for item in _split_pattern(pattern, ","):
            if item[0] == "-":
                if not item[1:].strip():
                    raise InventoryError(f"empty term in pattern {pattern!r}")
                removed.append(item[1:].strip())
                continue
            for op, term in _split_infix(item):
                if not term:
                    raise InventoryError(f"empty term after {op!r} in pattern {pattern!r}")
                steps.append((op, term))
        hosts: dict[str, None] = {}
        if not steps or steps[0][0] in "!&":
            hosts = dict.fromkeys(self._node_term("@*"))
        for op, term in steps:
            found = self._node_term(term)
            if op == ",":
                hosts.update(dict.fromkeys(found))
            elif op == "!":
                for host in found:
                    hosts.pop(host, None)
            elif op == "&":
                keep = set(found)
                hosts = {host: None for host in hosts if host in keep}
            else:  # "^": in exactly one of the two
                for host in found:
                    if host in hosts:
                        del hosts[host]
                    else:
                        hosts[host] = None
        for term in removed:
            for host in self._node_term(term):
                hosts.pop(host, None)
        return list(hosts)

    def _ansible_term(self, term: str) -> list[str]:
        subscript = _SUBSCRIPT.fullmatch(term) if term[0] != "~" else None
        if subscript is not None:
            try:
                hosts = self._ansible_name(subscript.group(1))
            except InventoryError:
                pass  # not a group with a subscript: maybe a host range (web[1:3])
            else:
                return _subscript(hosts, subscript, term)
        return self._ansible_name(term)

    def _ansible_name(self, term: str) -> list[str]:
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


_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]*):([0-9]*))\]")
"""Ansible's ``web[0]``, ``web[-1]``, ``web[0:2]``, ``web[1:]``, ``web[:3]``."""


def _subscript(hosts: list[str], subscript: re.Match[str], term: str) -> list[str]:
    """The hosts at an Ansible subscript's positions: ``[i]`` one (from the end when negative),
    ``[i:j]`` those from i to j, both included, as far as there are hosts."""
    index, first, last = subscript.group(2, 3, 4)
    if index is not None:
        position = int(index)
        if not -len(hosts) <= position < len(hosts):
            raise InventoryError(f"no host at position {position} in pattern {term!r} "
                                 f"({len(hosts)} host{'s' if len(hosts) != 1 else ''})")
        return [hosts[position]]
    if not first and not last:
        raise InventoryError(f"bad subscript in pattern {term!r}: give a start, an end or both")
    return hosts[int(first or 0): int(last) + 1 if last else len(hosts)]


def _split_pattern(pattern: str, separators: str) -> list[str]:
    """Split at ``separators`` outside brackets (``web[1:3]`` and ``[v6::1]`` stay whole)."""
    if "[" not in pattern:
        pieces = re.split(f"[{separators}]", pattern) if len(separators) > 1 else pattern.split(separators)
        return [piece.strip() for piece in pieces if piece.strip()]
    parts: list[str] = []
    start = depth = 0
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


def _split_infix(item: str) -> list[tuple[str, str]]:
    """clush's ``a!b&c^d`` as ``[(",", "a"), ("!", "b"), ("&", "c"), ("^", "d")]`` (operators outside
    brackets). A leading ``!`` or ``&`` is an operator too; a leading ``^`` names a file (``^hosts.txt``)."""
    if "!" not in item and "&" not in item and "^" not in item:
        return [(",", item)]
    out: list[tuple[str, str]] = []
    op, start, depth = ",", 0, 0
    if item[0] in "!&":
        op, start = item[0], 1
    for index in range(start, len(item)):
        ch = item[index]
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch in "!&^" and depth == 0 and index > start:
            out.append((op, item[start:index].strip()))
            op, start = ch, index + 1
    out.append((op, item[start:].strip()))
    return out


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


def read_text(path: str, what: str = "") -> str:
    """``path``'s text (UTF-8, a byte-order mark allowed): a file that cannot be read, or a byte that is not
    UTF-8, is one ``InventoryError`` naming the file (``what`` says what it was) and the line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InventoryError(f"cannot read {what}{path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(f"{path}:{line}: not UTF-8 text") from None
