"""``ConnectOptions`` and ``FleetLimits``: the settings of hussh's constructors as public, frozen values.

``ConnectOptions`` says how to reach and log in to a host (everything but its name), ``FleetLimits``
how a ``MultiConnection`` works through many. Every constructor takes them (``options=``,
``limits=``) and the command line builds them from its flags and config file. Upstream's keywords
stay the front door: ``connect_options`` and ``fleet_limits`` map them onto these objects, the one
place that does, so a keyword given beats the same field of an object given with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ._config import SSHConfigArg
from ._result import MAX_TEXT_WIDTH
from ._spec import DEFAULT_MAX_OUTPUT, DEFAULT_STALL_TIMEOUT, ConnectSpec, HostKeyChecking, Retry
from .rollout import Rollout

if TYPE_CHECKING:  # for the type checker only: msgspec never decodes options, so never resolves it
    from ._spec import ProxyJump


class _Default:
    """A keyword default equal to upstream's (signatures read as upstream's) that the mapping can tell
    from the same value given, so an ssh config, a group or an options object can take its place."""

    __slots__ = ()


class _DefaultInt(_Default, int):
    __slots__ = ()


class _DefaultFloat(_Default, float):
    __slots__ = ()


class _DefaultStr(_Default, str):
    __slots__ = ()


DEFAULT_PORT = _DefaultInt(22)
DEFAULT_USERNAME = _DefaultStr("root")
NO_SECONDS = _DefaultFloat(0)
"""``timeout``/``connect_timeout``/``keepalive_interval`` not given: the ssh config or hussh's default applies."""
NO_MILLISECONDS = _DefaultInt(0)
"""``Connection``'s ``timeout`` (milliseconds) not given."""
STALL_SECONDS = _DefaultFloat(DEFAULT_STALL_TIMEOUT)
MAX_OUTPUT = _DefaultInt(DEFAULT_MAX_OUTPUT)


def _default_call_output() -> int:
    """A sixteenth of the machine's memory, at most 1 GiB: as text, whatever the output, one call's
    results then take at most a quarter of memory (4 GiB)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 16 << 30
    return min(4 << 30, memory // 4) // MAX_TEXT_WIDTH


DEFAULT_CALL_OUTPUT = _default_call_output()
"""Bytes of output (stdout + stderr, or files read into memory) one call keeps over all its hosts: outputs
alike that hosts print at once count once, as they are held (``hussh._shared_output``).

