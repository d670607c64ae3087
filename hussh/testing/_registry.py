"""Where live fleets are written down, so that none outlives its owner.

Each fleet writes one JSON record, before it starts anything, to the state directory
(``$XDG_RUNTIME_DIR/hussh-testing``, else ``/tmp/hussh-testing-<uid>``) and deletes it after
``down``. A record names its owner process (pid and start time) unless it was started by
``python -m hussh.testing up``, which has none. When a fleet starts, every recorded fleet whose
owner died without tearing it down (SIGKILL, a crash, a power-cut test run) is torn down first,
from its record alone; the empty directory is removed with the last record.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

Record = dict[str, Any]
log = logging.getLogger("hussh.testing")


def state_dir() -> Path:
    """The directory of fleet records (created on first use, removed when empty)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "hussh-testing"
    return Path(f"/tmp/hussh-testing-{os.getuid()}")


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (None if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner() -> dict[str, int]:
    """This process as a record's owner."""
    return {"owner": os.getpid(), "owner_start": _start_time(os.getpid()) or 0}


def register(record: Record) -> Path:
    """Write ``record`` (it needs an ``id``) and return its path."""
    directory = state_dir()
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{record['id']}.json"
    partial = path.with_suffix(".partial")  # renamed into place: readers never see half a record
    partial.write_text(json.dumps(record, indent=1))
    partial.rename(path)
    return path


def unregister(fleet_id: str) -> None:
    """Delete a fleet's record, and the directory once it is empty."""
    directory = state_dir()
    (directory / f"{fleet_id}.json").unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def records() -> list[Record]:
    """Every fleet written down (its record still there when read), oldest first."""
    found = []
    for path in state_dir().glob("*.json"):
        try:
            found.append((path.stat().st_mtime, json.loads(path.read_text())))
        except (OSError, ValueError):  # removed meanwhile by its fleet's down
            continue
    return [record for _, record in sorted(found, key=lambda pair: pair[0])]


def is_registered(fleet_id: str) -> bool:
    return (state_dir() / f"{fleet_id}.json").exists()


def orphaned(record: Record) -> bool:
    """Tell whether the record's owner is gone (a fleet from the command line has none: never)."""
    pid = record.get("owner")
    return pid is not None and _start_time(pid) != record.get("owner_start")


def remove(record: Record) -> None:
    """Tear a fleet down from its record (by the backend module that made it) and forget it."""
    importlib.import_module(f"hussh.testing.{record['backend']}").remove(record)
    unregister(record["id"])


def leftovers(record: Record) -> list[str]:
    """Whatever of a fleet still exists, its record included (asked of the backend that made it)."""
    found = importlib.import_module(f"hussh.testing.{record['backend']}").leftovers(record)
    return found + ([f"record {state_dir() / record['id']}.json"] if is_registered(record["id"]) else [])


def reap_orphans() -> list[str]:
    """Tear down every fleet whose owner died without doing it; return their ids.

    One that cannot be torn down now (say, a compose fleet while Docker is down) keeps its record
    for a later try, and does not stop the fleet being started.
    """
    reaped = []
    for record in records():
        if orphaned(record):
            try:
                remove(record)
            except Exception as error:  # noqa: BLE001 - whatever failed, the next start tries again
                log.warning("cannot tear down orphaned fleet %s yet: %s", record["id"], error)
                continue
            reaped.append(record["id"])
    return reaped
