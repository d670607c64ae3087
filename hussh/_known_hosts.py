"""Host keys: known_hosts files matched once per host in the caller, new keys recorded on first use.

``lookup`` gives each host the entries that apply to it (parsed files are cached per process by
mtime), so workers verify against a few keys instead of parsing files. Hashed entries
(``HashKnownHosts``) are the exception: a hashed name can only be tested, one HMAC per entry, so
matching N hosts against N hashed entries up front would cost N² HMACs (minutes at 10,000).
They are kept aside in a ``HashedIndex`` (shipped to workers once) and a host is tested only
against the entries that hold the key its server presents (``HashedVerifier``); only a host whose
key is not among them costs one HMAC per entry, to tell a changed key from an unknown host.
``record`` appends keys accepted under ``accept-new`` to the first known_hosts file, as OpenSSH's
``StrictHostKeyChecking accept-new`` does, but under an exclusive lock and skipping hosts another
run recorded meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

import asyncssh

from . import _asyncssh_internals as internals
from ._spec import ConnectSpec, HashedHosts, HostKeys
from .errors import HostKeyError

log = logging.getLogger("hussh")


class HashedIndex:
    """A file's hashed entries, indexed by key: a host is tested against its presented key's entries."""

    def __init__(self, table: HashedHosts) -> None:
        self.table = table
        self.by_key: dict[str, list[tuple[bytes, bytes]]] = {}
        for salt, digest, key in table.entries:
            self.by_key.setdefault(key, []).append((salt, digest))

    def holds(self, name: str, key: str) -> bool:
        """Whether an entry lists ``name`` (``host`` or ``[host]:port``) with ``key``: a few HMACs."""
        raw = name.encode()
        return any(_names(salt, digest, raw) for salt, digest in self.by_key.get(key, ()))

    def keys_of(self, name: str) -> list[str]:
        """Every key listed for ``name``: one HMAC per entry, for hosts whose key is not listed."""
        raw = name.encode()
        return [key for salt, digest, key in self.table.entries if _names(salt, digest, raw)]


def _names(salt: bytes, digest: bytes, name: bytes) -> bool:
    """Whether a hashed entry ``|1|salt|digest`` stands for ``name``."""
    return hmac.compare_digest(hmac.digest(salt, name, "sha1"), digest)


class KnownHostsFile(NamedTuple):
    """A parsed file: what asyncssh matches by name (plain, patterns, markers), and the hashed rest."""

    plain: asyncssh.SSHKnownHosts
    hashed: HashedIndex | None


_indexes: dict[str, HashedIndex] = {}  # path -> its hashed entries, parsed here or shipped by the parent


def _hashed_entry(fields: list[str]) -> tuple[bytes, bytes, str] | None:
    """(salt, digest, key) of an unmarked ``|1|salt|digest keytype base64`` line, else None."""
    if len(fields) < 3 or not fields[0].startswith("|1|") or "," in fields[0]:
        return None
    try:
        _, _, salt, digest = fields[0].split("|")
        return base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True), key_text(fields[1:3])
    except (ValueError, binascii.Error):
        return None  # left to asyncssh, which says what is wrong with it


def key_text(fields: Iterable[str]) -> str:
    """A public key as ``"type base64"``: how entries and presented keys are compared."""
    return " ".join(fields)


def parse(path: str, text: str) -> KnownHostsFile:
    """Split ``text`` into what asyncssh matches by name and an index of the unmarked hashed entries."""
    plain: list[str] = []
    hashed: list[tuple[bytes, bytes, str]] = []
    for line in text.splitlines():
        entry = _hashed_entry(line.split())
        if entry is None:
            plain.append(line)
        else:
            hashed.append(entry)
    return KnownHostsFile(asyncssh.import_known_hosts("\n".join(plain)),
                          HashedIndex(HashedHosts(path, tuple(hashed))) if hashed else None)


@lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int) -> KnownHostsFile:
    """Parse one known_hosts file; the mtime and size in the key re-read it only when it changed."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse(path, handle.read())


