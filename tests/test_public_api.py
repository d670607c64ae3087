"""The names hussh promises, and that importing it starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import hussh

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPECTED_ALL = {
    "aio",
    "multi_conn",
    "AuthenticationError",
    "CallStatus",
    "CommandTimeout",
    "ConfigError",
    "ConnectError",
    "ConnectOptions",
    "ConnectTimeout",
    "Connection",
    "ConnectionLost",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "FileTailer",
    "FleetLimits",
    "HostKeyError",
    "HusshError",
    "HusshTimeout",
    "InteractiveShell",
    "Journal",
    "JournalError",
    "OutputLimitExceeded",
    "ResolveError",
    "Retry",
    "Rollout",
    "SSHResult",
    "SudoError",
    "TransferStalled",
    "WorkerLost",
}


def test_all_is_exactly_the_public_surface():
    assert set(hussh.__all__) == EXPECTED_ALL
    assert len(hussh.__all__) == len(EXPECTED_ALL)
    for name in hussh.__all__:
        assert getattr(hussh, name) is not None


def test_star_import_exports_all():
    namespace: dict[str, Any] = {}
    exec("from hussh import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED_ALL
    assert namespace["multi_conn"].__name__ == "hussh.multi_conn"


def test_upstream_import_names():
    from hussh import AuthenticationError, Connection, SSHResult
    from hussh.aio import AsyncConnection

    assert Connection.__module__.startswith("hussh")
    assert AsyncConnection.__name__ == "AsyncConnection"
    assert issubclass(AuthenticationError, hussh.HusshError)
    assert SSHResult("o", "e", 1).status == 1


def test_multi_conn_import_names():
    from hussh.multi_conn import MultiConnection, MultiFileTailer, MultiResult, PartialFailureException

    assert issubclass(PartialFailureException, hussh.HusshError)
    assert {MultiConnection.__name__, MultiResult.__name__, MultiFileTailer.__name__} == {
        "MultiConnection", "MultiResult", "MultiFileTailer",
    }


def test_error_tree():
    assert issubclass(hussh.ConnectError, OSError)
    assert issubclass(hussh.HostKeyError, hussh.ConnectError)
    assert not issubclass(hussh.AuthenticationError, OSError)
    assert issubclass(hussh.ConnectionLost, ConnectionError)
    assert issubclass(hussh.ConnectTimeout, hussh.HusshTimeout)
    assert issubclass(hussh.CommandTimeout, hussh.HusshTimeout)
    assert issubclass(hussh.TransferStalled, hussh.HusshTimeout)
    assert issubclass(hussh.HusshTimeout, TimeoutError)
    assert not issubclass(hussh.ConnectTimeout, hussh.ConnectError)
    for name in EXPECTED_ALL:
        value = getattr(hussh, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, hussh.HusshError), name
    assert issubclass(hussh.HusshError, RuntimeError)  # upstream's AsyncConnection raises RuntimeError
    assert hussh.ConnectError(111, "refused by h:22").errno == 111


def test_defaults():
    assert hussh.DEFAULT_CONNECT_TIMEOUT == 15
    assert hussh.Retry() == hussh.Retry(cooldown=60.0, attempts=1, backoff=1.0, jitter=0.5)
    assert hussh.DEFAULT_MAX_OUTPUT == 64 * 1024 * 1024


@pytest.mark.parametrize("modules", ["hussh, hussh.aio", "hussh, hussh.aio, hussh.multi_conn"])
def test_import_starts_no_thread_and_no_process(modules):
    script = textwrap.dedent(f"""
        import {modules}, threading, multiprocessing, os
        print(threading.active_count(), len(multiprocessing.active_children()), len(os.listdir("/proc/self/task")))
    """)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "1"]
