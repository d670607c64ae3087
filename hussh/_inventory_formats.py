"""The inventory formats: Ansible (INI, YAML, JSON, dynamic scripts), ClusterShell (groups.conf,
groups.d YAML) and genders. Each reader fills an ``Inventory`` in one pass over its file and
reports a bad line as ``InventoryError`` naming ``file:line``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import _inventory_dsh as dsh
from . import _inventory_yaml as yaml
from ._inventory_model import NO_VARS, HostVars, Inventory, InventoryError, _expand_ranges, read_text
from ._inventory_vars import _vars, _where, apply_vars_dirs
from .hostlist import expand

FORMATS = ("ansible", "script", "clush", "groups.d", "genders", "dsh")
COMMAND_TIMEOUT = 60.0
"""Seconds an inventory script or a clush ``map``/``list``/``all`` command may take."""

_SECTION = re.compile(r"\[([^\]:\s]+)(?::(children|vars|hosts))?\]")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_SKIPPED = (".retry", ".pyc", ".pyo", "~", ".orig", ".bak", ".swp")
_DATA_SUFFIXES = (".yml", ".yaml", ".json", ".ini", ".conf", ".cfg", ".txt")


def read_sources(paths: list[str], kind: str | None) -> Inventory:
    """Every path's inventory, merged in order, then the ``group_vars/`` and ``host_vars/`` beside
    each Ansible one (a directory, or the directory of a file)."""
    inventory = read(paths[0], kind) if len(paths) == 1 else Inventory()
    if len(paths) != 1:
        for path in paths:
            inventory.update(read(path, kind))
    for path in paths:
        path_kind, path = _kind_of(path, kind)
        if os.path.isdir(path) and path_kind in (None, "ansible", "script"):
            apply_vars_dirs(inventory, path)
        elif not os.path.isdir(path) and (path_kind or _detect(path)) in ("ansible", "script"):
            apply_vars_dirs(inventory, os.path.dirname(path) or ".")
    return inventory


def _kind_of(path: str, kind: str | None) -> tuple[str | None, str]:
    """The format a path names (``FORMAT:PATH``) or is given, and the path without it."""
    prefix, colon, rest = path.partition(":")
    if kind is None and colon and prefix in FORMATS:
        kind, path = prefix, rest
    if kind is not None and kind not in FORMATS:
        raise InventoryError(f"unknown inventory format {kind!r} (want one of {', '.join(FORMATS)})")
    return kind, path


def read(path: str, kind: str | None) -> Inventory:
    """The inventory at ``path`` (a file, or a directory of them) in ``kind`` or the format it looks like."""
    kind, path = _kind_of(path, kind)
    if kind == "dsh":
        if not os.path.isdir(path):
            raise InventoryError(f"dsh inventory {path}: want a directory of group files")
        inventory = dsh.groups([path])
        inventory.sources.append(path)
        return inventory
    if os.path.isdir(path):
        inventory = Inventory()
        for entry in sorted(os.listdir(path)):
            full = os.path.join(path, entry)
            if not entry.startswith(".") and not entry.endswith(_SKIPPED) and os.path.isfile(full):
                inventory.update(read(full, kind))
        if not inventory.sources:
            inventory.sources.append(path)
        return inventory
    try:
        return _read_file(path, kind or _detect(path))
    except yaml.YAMLError as exc:
        raise InventoryError(str(exc)) from None


def _read_file(path: str, kind: str) -> Inventory:
    inventory = Inventory()
    inventory.sources.append(path)
    if kind == "script":
        _ansible_json(_run_script(path), f"{path} --list", inventory)
        return inventory
    text = _text(path)
    if kind == "genders":
        _genders(text, path, inventory)
    elif kind == "clush":
        _clush_conf(text, path, inventory)
    elif kind == "groups.d":
        _groups_d(yaml.load(text, path), path, inventory, default=True)
    elif path.endswith(".json"):
        _ansible_json(_json(text, path), path, inventory)
    elif path.endswith((".yml", ".yaml")):
        document = yaml.load(text, path)
        if isinstance(document, yaml.Mapping) and _looks_like_ansible(document):
            _ansible_yaml(document, path, inventory)
        else:
            _groups_d(document, path, inventory, default=True)
    else:
        _ansible_ini(text, path, inventory)
    return inventory


def _detect(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(_DATA_SUFFIXES):
        return "clush" if name.endswith(".conf") else "ansible"
    if "genders" in name:
        return "genders"
    if os.access(path, os.X_OK) and os.path.isfile(path):
        return "script"
    return "ansible"


def _text(path: str) -> str:
    return read_text(path, "inventory ")


def _host_and_port(name: str, where: str | Callable[[], str]) -> tuple[str, int | None]:
    """Ansible's ``host:port`` (one colon outside ranges, digits after it); IPv6 addresses stay whole."""
    host, colon, port = name.rpartition(":")
    if colon and port.isdigit() and ":" not in _BRACKETS.sub("", host):
        if not 0 < int(port) < 65536:
            raise InventoryError(f"{_where(where)}: bad port in {name!r}: want 1-65535")
        return host, int(port)
    return name, None


