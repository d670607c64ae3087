"""Where live fleets are written down, so that none outlives its owner.

Each fleet writes one JSON record, before it starts anything, to the state directory
(``$XDG_RUNTIME_DIR/hussh-testing``, else ``/tmp/hussh-testing-<uid>``) and deletes it after
``down``. A record names its owner process (pid and start time) unless it was started by
``python -m hussh.testing up``, which has none. An owned fleet's watcher (``_watcher``) tears it
down from its record as soon as its owner dies; and when a fleet starts, every recorded fleet whose
owner died without tearing it down, its watcher gone too (a whole cgroup killed, a power-cut test
run), is torn down first, from its record alone.

Fleets run as root on shared machines, so nothing here trusts a path: the state directory is used
only when it is a real directory of this uid that no one else may enter (checked on an open
descriptor, and every record is read and written through that descriptor, mode 0600); a record is
used only when every field has the expected type and form; and a fleet's directory is removed only
when it is a real directory of this uid holding the marker file that its fleet wrote with the
record's random token (see :func:`new_workdir`). Anything else is refused, or logged and left alone.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import importlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import FleetError

Record = dict[str, Any]
log = logging.getLogger("hussh.testing")

SHARED_PARENT = Path("/tmp")  # of the state directory when XDG_RUNTIME_DIR names none
MARKER = ".hussh-fleet-token"  # in a fleet's directory: the record's token, written when it was made
PREFIXES = {"loopback": "hussh-fleet-", "compose": "hussh-compose-"}  # backend -> its directories' prefix
MAX_RECORD = 1 << 20  # bytes: a record is a few KiB
_ID = re.compile(r"hussh-(?:fleet|compose)-[A-Za-z0-9_]{1,64}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # Docker Compose's project names
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def state_dir() -> Path:
    """The directory of fleet records (created private on first use)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "hussh-testing"
    return SHARED_PARENT / f"hussh-testing-{os.getuid()}"


def _refusal(path: Path, problem: str) -> FleetError:
    return FleetError(f"fleet registry {path} {problem}; hussh.testing uses it only when it is a directory "
                      f"of uid {os.getuid()} with mode 0700: remove it (or set XDG_RUNTIME_DIR to a private "
                      "directory) and try again")


