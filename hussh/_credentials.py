"""Client credentials: keys read and decrypted once, agent keys fetched once per event loop.

Private keys are read (and a passphrase's bcrypt rounds paid) once per process in the caller;
workers receive the decrypted keys with their shard (``KeyMaterial``) and never read key files.
The ssh-agent is asked for its keys once per event loop, and every login signs through that one
agent connection, instead of asyncssh's one agent socket per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import asyncssh
import msgspec

from . import _loop
from ._spec import DEFAULT_KEY_FILES, ConnectSpec
from .errors import AuthenticationError


class KeyMaterial(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A decrypted private key (OpenSSH format) and its certificate, or why the key is unusable."""

    private: bytes = b""
    certificate: bytes = b""
    error: str = ""

    def __repr__(self) -> str:
        return f"KeyMaterial({'error: ' + self.error if self.error else 'key'})"

    def __rich_repr__(self) -> Iterator[str]:  # type: ignore[override]  # rich takes values, not only pairs
        """For rich's pretty printer, which would otherwise show the decrypted key's bytes."""
        yield f"error: {self.error}" if self.error else "key"


KeyRef = tuple[str, "str | None"]
"""(key file, passphrase): what a spec names; the material behind it travels to workers."""

_materials: dict[tuple[str, str | None, int | None], KeyMaterial] = {}
_shipped: dict[KeyRef, KeyMaterial] = {}


def key_refs(spec: ConnectSpec) -> list[KeyRef]:
    """The key files ``spec`` may offer (not its bastions'), with the passphrase to open each."""
    refs: list[KeyRef] = [(spec.private_key, spec.password)] if spec.private_key is not None else []
    return refs + [(path, None) for path in spec.identities]


def chain_key_refs(spec: ConnectSpec) -> list[KeyRef]:
    """The key files of ``spec`` and of every bastion on its way."""
    refs: list[KeyRef] = []
    hop: ConnectSpec | None = spec
    while hop is not None:
        refs += key_refs(hop)
        hop = hop.jump
    return refs


def material(path: str, passphrase: str | None) -> KeyMaterial:
    """The key at ``path``: from what the parent shipped, else read now (cached by file version)."""
    shipped = _shipped.get((path, passphrase))
    if shipped is not None:
        return shipped
    try:
        mtime: int | None = os.stat(path).st_mtime_ns
    except OSError:
        mtime = None
    cache_key = (path, passphrase, mtime)
    found = _materials.get(cache_key)
    if found is None:
        found = _materials[cache_key] = _read(path, passphrase)
    return found


def ship(refs: Iterable[KeyRef]) -> list[tuple[str, str | None, KeyMaterial]]:
    """What a worker needs to log in with ``refs`` without touching the files (read here, once each)."""
    return [(path, passphrase, material(path, passphrase)) for path, passphrase in dict.fromkeys(refs)]


def install(shipped: Iterable[tuple[str, str | None, KeyMaterial]]) -> None:
    """In a worker: use these keys instead of reading files."""
    for path, passphrase, found in shipped:
        _shipped[(path, passphrase)] = found


def _read(path: str, passphrase: str | None) -> KeyMaterial:
    """Read and decrypt one key and find its certificate (``<key>-cert.pub``), without raising."""
    try:
        key = asyncssh.read_private_key(path, passphrase=passphrase)
    except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        return KeyMaterial(error=f"cannot use private key {path}: {exc}")
    certificate = b""
    cert_path = Path(f"{path}-cert.pub")
    if cert_path.is_file():
        try:
            certificate = asyncssh.read_certificate(cert_path).export_certificate("openssh")
        except (OSError, asyncssh.KeyImportError, ValueError):
            certificate = b""
    return KeyMaterial(key.export_private_key("openssh"), certificate)


def _certificates(paths: Iterable[str]) -> list[asyncssh.SSHCertificate]:
    certs = []
    for path in paths:
        try:
            certs.append(asyncssh.read_certificate(path))
        except (OSError, asyncssh.KeyImportError, ValueError):
            continue  # as ssh: an unreadable CertificateFile is skipped
    return certs


def keypairs(spec: ConnectSpec) -> list[asyncssh.SSHKeyPair]:
    """The key pairs to offer for ``spec``, in order; an explicit key that cannot be used raises.

    Config and default identities that cannot be used (encrypted without a passphrase, missing)
    are skipped, as ``ssh`` does in batch mode.
    """
    if spec.private_key is not None:
        found = material(spec.private_key, spec.password)
        if found.error:
            raise AuthenticationError(found.error)
        return _pairs([found], [])
    usable = [m for m in (material(path, None) for path in spec.identities) if not m.error]
    return _pairs(usable, _certificates(spec.certificates))