def _hosts(name: str, where: str | Callable[[], str]) -> tuple[list[str], int | None]:
    """The hosts a name stands for (``web[1:3]``) and the port it gives (``web1:2222``), if any."""
    if ":" not in name and "[" not in name:
        return [name], None
    host, port = _host_and_port(name, where)
    try:
        return _expand_ranges(host), port
    except (InventoryError, ValueError) as exc:
        raise InventoryError(f"{_where(where)}: {exc}") from None


# ---------------------------------------------------------------------------------------- Ansible

def _ansible_ini(text: str, path: str, inventory: Inventory) -> None:
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{path}:{number}"
        if line[0] == "[":
            match = _SECTION.fullmatch(line)
            if match is None:
                raise InventoryError(f"{where}: bad section header {line!r} (want [group], [group:children] "
                                     "or [group:vars])")
            section, kind = match.group(1), match.group(2) or "hosts"
            inventory.add_group(section)
            continue
        tokens = _tokens(line, where)
        if kind == "children":
            if len(tokens) != 1:
                raise InventoryError(f"{where}: want one child group name, got {line!r}")
            inventory.add_group(tokens[0], parent=section)
        elif kind == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise InventoryError(f"{where}: want key=value in [{section}:vars], got {line!r}")
            values = {key.strip(): _ini_value(value.strip())}
            inventory.add_group(section, group_vars=_vars(values, where))
        else:
            values = {}
            for token in tokens[1:]:
                key, eq, value = token.partition("=")
                if not eq or not key:
                    raise InventoryError(f"{where}: want key=value after the host, got {token!r}")
                values[key] = _ini_value(value)
            hosts, port = _hosts(tokens[0], where)
            host_vars = _vars(values, where)
            if port is not None and host_vars.port is None:
                host_vars = HostVars(host_vars.address, port, host_vars.user)
            for host in hosts:
                inventory.add_host(host, section, host_vars)


def _tokens(line: str, where: str) -> list[str]:
    """A line's words (shell quoting), without a `` #`` comment."""
    if "'" not in line and '"' not in line:
        return line.partition(" #")[0].split()
    try:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError as exc:
        raise InventoryError(f"{where}: {exc}") from None


def _ini_value(text: str) -> object:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _looks_like_ansible(document: yaml.Mapping) -> bool:
    """Ansible's YAML, unless every top-level value maps names to node sets (clush's groups.d)."""
    return not all(isinstance(body, dict) and all(isinstance(v, (str, int, list)) for v in body.values())
                   for body in document.values())


def _ansible_yaml(document: yaml.Mapping, path: str, inventory: Inventory) -> None:
    for group, body in document.items():
        _yaml_group(group, body, None, f"{path}:{document.lines[group]}", path, inventory)


