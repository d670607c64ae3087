"""Host names to addresses for the connector: many at once, looked up once per call, never holding up exit.

The event loop's own lookup fails a fleet three ways: uvloop hands ``getaddrinfo`` to libuv's 4
threads (a resolver that takes a second gives 4 names/s per worker); a lookup whose connection
timed out is left behind, and its ``gaierror`` is logged as "Future exception was never retrieved";
and closing the loop waits for every lookup still queued, which a silent resolver holds 10 s each.

Here numeric addresses skip the resolver. Names go to the C library's ``getaddrinfo`` (so
/etc/hosts, nsswitch.conf and resolv.conf apply as they do for ``ssh``) in up to ``concurrency()``
daemon threads per process: nothing joins them, a lookup nobody waits for any more is dropped
before it starts, and its outcome reaches the loop as a value, never as a future's exception.
Within ``per_call()`` the tasks of one call share each name's lookup and its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import socket
import threading
from collections.abc import Iterator

from .errors import ConfigError, ResolveError

DEFAULT_CONCURRENCY = 64
"""Lookups one process runs at once. A worker's share of ``batch_size`` rarely exceeds it, and a
resolver that answers in 50 ms still gives ~700 names/s per process (``scale/bench_dns.py``)."""
CONCURRENCY_ENV = "HUSSH_DNS_CONCURRENCY"
IDLE_EXIT = 10.0  # seconds a resolver thread waits for another lookup before it ends

Address = tuple[int, str]
"""An address family and a numeric address, as ``loop.create_connection`` takes them without a lookup."""


def concurrency() -> int:
    """The per-process bound on concurrent lookups: ``$HUSSH_DNS_CONCURRENCY``, else the default."""
    raw = os.environ.get(CONCURRENCY_ENV, "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{CONCURRENCY_ENV} must be a whole number of lookups, 1 or more, not {raw!r}")
    return int(raw)


class _Lookup:
    """One name being looked up: its waiters share ``future``, whose result is addresses or the failure."""

    __slots__ = ("name", "family", "loop", "future", "waiters", "abandoned")

    def __init__(self, name: str, family: int, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.family, self.loop = name, family, loop
        self.future: asyncio.Future[list[Address] | Exception] = loop.create_future()
        self.waiters = 0
        self.abandoned = False  # every waiter left before a thread took it: skip it

    def run(self) -> None:
        """In a resolver thread: look the name up and hand the outcome to the loop."""
        outcome: list[Address] | Exception
        try:
            infos = socket.getaddrinfo(self.name, None, self.family, socket.SOCK_STREAM)
            outcome = list(dict.fromkeys((family, _text(sockaddr)) for family, _, _, _, sockaddr in infos))
        except (OSError, UnicodeError, ValueError) as exc:  # idna refuses some names before any lookup
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody to tell
            self.loop.call_soon_threadsafe(_settle, self.future, outcome)


def _text(sockaddr: tuple[object, ...]) -> str:
    """The numeric address of ``sockaddr``, with its IPv6 scope (a link-local address needs it)."""
    return f"{sockaddr[0]}%{sockaddr[3]}" if len(sockaddr) == 4 and sockaddr[3] else str(sockaddr[0])


def _settle(future: asyncio.Future[list[Address] | Exception], outcome: list[Address] | Exception) -> None:
    if not future.done():
        future.set_result(outcome)


class _Threads:
    """This process's resolver threads: started as lookups queue up, up to the bound, ended when idle."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Lookup] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0  # threads waiting for a job, less the jobs queued: below 0, work waits for a thread

    def submit(self, job: _Lookup, bound: int) -> None:
        with self.lock:
            self.jobs.put(job)
            self.idle -= 1
            if self.idle < 0 and self.threads < bound:
                self.threads += 1
                self.idle += 1
                threading.Thread(target=self._serve, name="hussh-resolver", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self.lock:
                    if self.jobs.empty():
                        self.idle -= 1
                        self.threads -= 1
                        return
                continue
            if not job.abandoned:
                job.run()
            with self.lock:
                self.idle += 1


_threads = _Threads()
_cache: contextvars.ContextVar[dict[tuple[str, int], _Lookup] | None] = contextvars.ContextVar(
    "hussh_resolve_cache", default=None)


def _forget_in_child() -> None:
    """After ``fork()``: the parent's threads do not exist here, nor do its queued lookups' loops."""
    global _threads
    _threads = _Threads()


os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def per_call() -> Iterator[None]:
    """Tasks started inside share one lookup, and its answer, per name (a call's hosts; the next call asks again)."""
    token = _cache.set({})
    try:
        yield
    finally:
        _cache.reset(token)


def numeric(name: str, family: int = socket.AF_UNSPEC) -> list[Address] | None:
    """``name``'s address when it is one already (no resolver involved), else None."""
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return [(infos[0][0], _text(infos[0][4]))] if infos else None


async def resolve(name: str, family: int = socket.AF_UNSPEC) -> list[Address]:
    """The addresses of ``name``, in the order to try them; ``ResolveError`` naming it if there are none."""
    found = numeric(name, family)
    if found is not None:
        return found
    cache, key = _cache.get(), (name, family)
    lookup = cache.get(key) if cache is not None else None
    if lookup is None:
        lookup = _Lookup(name, family, asyncio.get_running_loop())
        if cache is not None:
            cache[key] = lookup
        _threads.submit(lookup, concurrency())
    lookup.waiters += 1
    try:
        outcome = await asyncio.shield(lookup.future)  # a waiter's deadline must not cancel the others' lookup
    finally:
        lookup.waiters -= 1
        if lookup.waiters == 0 and not lookup.future.done():
            lookup.abandoned = True  # dropped unless a thread has it already; a later host asks anew
            if cache is not None and cache.get(key) is lookup:
                del cache[key]
    if isinstance(outcome, Exception):
        reason = outcome.strerror if isinstance(outcome, OSError) and outcome.strerror else str(outcome)
        raise ResolveError(getattr(outcome, "errno", None) or socket.EAI_FAIL,
                           f"cannot resolve host {name!r}: {reason}")
    if not outcome:
        raise ResolveError(socket.EAI_NONAME, f"cannot resolve host {name!r}: no address of a usable family")
    return outcome
