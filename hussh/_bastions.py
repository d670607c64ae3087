"""Bastions (ProxyJump): one SSH connection per bastion per event loop, carrying its hosts as tunnels.

asyncssh opens a new bastion connection for every target given a ``tunnel=`` string; here every
host behind a bastion shares one login to it (more when it runs out of channels), opened lazily,
reused across calls and reopened when it drops. A bastion that cannot be reached fails the hosts
behind it at once, each naming it, and is not tried again for the pool's ``cooldown``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import asyncssh
import msgspec
from asyncssh.connection import SSHClientConnection

from ._spec import ConnectSpec, HostKeys
from .errors import ConnectError, HusshError, describe

CHANNELS_PER_LINK = 1000
"""Tunnels carried by one bastion connection before another is opened.

OpenSSH's sshd does not count ``direct-tcpip`` channels against ``MaxSessions``, but its session
process holds one descriptor per channel (its open-file limit, often 1024, applies) and gives up
near 16K channels, taking every tunnel with it. A channel refused for lack of resources also
marks the connection full, whatever this number says (see docs/configuration.md)."""

MAX_LINKS_PER_CALL = 4  # new bastion connections one host may open while looking for room

Opener = Callable[[ConnectSpec], Awaitable[SSHClientConnection]]
"""Connects and logs in to a bastion: the connector's ``open_connection``, handed in so this module stays below it."""


@dataclass(eq=False)
class _Link:
    conn: SSHClientConnection
    channels: int = 0
    full: bool = False

    def usable(self) -> bool:
        return not self.full and self.channels < CHANNELS_PER_LINK and not self.conn.is_closed()


@dataclass(eq=False)
class _Bastion:
    spec: ConnectSpec
    links: list[_Link] = field(default_factory=list)
    opening: asyncio.Future[_Link] | None = None
    failure: str = ""
    failed_at: float = 0.0


