"""``Journal``: a durable record of fleet calls in SQLite, to know afterwards what happened on every host.

One run per journaled call (what it did, on which hosts, with which options, by whom, when) and
one row per host, committed as soon as that host finishes: a caller killed with SIGKILL mid-run
leaves every host that had finished in the file. The caller's process is the only writer of its
runs (workers never touch the journal); WAL mode lets other processes write their own runs, and
read, at the same time. ``MultiConnection.resume`` and ``.retry_failed`` read a run back to run
the same operation on the hosts that have no result yet, or failed.

Never stored: passwords, passphrases, key material, or the data a transfer sent (only its size,
its SHA-256 and the local path it was read from). Outputs are stored as the results held them,
within ``max_output``: a host's row is never bigger than its result. A command's text is stored
as given: keep secrets out of command lines.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ._result import SKIPPED as SKIPPED_KIND
from ._result import SSHResult
from .errors import HusshError

__all__ = ["HostEntry", "Journal", "JournalError", "Operation", "Run", "RunInfo", "state_dir"]

log = logging.getLogger("hussh")

STATE_ENV = "HUSSH_STATE_DIR"
FILE_NAME = "journal.sqlite3"
SCHEMA_VERSION = 2
SHARED_OUTPUT = 4096
"""Outputs this long (characters) or longer are stored once per journal, not once per host that printed them."""
BUSY_SECONDS = 30.0
"""How long a write waits for another process's write to finish (each holds the lock for one row)."""

SUCCEEDED, FAILED, SKIPPED = "succeeded", "failed", "skipped"

_RUNS = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('command', 'transfer')),
    operation TEXT NOT NULL,
    hosts TEXT NOT NULL,
    host_count INTEGER NOT NULL,
    options TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    user TEXT NOT NULL,
    uid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    resumes INTEGER REFERENCES runs(id),
    how TEXT CHECK (how IN ('resume', 'retry-failed'))
);
CREATE INDEX runs_resumes ON runs(resumes);
CREATE TABLE hosts (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'skipped')),
    exit_code INTEGER,
    error TEXT NOT NULL DEFAULT '',
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    seconds REAL,
    finished REAL NOT NULL,
    wave INTEGER,
    UNIQUE (run_id, host)
);
"""
"""Schema 1, as every journal starts; ``_OUTPUTS_ONCE`` then makes it schema 2."""

_OUTPUTS_ONCE = """
ALTER TABLE hosts RENAME TO host_rows;
ALTER TABLE host_rows ADD COLUMN stdout_ref INTEGER REFERENCES outputs(id);
ALTER TABLE host_rows ADD COLUMN stderr_ref INTEGER REFERENCES outputs(id);
CREATE TABLE outputs (
    id INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL UNIQUE,
    text TEXT NOT NULL
);
CREATE INDEX host_rows_stdout_ref ON host_rows(stdout_ref) WHERE stdout_ref IS NOT NULL;
CREATE INDEX host_rows_stderr_ref ON host_rows(stderr_ref) WHERE stderr_ref IS NOT NULL;
CREATE VIEW hosts AS
    SELECT h.run_id, h.host, h.status, h.exit_code, h.error, coalesce(o.text, h.stdout) AS stdout,
           coalesce(e.text, h.stderr) AS stderr, h.seconds, h.finished, h.wave
    FROM host_rows h LEFT JOIN outputs o ON o.id = h.stdout_ref LEFT JOIN outputs e ON e.id = h.stderr_ref;
CREATE TRIGGER hosts_delete INSTEAD OF DELETE ON hosts BEGIN
    DELETE FROM host_rows WHERE run_id = OLD.run_id AND host = OLD.host;
END;
CREATE TRIGGER host_rows_outputs AFTER DELETE ON host_rows BEGIN
    DELETE FROM outputs WHERE id IN (OLD.stdout_ref, OLD.stderr_ref)
        AND NOT EXISTS (SELECT 1 FROM host_rows WHERE stdout_ref = outputs.id)
        AND NOT EXISTS (SELECT 1 FROM host_rows WHERE stderr_ref = outputs.id);
