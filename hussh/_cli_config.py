"""The command line's config file: settings for every run and per inventory group, read into the
library's own ``ConnectOptions`` and ``FleetLimits`` (their field names are the file's keys).

    [defaults]              # every host, every run
    username = "deploy"
    connect_timeout = 5
    batch_size = 200
    retry = { attempts = 3, cooldown = 30 }
    rollout = { canary = 1, max_failures = "5%" }

    [groups.db]             # the hosts of inventory group db
    username = "postgres"
    proxy_jump = "bastion"

TOML (``tomllib``). Found at ``--config``, else ``$HUSSH_CONFIG``, else ``hussh.conf`` in
``$XDG_CONFIG_HOME/hussh`` (default ``~/.config/hussh``) if it exists. Command-line flags beat it;
a group's section beats ``[defaults]`` for that group's hosts (a later section beats an earlier one
for a host in both); sections of groups the inventory lacks are ignored. Fleet limits are
settings of a whole run, so they go in ``[defaults]`` only. A password is never read from it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ._options import ConnectOptions, FleetLimits
from ._spec import Retry
from .rollout import Rollout

ENV = "HUSSH_CONFIG"
Made = TypeVar("Made")
CONNECT_KEYS = tuple(name for name in ConnectOptions.__struct_fields__ if name != "password")
LIMIT_KEYS = FleetLimits.__struct_fields__


class ConfigFileError(ValueError):
    """A config file that cannot be read or says something wrong: one line naming the file and the key."""


class FileConfig(NamedTuple):
    """What a config file says: options and limits for every host, options per group (in file order)."""

    options: ConnectOptions = ConnectOptions()
    limits: FleetLimits = FleetLimits()
    groups: Mapping[str, ConnectOptions] = {}
    path: Path | None = None


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "hussh" / "hussh.conf"


def load(path: str | None = None) -> FileConfig:
    """The file ``path`` (else ``$HUSSH_CONFIG``, which must exist too; else the default one, if any)."""
    chosen = path or os.environ.get(ENV)
    if not chosen and not default_path().is_file():
        return FileConfig()
    where = Path(chosen) if chosen else default_path()
    try:
        with open(where, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{where}: {exc}") from None
    return read(document, where)


def read(document: dict[str, Any], where: Path) -> FileConfig:
    """A parsed file's sections as the library's objects; ``ConfigFileError`` for anything wrong."""
    unknown = [key for key in document if key not in ("defaults", "groups")]
    if unknown:
        raise ConfigFileError(f"{where}: unknown section [{unknown[0]}] (the sections are [defaults] and "
                              "[groups.NAME])")
    defaults = _table(document.get("defaults", {}), "defaults", where)
    groups = _table(document.get("groups", {}), "groups", where)
    limits = {key: defaults.pop(key) for key in LIMIT_KEYS if key in defaults}
    options = _options(defaults, "defaults", where)
    per_group = {group: _options(_table(section, f"groups.{group}", where), f"groups.{group}", where)
                 for group, section in groups.items()}
    return FileConfig(options, _limits(limits, where), per_group, where)


def _table(value: object, name: str, where: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigFileError(f"{where}: [{name}] must be a section, got {value!r}")
    return dict(value)


def _options(section: dict[str, Any], name: str, where: Path) -> ConnectOptions:
    for key in section:
        if key == "password":
            raise ConfigFileError(f"{where}: [{name}] password: a password is never read from a file "
                                  "(use -A, or $HUSSH_PASSWORD)")
        if key in LIMIT_KEYS:
            raise ConfigFileError(f"{where}: [{name}] {key}: a fleet limit applies to the whole run: "
                                  "set it in [defaults]")
        if key not in CONNECT_KEYS:
            raise ConfigFileError(f"{where}: [{name}] unknown key {key!r} (the keys are: "
                                  f"{', '.join(CONNECT_KEYS + (LIMIT_KEYS if name == 'defaults' else ()))})")
    return _checked(ConnectOptions, section, name, where)


def _limits(section: dict[str, Any], where: Path) -> FleetLimits:
    if "retry" in section:
        section["retry"] = _retry(_table(section["retry"], "defaults.retry", where), where)
    if "rollout" in section:
        rollout = _table(section["rollout"], "defaults.rollout", where)
        if "between_waves" in rollout:
            raise ConfigFileError(f"{where}: [defaults.rollout] between_waves: a callback, not a setting")
        section["rollout"] = _checked(Rollout, rollout, "defaults.rollout", where)
    return _checked(FleetLimits, section, "defaults", where)


def _retry(table: dict[str, Any], where: Path) -> Retry:
    """``Retry``'s fields, each checked to be a number of its kind (``Retry`` checks their ranges)."""
    kinds = dict(zip(Retry.__struct_fields__, map(type, Retry.__struct_defaults__)))
    for key, value in table.items():
        kind = kinds.get(key)
        if kind is None:
            raise ConfigFileError(f"{where}: [defaults.retry] unknown key {key!r} (the keys are: {', '.join(kinds)})")
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            wanted = "an integer" if kind is int else "a number"
            raise ConfigFileError(f"{where}: [defaults.retry] {key} must be {wanted}, got {value!r}")
    return _checked(Retry, table, "defaults.retry", where)


def _checked(kind: Callable[..., Made], section: dict[str, Any], name: str, where: Path) -> Made:
    """``kind(**section)``, its complaint (a bad value, an unknown key) as one line naming file and section."""
    try:
        return kind(**section)
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(f"{where}: [{name}] {exc}") from None
