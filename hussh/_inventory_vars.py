"""Ansible's connection variables: checking their values, and reading them from the ``group_vars/``
and ``host_vars/`` directories beside an inventory.

Those directories hold a file (``web.yml``, ``web.yaml``, ``web.json`` or plain ``web``) or a
directory of files per group or host, as Ansible's ``host_group_vars`` plugin reads them. They
mostly hold everything else a playbook needs (nested data, vaulted secrets, templates), so only
the top-level ``ansible_host``/``ansible_port``/``ansible_user`` lines are read from YAML files
(``ansible_ssh_*`` too), and the rest is left alone; JSON files are read whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from . import _inventory_yaml as yaml
from ._inventory_model import NO_VARS, HostVars, Inventory, InventoryError, read_text

CONNECTION = frozenset(("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port",
                        "ansible_user", "ansible_ssh_user"))
VALID_EXTENSIONS = (".yml", ".yaml", ".json")
"""Ansible's default ``yaml_valid_extensions``; a file without an extension is read too."""
MAX_DIR_DEPTH = 16
"""How deep a ``group_vars/NAME/`` directory may nest: a symlink loop gets an error, not a hang."""

_TOP_LEVEL = re.compile(r"^(ansible_(?:ssh_)?(?:host|port|user))[ \t]*:(.*)$", re.M)


def _vars(values: dict[str, object], where: str | Callable[[], str]) -> HostVars:
    """The connection variables among ``values`` (Ansible's names, older ``ansible_ssh_*`` too), checked.

    ``where`` (or what it returns: formatting it for every host would cost more than the parse) names
    the place in errors."""
    if not values or CONNECTION.isdisjoint(values):
        return NO_VARS
    get = values.get
    address = get("ansible_host") or get("ansible_ssh_host")
    port = get("ansible_port") or get("ansible_ssh_port")
    user = get("ansible_user") or get("ansible_ssh_user")
    if port is not None and not (type(port) is int and 0 < port < 65536):
        text = str(port)
        if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
            raise InventoryError(f"{_where(where)}: bad ansible_port {port!r}: want 1-65535")
        port = int(text)
    for key, value in (("ansible_host", address), ("ansible_user", user)):
        if value is not None and not (type(value) is str and value and value.isprintable() and " " not in value):
            if isinstance(value, str) and "{{" in value:
                raise InventoryError(f"{_where(where)}: {key} {value!r} is a Jinja template, which hussh does "
                                     "not evaluate")
            raise InventoryError(f"{_where(where)}: bad {key} {value!r}")
    return HostVars(address, port, user)  # type: ignore[arg-type]


def _where(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def apply_vars_dirs(inventory: Inventory, basedir: str) -> None:
    """The ``group_vars/`` and ``host_vars/`` values under ``basedir`` for the groups and hosts of
    ``inventory`` (``group_vars/all`` for every host), over what the inventory itself says."""
    for name, files in _named_files(os.path.join(basedir, "group_vars")).items():
        if name == "all" or inventory.has_group(name):
            inventory.add_vars_file(_read_all(files), group=name)
    for name, files in _named_files(os.path.join(basedir, "host_vars")).items():
        if inventory.has_host(name):
            inventory.add_vars_file(_read_all(files), host=name)


def _named_files(directory: str) -> dict[str, list[str]]:
    """Each group or host name under ``directory`` -> its files in the order read, as Ansible picks
    them: ``NAME`` (a file, or every file under a directory) else the first of ``NAME.yml``,
    ``NAME.yaml``, ``NAME.json``. Hidden and backup (``~``) entries are skipped."""
    try:
        entries = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise InventoryError(f"cannot read {directory}: {exc.strerror}") from None
    exact: dict[str, str] = {}
    suffixed: dict[str, tuple[int, str]] = {}
    for entry in entries:
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = os.path.join(directory, entry)
        exact[entry] = full
        stem, extension = os.path.splitext(entry)
        if extension in VALID_EXTENSIONS and os.path.isfile(full):
            rank = VALID_EXTENSIONS.index(extension)
            if stem not in suffixed or rank < suffixed[stem][0]:
                suffixed[stem] = (rank, full)
    found: dict[str, list[str]] = {}
    for name in dict.fromkeys([*exact, *suffixed]):
        if name in exact and (os.path.isdir(exact[name]) or os.path.isfile(exact[name])):
            path = exact[name]
            found[name] = _dir_files(path, 0) if os.path.isdir(path) else [path]
        elif name in suffixed:
            found[name] = [suffixed[name][1]]
    return found


def _dir_files(directory: str, depth: int) -> list[str]:
    """Every file under ``directory`` Ansible reads, in its order: sorted, subdirectories (without an
    extension) in place, files with a valid extension or none."""
    if depth >= MAX_DIR_DEPTH:
        raise InventoryError(f"{directory}: vars directories nested more than {MAX_DIR_DEPTH} deep")
    files = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = os.path.join(directory, entry)
        extension = os.path.splitext(entry)[1]
        if os.path.isdir(full) and not extension:
            files.extend(_dir_files(full, depth + 1))
        elif os.path.isfile(full) and (not extension or extension in VALID_EXTENSIONS):
            files.append(full)
    return files


def _read_all(files: list[str]) -> HostVars:
    """The connection values of ``files``, a later file's over an earlier one's."""
    result = NO_VARS
    for path in files:
        result = _read_one(path).over(result)
    return result


def _read_one(path: str) -> HostVars:
    text = read_text(path)
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
        if not isinstance(document, dict):
            raise InventoryError(f"{path}:1: want an object of variables")
        return _vars(document, f"{path}:1")
    values: dict[str, object] = {}
    for match in _TOP_LEVEL.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        key, value_text = match.group(1), yaml.strip_comment(match.group(2).strip()).rstrip()
        if not value_text:
            raise InventoryError(f"{path}:{line}: {key} wants a value on its line")
        try:
            values[key] = yaml.scalar(value_text, path, line)
        except yaml.YAMLError as exc:
            raise InventoryError(str(exc)) from None
        _vars({key: values[key]}, f"{path}:{line}")  # checked here, to name its line
    return _vars(values, path)
