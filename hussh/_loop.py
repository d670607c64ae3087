"""One background event-loop thread per process, started on first use, for the blocking ``Connection``.

A forked child has no copy of that thread, only the handle of a loop nobody runs (and perhaps a
lock held at the fork): the child forgets both and starts its own loop on first use. Connections
made before the fork belong to the parent's loop and cannot be used in the child.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (it is a dependency), else asyncio's default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional at import time
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = new_event_loop()
            threading.Thread(target=loop.run_forever, name="hussh-loop", daemon=True).start()
            _loop = loop
        return _loop


def running_here() -> bool:
    """Whether the caller runs on the background loop, i.e. on behalf of the blocking API."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def _forget_in_child() -> None:
    """After ``fork()``: drop the parent's loop handle and lock (its thread does not exist here)."""
    global _lock, _loop
    _lock, _loop = threading.Lock(), None


os.register_at_fork(after_in_child=_forget_in_child)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and block for its result (Ctrl-C cancels it)."""
    future = asyncio.run_coroutine_threadsafe(coro, _background_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
