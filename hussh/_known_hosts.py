"""Host keys: known_hosts files matched once per host in the caller, new keys recorded on first use.

``lookup`` gives each host the entries that apply to it (parsed files are cached per process by
mtime), so workers verify against a few keys instead of parsing files. ``record`` appends keys
accepted under ``accept-new`` to the first known_hosts file, as OpenSSH's ``StrictHostKeyChecking
accept-new`` does, but under an exclusive lock and skipping hosts another run recorded meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from functools import lru_cache

import asyncssh

from ._spec import ConnectSpec, HostKeys
from .errors import HostKeyError

log = logging.getLogger("hussh")


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int) -> asyncssh.SSHKnownHosts:
    """Parse one known_hosts file; the mtime and size in the key re-read it only when it changed."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return asyncssh.import_known_hosts(handle.read())


def _parsed(path: str) -> asyncssh.SSHKnownHosts | None:
    if path == os.devnull:
        return None
    try:
        stat = os.stat(path)
        return _load(path, stat.st_mtime_ns, stat.st_size)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc}") from None


def _openssh(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode("ascii").split("\n", 1)[0]


def lookup(spec: ConnectSpec) -> HostKeys:
    """The trusted, CA and revoked keys that ``spec.known_hosts`` lists for ``spec``'s host and port."""
    if spec.host_key_checking == "off":
        return HostKeys()
    trusted: list[str] = []
    authorities: list[str] = []
    revoked: list[str] = []
    port = None if spec.port == 22 else spec.port
    for path in spec.known_hosts:
        known = _parsed(path)
        if known is None:
            continue
        host_keys, ca_keys, revoked_keys, *_ = known.match(spec.hostname or spec.host, "", port)
        trusted.extend(_openssh(key) for key in host_keys)
        authorities.extend(_openssh(key) for key in ca_keys)
        revoked.extend(_openssh(key) for key in revoked_keys)
    return HostKeys(tuple(trusted), tuple(authorities), tuple(revoked))


def host_name(spec: ConnectSpec) -> str:
    """How OpenSSH names a host in known_hosts: lowercased, ``[host]:port`` off port 22."""
    name = (spec.hostname or spec.host).lower()
    return name if spec.port == 22 else f"[{name}]:{spec.port}"


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """OpenSSH's ``HashKnownHosts`` form: ``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``."""
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def record(learned: Iterable[tuple[ConnectSpec, str]]) -> int:
    """Append each (spec, public key) to its spec's first known_hosts file; return lines written.

    One exclusive ``flock`` per file for the whole batch, so concurrent runs interleave whole
    batches, never lines; a host that another run (or an earlier line) recorded is skipped.
    Files that cannot be written (``/dev/null``, a read-only home) are left alone, with a warning.
    """
    by_file: dict[str, dict[str, tuple[str, bool]]] = {}
    for spec, key in learned:
        if spec.host_key_checking != "accept-new" or not spec.known_hosts or spec.known_hosts[0] == os.devnull:
            continue
        by_file.setdefault(spec.known_hosts[0], {})[host_name(spec)] = (key, spec.hash_known_hosts)
    written = 0
    for path, entries in by_file.items():
        try:
            written += _append(path, entries)
        except OSError as exc:
            log.warning("hussh: could not record %d new host key(s) in %s: %s", len(entries), path, exc)
    return written


def _append(path: str, entries: dict[str, tuple[str, bool]]) -> int:
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", encoding="utf-8", errors="replace") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            present = asyncssh.import_known_hosts(handle.read())
            lines = []
            for name, (key, hashed) in entries.items():
                bare, _, port = name.removeprefix("[").partition("]:")
                if any(present.match(bare, "", int(port) if port else None)[:2]):
                    continue  # recorded meanwhile: never two entries for a host
                lines.append(f"{hashed_name(name) if hashed else name} {key}\n")
            handle.write("".join(lines))
            handle.flush()
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return len(lines)
