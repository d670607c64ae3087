"""``Rollout``: how a changing call goes through the fleet (a canary, waves, a failure budget), and
``CallStatus``, a snapshot of a call while it runs.

A rollout cuts the call's hosts, in the order given, into a canary (every host of it must succeed)
and waves (counts or percentages, as Ansible's ``serial``: each entry is the next wave's size, the
last one repeats). A wave starts when the one before it has finished. Failures are counted across
the whole call; once they exceed ``max_failures`` no new host starts, and hosts never started are
*skipped*: ``SSHResult(error="Skipped", status=-1)``, in ``MultiResult.skipped``, neither succeeded
nor failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CallStatus", "Rollout"]

CONNECT_KINDS = frozenset({"ConnectError", "ConnectTimeout", "AuthenticationError", "ConfigError", "HostKeyError"})
"""Error kinds of a host that could not be reached or logged into (``count_connect_failures``)."""


@dataclass(frozen=True)
class CallStatus:
    """A running call at one moment (``MultiConnection.status()``, or the argument of ``between_waves``).

    ``running`` maps each host started and not finished to when it started (``time.time()``);
    ``wave`` is the current wave (0: the canary, or the first wave when there is none) of ``waves``.
    """

    total: int
    done: int
    succeeded: int
    failed: int
    skipped: int
    running: dict[str, float] = field(default_factory=dict)
    wave: int = 0
    waves: int = 1
    halted: str = ""  # why no new host starts ("" while the run goes on)

    @property
    def waiting(self) -> int:
        """Hosts not started yet (and not skipped)."""
        return self.total - self.done - len(self.running)


def _size(entry: int | str, total: int) -> int:
    """One wave's size: a count, or ``"P%"`` of ``total`` (rounded down, at least 1)."""
    if isinstance(entry, str):
        text = entry.strip()
        if text.endswith("%"):
            percent = _number(text[:-1], entry)
            if not 0 < percent <= 100:
                raise ValueError(f"a wave of {entry!r}: a percentage must be above 0% and at most 100%")
            return max(1, math.floor(total * percent / 100))
        entry = int(_number(text, entry))
    if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
        raise ValueError(f"a wave of {entry!r}: waves are positive counts or percentages such as '25%'")
    return entry


def _number(text: str, entry: object) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"a wave of {entry!r}: waves are positive counts or percentages such as '25%'") from None


@dataclass(frozen=True)
class Rollout:
    """A canary, waves and a failure budget for one call (``execute(..., rollout=Rollout(...))``).

    ``canary``: the first N hosts run alone and must all succeed, else nothing else starts.
    ``waves``: wave sizes (``[1, "5%", "25%", "100%"]`` or ``"1,5%,25%,100%"``), the last repeating;
    none: one wave of everything after the canary. ``max_failures``: how many failed hosts (N, or
    ``"P%"`` of the call's hosts) the run tolerates; one more and no new host starts; connection
    failures count unless ``count_connect_failures=False``. ``on_exceeded``: ``"finish"`` lets
    running hosts finish, ``"stop"`` stops their commands too. ``pause``: seconds between waves.
    ``between_waves(status)``: called before each wave after the first with a ``CallStatus``;
    return ``True`` to go on, anything else stops the run (a health check, say).
    """

    canary: int = 0
    waves: Sequence[int | str] | str | None = None
    max_failures: int | str | None = None
    count_connect_failures: bool = True
    on_exceeded: Literal["finish", "stop"] = "finish"
    pause: float = 0.0
    between_waves: Callable[[CallStatus], bool] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.canary, bool) or not isinstance(self.canary, int) or self.canary < 0:
            raise ValueError(f"canary must be a number of hosts >= 0, got {self.canary!r}")
        waves = self.waves
        if isinstance(waves, str):
            waves = [w for w in waves.split(",") if w.strip()]
            object.__setattr__(self, "waves", tuple(waves))
        elif waves is not None:
            object.__setattr__(self, "waves", tuple(waves))
        if waves is not None:
            if not waves:
                raise ValueError("waves must name at least one wave size")
            for entry in waves:
                _size(entry, 100)
        self.failure_limit(100)
        if self.on_exceeded not in ("finish", "stop"):
            raise ValueError(f"on_exceeded must be 'finish' or 'stop', got {self.on_exceeded!r}")
        if not isinstance(self.pause, (int, float)) or self.pause < 0:
            raise ValueError(f"pause must be >= 0 seconds, got {self.pause!r}")
        if self.between_waves is not None and not callable(self.between_waves):
            raise TypeError(f"between_waves must be callable, got {self.between_waves!r}")

    def plan(self, total: int) -> list[int]:
        """The wave sizes for ``total`` hosts, the canary first (when there is one); they sum to ``total``."""
        sizes: list[int] = []
        left = total
        if self.canary and left:
            sizes.append(min(self.canary, left))
            left -= sizes[0]
        entries = list(self.waves) if self.waves is not None else ["100%"]
        step = 0
        while left > 0:
            size = min(left, _size(entries[min(step, len(entries) - 1)], total))
            sizes.append(size)
            left -= size
            step += 1
        return sizes

    def failure_limit(self, total: int) -> int | None:
        """How many failures ``total`` hosts may have before the run stops (``None``: no budget)."""
        limit = self.max_failures
        if limit is None:
            return None
        if isinstance(limit, str):
            text = limit.strip()
            if text.endswith("%"):
                try:
                    percent = float(text[:-1])
                except ValueError:
                    percent = -1.0
                if not 0 <= percent <= 100:
                    raise ValueError(f"max_failures must be a count or a percentage such as '5%', got {limit!r}")
                return math.floor(total * percent / 100)
            try:
                limit = int(text)
            except ValueError:
                raise ValueError(f"max_failures must be a count or a percentage such as '5%', got {limit!r}") \
                    from None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"max_failures must be a count >= 0 or a percentage such as '5%', got {limit!r}")
        return limit

    def counts(self, error: str) -> bool:
        """Whether a failed host with this error kind counts against the budget."""
        return self.count_connect_failures or error not in CONNECT_KINDS