class BastionPool:
    """The bastion connections of one event loop; ``open`` gives a target connection through one."""

    def __init__(self) -> None:
        self.bastions: dict[ConnectSpec, _Bastion] = {}
        self.cooldown = 0.0  # seconds a failed bastion is not retried (workers: their Retry policy)
        self.learned: list[tuple[ConnectSpec, str]] = []  # bastion keys accepted on first use
        self.closing: set[SSHClientConnection] = set()  # logins closed with their last tunnel, not yet gone

    def forget_failures(self) -> None:
        """``connect()`` retries every host, bastions included (once per call, shared)."""
        for bastion in self.bastions.values():
            bastion.failure = ""

    def links(self, spec: ConnectSpec) -> int:
        """Open connections to the bastion ``spec`` (for tests and stats)."""
        bastion = self.bastions.get(spec)
        return sum(1 for link in bastion.links if not link.conn.is_closed()) if bastion else 0

    async def open(self, hop: ConnectSpec, factory: Callable[[], SSHClientConnection],
                   host: str, port: int, opener: Opener) -> SSHClientConnection:
        """A new (not yet authenticated) connection to ``host:port`` tunnelled through bastion ``hop``,
        logging in to the bastion with ``opener`` when no open login has room (the connector's own)."""
        bastion = self.bastions.get(hop)
        if bastion is None:
            bastion = self.bastions[hop] = _Bastion(hop)
        for _ in range(MAX_LINKS_PER_CALL):
            link = await self._link(bastion, opener)
            link.channels += 1
            try:
                # the tunnel's session is the new connection itself (asyncssh types a TCP session)
                _, tunnelled = await link.conn.create_connection(factory, host, port)  # type: ignore[arg-type]
            except asyncssh.ChannelOpenError as exc:
                link.channels -= 1
                if _out_of_room(exc, link):
                    link.full = True  # the bastion's session process is out of descriptors: use another
                    continue
                raise ConnectError(f"{host}:{port} via bastion {hop.target}: {exc.reason}") from None
            except (asyncssh.Error, OSError) as exc:
                link.channels -= 1
                if link.conn.is_closed():
                    continue  # the bastion dropped under us: reopen it
                raise ConnectError(f"{host}:{port} via bastion {hop.target}: {exc}") from None
            except BaseException:
                link.channels -= 1
                raise
            conn = cast(SSHClientConnection, tunnelled)
            conn.on_lost = lambda link=link: self._release(link)  # type: ignore[attr-defined]
            return conn
        raise ConnectError(f"{host}:{port} via bastion {hop.target}: no room for another tunnel after "
                           f"{MAX_LINKS_PER_CALL} new connections to the bastion")

    async def _link(self, bastion: _Bastion, opener: Opener) -> _Link:
        """A bastion connection with room for one more tunnel, opening one (shared by all waiters) if none has."""
        while True:
            bastion.links = [link for link in bastion.links if not link.conn.is_closed()]
            for link in bastion.links:
                if link.usable():
                    return link
            if bastion.opening is None:
                if bastion.failure:
                    ago = time.monotonic() - bastion.failed_at
                    if ago < self.cooldown:
                        raise ConnectError(f"via bastion {bastion.spec.target}: {bastion.failure} ({ago:.0f} s "
                                           "ago; a failed bastion is not retried during the cool-down)")
                bastion.opening = asyncio.ensure_future(self._connect(bastion, opener))
            await asyncio.shield(bastion.opening)  # then look again: other waiters may have filled it

    async def _connect(self, bastion: _Bastion, opener: Opener) -> _Link:
        try:
            conn = await opener(bastion.spec)
        except (HusshError, OSError) as exc:
            bastion.failure, bastion.failed_at = describe(exc), time.monotonic()
            raise ConnectError(f"via bastion {bastion.spec.target}: {bastion.failure}") from None
        finally:
            bastion.opening = None
        bastion.failure = ""
        learned = getattr(conn, "learned_key", None)
        if learned:
            self.learned.append((bastion.spec, learned))
            bastion.spec = msgspec.structs.replace(bastion.spec, host_keys=HostKeys(trusted=(learned,)))
        link = _Link(conn)
        bastion.links.append(link)
        return link

    def _release(self, link: _Link) -> None:
        """A tunnel through ``link`` ended: a bastion login that carries none is closed (as ``ssh -J``
        does), so a loop that ends leaves no connection behind; the next host through it logs in again."""
        link.channels -= 1
        if link.channels <= 0:
            link.conn.close()
            self.closing.add(link.conn)

    async def settle(self) -> None:
        """Wait until the bastion logins closed for want of tunnels are gone (``AsyncConnection.close``)."""
        closing, self.closing = self.closing, set()
        await asyncio.gather(*(conn.wait_closed() for conn in closing), return_exceptions=True)

    async def close(self) -> None:
        """Close every bastion connection (after the tunnels through them are closed)."""
        links = [link for bastion in self.bastions.values() for link in bastion.links]
        for link in links:
            link.conn.close()
        await asyncio.gather(*(link.conn.wait_closed() for link in links), return_exceptions=True)
        self.bastions.clear()


def _out_of_room(exc: asyncssh.ChannelOpenError, link: _Link) -> bool:
    """A refusal meaning "this bastion login cannot take another tunnel", not "the target refused".

    OpenSSH 9.2 answers a session process out of descriptors with code 2 (connect failed) and the
    bare reason "open failed"; a target that refuses says "connect failed: ..." instead."""
    if exc.code == asyncssh.OPEN_RESOURCE_SHORTAGE or "open files" in exc.reason.lower():
        return True
    return exc.code == asyncssh.OPEN_CONNECT_FAILED and exc.reason.strip() == "open failed" and link.channels > 0




_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BastionPool] = weakref.WeakKeyDictionary()


def pool() -> BastionPool:
    """The running event loop's bastion pool."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = _pools[loop] = BastionPool()
    return found
