"""A fleet's watcher: it tears the fleet down as soon as the process that owns it dies, however it dies.

An owned fleet (``with LoopbackFleet(...)``, ``up()`` in a test or a benchmark; not one from ``hussh
fleet up``) starts one watcher when it writes its record. The watcher opens a pidfd of its parent,
the owner, and sleeps on it: the kernel wakes it when the owner exits, by SIGKILL, an unhandled
SIGTERM or a crash as well as normally. It then tears the fleet down from its record, as ``hussh
fleet down`` and the next fleet's reaping do (``_registry.remove``): every process of the fleet
killed, its containers removed, its directory and its record deleted. A loopback fleet is gone a
second or so after its owner, a few seconds on a loaded machine; a compose fleet once Docker has
removed its containers. The owner's own ``down`` stops the watcher once the fleet is gone.

A pidfd rather than PR_SET_PDEATHSIG, which fires when the parent *thread* ends: a fleet started
from a worker thread would go with that thread. The watcher says ``watching`` once it holds the
pidfd, and ``up`` waits for that (the fleet's own start overlaps it), so no fleet runs unguarded.
It runs in a session of its own, so a signal to the owner's process group (a CI job's timeout)
spares it. Killed with its owner all the same (a whole cgroup at once), it leaves the fleet to the
next fleet started on the machine, which reaps what dead owners left, as before there were watchers.

    python -m hussh.testing._watcher --owner PID --fleet ID
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from . import _registry
from ._errors import FleetError

log = logging.getLogger("hussh.testing")
WATCHING = b"watching"  # its first line, once it waits on its owner
READY_TIMEOUT = 60.0  # a Python start on two busy cores; the fleet's own start overlaps it


def start(fleet_id: str, log_file: Path) -> subprocess.Popen[bytes]:
    """Start the watcher of ``fleet_id``, owned by this process (see :func:`confirm`)."""
    argv = [sys.executable, "-m", "hussh.testing._watcher", "--owner", str(os.getpid()), "--fleet", fleet_id]
    with log_file.open("ab") as stderr:  # stdout: only its "watching" line, read by confirm
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                start_new_session=True)


def confirm(watcher: subprocess.Popen[bytes], log_file: Path, timeout: float = READY_TIMEOUT) -> None:
    """Return once ``watcher`` waits on this process, or raise FleetError: a fleet whose watcher could not
    start (no pidfd on this kernel, hussh not importable from a bare ``python -m``) must not run unguarded."""
    stdout = watcher.stdout
    assert stdout is not None, "the watcher is started with stdout=PIPE"
    deadline = time.monotonic() + timeout
    while watcher.poll() is None and time.monotonic() < deadline:
        if select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            if stdout.readline().strip() == WATCHING:
                stdout.close()
                return
            break
    stop(watcher)
    said = log_file.read_text(errors="replace").strip()[-500:] if log_file.exists() else ""
    raise FleetError(f"the fleet's watcher did not start: {said or 'no output'}")


def stop(watcher: subprocess.Popen[bytes]) -> None:
    """End a watcher whose fleet its owner tore down itself."""
    if watcher.poll() is None:
        watcher.kill()
    watcher.wait()
    if watcher.stdout is not None:
        watcher.stdout.close()


def owner_pidfd(owner: int) -> int | None:
    """A pidfd of ``owner``, the parent of this process (None: it is gone already)."""
    try:
        pidfd = os.pidfd_open(owner)
    except ProcessLookupError:
        return None
    if os.getppid() != owner:  # the owner died before the pidfd opened, and its pid may be another's now
        os.close(pidfd)
        return None
    return pidfd


def tear_down(fleet_id: str, owner: int) -> None:
    """Remove the fleet ``fleet_id`` of ``owner`` if its record is still there."""
    record = next((r for r in _registry.records() if r["id"] == fleet_id), None)
    if record is None:  # its owner's down finished, or the next fleet reaped it
        return
    if record.get("owner") != owner:
        raise FleetError(f"fleet {fleet_id} is recorded with owner {record.get('owner')}, not {owner}")
    _registry.remove(record)


def main(argv: list[str] | None = None) -> None:
    """Wait for the owner, then tear its fleet down (a failure is logged; the record stays for reaping)."""
    parser = argparse.ArgumentParser(prog="python -m hussh.testing._watcher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--owner", type=int, required=True, help="the fleet's owner: this process's parent")
    parser.add_argument("--fleet", required=True, help="the fleet's id, as in its record")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s hussh.testing watcher: %(message)s")
    pidfd = owner_pidfd(args.owner)
    with contextlib.suppress(OSError):  # the owner is gone already: no one reads it
        os.write(sys.stdout.fileno(), WATCHING + b"\n")
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the owner has exited
    try:
        tear_down(args.fleet, args.owner)
    except Exception:
        log.exception("cannot tear down fleet %s; the next fleet started here will try again", args.fleet)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
