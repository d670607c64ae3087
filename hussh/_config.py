"""OpenSSH client config (``~/.ssh/config``, ``/etc/ssh/ssh_config``), resolved per host the way ``ssh`` does.

The parsing is asyncssh's own (``Host``, ``Match``, ``Include``, ``%`` tokens); each file is
tokenized once per process and ``Include`` globs once per batch, so resolving 10,000 hosts costs
a fraction of a second (see ``docs/configuration.md``). Only the parent resolves: workers receive
finished ``ConnectSpec`` values and never read a config file.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncssh.config import ConfigParseError

from ._asyncssh_internals import load_client_config
from .errors import ConfigError

USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"

SSHConfigArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | bool | None
"""``None``: ``ssh``'s defaults (user then system file, those that exist); a path or paths: only
those (like ``ssh -F``); ``False``: no config at all."""

HONOURED = (
    "HostName", "User", "Port", "IdentityFile", "IdentitiesOnly", "IdentityAgent", "CertificateFile",
    "ProxyJump", "ConnectTimeout", "ServerAliveInterval", "ServerAliveCountMax", "StrictHostKeyChecking",
    "UserKnownHostsFile", "GlobalKnownHostsFile", "HashKnownHosts", "ForwardAgent",
)
"""Options hussh applies; ``docs/configuration.md`` lists them and what the others do."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """What the config files say about one host; ``None`` where they say nothing."""

    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] | None = None
    identities_only: bool | None = None
    identity_agent: str | None = None
    certificate_files: tuple[str, ...] | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None
    connect_timeout: float | None = None
    server_alive_interval: float | None = None
    server_alive_count_max: int | None = None
    strict_host_key_checking: str | None = None
    user_known_hosts_files: tuple[str, ...] | None = None
    global_known_hosts_files: tuple[str, ...] | None = None
    hash_known_hosts: bool | None = None
    forward_agent: bool | None = None


NO_CONFIG = HostConfig()


def config_paths(ssh_config: SSHConfigArg) -> tuple[Path, ...]:
    """The files to read for ``ssh_config`` (see ``SSHConfigArg``); missing default files are skipped."""
    if ssh_config is False:
        return ()
    if ssh_config is None or ssh_config is True:
        candidates = (Path(USER_CONFIG).expanduser(), Path(SYSTEM_CONFIG))
        return tuple(path for path in candidates if path.is_file())
    given = [ssh_config] if isinstance(ssh_config, (str, os.PathLike)) else list(ssh_config)
    paths = tuple(Path(os.fspath(path)).expanduser() for path in given)
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"ssh config file {path} does not exist or is not a file")
    return paths


class ConfigResolver:
    """Resolves many hosts against one set of config files; keeps ``Include`` globs for its lifetime."""

    def __init__(self, ssh_config: SSHConfigArg = None) -> None:
        self.paths = config_paths(ssh_config)
        self._globs: dict[tuple[str, str], list[Path]] = {}
        self._files: dict[Path, tuple[tuple[int, str, tuple[str, ...]], ...]] = {}
        self.jumps: dict[tuple[object, ...], object] = {}  # resolved ProxyJump chains (see _spec._chain)
        self._local_user = _local_user()

    def resolve(self, host: str, user: str | None = None, port: int | None = None) -> HostConfig:
        """The config for ``host`` (the name as given); an explicit ``user``/``port`` beats the files."""
        if not self.paths:
            return NO_CONFIG
        try:
            config = load_client_config(self.paths, host, user, port, self._local_user, self._globs, self._files)
        except ConfigParseError as exc:
            raise ConfigError(f"ssh config: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read ssh config: {exc}") from None
        get = config.get
        strict = get("StrictHostKeyChecking")
        return HostConfig(
            hostname=get("Hostname"),
            user=get("User"),
            port=get("Port"),
            identity_files=_tuple(get("IdentityFile")),
            identities_only=get("IdentitiesOnly"),
            identity_agent=_agent(get("IdentityAgent", _UNSET)),
            certificate_files=_tuple(get("CertificateFile")),
            proxy_jump=get("ProxyJump"),
            proxy_command=get("ProxyCommand"),
            connect_timeout=_number(get("ConnectTimeout")),
            server_alive_interval=_number(get("ServerAliveInterval")),
            server_alive_count_max=get("ServerAliveCountMax"),
            strict_host_key_checking=None if strict is None else str(strict).lower()
            if not isinstance(strict, bool) else ("yes" if strict else "no"),
            user_known_hosts_files=_tuple(get("UserKnownHostsFile")),
            global_known_hosts_files=_tuple(get("GlobalKnownHostsFile")),
            hash_known_hosts=get("HashKnownHosts"),
            forward_agent=None if get("ForwardAgent") is None else bool(get("ForwardAgent")),
        )


_UNSET = object()


def _agent(value: object) -> str | None:
    """``IdentityAgent none`` (stored as ``None`` by asyncssh) becomes ``"none"``; unset stays ``None``."""
    if value is _UNSET:
        return None
    return "none" if value is None else str(value)


def _tuple(value: object) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(item) for item in value)  # type: ignore[attr-defined]


def _number(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (containers)
        return str(os.getuid())
