"""Wait, with a bound, until SSH endpoints send their banner: the one readiness test every fleet uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from ._errors import FleetError

PROBE_CONCURRENCY = 64
PROBE_ATTEMPT_TIMEOUT = 5.0
PROBE_RETRY_DELAY = 0.05

Address = tuple[str, int]


async def _answers(endpoint: Address, deadline: float, gate: asyncio.Semaphore) -> bool:
    """Retry until ``endpoint`` sends an ``SSH-2.0-`` banner or ``deadline`` passes."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with gate:
                attempt = min(remaining, PROBE_ATTEMPT_TIMEOUT)
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*endpoint), attempt)
                try:
                    line = await asyncio.wait_for(reader.readline(), attempt)
                finally:
                    writer.close()
            if line.startswith(b"SSH-2.0-"):
                return True
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(PROBE_RETRY_DELAY)


async def unanswered_async(endpoints: Iterable[Address], timeout: float) -> list[Address]:
    """Wait up to ``timeout`` seconds for every banner; return the endpoints that sent none."""
    targets = sorted(set(endpoints))
    deadline = time.monotonic() + timeout
    gate = asyncio.Semaphore(PROBE_CONCURRENCY)
    answered = await asyncio.gather(*(_answers(e, deadline, gate) for e in targets))
    return [endpoint for endpoint, ok in zip(targets, answered, strict=True) if not ok]


def unanswered(endpoints: Iterable[Address], timeout: float) -> list[Address]:
    """Blocking form of :func:`unanswered_async`; usable from inside a running event loop too."""
    targets = list(endpoints)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(unanswered_async(targets, timeout))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, unanswered_async(targets, timeout)).result()


def wait_ready(endpoints: Iterable[Address], timeout: float) -> None:
    """Raise ``FleetError`` unless every endpoint sends its SSH banner within ``timeout`` seconds."""
    raise_silent(unanswered(endpoints, timeout), timeout)


def raise_silent(silent: list[Address], timeout: float) -> None:
    """Raise ``FleetError`` naming the endpoints that sent no banner within ``timeout``, if any."""
    if silent:
        shown = ", ".join(f"{host}:{port}" for host, port in silent[:10])
        raise FleetError(f"{len(silent)} sshd sent no banner within {timeout:.0f}s: {shown}")
