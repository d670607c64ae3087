"""Test helper: log in with ``AsyncConnection`` and report who the server says we are."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from hussh.aio import AsyncConnection


def whoami(host: str, **kwargs: Any) -> str:
    """Connect with ``kwargs``, run ``id -un`` and return its output (bounded to 30 s)."""
    async def body() -> str:
        async with AsyncConnection(host, **kwargs) as conn:
            return (await conn.execute("id -un")).stdout.strip()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(body(), 30))