``max_output`` bounds one host; this bounds the call, so 1,000 hosts printing 50 MB each cannot
exhaust the client: once it is spent, further output stops its command with ``OutputLimitExceeded``
(keeping what arrived). The caller holds results as text, up to ``MAX_TEXT_WIDTH`` bytes of memory
a byte received (docs/multi-connection.md, "Memory")."""

DEFAULT_BATCH_SIZE = 100
CHECKINGS = ("accept-new", "strict", "off")


class ConnectOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach and log in to a host: every field ``None`` unless given, so that the host's ssh
    config, else hussh's default, applies (as ``ssh`` does: a value given beats the config).

    Seconds throughout: ``timeout`` bounds connecting and is each command's default limit (``0``:
    commands unbounded); ``connect_timeout`` bounds connecting alone (default: ``ConnectTimeout``,
    else ``timeout``, else 15 s); ``keepalive_interval`` (``0``: off, default 15 s);
    ``stall_timeout`` bounds an SFTP/SCP wait for the server (default 30, ``0``: none).
    ``max_output``: bytes a command may print (default 64 MiB). Paths and connections are accepted
    where the keywords take them and kept as strings and specs. ``replace(**changes)`` copies;
    ``over(base)`` takes ``base``'s fields where these are not given.
    """

    username: str | None = None
    port: int | None = None
    password: str | None = None
    private_key: str | os.PathLike[str] | None = None
    proxy_jump: ProxyJump | None = None
    proxy_command: str | None = None
    timeout: float | None = None
    connect_timeout: float | None = None
    keepalive_interval: float | None = None
    known_hosts: str | os.PathLike[str] | None = None
    host_key_checking: HostKeyChecking | None = None
    max_output: int | None = None
    forward_agent: bool | None = None
    ssh_config: SSHConfigArg = None
    stall_timeout: float | None = None

    def __post_init__(self) -> None:
        _check_text(self, "username", "password", "proxy_command")
        port = self.port
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        for name in ("timeout", "connect_timeout", "keepalive_interval", "stall_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not 0 <= value < float("inf")):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.host_key_checking not in (None, *CHECKINGS):
            raise ValueError(f"host_key_checking must be 'accept-new', 'strict' or 'off', "
                             f"got {self.host_key_checking!r}")
        output = self.max_output
        if output is not None and (not isinstance(output, int) or isinstance(output, bool) or output <= 0):
            raise ValueError(f"max_output must be a positive number of bytes, got {output!r}")
        if self.forward_agent is not None and not isinstance(self.forward_agent, bool):
            raise ValueError(f"forward_agent must be true or false, got {self.forward_agent!r}")
        for name in ("private_key", "known_hosts"):
            _set(self, name, _path(name, getattr(self, name)))
        _set(self, "ssh_config", _ssh_config(self.ssh_config))
        _set(self, "proxy_jump", _jump(self.proxy_jump))
        if self.proxy_jump not in (None, "none") and self.proxy_command:
            raise TypeError("proxy_jump and proxy_command are mutually exclusive")

    def replace(self, **changes: Any) -> ConnectOptions:
        """A copy with ``changes``, checked as the constructor checks them."""
        return msgspec.structs.replace(self, **changes)

    def over(self, base: ConnectOptions) -> ConnectOptions:
        """These options where given, ``base``'s elsewhere (a bastion given here replaces both of
        ``base``'s ``proxy_jump`` and ``proxy_command``)."""
        changes = self.given()
        if not changes:
            return base
        if "proxy_jump" in changes or "proxy_command" in changes:
            changes.setdefault("proxy_jump", None)
            changes.setdefault("proxy_command", None)
        return msgspec.structs.replace(base, **changes)

    def given(self) -> dict[str, Any]:
        """The fields given (not ``None``), by name."""
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not None}

    def __repr__(self) -> str:
        return f"ConnectOptions({', '.join(f'{name}={value!r}' for name, value in self.__rich_repr__())})"

    __str__ = __repr__

    def __rich_repr__(self) -> Iterator[tuple[str, object]]:  # type: ignore[override]  # rich takes pairs
        """The fields given, the password as ``***`` (msgspec's default repr would show it)."""
        for name, value in self.given().items():
            yield name, "***" if name == "password" else value


class FleetLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How a ``MultiConnection`` works through its hosts.

    ``batch_size``: operations at once over all hosts. ``workers``: worker processes (``None``: one
    per CPU, fewer for small fleets). ``max_call_output``: bytes of output one call keeps over all
    its hosts (see ``DEFAULT_CALL_OUTPUT``). ``retry``: connect retries and the cool-down of a host
    that failed to connect (``hussh.Retry``). ``rollout``: the ``hussh.Rollout`` of every call that
    takes one and is given none (``Rollout()`` then runs one without). ``replace(**changes)`` copies.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    max_call_output: int = DEFAULT_CALL_OUTPUT
    retry: Retry = Retry()
    rollout: Rollout | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "workers"):
            value = getattr(self, name)
            if (value is not None or name == "batch_size") and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        output = self.max_call_output
        if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
            raise ValueError(f"max_call_output must be a positive number of bytes, got {output!r}")
        if not isinstance(self.retry, Retry):
            raise TypeError(f"retry must be a hussh.Retry, got {self.retry!r}")
        if self.rollout is not None and not isinstance(self.rollout, Rollout):
            raise TypeError(f"rollout must be a hussh.Rollout, got {self.rollout!r}")

    def replace(self, **changes: Any) -> FleetLimits:
        """A copy with ``changes``, checked as the constructor checks them."""
        return msgspec.structs.replace(self, **changes)