def _parsed(path: str) -> KnownHostsFile | None:
    if path == os.devnull:
        return None
    try:
        stat = os.stat(path)
        known = _load(path, stat.st_mtime_ns, stat.st_size)
    except (FileNotFoundError, NotADirectoryError):
        _indexes.pop(path, None)
        return None
    except (OSError, ValueError) as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc}") from None
    if known.hashed is None:
        _indexes.pop(path, None)
    else:
        _indexes[path] = known.hashed
    return known


def _openssh(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode("ascii").split("\n", 1)[0]


def lookup(spec: ConnectSpec) -> HostKeys:
    """The trusted, CA and revoked keys that ``spec.known_hosts`` lists for ``spec``'s host and port
    by name, and which of the files have hashed entries left to try."""
    if spec.host_key_checking == "off":
        return HostKeys()
    trusted: list[str] = []
    authorities: list[str] = []
    revoked: list[str] = []
    hashed: list[str] = []
    port = None if spec.port == 22 else spec.port
    for path in spec.known_hosts:
        known = _parsed(path)
        if known is None:
            continue
        host_keys, ca_keys, revoked_keys, *_ = known.plain.match(spec.hostname or spec.host, "", port)
        trusted.extend(_openssh(key) for key in host_keys)
        authorities.extend(_openssh(key) for key in ca_keys)
        revoked.extend(_openssh(key) for key in revoked_keys)
        if known.hashed is not None and internals.OWNER_AVAILABLE:
            hashed.append(path)
        elif known.hashed is not None:  # no way to ask after the key exchange: test every entry now
            trusted.extend(known.hashed.keys_of(host_name(spec)))
    return HostKeys(tuple(trusted), tuple(authorities), tuple(revoked), tuple(hashed))


def ship(paths: Iterable[str]) -> list[HashedHosts]:
    """The hashed entries of these files, for a worker that will verify hosts against them."""
    return [_indexes[path].table for path in dict.fromkeys(paths) if path in _indexes]


def install(tables: Iterable[HashedHosts]) -> None:
    """Take the hashed entries the parent shipped (a worker reads no known_hosts file itself)."""
    for table in tables:
        _indexes[table.path] = HashedIndex(table)


def hashed_paths(spec: ConnectSpec) -> Iterable[str]:
    """The files with hashed entries that ``spec`` and its bastions are checked against."""
    while spec is not None:
        if spec.host_keys is not None:
            yield from spec.host_keys.hashed
        spec = spec.jump  # type: ignore[assignment]


class HashedVerifier(asyncssh.SSHClient):
    """The connection's owner when hashed entries may list the host: asyncssh asks it about any
    key that the entries matched by name do not list, and it answers from the hashed entries.

    Afterwards ``learned`` says the host was unknown and its key accepted (``accept-new``),
    ``unlisted`` that it was unknown and refused (``strict``), and ``other_keys`` that the host is
    listed only with keys of other types than the one negotiated (reconnect preferring those).
    """

    def __init__(self, spec: ConnectSpec, keys: HostKeys) -> None:
        self.name = host_name(spec)
        self.spec = spec
        self.listed_by_name = keys.listed
        self.indexes = [_indexes[path] for path in keys.hashed if path in _indexes]
        self.learned = False
        self.unlisted = False
        self.other_keys: list[str] = []

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        presented = key_text(_openssh(key).split()[:2])
        if any(index.holds(self.name, presented) for index in self.indexes):
            return True
        if self.listed_by_name:
            return False  # listed by name with other keys: a changed key
        listed = [k for index in self.indexes for k in index.keys_of(self.name)]
        if not listed:
            if self.spec.host_key_checking == "strict":
                self.unlisted = True
                return False
            self.learned = True
            return True
        kind = presented.split()[0]
        if not any(k.split()[0] == kind for k in listed):
            self.other_keys = listed
        return False


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
            present = parse(path, handle.read())
            lines = []
            for name, (key, hashed) in entries.items():
                bare, _, port = name.removeprefix("[").partition("]:")
                if any(present.plain.match(bare, "", int(port) if port else None)[:2]) or (
                        present.hashed is not None and present.hashed.holds(name, key_text(key.split()[:2]))):
                    continue  # recorded meanwhile: never two entries for a host
                lines.append(f"{hashed_name(name) if hashed else name} {key}\n")
            handle.write("".join(lines))
            handle.flush()
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return len(lines)