def _yaml_group(group: str, body: object, parent: str | None, where: str, path: str,
                inventory: Inventory) -> None:
    inventory.add_group(group, parent=parent)
    if body is None:
        return
    if not isinstance(body, yaml.Mapping):
        raise InventoryError(f"{where}: group {group!r} must be a mapping of hosts, children and vars")
    for key in body:
        if key not in ("hosts", "children", "vars"):
            raise InventoryError(f"{path}:{body.lines[key]}: unexpected key {key!r} in group {group!r} "
                                 "(want hosts, children or vars)")
    hosts = body.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, yaml.Mapping):
            raise InventoryError(f"{path}:{body.lines['hosts']}: hosts of {group!r} must be a mapping host: vars")
        lines = hosts.lines
        name = ""

        def here() -> str:  # the line of the host being read, formatted only for an error
            return f"{path}:{lines[name]}"
        add_host = inventory.add_host
        for name, values in hosts.items():
            if values is None:
                host_vars = NO_VARS
            elif isinstance(values, dict):
                host_vars = _vars(values, here)
            else:
                raise InventoryError(f"{here()}: the vars of host {name!r} must be a mapping")
            if ":" not in name and "[" not in name:  # one host, no port: most of them
                add_host(name, group, host_vars)
                continue
            names, port = _hosts(name, here)
            if port is not None and host_vars.port is None:
                host_vars = HostVars(host_vars.address, port, host_vars.user)
            for host in names:
                add_host(host, group, host_vars)
    group_vars = body.get("vars")
    if group_vars is not None:
        if not isinstance(group_vars, dict):
            raise InventoryError(f"{path}:{body.lines['vars']}: vars of {group!r} must be a mapping")
        inventory.add_group(group, group_vars=_vars(group_vars, f"{path}:{body.lines['vars']}"))
    children = body.get("children")
    if children is not None:
        if not isinstance(children, yaml.Mapping):
            raise InventoryError(f"{path}:{body.lines['children']}: children of {group!r} must be a mapping")
        for child, child_body in children.items():
            _yaml_group(child, child_body, group, f"{path}:{children.lines[child]}", path, inventory)


