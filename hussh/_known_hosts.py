"""Host-key policy: known_hosts files are parsed once per process and shared by every connection."""

from __future__ import annotations

import os
from functools import lru_cache

import asyncssh

from ._spec import ConnectSpec
from .errors import HostKeyError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> asyncssh.SSHKnownHosts:
    """Parse one known_hosts file; the mtime in the key re-reads it only when it changed."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return asyncssh.import_known_hosts(handle.read())


def known_hosts_for(spec: ConnectSpec) -> asyncssh.SSHKnownHosts | None:
    """What asyncssh should verify ``spec.host`` against: ``None`` means accept any key.

    A listed host is checked strictly (a mismatch is refused). An unlisted one is accepted under
    ``accept-new`` (without writing the file) and refused with ``HostKeyError`` under ``strict``.
    """
    if spec.host_key_checking == "off":
        return None
    path = os.path.expanduser(spec.known_hosts or DEFAULT_KNOWN_HOSTS)
    try:
        known = _load(path, os.stat(path).st_mtime_ns)
    except FileNotFoundError:
        if spec.known_hosts is not None:
            raise HostKeyError(f"known_hosts file {path} does not exist") from None
        known = None
    except (OSError, ValueError) as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc}") from None
    port = None if spec.port == 22 else spec.port
    if known is not None and any(known.match(spec.host, "", port)[:3]):
        return known
    if spec.host_key_checking == "strict":
        raise HostKeyError(f"{spec.address} is not listed in {path} and host_key_checking='strict'")
    return None
