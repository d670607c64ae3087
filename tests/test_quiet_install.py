"""A fresh install is quiet: importing hussh and running its command print nothing unasked.

Third-party deprecations raised while asyncssh is imported (cryptography 51 deprecates the DSA
names asyncssh touches at import) are hussh's to silence; the user's own warnings, and any raised
later, are not.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from clirun import env


def python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that shows every warning (``-W default``)."""
    return subprocess.run([sys.executable, "-W", "default", "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env=env(), stdin=subprocess.DEVNULL)


def test_importing_every_public_module_prints_nothing():
    done = python("import hussh, hussh.aio, hussh.multi_conn, hussh.cli, hussh.testing, hussh.workers.main")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_command_prints_only_what_was_asked():
    done = subprocess.run([sys.executable, "-W", "default", "-m", "hussh", "--version"], capture_output=True,
                          text=True, timeout=60, env=env(), stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("hussh ")


def test_the_users_own_warnings_still_show_after_import():
    done = python("""
        import warnings
        import hussh
        from cryptography.utils import CryptographyDeprecationWarning
        warnings.warn("the user's own", CryptographyDeprecationWarning)
        warnings.warn("another of the user's", DeprecationWarning)
    """)
    assert done.returncode == 0, done.stderr
    assert "CryptographyDeprecationWarning: the user's own" in done.stderr
    assert "DeprecationWarning: another of the user's" in done.stderr


def test_the_filter_is_gone_once_asyncssh_is_imported():
    """Only the import is silenced: the process's warning filters are as the user left them."""
    done = python("""
        import warnings
        before = list(warnings.filters)
        import hussh
        assert warnings.filters == before, (before, warnings.filters)
        print("same")
    """)
    assert (done.returncode, done.stdout.strip()) == (0, "same"), done.stderr
