"""The engine's one door into the transport: what a shard ships, what a worker process installs, what a
call shares and what is closed at the end. The engine imports this, ``aio`` and the value types only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from . import _bastions, _connector, _credentials, _known_hosts, _resolve
from ._credentials import KeyMaterial
from ._known_hosts import record as record_host_keys
from ._make_spec import finalized
from ._spec import ConnectSpec, HashedHosts, Retry

__all__ = ["KeyMaterial", "ShippedKey", "close", "finalized", "install", "per_call", "record_host_keys", "shipment"]

ShippedKey = tuple[str, str | None, KeyMaterial]
"""(key file, passphrase, material): a key a worker uses without reading the caller's files."""


def shipment(specs: Iterable[ConnectSpec], *, keys: bool = True) -> tuple[list[ShippedKey], list[HashedHosts]]:
    """The key material (unless the worker reads its own) and hashed known_hosts entries ``specs`` need."""
    specs = list(specs)
    shipped = _credentials.ship(ref for spec in specs for ref in _credentials.chain_key_refs(spec)) if keys else []
    return shipped, _known_hosts.ship(path for spec in specs for path in _known_hosts.hashed_paths(spec))


def install(keys: Iterable[ShippedKey], known: Iterable[HashedHosts], retry: Retry) -> None:
    """Set up this worker process: the shipped keys and known hosts, and its share of the retry policy."""
    _credentials.install(keys)
    _known_hosts.install(known)
    _bastions.pool().cooldown = retry.cooldown
    _connector.policy = retry


@contextlib.contextmanager
def per_call(*, retry_bastions: bool) -> Iterator[None]:
    """One call's shared state: each name looked up once; ``connect()`` retries failed bastions too."""
    if retry_bastions:
        _bastions.pool().forget_failures()
    with _resolve.per_call():
        yield


async def close() -> None:
    """Close this loop's bastion logins (after the tunnels through them) and the agent connections."""
    await _bastions.pool().close()
    _credentials.close_agents()