def _json(text: str, path: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None


def _run_script(path: str) -> object:
    """A dynamic inventory's ``--list`` output, parsed."""
    try:
        done = subprocess.run([path, "--list"], capture_output=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InventoryError(f"{path} --list: no answer within {COMMAND_TIMEOUT:g} seconds") from None
    except OSError as exc:
        raise InventoryError(f"cannot run inventory script {path}: {exc.strerror}") from None
    if done.returncode != 0:
        first = done.stderr.decode(errors="replace").strip().split("\n")[0][:200]
        raise InventoryError(f"{path} --list: exit status {done.returncode}" + (f": {first}" if first else ""))
    return _json(done.stdout.decode("utf-8", errors="replace"), f"{path} --list")


def _ansible_json(data: object, where: str, inventory: Inventory) -> None:
    """The ``--list`` JSON: group -> [hosts] or {hosts, vars, children}; ``_meta.hostvars`` per host."""
    if not isinstance(data, dict):
        raise InventoryError(f"{where}: want a JSON object of groups")
    meta = data.get("_meta") or {}
    hostvars = meta.get("hostvars") or {} if isinstance(meta, dict) else None
    if not isinstance(hostvars, dict):
        raise InventoryError(f"{where}: _meta.hostvars must be an object of host: vars")
    for group, body in data.items():
        if group == "_meta":
            continue
        inventory.add_group(group)
        if isinstance(body, list):
            body = {"hosts": body}
        if not isinstance(body, dict):
            raise InventoryError(f"{where}: group {group!r} must be a list of hosts or an object")
        hosts, children, group_vars = body.get("hosts") or [], body.get("children") or [], body.get("vars")
        if not isinstance(hosts, list) or not isinstance(children, list) or not all(
                isinstance(x, str) for x in [*hosts, *children]):
            raise InventoryError(f"{where}: hosts and children of group {group!r} must be lists of names")
        for host in hosts:
            inventory.add_host(host, group)
        for child in children:
            inventory.add_group(child, parent=group)
        if group_vars:
            if not isinstance(group_vars, dict):
                raise InventoryError(f"{where}: vars of group {group!r} must be an object")
            inventory.add_group(group, group_vars=_vars(group_vars, f"{where}: group {group!r}"))
    for host, values in hostvars.items():
        if not isinstance(values, dict):
            raise InventoryError(f"{where}: hostvars of {host!r} must be an object")
        inventory.add_host(host, None, _vars(values, f"{where}: host {host!r}"))


# ---------------------------------------------------------------------------------------- genders

def _genders(text: str, path: str, inventory: Inventory) -> None:
    """``nodes attr,attr=value`` lines; every attribute (and ``attr=value``) is a group, as pdsh -g reads it."""
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) > 2:
            raise InventoryError(f"{where}: want 'nodes attr,attr=value,...', got {line!r}")
        try:
            hosts = expand(fields[0])
        except ValueError as exc:
            raise InventoryError(f"{where}: {exc}") from None
        attributes = [a for a in fields[1].split(",") if a] if len(fields) == 2 else []
        groups = [g for attribute in attributes
                  for g in ((attribute,) if "=" not in attribute else (attribute.partition("=")[0], attribute))]
        inventory.add_hosts(hosts)
        for group in groups:
            inventory.add_hosts(hosts, group)


# ---------------------------------------------------------------------------------------- ClusterShell

def _groups_d(document: object, path: str, inventory: Inventory, default: bool) -> None:
    """clush's YAML groups: ``source: {group: nodeset}``; a node set may name ``@other`` groups of its source.

    The first source's groups (or every source's when ``default`` is false, see ``_clush_conf``) also
    answer to their bare names; every group answers to ``source:group``.
    """
    if document is None:
        return
    if not isinstance(document, yaml.Mapping):
        raise InventoryError(f"{path}:1: want 'source:' then 'group: nodeset' lines")
    for index, (source, groups) in enumerate(document.items()):
        if not isinstance(groups, yaml.Mapping):
            raise InventoryError(f"{path}:{document.lines[source]}: source {source!r} must map groups to node sets")
        bare = default and index == 0
        _static_source(source, groups, path, inventory, bare)


def _static_source(source: str, groups: yaml.Mapping, path: str, inventory: Inventory, bare: bool) -> None:
    own = Inventory()
    pending: dict[str, str] = {}
    for group, value in groups.items():
        where = f"{path}:{groups.lines[group]}"
        if isinstance(value, list):
            value = ",".join(map(str, value))
        if not isinstance(value, (str, int)):
            raise InventoryError(f"{where}: group {group!r} must be a node set string")
        pending[group] = str(value)
        own.add_group(group)
    resolved: dict[str, list[str]] = {}
    while pending:  # groups naming groups: resolve those whose references are resolved, until none is left
        progress = False
        for group, value in list(pending.items()):
            refs = set(re.findall(r"@([^,!&\s]+)", value))
            if refs <= set(resolved):
                try:
                    hosts = own.nodes(value)
                except (InventoryError, ValueError) as exc:
                    raise InventoryError(f"{path}:{groups.lines[group]}: {exc}") from None
                resolved[group] = hosts
                own.add_hosts(hosts, group)
                del pending[group]
                progress = True
        if not progress:
            group = next(iter(pending))
            raise InventoryError(f"{path}:{groups.lines[group]}: group {group!r} refers to an unknown group "
                                 "or to itself")
    for group, hosts in resolved.items():
        names = [f"{source}:{group}"] + ([group] if bare and group != "all" else [])
        for name in names:
            inventory.add_group(name)
            inventory.add_hosts(hosts, name)


class _CommandSource:
    """A groups.conf section's ``map``/``list``/``all`` shell commands, each run once per argument."""

    def __init__(self, name: str, options: configparser.SectionProxy, cfgdir: str, bare: bool, where: str) -> None:
        self.name, self.cfgdir, self.bare, self.where = name, cfgdir, bare, where
        self.commands = {key: options.get(key) for key in ("map", "list", "all")}
        self.cache: dict[tuple[str, str], str] = {}

    def run(self, key: str, group: str = "") -> str:
        if (key, group) not in self.cache:
            command = self.commands[key] or ""
            for token, value in (("$GROUP", shlex.quote(group)), ("$SOURCE", self.name), ("$CFGDIR", self.cfgdir)):
                command = command.replace(token, value)
            try:
                done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=COMMAND_TIMEOUT,
                                      stdin=subprocess.DEVNULL, cwd=self.cfgdir or None)
            except subprocess.TimeoutExpired:
                raise InventoryError(f"{self.where}: [{self.name}] {key}: no answer within "
                                     f"{COMMAND_TIMEOUT:g} seconds") from None
            if done.returncode != 0 and key != "map":
                first = done.stderr.decode(errors="replace").strip().split("\n")[0][:200]
                raise InventoryError(f"{self.where}: [{self.name}] {key}: exit status {done.returncode}: {first}")
            self.cache[key, group] = done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else ""
        return self.cache[key, group]

    def lookup(self, group: str) -> list[str] | None:
        source, colon, name = group.partition(":")
        if not colon:
            if not self.bare:
                return None
            name = group
        elif source != self.name:
            return None
        if not self.commands["map"]:
            return None
        text = self.run("map", name)
        try:
            hosts = [host for item in text.split() for host in expand(item)]
        except ValueError as exc:
            raise InventoryError(f"{self.where}: [{self.name}] map {name!r}: {exc}") from None
        return hosts or None

    def names(self) -> list[str]:
        if not self.commands["list"]:
            return []
        found = self.run("list").split()
        return [f"{self.name}:{g}" for g in found] + (found if self.bare else [])

    def every(self) -> list[str]:
        try:
            return [host for item in self.run("all").split() for host in expand(item)]
        except ValueError as exc:
            raise InventoryError(f"{self.where}: [{self.name}] all: {exc}") from None


