"""Import asyncssh quietly and without its slow searches for optional C libraries that are not installed.

Quietly: cryptography 51 deprecates DSA, and asyncssh's modules touch ``dsa`` names at import, so
every ``import hussh`` printed a dozen ``CryptographyDeprecationWarning`` lines the user can do
nothing about. Those warnings, raised while asyncssh itself is imported, are ignored; every other
warning, and every warning after the import (a DSA key really used), reaches the user's filters.

At import, asyncssh asks ``ctypes.util.find_library`` for liboqs and libnettle; when they are
absent, each question spawns ``ldconfig`` and ``gcc`` (~0.1 s of start-up in all). Here a
library missing from the dynamic linker's cache is answered "not found" at once; anything else,
or any ``LD_LIBRARY_PATH`` in effect, goes to the real search, so what asyncssh finds is unchanged.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import warnings

_OPTIONAL = {"oqs", "liboqs", "nettle", "libnettle", "libnettle-6"}
_LINKER_CACHE = "/etc/ld.so.cache"


def import_asyncssh() -> None:
    if "asyncssh" in sys.modules:
        return
    if os.environ.get("LD_LIBRARY_PATH"):
        _quiet_import()
        return
    try:
        with open(_LINKER_CACHE, "rb") as cache:
            known = cache.read()
    except OSError:
        known = None
    search = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        if known is not None and name in _OPTIONAL and f"lib{name.removeprefix('lib')}".encode() not in known:
            return None
        return search(name)

    ctypes.util.find_library = find_library
    try:
        _quiet_import()
    finally:
        ctypes.util.find_library = search


def _quiet_import() -> None:
    """``import asyncssh``, ignoring cryptography's deprecation warnings raised by that import only."""
    from cryptography.utils import CryptographyDeprecationWarning  # noqa: PLC0415 - asyncssh imports it anyway

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        __import__("asyncssh")
