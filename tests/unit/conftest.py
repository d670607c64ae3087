"""The unit tier: MultiConnection, rollouts, the journal and the command line's output on ``MockEngine``, no
sshd and no worker process; every test here is marked ``unit`` (``make test-unit``, ``pytest -m unit``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hussh.multi_conn import MultiConnection
from hussh.testing import MockEngine, MockRequest
from hussh.testing.mock import Handler

HERE = Path(__file__).parent
HOSTS = ["web1", "web2", "web3", "web4", "db1", "db2"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.unit)


def echo(request: MockRequest) -> str | None:
    """Every command prints ``host: command``; files read as ``contents of PATH on HOST``."""
    if request.kind == "execute":
        return f"{request.host}: {request.command}\n"
    if request.kind == "sftp_read":
        return f"contents of {request.path} on {request.host}\n"
    return None


@pytest.fixture
def fleet() -> Iterator[Callable[..., tuple[MultiConnection, MockEngine]]]:
    """``fleet(handler=echo, hosts=HOSTS, **options)``: a MultiConnection on a MockEngine, closed after the test."""
    made: list[MultiConnection] = []

    def make(handler: Handler = echo, hosts: list[str] | None = None,
             **options: object) -> tuple[MultiConnection, MockEngine]:
        engine = MockEngine(handler)
        mc = MultiConnection.from_shared_auth(HOSTS if hosts is None else hosts, engine=engine, ssh_config=False,
                                              **options)  # type: ignore[arg-type]
        made.append(mc)
        return mc, engine

    yield make
    for mc in made:
        mc.close()
