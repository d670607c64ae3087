"""``batch_size`` as one budget of lanes over a call's shards, handed out by the caller (credit-based).

Each shard of a wave starts with its share of the budget (``split_shares``) and keeps its lanes for
as long as it has hosts to start: a host that finishes hands its lane to the shard's next host with
no round trip. A lane comes back to the caller once its shard has started (or answered) every host
it was given and the host on it finished; the caller grants such freed lanes to the shards that
still have hosts waiting (``Grant``), so no lane idles while any host of the call waits, and a host
still runs in the shard (process, actor) that holds its connection.

The caller never sees the workers' lanes, only their frames, and counts a shard's lanes on the safe
side: all it was granted while a host of it was not seen to start, else the hosts seen running. So
the shards run at most ``budget`` hosts at once, however late the frames arrive.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping


def split_shares(batch_size: int, sizes: list[int]) -> list[int]:
    """Split ``batch_size`` over shards in proportion to their sizes; shares sum to it, none below 1."""
    total = sum(sizes)
    shares = [max(1, batch_size * size // total) for size in sizes]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    i = 0
    while sum(shares) != batch_size:
        j = order[i % len(order)]
        if sum(shares) < batch_size:
            shares[j] += 1
        elif shares[j] > 1:
            shares[j] -= 1
        i += 1
    return shares


class Lanes:
    """One wave's lanes: who holds how many, and what to grant when some come back."""

    def __init__(self, budget: int, sizes: Mapping[int, int]) -> None:
        """``sizes``: shard -> hosts of the wave it runs (every shard at least one; no more shards than ``budget``)."""
        self.budget = budget
        numbers = list(sizes)
        shares = split_shares(min(budget, sum(sizes.values())), [sizes[n] for n in numbers])
        self.granted = {n: min(share, sizes[n]) for n, share in zip(numbers, shares)}
        self.waiting = dict(sizes)  # hosts not seen to start nor answered
        self.running = dict.fromkeys(numbers, 0)  # hosts seen to start, not answered

    def held(self, number: int) -> int:
        """The most hosts shard ``number`` may be running: its lanes while it has hosts to start, then
        those it was seen to start and has not answered."""
        if number not in self.granted:
            return 0
        if self.waiting[number]:
            return self.granted[number]
        return min(self.granted[number], self.running[number])

    def started(self, number: int) -> None:
        self.waiting[number] -= 1
        self.running[number] += 1

    def answered(self, number: int, started: bool) -> None:
        """A host of shard ``number`` finished (``started``) or was answered without starting (skipped)."""
        if started:
            self.running[number] -= 1
        else:
            self.waiting[number] -= 1

    def gone(self, number: int) -> None:
        """Shard ``number`` finished the wave or was lost: it holds nothing any more."""
        for table in (self.granted, self.waiting, self.running):
            table.pop(number, None)

    def grants(self) -> dict[int, int]:
        """Lanes to hand out now (shard -> lanes): the free ones, to the shards with the most hosts
        that no lane of theirs will take, one at a time."""
        free = self.budget - sum(self.held(n) for n in self.granted)
        if free <= 0:
            return {}
        short = [(-need, n) for n in self.granted
                 if (need := self.waiting[n] - (self.granted[n] - self.running[n])) > 0]
        heapq.heapify(short)
        given: dict[int, int] = {}
        while free and short:
            need, number = heapq.heappop(short)
            given[number] = given.get(number, 0) + 1
            self.granted[number] += 1
            free -= 1
            if need + 1 < 0:
                heapq.heappush(short, (need + 1, number))
        return given
