"""``ConnectSpec``: everything needed to reach and log in to one host, small enough to ship to workers."""

from __future__ import annotations

import os
from typing import Literal

import msgspec

HostKeyChecking = Literal["accept-new", "strict", "off"]

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds allowed for TCP connect + SSH handshake + login when no timeout is given (``timeout=0``).

Upstream hussh waits forever here, so one host that accepts TCP and then says nothing hangs the
whole call; 30 s is OpenSSH's common ``ConnectTimeout`` choice and leaves slow links room."""

DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
"""Bytes of stdout + stderr kept per command before it is stopped with ``OutputLimitExceeded``."""


class ConnectSpec(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """How to connect to one host; timeouts are in seconds, ``0`` meaning "no limit" for commands."""

    host: str
    port: int = 22
    username: str = "root"
    password: str | None = None
    private_key: str | None = None
    timeout: float = 0.0
    connect_timeout: float = 0.0
    keepalive_interval: float = 0.0
    known_hosts: str | None = None
    host_key_checking: HostKeyChecking = "accept-new"
    max_output: int = DEFAULT_MAX_OUTPUT

    @property
    def connect_bound(self) -> float:
        """Seconds allowed to connect and log in: ``connect_timeout``, else ``timeout``, else the default."""
        return self.connect_timeout or self.timeout or DEFAULT_CONNECT_TIMEOUT

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def make_spec(
    host: str,
    *,
    port: int = 22,
    username: str | None = None,
    password: str | None = None,
    private_key: str | os.PathLike[str] | None = None,
    key_path: str | os.PathLike[str] | None = None,
    timeout: float = 0,
    connect_timeout: float = 0,
    keepalive_interval: float = 0,
    known_hosts: str | os.PathLike[str] | None = None,
    host_key_checking: HostKeyChecking = "accept-new",
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> ConnectSpec:
    """Validate user arguments into a ``ConnectSpec`` (``key_path`` is upstream's alias of ``private_key``)."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}")
    if key_path is not None and private_key is not None and os.fspath(key_path) != os.fspath(private_key):
        raise ValueError("give either private_key or its alias key_path, not both")
    key = private_key if private_key is not None else key_path
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                        ("keepalive_interval", keepalive_interval)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    if host_key_checking not in ("accept-new", "strict", "off"):
        raise ValueError(f"host_key_checking must be 'accept-new', 'strict' or 'off', got {host_key_checking!r}")
    if max_output <= 0:
        raise ValueError(f"max_output must be a positive number of bytes, got {max_output!r}")
    return ConnectSpec(
        host=host,
        port=port,
        username=username or "root",
        password=password,
        private_key=os.path.expanduser(os.fspath(key)) if key is not None else None,
        timeout=float(timeout),
        connect_timeout=float(connect_timeout),
        keepalive_interval=float(keepalive_interval),
        known_hosts=os.path.expanduser(os.fspath(known_hosts)) if known_hosts is not None else None,
        host_key_checking=host_key_checking,
        max_output=max_output,
    )