END;
"""
"""Schema 2: an output of ``SHARED_OUTPUT`` characters or more is stored once (``outputs``, by its SHA-256),
however many hosts printed it; ``hosts`` is now a view giving every row its text, as before, so
queries (and ``DELETE FROM hosts``, which also drops outputs no row names any more) read as they did."""


class JournalError(HusshError):
    """The journal cannot be created, opened or read (the message names the file and why)."""


class Operation(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a run did, enough to do it again on other hosts: a command (or one per host), or a file
    written (its remote path, and the local path, size, SHA-256 and 0777 mode bits of the data, never the data).
    A command's stdin is kept the same way (size and SHA-256), and whether it ran through sudo."""

    kind: str
    command: str | None = None
    commands: dict[str, str] | None = None
    timeout: float | None = None
    local: str | None = None
    remote: str | None = None
    size: int | None = None
    sha256: str | None = None
    sudo: bool = False
    mode: int | None = None  # a copied file's 0777 bits, which a new remote file is created with

    def describe(self) -> str:
        """One line for people: the command, or ``put LOCAL -> REMOTE``."""
        if self.kind == "transfer":
            return f"put {self.local or f'<{self.size} bytes>'} -> {self.remote}"
        if self.commands is not None:
            return f"<a command per host, {len(self.commands)} hosts>"
        return self.command or ""


@dataclass(frozen=True)
class HostEntry:
    """One host's recorded outcome: ``status`` is ``succeeded``, ``failed`` or ``skipped`` (never started)."""

    host: str
    status: str
    result: SSHResult
    seconds: float
    finished: float
    wave: int | None = None


@dataclass(frozen=True)
class RunInfo:
    """A run as ``Journal.runs()`` lists it: what, when, by whom, and how many hosts had each outcome."""

    id: int
    operation: Operation
    options: dict[str, object]
    started: float
    ended: float | None
    user: str
    uid: int
    hostname: str
    pid: int
    host_count: int
    succeeded: int
    failed: int
    skipped: int
    resumes: int | None = None
    how: str | None = None

    @property
    def kind(self) -> str:
        """``command`` or ``transfer``."""
        return self.operation.kind

    @property
    def unfinished(self) -> int:
        """Hosts with no row: still running, or never reached because the caller died or was stopped."""
        return self.host_count - self.succeeded - self.failed - self.skipped


@dataclass(frozen=True)
class Run(RunInfo):
    """A run with its hosts (in the order given) and every host row recorded (in the order they finished)."""

    hosts: list[str] = field(default_factory=list)
    entries: dict[str, HostEntry] = field(default_factory=dict)

    @property
    def results(self) -> dict[str, SSHResult]:
        """Host -> result of the hosts that finished, in host order (``MultiResult(run.results)`` views them)."""
        return {h: self.entries[h].result for h in self.hosts if h in self.entries}


def state_dir() -> Path:
    """``$HUSSH_STATE_DIR``, else ``$XDG_STATE_HOME/hussh``, else ``~/.local/state/hussh``."""
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "hussh"


