"""What ran at once, read on the fleet itself (tests of ``batch_size`` as one budget, both engines).

Every command keeps a file in ``running/`` while it runs and appends how many files it sees there to
``seen/<host>`` (the fleet shares this machine's disk), so the bound is checked where the
connections land, never inferred from the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

WAIT = 300  # tenths of a second a held host waits for what it waits for (a failure, not a hang, when broken)


def dirs(root: Path) -> tuple[Path, Path, Path]:
    """``running/``, ``seen/`` and ``done/`` under ``root``, writable by the fleet's users."""
    made = []
    for name in ("running", "seen", "done"):
        path = root / name
        path.mkdir(mode=0o777)
        path.chmod(0o777)
        made.append(path)
    return made[0], made[1], made[2]


def counting(root: Path, host: int, body: str) -> str:
    """``body`` between two samples of what runs at once, with this host counted in ``running/`` meanwhile."""
    sample = f"ls {root}/running | wc -l >> {root}/seen/{host}"
    return f"H={host}; touch {root}/running/$H; {sample}; {body}; {sample}; rm {root}/running/$H"


def most_at_once(seen: Path, hosts: Iterable[int] | None = None) -> int:
    """The most commands seen running at once (by ``hosts`` only, if given: their ``seen/`` files)."""
    paths = seen.iterdir() if hosts is None else (seen / str(h) for h in hosts)
    return max(int(line) for path in paths for line in path.read_text().split())


def slow_first(addresses: list[str], root: Path, shards: int) -> tuple[dict[str, str], list[int], int]:
    """A tenth of the hosts slow, all of shard 0 (host ``i`` in shard ``i % shards``) and first in its queue:
    each waits until every fast host is done, then prints how many are. Returns the commands, the
    slow hosts' indices and the number of fast hosts."""
    running, seen, done = dirs(root)
    slow = [i * shards for i in range(len(addresses) // 10)]
    fast = len(addresses) - len(slow)
    sample = f"ls {running} | wc -l >> {seen}/$H"
    hold = (f"n=0; while [ $(ls {done} | wc -l) -lt {fast} ] && [ $n -lt {WAIT} ]; do {sample}; sleep 0.1; "
            f"n=$((n+1)); done; ls {done} | wc -l")
    commands = {host: counting(root, i, hold if i in slow else f"sleep 0.2; touch {done}/$H")
                for i, host in enumerate(addresses)}
    return commands, slow, fast
