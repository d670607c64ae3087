"""Host keys: known_hosts files matched once per host in the caller, new keys recorded on first use.

``lookup`` gives each host the entries that apply to it (parsed files are cached per process by
mtime), so workers verify against a few keys instead of parsing files. Hashed entries
(``HashKnownHosts``) are the exception: a hashed name can only be tested, one HMAC per entry, so
matching N hosts against N hashed entries up front would cost N² HMACs (minutes at 10,000).
They are kept aside in a ``HashedIndex`` (shipped to workers once) and a host is tested only
against the entries that hold the key its server presents (``HostKeyVerifier``); only a host whose
key is not among them costs one HMAC per entry, to tell a changed key from an unknown host.
``HostKeyVerifier`` decides, as ``ssh`` does, about every key the entries do not trust outright:
``@revoked`` keys are refused under every policy (asyncssh checks them before asking it), a
changed key is refused, or under ``off`` accepted with no password, keyboard-interactive answer
or agent forwarding for the server that presents it.
``record`` appends keys accepted under ``accept-new`` to the first known_hosts file, as OpenSSH's
``StrictHostKeyChecking accept-new`` does, but under an exclusive lock, skipping hosts another
run recorded meanwhile, and only for plain host names (never a pattern or a line break).
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
import re
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
    """A parsed file: what asyncssh matches by name (plain, patterns, markers), the hashed rest,
    and the (line number, key) of each ``@revoked`` line, to say where a key was revoked."""

    plain: asyncssh.SSHKnownHosts
    hashed: HashedIndex | None
    revoked_lines: tuple[tuple[int, str], ...] = ()


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
    revoked: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        entry = _hashed_entry(fields)
        if entry is None:
            plain.append(line)
            if fields[:1] == ["@revoked"]:
                revoked.append((number, key_text(fields[2:4])))
        else:
            hashed.append(entry)
    return KnownHostsFile(asyncssh.import_known_hosts("\n".join(plain)),
                          HashedIndex(HashedHosts(path, tuple(hashed))) if hashed else None, tuple(revoked))


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
    by name (under every policy: ``off`` still refuses revoked keys and notices changed ones),
    where the revoked ones are revoked, and which of the files have hashed entries left to try."""
    trusted: list[str] = []
    authorities: list[str] = []
    revoked: list[str] = []
    revoked_in: list[str] = []
    hashed: list[str] = []
    name = spec.hostname or spec.host
    port = None if spec.port == 22 else spec.port
    for path in spec.known_hosts:
        known = _parsed(path)
        if known is None:
            continue
        host_keys, ca_keys, revoked_keys, *_ = known.plain.match(name, "", port)
        if port is not None:  # asyncssh keeps the [host]:port match's revoked keys only if it trusts a key there
            revoked_keys = [*revoked_keys, *known.plain.match(f"[{name}]:{port}", "", None)[2]]
        trusted.extend(_openssh(key) for key in host_keys)
        authorities.extend(_openssh(key) for key in ca_keys)
        here = dict.fromkeys(_openssh(key) for key in revoked_keys)
        revoked.extend(here)
        texts = {key_text(key.split()[:2]) for key in here}
        revoked_in.extend(f"{path}:{number}" for number, key in known.revoked_lines if key in texts)
        if known.hashed is not None and internals.OWNER_AVAILABLE:
            hashed.append(path)
        elif known.hashed is not None:  # no way to ask after the key exchange: test every entry now
            trusted.extend(known.hashed.keys_of(host_name(spec)))
    return HostKeys(tuple(trusted), tuple(authorities), tuple(dict.fromkeys(revoked)), tuple(hashed),
                    tuple(revoked_in))


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


class HostKeyVerifier(asyncssh.SSHClient):
    """The connection's owner whenever known_hosts lists anything for the host. asyncssh refuses
    ``@revoked`` keys itself, accepts the keys and CAs matched by name, and asks this object about
    any other key: it answers from the hashed entries, then as ``ssh`` would for the policy.

    Afterwards ``learned`` says the host was unknown and its key accepted (``accept-new``),
    ``unlisted`` that it was unknown and refused (``strict``), ``other_keys`` that the host is
    listed only with keys of other types than the one negotiated (reconnect preferring those),
    and ``changed`` that its key differs from the listed ones and was accepted under ``off``
    with no password, keyboard-interactive answer or agent forwarding (``ssh`` does the same).
    """

    def __init__(self, spec: ConnectSpec, keys: HostKeys) -> None:
        self.name = host_name(spec)
        self.spec = spec
        self.listed_by_name = keys.listed
        self.indexes = [_indexes[path] for path in keys.hashed if path in _indexes]
        self.learned = False
        self.unlisted = False
        self.changed = False
        self.other_keys: list[str] = []
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        presented = key_text(_openssh(key).split()[:2])
        if any(index.holds(self.name, presented) for index in self.indexes):
            return True
        if self.listed_by_name:
            return self._changed(presented)  # listed by name with other keys
        listed = [k for index in self.indexes for k in index.keys_of(self.name)]
        if not listed:
            return self._unknown()
        kind = presented.split()[0]
        if not any(k.split()[0] == kind for k in listed):
            self.other_keys = listed
            return False
        return self._changed(presented)

    def _unknown(self) -> bool:
        if self.spec.host_key_checking == "strict":
            self.unlisted = True
            return False
        self.learned = self.spec.host_key_checking == "accept-new"
        return True

    def _changed(self, presented: str) -> bool:
        """Refuse a changed key, except under ``off``: accept it, but give the server no secret."""
        if self.spec.host_key_checking != "off" or not isinstance(self.conn, internals.FleetConnection):
            return False
        if not self.conn.withhold_secrets(changed_key_message(self.spec)):
            return False  # this asyncssh cannot withhold them: refuse instead
        self.changed = True  # no log here: this runs in workers too (said by the error or warn_changed_key)
        self.conn.changed_key = fingerprint(presented)
        return True


