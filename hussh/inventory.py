"""Inventories and groups: one resolver for the library and the command line.

``Inventory.load(path)`` reads Ansible inventories (INI, YAML, JSON, or an executable dynamic
inventory script run with ``--list``), ClusterShell's ``groups.conf`` (with its ``groups.d`` YAML
files and command-based ``map``/``list``/``all`` sources) and pdsh's genders file. Hosts keep the
address, port and user the inventory gives them (``ansible_host``, ``ansible_port``,
``ansible_user``), which ``MultiConnection.from_inventory`` puts in each host's spec.

Two pattern languages select hosts, each as its own tools read it: Ansible's (``select``:
``web:&prod:!web3``, ``web,db``, ``web*``, ``~regex``, ``web[0:2]``), where the plain terms are
joined first, then every ``&`` term intersects, then every ``!`` term removes; and clush's/pdsh's
node sets (``nodes``: ``@web,@db``, ``web[1-9]!web3``, ``@a^@b``, ``-web3``, ``^file``), whose
operators apply from left to right. Parsing is linear in the size of the files
(``scale/bench_inventory.py``).
"""

from __future__ import annotations

import gc
import os

from ._inventory_formats import read_sources
from ._inventory_model import NO_VARS, HostVars, Inventory, InventoryError

__all__ = ["ENV", "NO_VARS", "HostVars", "Inventory", "InventoryError", "default_paths", "load"]

ENV = "HUSSH_INVENTORY"
"""Environment variable naming inventory files (``os.pathsep``-separated) when none is given."""

USER_INVENTORY = "~/.config/hussh/inventory"
CLUSH_GROUPS = ("~/.config/clustershell/groups.conf", "/etc/clustershell/groups.conf")
GENDERS = "/etc/genders"


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
    """One ``Inventory`` from every path, later files adding to earlier ones, then the Ansible
    ``group_vars/`` and ``host_vars/`` directories beside each (see docs/inventories.md).

    ``format`` is ``ansible`` (INI, YAML or JSON), ``script`` (run with ``--list``), ``clush``
    (``groups.conf``), ``groups.d`` (clush's YAML groups), ``genders`` or ``dsh`` (a directory of
    dsh group files); by default it is told from the file. A path may also be written ``FORMAT:PATH``.
    """
    if not paths:
        return Inventory()
    collecting = gc.isenabled()
    gc.disable()  # reading makes ~10 objects a host and no cycles: collecting meanwhile costs a quarter
    try:
        return read_sources([os.fspath(path) for path in paths], format)
    finally:
        if collecting:
            gc.enable()
