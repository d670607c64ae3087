"""Logging at fleet scale: hussh's own lines, not asyncssh's per-connection ones, unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hussh.testing import PASSWORD, PASSWORD_USER

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_logged(fleet, asyncssh_level: str | None) -> str:
    """stderr of a process that logs at INFO to stderr and runs a command on the fleet."""
    setup = f'logging.getLogger("asyncssh").setLevel(logging.{asyncssh_level})' if asyncssh_level else ""
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
        from hussh.multi_conn import MultiConnection
        {setup}
        hosts = {fleet.addresses!r}
        with MultiConnection.from_shared_auth(hosts, username={PASSWORD_USER!r}, password={PASSWORD!r},
                                              port={fleet.port}, ssh_config=False, known_hosts="/dev/null") as mc:
            assert not mc.execute("true").failed
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_asyncssh_stays_quiet_unless_its_logger_is_given_a_level(fleet):
    quiet = run_logged(fleet, None)
    assert "asyncssh" not in quiet
    chatty = run_logged(fleet, "INFO")
    assert chatty.count("asyncssh ") >= len(fleet.addresses)  # at least a line per connection