def private_dir(path: Path) -> Path:
    """``path``, created 0700 if missing, refused unless it is a directory of this user that no one else can use."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise JournalError(f"cannot create the state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise JournalError(f"the state directory {path} is not a directory (a symbolic link or a file)")
    if info.st_uid != os.getuid():
        raise JournalError(f"the state directory {path} belongs to uid {info.st_uid}, not to you ({os.getuid()})")
    if info.st_mode & 0o077:
        raise JournalError(f"the state directory {path} has mode {stat.S_IMODE(info.st_mode):04o}, open to other "
                           f"users: chmod 700 {path}")
    return path


class Journal:
    """A journal file (SQLite, WAL mode), created readable by its owner only when it does not exist.

    Pass it as ``MultiConnection(..., journal=Journal(path))`` to record every ``execute``,
    ``execute_map``, ``sftp_write`` and ``sftp_write_data``; ``Journal.default()`` is the command
    line's file in the state directory. ``options`` are extra (non-secret) facts recorded with each
    run. Nothing is opened until a run starts or is read; each opens its own connection.
    """

    def __init__(self, path: str | os.PathLike[str], *, options: Mapping[str, object] | None = None) -> None:
        self.path = Path(path)
        self.options: dict[str, object] = dict(options or {})

    @classmethod
    def default(cls, *, options: Mapping[str, object] | None = None) -> Journal:
        """The journal in the state directory (``state_dir()``), which is created private and checked."""
        return cls(private_dir(state_dir()) / FILE_NAME, options=options)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def runs(self, limit: int | None = 20) -> list[RunInfo]:
        """The latest ``limit`` runs (all with ``None``), newest first, with their hosts' counts."""
        query = (f"SELECT {_INFO_COLUMNS}, "
                 "(SELECT count(*) FROM host_rows h WHERE h.run_id = r.id AND h.status = 'succeeded'), "
                 "(SELECT count(*) FROM host_rows h WHERE h.run_id = r.id AND h.status = 'failed'), "
                 "(SELECT count(*) FROM host_rows h WHERE h.run_id = r.id AND h.status = 'skipped') "
                 "FROM runs r ORDER BY r.id DESC LIMIT ?")
        with self._reading() as db:
            rows = db.execute(query, (-1 if limit is None else limit,)).fetchall()
        return [_info(row) for row in rows]

    def run(self, run_id: int | str) -> Run:
        """One run (its id as a number or its digits) with its hosts and rows; ``JournalError`` if there is none."""
        run_id = _run_id(run_id)
        with self._reading() as db:
            row = db.execute(f"SELECT {_INFO_COLUMNS}, 0, 0, 0, r.hosts FROM runs r WHERE r.id = ?",
                             (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"{self.path} has no run {run_id} (hussh runs lists them)")
            entries = [_entry(e) for e in db.execute(
                "SELECT host, status, exit_code, error, stdout, stderr, seconds, finished, wave FROM hosts "
                "WHERE run_id = ? ORDER BY finished", (run_id,))]
        info = _info(row[:-1])
        counts = {status: sum(1 for e in entries if e.status == status) for status in (SUCCEEDED, FAILED, SKIPPED)}
        return Run(**{**info.__dict__, **counts}, hosts=json.loads(row[-1]), entries={e.host: e for e in entries})

    def pending(self, run_id: int | str, failed_only: bool = False) -> list[str]:
        """The hosts of ``run_id`` to resume (no final result) or retry (``failed_only``: failed), in host order.

        Runs that resumed or retried it count too: a host that succeeded in any of them is done,
        so a chain of resumes never runs a host again once it has succeeded.
        """
        run_id = _run_id(run_id)
        with self._reading() as db:
            row = db.execute("SELECT hosts FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"{self.path} has no run {run_id} (hussh runs lists them)")
            final: dict[str, str] = {}
            for host, status in db.execute(
                    "WITH RECURSIVE chain(id) AS (SELECT ? UNION SELECT r.id FROM runs r JOIN chain c "
                    "ON r.resumes = c.id) SELECT host, status FROM host_rows WHERE run_id IN chain "
                    "AND status != 'skipped'", (run_id,)):
                if final.get(host) != SUCCEEDED:
                    final[host] = status
        hosts: list[str] = json.loads(row[0])
        if failed_only:
            return [h for h in hosts if final.get(h) == FAILED]
        return [h for h in hosts if h not in final]

    def start(self, operation: Operation, hosts: Sequence[str], options: Mapping[str, object],
              resumes: int | None = None, how: str | None = None) -> Recorder:
        """Record a new run now (``JournalError`` if the journal cannot be written) and return its recorder."""
        options = {**options, **self.options}
        who = _who()
        db = self._open()
        try:
            cursor = db.execute(
                "INSERT INTO runs (kind, operation, hosts, host_count, options, started, user, uid, hostname, pid, "
                "resumes, how) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (operation.kind, msgspec.json.encode(operation).decode(), json.dumps(list(hosts)), len(hosts),
                 json.dumps(options, sort_keys=True), time.time(), *who, resumes, how))
        except sqlite3.Error as exc:
            db.close()
            raise JournalError(f"cannot write to the journal {self.path}: {exc}") from None
        run_id = cursor.lastrowid
        assert run_id is not None
        log.info("hussh: run %d, %d hosts, recorded in %s", run_id, len(hosts), self.path)
        return Recorder(db, run_id, self.path)

    def _open(self) -> sqlite3.Connection:
        """A connection in autocommit mode (each statement its own transaction), schema in place."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if info.st_uid == os.getuid() and info.st_mode & 0o077:
                os.fchmod(fd, 0o600)  # outputs may hold secrets: a file from elsewhere is narrowed too
        finally:
            os.close(fd)
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        try:
            _prepare(db)
        except sqlite3.Error as exc:
            db.close()
            raise JournalError(f"cannot use {self.path} as a journal: {exc}") from None
        except JournalError as exc:
            db.close()
            raise JournalError(f"cannot use {self.path} as a journal: {exc}") from None
        return db

    def _reading(self) -> _Reading:
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path} (no run has been recorded there)")
        return _Reading(self)


class _Reading:
    """``with journal._reading() as db``: a connection closed after use, sqlite errors as ``JournalError``."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.db = self.journal._open()
        return self.db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        assert self.db is not None
        self.db.close()
        if isinstance(exc, sqlite3.Error):
            raise JournalError(f"cannot read the journal {self.journal.path}: {exc}") from None


class Recorder:
    """Writes one run's host rows as they come, each committed at once; ``end()`` closes the run.

    A failed write (a full disk, a lock held for ``BUSY_SECONDS``) is logged once and the run goes
    on: losing the journal must not stop a change half-way through the fleet.
    """

    def __init__(self, db: sqlite3.Connection, run_id: int, path: Path) -> None:
        self.db, self.run_id, self.path = db, run_id, path
        self.broken = False

    def host(self, host: str, result: SSHResult, seconds: float, wave: int | None = None) -> None:
        """Record (and commit) one host's final result; a long output another host printed is not stored again."""
        status = SKIPPED if result.error == SKIPPED_KIND else SUCCEEDED if result.status == 0 and not result.error \
            else FAILED
        shared = len(result.stdout) >= SHARED_OUTPUT or len(result.stderr) >= SHARED_OUTPUT
        try:
            if shared:  # the row and the outputs it names land together
                self.db.execute("BEGIN IMMEDIATE")
            try:
                (stdout, stdout_ref), (stderr, stderr_ref) = self._stored(result.stdout), self._stored(result.stderr)
                self.db.execute(
                    "INSERT INTO host_rows (run_id, host, status, exit_code, error, stdout, stderr, seconds, finished, "
                    "wave, stdout_ref, stderr_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.run_id, host, status, result.status, result.error, stdout, stderr, round(seconds, 6),
                     time.time(), wave, stdout_ref, stderr_ref))
                if shared:
                    self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failed(exc)

    def _stored(self, text: str) -> tuple[str, int | None]:
        """What a row holds for ``text``: the text itself, or (a long one) a reference to its one copy, stored
        now if no row of any run named it yet (the caller holds the write lock: no one stores it meanwhile)."""
        if len(text) < SHARED_OUTPUT:
            return text, None
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        found = self.db.execute("SELECT id FROM outputs WHERE sha256 = ?", (digest,)).fetchone()
        if found is None:
            found = self.db.execute("INSERT INTO outputs (sha256, text) VALUES (?, ?) RETURNING id",
                                    (digest, text)).fetchone()
        return "", int(found[0])

    def end(self) -> None:
        """Record the run's end and close the connection."""
        try:
            self._write("UPDATE runs SET ended = ? WHERE id = ?", (time.time(), self.run_id))
        finally:
            self.db.close()

    def _write(self, statement: str, values: tuple[object, ...]) -> None:
        try:
            self.db.execute(statement, values)
        except sqlite3.Error as exc:
            self._failed(exc)

    def _failed(self, exc: sqlite3.Error) -> None:
        if not self.broken:
            log.warning("hussh: journal %s: run %d: cannot record (%s); the run goes on without it",
                        self.path, self.run_id, exc)
        self.broken = True