def _clush_conf(text: str, path: str, inventory: Inventory) -> None:
    """``groups.conf``: ``[Main]`` (``default``, ``confdir``, ``autodir``) and command-based sources."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), strict=True)
    try:
        parser.read_string(text, source=path)
    except configparser.ParsingError as exc:
        number = exc.errors[0][0] if exc.errors else 0
        line = text.split("\n")[number - 1].strip() if 0 < number <= text.count("\n") + 1 else ""
        raise InventoryError(f"{path}:{number}: cannot parse {line!r}") from None
    except configparser.Error as exc:
        raise InventoryError(f"{path}: {' '.join(str(exc).split())}") from None
    cfgdir = os.path.dirname(os.path.abspath(path))
    main = parser["Main"] if parser.has_section("Main") else None
    default = main.get("default") if main is not None else None
    sections = [(s, parser[s], path) for s in parser.sections() if s != "Main"]
    if main is not None:
        for directory in _dirs(main.get("confdir") or main.get("groupsdir") or "", cfgdir):
            for conf in sorted(Path(directory).glob("*.conf")):
                extra = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), strict=True)
                try:
                    extra.read_string(_text(str(conf)), source=str(conf))
                except configparser.Error as exc:
                    raise InventoryError(f"{conf}: {' '.join(str(exc).split())}") from None
                sections += [(s, extra[s], str(conf)) for s in extra.sections()]
        for directory in _dirs(main.get("autodir") or "", cfgdir):
            for file in sorted(Path(directory).glob("*.yaml")):
                document = yaml.load(_text(str(file)), str(file))
                if isinstance(document, yaml.Mapping):
                    for source, groups in document.items():
                        if not isinstance(groups, yaml.Mapping):
                            raise InventoryError(f"{file}:{document.lines[source]}: source {source!r} must map "
                                                 "groups to node sets")
                        _static_source(source, groups, str(file), inventory, source == default)
    for index, (section, options, where) in enumerate(sections):
        for name in (n.strip() for n in section.split(",")):
            bare = name == default if default else index == 0
            commands = _CommandSource(name, options, cfgdir, bare, where)
            inventory.add_lazy(commands.lookup, commands.names, commands.every if options.get("all") else None)


def _dirs(value: str, cfgdir: str) -> list[str]:
    return [d for d in value.replace("$CFGDIR", cfgdir).split() if os.path.isdir(d)]