def _pairs(found: list[KeyMaterial], extra_certs: list[asyncssh.SSHCertificate]) -> list[asyncssh.SSHKeyPair]:
    pairs: list[asyncssh.SSHKeyPair] = []
    for item in found:
        key = asyncssh.import_private_key(item.private)
        certs = [asyncssh.import_certificate(item.certificate)] if item.certificate else []
        certs += [c for c in extra_certs if c.key.public_data == key.public_data]
        pairs.extend(asyncssh.load_keypairs([(key, cert) for cert in certs] or [key]))
    return pairs


class _Agent:
    """One ssh-agent connection per event loop and socket, its key list fetched once.

    The connection stays open while a login may sign through it and is closed when none does, so a
    loop that ends (``asyncio.run`` around one connection) leaves no socket behind; the next login
    reconnects (asyncssh's client does that by itself once it is closed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.client = asyncssh.SSHAgentClient(path)
        self.keys: asyncio.Future[list[asyncssh.SSHKeyPair]] | None = None
        self.logins = 0
        self.closing: asyncio.Task[None] | None = None

    async def get_keys(self) -> list[asyncssh.SSHKeyPair]:
        if self.keys is None:
            self.keys = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(self.keys)

    async def _fetch(self) -> list[asyncssh.SSHKeyPair]:
        try:
            return list(await self.client.get_keys())
        except (OSError, ValueError, asyncssh.Error) as exc:
            self.keys = None  # ask again on the next login
            raise AuthenticationError(f"ssh-agent at {self.path} did not answer: {exc}") from None

    async def hold(self) -> None:
        """A login starts: it may sign through the agent (after a pending close has finished)."""
        self.logins += 1
        if self.closing is not None:
            await asyncio.shield(self.closing)

    def release(self) -> None:
        """A login ended: close the connection once no other login needs it."""
        self.logins -= 1
        if self.logins == 0 and self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        self.client.close()
        await self.client.wait_closed()  # forgets the socket: the next request opens a new one
        self.closing = None


_agents: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Agent]] = weakref.WeakKeyDictionary()


def _agent(path: str) -> _Agent:
    """This loop's connection to the agent at ``path``."""
    agents = _agents.setdefault(asyncio.get_running_loop(), {})
    agent = agents.get(path)
    if agent is None:
        agent = agents[path] = _Agent(path)
    return agent


def _uses_agent(spec: ConnectSpec) -> bool:
    return spec.agent is not None and spec.private_key is None and spec.password is None


async def agent_keys(spec: ConnectSpec) -> list[asyncssh.SSHKeyPair]:
    """The agent's keys for ``spec`` (only those matching its identities under ``IdentitiesOnly``)."""
    if spec.agent is None:
        return []
    keys = await _agent(spec.agent).get_keys()
    if spec.identities_only:
        wanted = {pair.public_data for pair in keypairs(spec)}
        keys = [pair for pair in keys if pair.public_data in wanted]
    return keys


@contextlib.asynccontextmanager
async def agent_held(spec: ConnectSpec) -> AsyncIterator[None]:
    """Keep the agent connection open while ``spec``'s login may sign through it."""
    if not _uses_agent(spec):
        yield
        return
    assert spec.agent is not None
    agent = _agent(spec.agent)
    await agent.hold()
    try:
        yield
    finally:
        agent.release()


def close_agents() -> None:
    """Close this loop's agent connections (a worker shutting down)."""
    for agent in _agents.pop(asyncio.get_running_loop(), {}).values():
        agent.client.close()


NO_CREDENTIALS_ASYNC = "Failed to authenticate with default SSH keys"
NO_CREDENTIALS_BLOCKING = "Failed to authenticate with ssh-agent and default SSH keys"
"""How upstream's ``AsyncConnection`` and ``Connection`` errors begin when there is nothing to log in
with: code written against upstream matches on these words."""


def no_credentials_message(spec: ConnectSpec) -> str:
    """What was tried when there is nothing to log in with: upstream's words (those of the blocking
    ``Connection`` when it is the caller), then which credentials were missing."""
    agent = (f"the ssh-agent at {spec.agent} offered no key" if spec.agent
             else "no ssh-agent (SSH_AUTH_SOCK is not set)")
    if spec.identities:
        keys = "none of " + ", ".join(spec.identities) + " could be used"
    else:
        keys = "no key in ~/.ssh (" + ", ".join(DEFAULT_KEY_FILES[:3]) + "...)"
    upstream = NO_CREDENTIALS_BLOCKING if _loop.running_here() else NO_CREDENTIALS_ASYNC
    return (f"{upstream}: no credentials for {spec.username}@{spec.address}: no password, no private_key, "
            f"{agent}, {keys}")