def connect_options(options: ConnectOptions | None = None, /, **keywords: Any) -> ConnectOptions:
    """The one mapping of the constructors' connection keywords onto ``options``.

    A keyword at its default (``None`` or one of the markers above) is not given; one given beats
    ``options``' field. ``key_path`` is upstream's alias of ``private_key``.
    """
    if options is not None and not isinstance(options, ConnectOptions):
        raise TypeError(f"options must be a hussh.ConnectOptions, got {options!r}")
    key_path = keywords.pop("key_path", None)
    if key_path is not None:
        if keywords.get("private_key") is not None:  # upstream's TypeError and words
            raise TypeError("key_path and private_key are aliases; provide only one")
        keywords["private_key"] = key_path
    given = {name: value for name, value in keywords.items() if value is not None and not isinstance(value, _Default)}
    if options is None:
        return ConnectOptions(**given)
    return ConnectOptions(**given).over(options) if given else options


def fleet_limits(limits: FleetLimits | None = None, /, **keywords: Any) -> FleetLimits:
    """The one mapping of ``MultiConnection``'s limit keywords (``batch_size``, ``workers``, ``retry``,
    ``max_call_output``) onto ``limits``: those given (not ``None``) beat its fields."""
    if limits is not None and not isinstance(limits, FleetLimits):
        raise TypeError(f"limits must be a hussh.FleetLimits, got {limits!r}")
    given = {name: value for name, value in keywords.items() if value is not None}
    if limits is None:
        return FleetLimits(**given)
    return limits.replace(**given) if given else limits


LIMIT_KEYWORDS = frozenset(FleetLimits.__struct_fields__) - {"rollout"}
"""``FleetLimits`` fields that are keywords of ``MultiConnection``'s constructors too."""


def _set(options: ConnectOptions, name: str, value: object) -> None:
    if value is not getattr(options, name):
        msgspec.structs.force_setattr(options, name, value)


def _check_text(options: ConnectOptions, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")


def _path(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    path = os.fspath(value) if isinstance(value, os.PathLike) else None
    if isinstance(path, str):
        return path
    raise ValueError(f"{name} must be a path, got {value!r}")


def _ssh_config(value: object) -> SSHConfigArg:
    """``None`` (ssh's files), ``False`` (none), or the files: one path as a string, several as a tuple."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, os.PathLike) and isinstance(path := os.fspath(value), str):
        return path
    if isinstance(value, (list, tuple)) and all(isinstance(path, (str, os.PathLike)) for path in value):
        return tuple(os.fspath(path) for path in value)
    raise ValueError(f"ssh_config must be a path, a list of paths, or false, got {value!r}")


def _jump(value: object) -> str | ConnectSpec | None:
    """``proxy_jump`` kept as a string or a spec: upstream's ``(host, port)`` joined, a connection's spec taken."""
    if value is None or isinstance(value, ConnectSpec):
        return value
    spec = getattr(value, "spec", None)
    if isinstance(spec, ConnectSpec):
        return spec
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int:
        value = f"[{value[0]}]:{value[1]}" if ":" in value[0] else f"{value[0]}:{value[1]}"  # upstream's (host, port)
    if not isinstance(value, str):
        raise TypeError(f"proxy_jump must be a string like 'user@bastion:22' or a connection, got {value!r}")
    for hop in value.split(","):  # upstream's TypeError for a port that is no number, before any lookup
        port = hop.removeprefix("ssh://").rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port and not port.isdigit():
            raise TypeError(f"proxy_jump port must be a valid integer, got {port!r} in {hop!r}")
    return value
