"""Fleets of real SSH servers for scale tests of your own: importing this module starts nothing.

Two backends share one interface (:class:`Fleet`): :class:`LoopbackFleet` runs OpenSSH ``sshd``
processes on 127.x.y.z addresses (root, no Docker), :class:`ComposeFleet` runs sshd containers
from a locally built image (Docker, no registry). Both give host strings, credentials, known_hosts
lines and faults per node (pause, kill, refuse, blackhole, slow, heal); made with ``network=``
they sit behind a relay with :class:`NetworkConditions` (delay, jitter, bandwidth, slow start) and
faults on live links (freeze, thaw, reset). The pytest plugin
(``hussh.testing.plugin``, loaded through its entry point) hands them to tests as ``hussh_fleet``;
``python -m hussh.testing up N | hosts | down`` runs one by hand. See docs/scale-testing.md.

No fleet at all: :class:`MockEngine` (``hussh.testing.mock``, loaded on first use) answers a
``MultiConnection``'s operations with a function of yours, for unit tests. See docs/testing.md.
"""

from typing import TYPE_CHECKING

from ._base import Credentials, Endpoint, Fleet, State
from ._errors import FleetError
from ._relay import NetworkConditions
from ._users import KEY_PASSPHRASE, KEY_USER, PASSWORD, PASSWORD_USER
from .compose import ComposeFleet
from .loopback import LoopbackFleet, loopback_addresses

if TYPE_CHECKING:  # type checkers see the classes (annotations name them); at run time __getattr__ loads them
    from .mock import MockEngine, MockRequest

__all__ = [
    "KEY_PASSPHRASE",
    "MockEngine",
    "MockRequest",
    "KEY_USER",
    "PASSWORD",
    "PASSWORD_USER",
    "ComposeFleet",
    "Credentials",
    "Endpoint",
    "Fleet",
    "FleetError",
    "LoopbackFleet",
    "NetworkConditions",
    "State",
    "loopback_addresses",
]


def __getattr__(name: str) -> object:
    """``MockEngine`` and ``MockRequest`` on first use: they load the library (fleets alone do not)."""
    if name in ("MockEngine", "MockRequest"):
        from . import mock  # noqa: PLC0415

        return getattr(mock, name)
    raise AttributeError(f"module 'hussh.testing' has no attribute {name!r}")