def warn_changed_key(conn: asyncssh.SSHClientConnection, spec: ConnectSpec) -> None:
    """In the caller: say that a single-host login went ahead after its host key changed (``off``)."""
    presented = getattr(conn, "changed_key", "")
    if presented:
        log.warning("hussh: the host key of %s changed (it presents %s); host key checking is off: connected "
                    "without password, keyboard-interactive or agent forwarding, to avoid a man-in-the-middle",
                    spec.address, presented)


def fingerprint(key: str) -> str:
    """``type SHA256:...``, how ``ssh`` names a key in its warnings."""
    kind, _, data = key.partition(" ")
    try:
        digest = hashlib.sha256(base64.b64decode(data.split()[0], validate=True)).digest()
    except (ValueError, IndexError, binascii.Error):
        return kind
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def changed_key_message(spec: ConnectSpec) -> str:
    """Why a login failed after a changed key was accepted under ``off``."""
    return (f"the host key of {spec.address} does not match its known_hosts entry and host key checking is off: "
            "password and keyboard-interactive authentication (and agent forwarding) are disabled to avoid "
            "a man-in-the-middle attack, as ssh does: only public key authentication may log in")


def revoked_key_message(spec: ConnectSpec, keys: HostKeys) -> str:
    """The error for a server that presented a key marked ``@revoked`` (refused under every policy)."""
    where = ", ".join(keys.revoked_in) or ", ".join(spec.known_hosts) or "known_hosts"
    return (f"REVOKED HOST KEY DETECTED: {spec.address} presented a host key marked @revoked in {where}; "
            "refusing to connect (under every host key policy: a stolen key may be impersonating this host)")


def host_name(spec: ConnectSpec) -> str:
    """How OpenSSH names a host in known_hosts: lowercased, ``[host]:port`` off port 22."""
    name = (spec.hostname or spec.host).lower()
    return name if spec.port == 22 else f"[{name}]:{spec.port}"


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """OpenSSH's ``HashKnownHosts`` form: ``|1|base64(salt)|base64(HMAC-SHA1(salt, name))``."""
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


_HOST = r"[a-z0-9_][a-z0-9_.-]*|[0-9a-f.]*:[0-9a-f:.]*(?:%[a-z0-9_.-]+)?"
_PLAIN_NAME = re.compile(rf"(?:{_HOST})|\[(?:{_HOST})\]:[1-9][0-9]{{0,4}}")
"""What ``record`` writes as a host: a name, IPv4 or IPv6 address, bare or as ``[host]:port``;
never a pattern (``*``, ``?``, ``!``), a list (``,``), a hashed or marker field, or whitespace."""


def _key_line(key: str) -> str | None:
    """``key`` as the ``type base64`` of a public key, or None if it is not one (never a line break)."""
    try:
        parsed = asyncssh.import_public_key(key) if "\n" not in key and "\r" not in key else None
    except (asyncssh.KeyImportError, ValueError):
        return None
    return key_text(_openssh(parsed).split()[:2]) if parsed is not None else None


def record(learned: Iterable[tuple[ConnectSpec, str]]) -> int:
    """Append each (spec, public key) to its spec's first known_hosts file; return lines written.

    One exclusive ``flock`` per file for the whole batch, so concurrent runs interleave whole
    batches, never lines; a host that another run (or an earlier line) recorded is skipped.
    Files that cannot be written (``/dev/null``, a read-only home) are left alone, with a warning;
    so is a name that is not a plain host name or address, or a key that is not a public key.
    """
    by_file: dict[str, dict[str, tuple[str, bool]]] = {}
    for spec, key in learned:
        if spec.host_key_checking != "accept-new" or not spec.known_hosts or spec.known_hosts[0] == os.devnull:
            continue
        name, line = host_name(spec), _key_line(key)
        if _PLAIN_NAME.fullmatch(name) is None or line is None:
            log.warning("hussh: not recording a host key for %r in %s: %s", name, spec.known_hosts[0],
                        "not a plain host name or address" if line is not None else "not a public key")
            continue
        by_file.setdefault(spec.known_hosts[0], {})[name] = (line, spec.hash_known_hosts)
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