@contextlib.contextmanager
def _state(create: bool) -> Iterator[int | None]:
    """A descriptor of the checked state directory (None when it does not exist and ``create`` is false)."""
    path = state_dir()
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        fd = os.open(path, _OPEN_DIR)
    except FileNotFoundError:
        yield None
        return
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW | O_DIRECTORY on a link: either
            link = stat.S_ISLNK(os.lstat(path).st_mode)
            raise _refusal(path, "is a symbolic link" if link else "is not a directory") from None
        raise _refusal(path, f"cannot be opened ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise _refusal(path, f"belongs to uid {info.st_uid}")
        if info.st_mode & 0o077:
            raise _refusal(path, f"has mode {stat.S_IMODE(info.st_mode):04o}, open to other users")
        yield fd
    finally:
        os.close(fd)


def _problem(record: object) -> str | None:
    """What makes ``record`` unusable (None: every field it is read for has its expected type and form)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    fleet_id, backend, workdir = record.get("id"), record.get("backend"), record.get("workdir")
    if not isinstance(fleet_id, str) or not _ID.fullmatch(fleet_id):
        return f"bad id {fleet_id!r}"
    if backend not in PREFIXES or not fleet_id.startswith(PREFIXES[backend]):
        return f"bad backend {backend!r} for id {fleet_id}"
    if not isinstance(workdir, str) or not os.path.isabs(workdir) or os.path.normpath(workdir) != workdir \
            or os.path.basename(workdir) != fleet_id:
        return f"workdir {workdir!r} is not an absolute, normal path ending in the id {fleet_id}"
    if not isinstance(record.get("token"), str) or not _TOKEN.fullmatch(record["token"]):
        return "no token (written by an older hussh.testing?)"
    owner = record.get("owner")
    if owner is not None and not (_is_int(owner) and _is_int(record.get("owner_start"))):
        return "bad owner"
    uids = record.get("uids", {})
    if not isinstance(uids, dict) or not all(isinstance(k, str) and _is_int(v) for k, v in uids.items()):
        return "bad uids"
    project = record.get("project")
    if backend == "compose" and not (isinstance(project, str) and PROJECT_NAME.fullmatch(project)):
        return f"bad project {project!r}"
    if not isinstance(record.get("cli", {}), dict):
        return "bad cli"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(record: Record) -> Record:
    """``record`` itself, or FleetError saying what is wrong with it."""
    problem = _problem(record)
    if problem is not None:
        raise FleetError(f"fleet record {record.get('id')!r} is unusable: {problem}")
    return record


def new_workdir(backend: str) -> tuple[Path, str]:
    """A fresh private directory for a fleet and its token (kept in the record, and in the directory's marker)."""
    workdir = Path(tempfile.mkdtemp(prefix=PREFIXES[backend]))
    token = secrets.token_hex(16)
    fd = os.open(workdir / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as marker:
        marker.write(token)
    return workdir, token


def _foreign(parent: int, name: str, token: str) -> str | None:
    """Why the directory ``name`` under ``parent`` is not the fleet's of ``token`` (None: it is)."""
    try:
        fd = os.open(name, _OPEN_DIR, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            return "it is a symbolic link or not a directory"
        raise
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return f"it belongs to uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):04o}"
        try:
            marker = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return f"it has no {MARKER}"
        with os.fdopen(marker, "rb") as file:
            info = os.fstat(marker)
            mine = info.st_uid == os.getuid() and stat.S_ISREG(info.st_mode)
            if not (mine and hmac.compare_digest(file.read(64), token.encode())):
                return f"its {MARKER} is not the record's"
    finally:
        os.close(fd)
    return None


def remove_workdir(workdir: str, token: str) -> bool:
    """Delete a fleet's directory if it is the one its fleet made (else log why not); True if it is gone."""
    path = Path(workdir)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError as error:
        problem: str | None = f"its parent cannot be opened ({error.strerror})"
    else:
        try:
            problem = _foreign(parent, path.name, token)
            if problem is None:
                shutil.rmtree(path.name, dir_fd=parent)
                return True
        except FileNotFoundError:
            return True
        except OSError as error:
            problem = f"it cannot be checked or removed ({error.strerror})"
        finally:
            os.close(parent)
    log.warning("not removing %s, which a fleet record names: %s", workdir, problem)
    return False


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
    """Write ``record`` (checked; mode 0600, renamed into place: readers never see half of one); return its path."""
    data = json.dumps(check(record), indent=1).encode()
    name = f"{record['id']}.json"
    with _state(create=True) as directory:
        assert directory is not None  # created if missing
        store_private(directory, name, data)
    return state_dir() / name


def unregister(fleet_id: str) -> None:
    """Delete a fleet's record (the private directory stays: no one else can take its name meanwhile)."""
    with _state(create=False) as directory:
        if directory is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{fleet_id}.json", dir_fd=directory)


def _read(directory: int, name: str) -> tuple[float, Record]:
    """A record file's mtime and its record, or FleetError saying why it is unusable."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise FleetError(f"cannot be opened ({error.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FleetError("not a regular file")
        try:
            record = json.loads(file.read(MAX_RECORD + 1))
        except ValueError as error:
            raise FleetError(f"not JSON ({error})") from None
    problem = _problem(record) or (None if f"{record['id']}.json" == name else f"its id is {record['id']}")
    if problem is not None:
        raise FleetError(problem)
    return info.st_mtime, record


def records() -> list[Record]:
    """Every usable fleet record (its file still there when read), oldest first.

    An unusable one (unreadable, wrong types, naming a directory the fleets did not make) is logged
    and deleted: nothing it names is touched.
    """
    found = []
    with _state(create=False) as directory:
        if directory is None:
            return []
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".json"):
                continue
            try:
                found.append(_read(directory, name))
            except FileNotFoundError:  # removed meanwhile by its fleet's down
                continue
            except FleetError as error:
                log.warning("dropping fleet record %s: %s; nothing it names is removed", state_dir() / name,
                            error)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
    return [record for _, record in sorted(found, key=lambda pair: pair[0])]


def is_registered(fleet_id: str) -> bool:
    with _state(create=False) as directory:
        if directory is None:
            return False
        try:
            os.stat(f"{fleet_id}.json", dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True


def orphaned(record: Record) -> bool:
    """Tell whether the record's owner is gone (a fleet from the command line has none: never)."""
    pid = record.get("owner")
    return pid is not None and _start_time(pid) != record.get("owner_start")


def _backend(record: Record) -> Any:
    """The module of the backend that made the fleet (only the known ones)."""
    return importlib.import_module(f"hussh.testing.{check(record)['backend']}")


def remove(record: Record) -> None:
    """Tear a fleet down from its record (by the backend module that made it) and forget it."""
    _backend(record).remove(record)
    unregister(record["id"])


def leftovers(record: Record) -> list[str]:
    """Whatever of a fleet still exists, its record included (asked of the backend that made it)."""
    found: list[str] = _backend(record).leftovers(record)
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


def store_private(directory: int, name: str, data: bytes) -> None:
    """Write ``name`` (0600) under the open ``directory`` and rename it into place: never half a file,
    never through a link planted in its place."""
    partial = f"{name}.{secrets.token_hex(4)}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(partial, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial, dir_fd=directory)
        raise