_INFO_COLUMNS = ("r.id, r.operation, r.options, r.started, r.ended, r.user, r.uid, r.hostname, r.pid, r.host_count, "
                 "r.resumes, r.how")


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode, the schema (made once, in one transaction), and a check that it is one this hussh reads."""
    if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
        raise JournalError("SQLite cannot use WAL mode there (a network filesystem?); choose a local disk")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives the process being killed, not a power cut
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise JournalError(f"it was written by a newer hussh (schema {version}; this one reads {SCHEMA_VERSION})")
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have moved it meanwhile
        if version > SCHEMA_VERSION:
            raise JournalError(f"it was written by a newer hussh (schema {version}; this one reads {SCHEMA_VERSION})")
        if version == 0:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise JournalError("it is an SQLite database of something else")
            _script(db, _RUNS)
        if version < 2:
            _script(db, _OUTPUTS_ONCE)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _script(db: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` inside the caller's transaction (``executescript`` would commit it)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""


def _info(row: Sequence[Any]) -> RunInfo:
    (run_id, operation, options, started, ended, user, uid, hostname, pid, count, resumes, how,
     succeeded, failed, skipped) = row
    return RunInfo(run_id, msgspec.json.decode(operation, type=Operation), json.loads(options), started, ended,
                   user, uid, hostname, pid, count, succeeded, failed, skipped, resumes, how)


def _entry(row: Sequence[Any]) -> HostEntry:
    host, status, exit_code, error, stdout, stderr, seconds, finished, wave = row
    result = SSHResult(stdout, stderr, -1 if exit_code is None else exit_code, error)
    return HostEntry(host, status, result, seconds or 0.0, finished, wave)


def _run_id(run_id: object) -> int:
    """A run id as an int (the command line passes text); ``JournalError`` for anything else."""
    if isinstance(run_id, int) and not isinstance(run_id, bool) and run_id > 0:
        return run_id
    if isinstance(run_id, str) and run_id.isascii() and run_id.isdigit() and int(run_id) > 0:
        return int(run_id)
    raise JournalError(f"not a run id: {run_id!r} (a positive number, as hussh runs lists them)")


def _who() -> tuple[str, int, str, int]:
    """user, uid, hostname and pid of the caller."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return user, os.getuid(), socket.gethostname(), os.getpid()
