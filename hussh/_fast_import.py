"""Import asyncssh without its slow searches for optional C libraries that are not installed.

At import, asyncssh asks ``ctypes.util.find_library`` for liboqs and libnettle; when they are
absent, each question spawns ``ldconfig`` and ``gcc`` (~0.1 s of start-up in all). Here a
library missing from the dynamic linker's cache is answered "not found" at once; anything else,
or any ``LD_LIBRARY_PATH`` in effect, goes to the real search, so what asyncssh finds is unchanged.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

_OPTIONAL = {"oqs", "liboqs", "nettle", "libnettle", "libnettle-6"}
_LINKER_CACHE = "/etc/ld.so.cache"


def import_asyncssh() -> None:
    if "asyncssh" in sys.modules or os.environ.get("LD_LIBRARY_PATH"):
        __import__("asyncssh")
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
        __import__("asyncssh")
    finally:
        ctypes.util.find_library = search
