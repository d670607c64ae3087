"""Command outputs that are alike, held once while they arrive and once when finished.

A fleet often prints the same thing on every host (a package list, a config file). A worker runs
many hosts at once, so holding each host's output in its own buffer costs lanes x output even
when all are alike (issue 22: a worker at 1.3 GB for 200 hosts printing the same 6.7 MB). Here
each stream follows a shared buffer while its bytes match it, keeping only its position, and
copies what it shares into its own buffer the moment it differs; finished outputs of one length
from one shared buffer are one ``bytes`` object.

A call's output budget pays for the outputs held, not for the bytes each stream receives: a shared
buffer is paid for as it grows, and each further output of another length taken from it (a prefix
of another, a distinct object wherever it is kept) once more when it is taken; a stream that stops
matching pays for its copy of what it shared. 200 hosts printing the same 6.7 MB thus cost one copy
of it, not 200, as the caller holds it (identical texts share one string there).
"""

from __future__ import annotations

import weakref
from typing import Protocol

RECENT = 8
"""Shared buffers a new stream compares its first bytes with (the newest): a bound, so a fleet of
distinct outputs costs a few comparisons per command, not one per command running."""


class Budget(Protocol):
    """Bytes a call may still hold (``hussh.aio.OutputBudget``)."""

    left: int

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` bytes; return how many were granted."""
        ...


class _Shared:
    """Bytes that one or more streams printed alike so far, the finished outputs taken from them, and
    what the budget they share (``None``: none) was paid for them."""

    __slots__ = ("data", "frozen", "taken", "budget", "paid", "__weakref__")

    def __init__(self, budget: Budget | None) -> None:
        self.data = bytearray()
        self.frozen: dict[int, bytes] = {}
        self.taken = 0  # the sizes of the outputs in ``frozen``, summed
        self.budget = budget
        self.paid = 0

    def grow(self, chunk: bytes, held: int) -> int:
        """Append ``chunk`` past its first ``held`` bytes (already here), as far as the budget pays;
        return how many bytes of ``chunk`` that covers."""
        size = len(chunk) if self.budget is None else held + self._pay(len(chunk) - held)
        self.data += memoryview(chunk)[held:size]
        return size

    def take(self, size: int) -> bytes | None:
        """The first ``size`` bytes, as one object for every stream that ends there (``None`` if the
        budget cannot pay for one more output: every output taken is held, the buffer pays for one)."""
        found = self.frozen.get(size)
        if found is None:
            if self.budget is not None:
                due = size + self.taken - self.paid
                if due > 0 and self._pay(due) < due:
                    return None
            with memoryview(self.data) as view, view[:size] as head:
                found = self.frozen[size] = bytes(head)
            self.taken += size
        return found

    def affordable(self) -> int:
        """The longest output that ``take`` can still pay for (more when it was already taken)."""
        assert self.budget is not None
        return max(0, self.budget.left + self.paid - self.taken)

    def _pay(self, wanted: int) -> int:
        assert self.budget is not None
        granted = self.budget.take(wanted)
        self.paid += granted
        return granted


_recent: list[weakref.ref[_Shared]] = []  # newest last; dead ones are dropped as met


def _follow(first: bytes, budget: Budget | None) -> _Shared:
    """A recent shared buffer paid from ``budget`` that begins (or could begin) with ``first``, else a new one."""
    alive = [ref for ref in _recent[-RECENT:] if ref() is not None]
    for ref in reversed(alive):
        shared = ref()
        if shared is not None and shared.budget is budget and _matches(shared.data, 0, first):
            return shared
    shared = _Shared(budget)
    _recent[:] = [*alive[-(RECENT - 1):], weakref.ref(shared)]
    return shared


def _matches(data: bytearray, at: int, chunk: bytes) -> bool:
    """Whether ``chunk`` agrees with ``data`` from ``at`` for as far as both go (no copy of ``data``)."""
    overlap = min(len(chunk), len(data) - at)
    return data.startswith(chunk if overlap == len(chunk) else memoryview(chunk)[:overlap], at)


class OutputStream:
    """One stream of one command: a position in a shared buffer while it matches, else its own buffer.

    With a ``budget``, it holds only what the budget pays for: ``extend`` says how much it appended."""

    __slots__ = ("budget", "shared", "size", "own")

    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget
        self.shared: _Shared | None = None
        self.size = 0
        self.own: bytearray | None = None

    def extend(self, chunk: bytes) -> int:
        """Append ``chunk`` (or as much as the budget pays for): shared while it matches, copied into this
        stream's own buffer once it differs, the copy paid first; return the bytes appended."""
        if not chunk:
            return 0
        budget = self.budget
        if self.own is None:
            shared = self.shared = self.shared or _follow(chunk, budget)
            if _matches(shared.data, self.size, chunk):
                size = shared.grow(chunk, min(len(chunk), len(shared.data) - self.size))
                self.size += size
                return size
            if budget is not None:
                granted = budget.take(self.size)
                if granted < self.size:  # no room for its own copy: it stops here
                    budget.left += granted
                    return 0
            with memoryview(shared.data) as view, view[:self.size] as head:
                self.own = bytearray(head)
            self.shared = None
        size = len(chunk) if budget is None else budget.take(len(chunk))
        self.own += memoryview(chunk)[:size]
        self.size += size
        return size

    def take(self) -> tuple[bytes, bool]:
        """The output (one object for all streams that printed alike), and whether it is whole: when the
        budget cannot pay for one more output of a shared buffer, its first bytes that it can; the
        stream's hold on it is released."""
        whole = True
        if self.own is not None:
            data = bytes(self.own)
        elif self.shared is not None:
            found = self.shared.take(self.size)
            if found is None:
                whole = False
                found = self.shared.take(min(self.size, self.shared.affordable()))
            assert found is not None
            data = found
        else:
            data = b""
        self.shared, self.own, self.size = None, None, 0
        return data, whole
