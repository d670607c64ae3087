"""``MultiConnection``: one synchronous call runs on many hosts, sharded across uvloop worker processes.

Per-host problems never raise here: each becomes that host's ``SSHResult`` with ``status=-1`` and
the reason in ``stderr`` (``ConnectTimeout: ...``, ``CommandTimeout: command timed out after 5
seconds``...). Results come back as a ``MultiResult`` in the order the hosts were given.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from hussh.workers import calls
from hussh.workers.engine import Build, Engine, LocalEngine, OnHost, OnOutput, Pool, Progress

from ._config import ConfigResolver, SSHConfigArg
from ._local_files import host_file_name
from ._make_spec import make_spec
from ._options import (
    DEFAULT_CALL_OUTPUT as DEFAULT_CALL_OUTPUT,  # FleetLimits' default, long imported from here
)
from ._options import (
    DEFAULT_PORT,
    LIMIT_KEYWORDS,
    MAX_OUTPUT,
    NO_SECONDS,
    STALL_SECONDS,
    ConnectOptions,
    FleetLimits,
    connect_options,
    fleet_limits,
)
from ._result import SKIPPED, SSHResult, text
from ._spec import ConnectSpec, HostKeyChecking, Retry
from ._sudo import check_password
from ._sync import Connection
from ._uploads import upload_perms
from ._views import Group, Summary, group_results, json_line, summarize
from .aio import AsyncConnection
from .errors import HusshError
from .hostlist import Target, parse_target
from .journal import Journal, Operation, Recorder
from .rollout import CallStatus, Rollout

if TYPE_CHECKING:
    from .inventory import Inventory

OnResult = Callable[[str, SSHResult], object]  # what it returns is ignored: any callable fits
OnTimedResult = Callable[[str, SSHResult, float], object]
"""``on_timed_result(host, result, seconds)``: ``on_result`` plus the host's ``MultiResult.seconds``,
for streaming views."""
OnText = Callable[[str, str], None]
"""``on_text(host, text)``: what ``MultiFileTailer.follow`` read on a host."""

__all__ = ["AsyncConnection", "MultiConnection", "MultiFileTailer", "MultiResult", "PartialFailureException", "Shard"]


class Shard(NamedTuple):
    """One worker process (or Ray actor) of a ``MultiConnection`` and the hosts it serves (``shards()``).

    ``pid`` is its process now: ``None`` before its first call, after ``close()``, or while a lost one
    waits to be replaced; ``node`` is the Ray node it runs on ("" on this machine); ``concurrency`` the
    most of its hosts it may run at once (``batch_size`` is one budget over all shards).
    """

    number: int
    pid: int | None
    hosts: list[str]
    concurrency: int
    node: str = ""

Connectable = AsyncConnection | Connection | ConnectSpec
"""What ``MultiConnection`` is made of: connections, or their resolved ``spec``."""


class PartialFailureException(HusshError):
    """Some hosts failed or were skipped (a rollout stopped before them); ``succeeded``, ``failed`` and
    ``skipped`` are the parts of the ``MultiResult``."""

    def __init__(self, succeeded: MultiResult, failed: MultiResult, skipped: MultiResult | None = None) -> None:
        skipped = skipped if skipped is not None else MultiResult()
        total = len(succeeded) + len(failed) + len(skipped)
        also = f", {len(skipped)} skipped (never started)" if skipped else ""
        super().__init__(f"Operation failed on {len(failed)} of {total} host(s){also}")
        self.succeeded = succeeded
        self.failed = failed
        self.skipped = skipped


class MultiResult(Mapping[str, SSHResult]):
    """Read-only mapping host -> ``SSHResult``, in the order the hosts were given.

    ``seconds`` maps each host to the time hussh spent on it in the call (connect included);
    ``run_id`` is the call's run in the ``MultiConnection``'s journal (``None`` when not journaled).
    """

    __slots__ = ("_results", "run_id", "seconds")

    def __init__(self, results: Mapping[str, SSHResult] | Iterable[tuple[str, SSHResult]] = (),
                 seconds: Mapping[str, float] | None = None) -> None:
        self._results: dict[str, SSHResult] = dict(results)
        self.seconds: dict[str, float] = dict(seconds or {})
        self.run_id: int | None = None

    def __getitem__(self, host: str) -> SSHResult:
        return self._results[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def keys(self) -> list[str]:  # type: ignore[override]
        """The hosts, in order, as a list (as upstream's ``MultiResult`` gives them)."""
        return list(self._results)

    def values(self) -> list[SSHResult]:  # type: ignore[override]
        return list(self._results.values())

    def items(self) -> list[tuple[str, SSHResult]]:  # type: ignore[override]
        return list(self._results.items())

    @property
    def succeeded(self) -> MultiResult:
        """Hosts whose status is 0 (empty, hence falsy, when none)."""
        return self._subset(lambda r: r.status == 0)

    @property
    def failed(self) -> MultiResult:
        """Hosts whose status is not 0, hussh's own failures (status -1) included, skipped hosts not."""
        return self._subset(lambda r: r.status != 0 and r.error != SKIPPED)

    @property
    def skipped(self) -> MultiResult:
        """Hosts a rollout never started (``error == "Skipped"``): neither succeeded nor failed."""
        return self._subset(lambda r: r.error == SKIPPED)

    def _subset(self, keep: Callable[[SSHResult], bool]) -> MultiResult:
        chosen = [(h, r) for h, r in self._results.items() if keep(r)]
        return MultiResult(chosen, {h: self.seconds[h] for h, _ in chosen if h in self.seconds})

    def raise_if_any_failed(self) -> None:
        """Raise ``PartialFailureException`` if any host failed or was skipped (not done either way)."""
        failed, skipped = self.failed, self.skipped
        if failed or skipped:
            raise PartialFailureException(self.succeeded, failed, skipped)

    def grouped(self, by_error_kind: bool = False) -> list[Group]:
        """Hosts with identical ``(status, stdout, stderr)`` together, largest group first, each with
        its host list and their folded form (``web[001-117,119]``); outputs are shared, not copied.
        ``by_error_kind`` groups hussh's own failures by ``error`` alone (their messages name each host)."""
        return group_results(self._results, by_error_kind)

    def summary(self) -> Summary:
        """Hosts per outcome: ``"ok"``, ``"exit N"`` or the error kind; ``str()`` reads ``997 ok, 3 ConnectTimeout``."""
        return summarize(self._results.values())

    def json_lines(self) -> Iterator[str]:
        """One JSON object per host, newline-terminated: host, status, stdout, stderr, error, seconds."""
        return (json_line(host, result, self.seconds.get(host, 0.0)) for host, result in self._results.items())

    def __repr__(self) -> str:
        skipped = sum(1 for r in self._results.values() if r.error == SKIPPED)
        failed = sum(1 for r in self._results.values() if r.status != 0) - skipped
        also = f", {skipped} skipped" if skipped else ""
        return f"MultiResult({len(self)} hosts: {len(self) - failed - skipped} succeeded, {failed} failed{also})"


class MultiConnection:
    """Many hosts behind one synchronous API; ``batch_size`` bounds concurrent operations overall.

    ``timeout`` (seconds, ``0`` = none) is the default for hosts that have none of their own.
    ``workers`` overrides the number of worker processes (default: one per CPU, fewer for small
    fleets). ``progress(done, total)`` is called as hosts finish, for long runs. ``retry`` (a
    ``hussh.Retry``) says how long a host that failed to connect is not waited on again, and
    whether transient connect failures are retried. Calls from several threads run one at a time,
    each getting its own results; a ``progress`` or ``on_result`` callback cannot make a call on
    the same ``MultiConnection`` (``RuntimeError``). ``engine`` runs the shards: local worker
    processes by default, or e.g. ``hussh.ray.RayEngine()`` for Ray actors across a cluster (see
    docs/beyond-one-machine.md). ``journal`` (a ``hussh.Journal``) records every ``execute``,
    ``execute_map``, ``sftp_write`` and ``sftp_write_data`` and each host's result as it finishes;
    ``resume`` and ``retry_failed`` replay a recorded run (see docs/rollouts.md). ``execute``,
    ``execute_map``, ``sftp_write`` and ``sftp_write_data`` take ``rollout=hussh.Rollout(...)``: a
    canary, waves and a failure budget; ``status()`` is a snapshot of the running call.
    ``limits`` (a ``hussh.FleetLimits``, ``self.limits`` once made) holds ``batch_size``, ``workers``,
    ``retry``, ``max_call_output`` and a default ``rollout`` together; those keywords beat its fields.
    """

    def __init__(
        self,
        connections: Iterable[Connectable],
        batch_size: int | None = None,
        timeout: float | None = None,
        *,
        names: Iterable[str] | None = None,
        limits: FleetLimits | None = None,
        workers: int | None = None,
        progress: Progress | None = None,
        retry: Retry | None = None,
        max_call_output: int | None = None,
        engine: Engine | None = None,
        journal: Journal | None = None,
    ) -> None:
        """``connections`` (or their specs) keyed by ``names`` (default: each one's host); ``limits``
        and the keywords ``batch_size``, ``workers``, ``retry``, ``max_call_output`` (which beat its
        fields) are the ``FleetLimits``; ``timeout`` applies to the hosts that have none."""
        specs = [_spec_of(conn) for conn in connections]
        if isinstance(names, str):
            raise TypeError("names must be a list of result keys, one per connection, not a single string")
        keys = [spec.host for spec in specs] if names is None else list(names)
        if len(keys) != len(specs):
            raise ValueError(f"names gives {len(keys)} keys for {len(specs)} connections")
        self.limits = fleet_limits(limits, batch_size=batch_size, workers=workers, retry=retry,
                                   max_call_output=max_call_output)
        timeout = timeout or 0
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
        if timeout:
            specs = [s if s.timeout else msgspec.structs.replace(s, timeout=float(timeout)) for s in specs]
        self._specs = specs
        self._keys = _unique_keys(keys, specs)
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._active = list(range(len(specs)))
        self.timeout = timeout
        self._progress = progress
        self._engine: Engine = engine if engine is not None else LocalEngine()
        if not callable(getattr(self._engine, "pool", None)):
            raise TypeError(f"engine must have a pool(specs, batch_size, workers, retry) method, got {engine!r}")
        if journal is not None and not isinstance(journal, Journal):
            raise TypeError(f"journal must be a hussh.Journal, got {journal!r}")
        self.journal = journal
        self._pool: Pool | None = None
        self._finalizer: weakref.finalize[..., MultiConnection] | None = None
        self._lock = threading.RLock()  # one call (or close) at a time, whichever thread asks

    @classmethod
    def from_connections(
        cls, connections: Iterable[AsyncConnection | Connection], batch_size: int | None = None,
        timeout: float | None = None, **options: Any,
    ) -> MultiConnection:
        """Copy the connection details of existing (sync or async) connections."""
        return cls(connections, batch_size=batch_size, timeout=timeout, **options)

    @classmethod
    def from_shared_auth(
        cls,
        hosts: Iterable[str],
        username: str | None = None,
        password: str | None = None,
        key_path: str | os.PathLike[str] | None = None,
        port: int = DEFAULT_PORT,
        timeout: float = NO_SECONDS,
        batch_size: int | None = None,
        *,
        options: ConnectOptions | None = None,
        limits: FleetLimits | None = None,
        private_key: str | os.PathLike[str] | None = None,
        connect_timeout: float = NO_SECONDS,
        keepalive_interval: float = NO_SECONDS,
        known_hosts: str | os.PathLike[str] | None = None,
        host_key_checking: HostKeyChecking | None = None,
        max_output: int = MAX_OUTPUT,
        proxy_jump: str | AsyncConnection | Connection | None = None,
        proxy_command: str | None = None,
        forward_agent: bool | None = None,
        ssh_config: SSHConfigArg = None,
        stall_timeout: float = STALL_SECONDS,
        retry: Retry | None = None,
        max_call_output: int | None = None,
        workers: int | None = None,
        progress: Progress | None = None,
        engine: Engine | None = None,
        journal: Journal | None = None,
    ) -> MultiConnection:
        """Same credentials for every host; hosts may be ``name``, ``name:port``, ``user@name:port``,
        ``[v6addr]:port`` or names from the ssh config (see ``AsyncConnection`` for the options).

        A user or port in a host string beats ``username``/``port``; explicit arguments beat the
        ssh config, which beats hussh's defaults. ``options`` (``hussh.ConnectOptions``) and
        ``limits`` (``hussh.FleetLimits``) hold the same settings; a keyword given beats their field.
        """
        if isinstance(hosts, str):
            raise TypeError("hosts must be a list of host names, not a single string "
                            "(hussh.hostlist.expand('web[1-3]') turns a pattern into a list)")
        names = list(hosts)
        shared = connect_options(
            options, username=username, password=password, key_path=key_path, port=port, timeout=timeout,
            private_key=private_key, connect_timeout=connect_timeout, keepalive_interval=keepalive_interval,
            known_hosts=known_hosts, host_key_checking=host_key_checking, max_output=max_output,
            proxy_jump=proxy_jump, proxy_command=proxy_command, forward_agent=forward_agent, ssh_config=ssh_config,
            stall_timeout=stall_timeout,
        )
        resolver = ConfigResolver(shared.ssh_config)
        own = _Own()
        specs = []
        for name in names:
            target = _target(name)
            specs.append(make_spec(target.host, own(target.user, target.port, shared), resolver))
        return cls(specs, batch_size, names=names, limits=limits, retry=retry, max_call_output=max_call_output,
                   workers=workers, progress=progress, engine=engine, journal=journal)

    @classmethod
    def from_inventory(
        cls,
        inventory: Inventory,
        pattern: str | Iterable[str] = "all",
        *,
        limit: str | None = None,
        options: ConnectOptions | None = None,
        limits: FleetLimits | None = None,
        group_options: Mapping[str, ConnectOptions] | None = None,
        progress: Progress | None = None,
        engine: Engine | None = None,
        journal: Journal | None = None,
        **keywords: Any,
    ) -> MultiConnection:
        """The hosts of an ``Inventory`` (``hussh.inventory``) chosen by an Ansible ``pattern`` (or a
        list of host names), narrowed by ``limit``; each host's inventory address, port and user go
        into its spec.

        ``group_options`` maps inventory groups to the ``ConnectOptions`` of their hosts (a later
        group's beating an earlier one's for a host in both), over ``options``. As in
        ``from_shared_auth``, what a host says for itself (its inventory port or user, or a
        ``user@host:port`` name) beats those, which beat the ssh config; the config is matched
        against the inventory name and the inventory address replaces its ``HostName``.
        ``keywords`` are ``from_shared_auth``'s (connection ones over ``options``, limit ones over ``limits``).
        """
        names = inventory.select(pattern) if isinstance(pattern, str) else list(pattern)
        if limit is not None:
            keep = set(inventory.select(limit))
            names = [name for name in names if name in keep]
        limit_keywords = {name: keywords.pop(name) for name in LIMIT_KEYWORDS & keywords.keys()}
        unknown = sorted(keywords.keys() - {*ConnectOptions.__struct_fields__, "key_path"})
        if unknown:
            raise TypeError(f"from_inventory() got an unexpected keyword argument {unknown[0]!r}")
        shared = connect_options(options, **keywords)
        layers = _GroupLayers(inventory, group_options or {}, shared)
        resolvers: dict[object, ConfigResolver] = {}
        own = _Own()
        specs = []
        for name in names:
            host_vars = inventory.vars(name)
            target = _target(name) if host_vars.address is None and host_vars.port is None else None
            host_options = own(host_vars.user or (target and target.user), host_vars.port or (target and target.port),
                               layers.of(name))
            resolver = resolvers.get(host_options.ssh_config) or resolvers.setdefault(
                host_options.ssh_config, ConfigResolver(host_options.ssh_config))
            spec = make_spec(target.host if target is not None else name, host_options, resolver)
            specs.append(msgspec.structs.replace(spec, hostname=host_vars.address) if host_vars.address else spec)
        return cls(specs, names=names, limits=limits, progress=progress, engine=engine, journal=journal,
                   **limit_keywords)

    @property
    def hosts(self) -> list[str]:
        """The hosts operations run on (result keys), in the order given, minus pruned ones."""
        return [self._keys[i] for i in self._active]

    @property
    def batch_size(self) -> int:
        return self.limits.batch_size

    @property
    def specs(self) -> dict[str, ConnectSpec]:
        """What each of ``hosts`` resolved to (address, user, port, bastions, timeouts), as ``AsyncConnection.spec``:
        arguments, host strings and the ssh config applied. A new dict of frozen specs (their repr hides passwords)."""
        return {self._keys[i]: self._specs[i] for i in self._active}

    def shards(self) -> list[Shard]:
        """The worker processes (or actors) and which hosts each serves, for operators (``ps``, ``top``,
        a fault drill); empty until the first call and after ``close()``. Safe from another thread."""
        pool = self._pool
        if pool is None:
            return []
        keys = self._keys
        return [Shard(state.number, state.pid, [keys[i] for i in state.indices], state.concurrency, state.node)
                for state in pool.shard_states()]

    def __repr__(self) -> str:
        return f"MultiConnection({len(self._active)} hosts, batch_size={self.limits.batch_size})"

    def connect(self, prune_failures: bool = False, timeout: float | None = None) -> MultiResult:
        """Connect every host not yet connected; ``prune_failures`` drops the failed ones from ``hosts``."""
        results = self._run(calls.connect(timeout), self._active)
        if prune_failures:
            failed = {self._index[h] for h in results.failed}
            if failed:
                self._run(calls.close(), sorted(failed))
                self._active = [i for i in self._active if i not in failed]
        return results

    def execute(self, command: str, timeout: float | None = None, *, on_result: OnResult | None = None,
                on_timed_result: OnTimedResult | None = None, rollout: Rollout | None = None,
                input: str | bytes | None = None, sudo: bool = False,
                sudo_password: str | None = None) -> MultiResult:
        """Run ``command`` on every host; past ``timeout`` seconds a host gets ``status=-1`` with its partial output
        (and the command is stopped there: TERM, then KILL).

        ``on_result(host, result)`` is called in this thread as each host finishes;
        ``on_timed_result(host, result, seconds)`` also gets the host's seconds. ``rollout``: a
        canary, waves and a failure budget (``hussh.Rollout``); hosts it never starts are skipped.
        Every command's stdin gets ``input`` (the same bytes on every host; text UTF-8 encoded), then
        end of file. ``sudo=True`` runs it through sudo, answering its prompt once with
        ``sudo_password``; a host where sudo refuses gets ``status=-1`` and the ``SudoError`` kind.
        """
        how = _how(input, sudo, sudo_password)
        return self._execute(dict.fromkeys(self._active, command), timeout, on_result, on_timed_result,
                             _command_operation(how, command=command, timeout=timeout), rollout=rollout, how=how)

    def execute_map(self, host_command_map: Mapping[str, str], timeout: float | None = None, *,
                    on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None,
                    rollout: Rollout | None = None, input: str | bytes | None = None, sudo: bool = False,
                    sudo_password: str | None = None) -> MultiResult:
        """Run a different command per host, only on the hosts in ``host_command_map`` (upstream's name);
        ``rollout``, ``input``, ``sudo`` and ``sudo_password`` as in ``execute``."""
        commands = {self._index[h]: c for h, c in self._check_hosts(host_command_map).items()}
        how = _how(input, sudo, sudo_password)
        operation = _command_operation(how, commands=dict(host_command_map), timeout=timeout)
        return self._execute(dict(sorted(commands.items())), timeout, on_result, on_timed_result, operation,
                             rollout=rollout, how=how)

    def _execute(self, commands: dict[int, str], timeout: float | None, on_result: OnResult | None,
                 on_timed_result: OnTimedResult | None, operation: Operation,
                 journaled: _Journaled | None = None, rollout: Rollout | None = None,
                 how: _How = (b"", False, None)) -> MultiResult:
        return self._run(calls.execute(commands, timeout, *how), list(commands), on_result, on_timed_result,
                         journaled or self._journaled(operation), rollout or self.limits.rollout)

    def sftp_write(self, local_path: str | os.PathLike[str], remote_path: str | None = None, *,
                   on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None,
                   rollout: Rollout | None = None) -> MultiResult:
        """Copy a local file to every host; it is read once here, not once per host. A new remote file is
        created with its 0777 bits (less the host's umask; an existing one keeps its mode), as scp and sftp do."""
        with open(local_path, "rb") as handle:
            data = handle.read()
            mode = upload_perms(os.fstat(handle.fileno()).st_mode)
        return self._write(data, remote_path or os.fspath(local_path), self._active, on_result, on_timed_result,
                           os.path.abspath(local_path), rollout=rollout, mode=mode)

    def sftp_write_data(self, data: str | bytes, remote_path: str, *,
                        on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None,
                        rollout: Rollout | None = None, mode: int | None = None) -> MultiResult:
        """Write ``data`` (text is UTF-8 encoded) to ``remote_path`` on every host; ``mode``: the 0777 bits a
        new file is created with (less the host's umask; an existing one keeps its mode), else the host's default."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        return self._write(payload, remote_path, self._active, on_result, on_timed_result, rollout=rollout,
                           mode=None if mode is None else mode & 0o777)

    def _write(self, payload: bytes, remote_path: str, indices: list[int], on_result: OnResult | None,
               on_timed_result: OnTimedResult | None, local: str | None = None,
               journaled: _Journaled | None = None, rollout: Rollout | None = None,
               mode: int | None = None) -> MultiResult:
        calls.check_payload(payload)
        if journaled is None and self.journal is not None:
            journaled = self._journaled(Operation("transfer", local=local, remote=remote_path, size=len(payload),
                                                  sha256=hashlib.sha256(payload).hexdigest(), mode=mode))
        return self._run(calls.write_data(payload, remote_path, mode), indices, on_result, on_timed_result,
                         journaled, rollout or self.limits.rollout)

    def resume(self, run_id: int, *, journal: Journal | None = None, data: str | bytes | None = None,
               on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None,
               rollout: Rollout | None = None, sudo_password: str | None = None) -> MultiResult:
        """Run a journaled run's operation again on its hosts that have no result yet, never on one that succeeded.

        ``journal`` defaults to this ``MultiConnection``'s; the new run is recorded there, naming
        ``run_id``. Every such host must be one of ``hosts``. A transfer reads its recorded local
        file again (or takes ``data``) and refuses data whose SHA-256 differs from the run's; so does a
        command run with ``input=`` (pass the same bytes as ``data``). A command run through sudo runs
        through sudo again (``sudo_password`` as in ``execute``: it is never recorded).
        Hosts the run skipped are run too (``rollout`` may cut them into waves again).
        """
        return self._replay(run_id, False, journal, data, on_result, on_timed_result, rollout, sudo_password)

    def retry_failed(self, run_id: int, *, journal: Journal | None = None, data: str | bytes | None = None,
                     on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None,
                     rollout: Rollout | None = None, sudo_password: str | None = None) -> MultiResult:
        """Like ``resume``, on the hosts whose result in the run (or in the runs resuming it) is a failure."""
        return self._replay(run_id, True, journal, data, on_result, on_timed_result, rollout, sudo_password)

    def _replay(self, run_id: int, failed_only: bool, journal: Journal | None, data: str | bytes | None,
                on_result: OnResult | None, on_timed_result: OnTimedResult | None,
                rollout: Rollout | None, sudo_password: str | None = None) -> MultiResult:
        journal = journal if journal is not None else self.journal
        if journal is None:
            raise ValueError("resume and retry_failed read a journal: pass journal=, or make the MultiConnection "
                             "with one")
        run = journal.run(run_id)
        hosts = journal.pending(run.id, failed_only)
        active = set(self._active)
        missing = [h for h in hosts if self._index.get(h) not in active]
        if missing:
            raise ValueError(f"run {run.id} has hosts this MultiConnection does not: "
                             f"{', '.join(map(repr, missing[:10]))}" + (f" and {len(missing) - 10} more"
                                                                        if len(missing) > 10 else ""))
        indices = sorted(self._index[h] for h in hosts)
        if not indices:
            return MultiResult()
        operation = run.operation
        journaled = _Journaled(journal, operation, self._options(), run.id,
                               "retry-failed" if failed_only else "resume")
        if operation.kind == "command":
            commands = operation.commands
            stdin = _recorded_data(run.id, operation, data) if operation.sha256 is not None else None
            return self._execute({i: commands[self._keys[i]] if commands is not None else operation.command or ""
                                  for i in indices}, operation.timeout, on_result, on_timed_result, operation,
                                 journaled, rollout, how=_how(stdin, operation.sudo, sudo_password))
        payload = _recorded_data(run.id, operation, data)
        return self._write(payload, operation.remote or "", indices, on_result, on_timed_result, operation.local,
                           journaled, rollout, operation.mode)

    def sftp_read(self, remote_path: str, local_path: str | os.PathLike[str] | None = None, *,
                  on_result: OnResult | None = None, on_timed_result: OnTimedResult | None = None) -> MultiResult:
        """Read a remote file from every host: as each result's ``stdout``, or saved to ``local_path``.

        With more than one host, ``local_path`` must contain ``{host}``, replaced by each host's
        name, so hosts never overwrite each other's file; ``stdout`` then holds the path written.
        In the name, ``%``, ``/`` and control characters are percent-encoded, as is a whole ``.``
        or ``..`` (``hussh._local_files.host_file_name``): no host name leaves the directory.
        """
        if local_path is None:
            return self._run(calls.read_file(remote_path), self._active, on_result, on_timed_result)
        template = os.fspath(local_path)
        if "{host}" not in template and len(self._active) > 1:
            raise ValueError("local_path must contain '{host}' when reading from several hosts, "
                             f"e.g. {template + '.{host}'!r}, so that hosts do not overwrite each other")
        template = os.path.abspath(template)  # workers may not share this process's working directory
        paths = {i: template.replace("{host}", host_file_name(self._keys[i])) for i in self._active}
        for directory in {os.path.dirname(path) for path in paths.values()} - {""}:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError:
                pass  # a host whose directory cannot be made fails on its own, naming its local file
        return self._run(calls.read_file(remote_path, paths), self._active, on_result, on_timed_result)

    def sftp_put_dir(self, local_path: str | os.PathLike[str], remote_path: str, *, follow_symlinks: bool = True,
                     preserve_permissions: bool = True, on_result: OnResult | None = None,
                     on_timed_result: OnTimedResult | None = None) -> MultiResult:
        """Upload a local directory tree to every host as ``remote_path`` (its parents made); a local file is
        uploaded as that file. Each host's ``stdout`` lists the local files sent, one a line; a host where
        some failed has ``status=-1``, a line per failure in ``stderr`` and the first one's kind as ``error``.

        As ``Connection.sftp_put_dir``: links are followed unless ``follow_symlinks=False`` (then skipped),
        and files and directories keep their 0777 mode bits (never setuid, setgid or sticky) unless
        ``preserve_permissions=False``. Workers read the files themselves: the local engine only.
        """
        local = os.path.abspath(os.fspath(local_path))  # workers may not share this process's working directory
        if not os.path.exists(local):
            raise FileNotFoundError(errno.ENOENT, "local file or directory does not exist", os.fspath(local_path))
        self._local_engine_only("sftp_put_dir")
        return self._run(calls.put_dir(local, remote_path, follow_symlinks, preserve_permissions), self._active,
                         on_result, on_timed_result)

    def sftp_get_dir(self, remote_path: str, local_path: str | os.PathLike[str], *, follow_symlinks: bool = True,
                     preserve_permissions: bool = True, on_result: OnResult | None = None,
                     on_timed_result: OnTimedResult | None = None) -> MultiResult:
        """Download ``remote_path``, a directory tree or a file, from every host as ``local_path``, which must
        contain ``{host}`` with more than one host (encoded as in ``sftp_read``). Each host's ``stdout`` lists
        the remote files saved, one a line; failures are reported as in ``sftp_put_dir``.

        Every defence of ``Connection.sftp_get_dir`` holds: a listed name that is not one plain file name
        fails alone, nothing is written outside ``local_path`` (a local link in it is not followed), files
        get at most the remote 0777 bits less the umask, links on the host are followed for files and
        directories (``follow_symlinks=False``: skipped), loops and trees over 64 levels stop.
        """
        paths = self._host_paths(local_path, "sftp_get_dir")
        self._local_engine_only("sftp_get_dir")
        return self._run(calls.get_dir(remote_path, paths, follow_symlinks, preserve_permissions), self._active,
                         on_result, on_timed_result)

    def _host_paths(self, local_path: str | os.PathLike[str], call: str) -> dict[int, str]:
        """Each active host's absolute local path: ``{host}`` replaced by its encoded name (required with
        several hosts, so that no two write the same file)."""
        template = os.fspath(local_path)
        if "{host}" not in template and len(self._active) > 1:
            raise ValueError(f"local_path must contain '{{host}}' for {call} from several hosts, "
                             f"e.g. {os.path.join(template, '{host}')!r}, so that hosts do not overwrite each other")
        template = os.path.abspath(template)  # workers may not share this process's working directory
        return {i: template.replace("{host}", host_file_name(self._keys[i])) for i in self._active}

    def _local_engine_only(self, call: str) -> None:
        if not isinstance(self._engine, LocalEngine):
            raise ValueError(f"{call} needs workers that share this machine's files: it runs with the local engine "
                             f"only, not {type(self._engine).__name__}")

    def tail(self, remote_file: str, *, since: float | None = None, lines: int = 10) -> MultiFileTailer:
        """A context manager reading what is appended to ``remote_file`` on every host.

        Each host's tail starts at the file's end when it opens; with ``since`` (a ``time.time()``, such as
        when the caller started), at the file's end if its mtime shows no change since then (so nothing
        appended after ``since`` is missed), else at its last ``lines`` lines, as ``tail -n``.
        """
        return MultiFileTailer(self, {self._keys[i]: remote_file for i in self._active}, since, lines)

    def tail_map(self, host_file_map: Mapping[str, str], *, since: float | None = None,
                 lines: int = 10) -> MultiFileTailer:
        """Like ``tail`` with a different file per host, only on the hosts in ``host_file_map`` (upstream's name)."""
        return MultiFileTailer(self, dict(self._check_hosts(host_file_map)), since, lines)

    def close(self) -> None:
        """Disconnect every host and stop the worker processes (also done on GC and at exit).

        A call running in another thread finishes first; inside a call's callback this raises
        ``RuntimeError``. A later call starts new workers and connects again.
        """
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()  # raises inside a callback, before anything is let go
            if self._finalizer is not None:
                self._finalizer.detach()
            self._pool = self._finalizer = None

    def __enter__(self) -> MultiConnection:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_hosts(self, mapping: Mapping[str, str]) -> Mapping[str, str]:
        active = set(self._active)
        unknown = [h for h in mapping if self._index.get(h) not in active]
        if unknown:
            raise ValueError(f"not hosts of this MultiConnection: {', '.join(map(repr, unknown[:10]))}"
                             + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
        return mapping

    def _journaled(self, operation: Operation) -> _Journaled | None:
        return None if self.journal is None else _Journaled(self.journal, operation, self._options())

    def _options(self) -> dict[str, object]:
        """What a journal records of this ``MultiConnection``'s settings (never a credential)."""
        limits = self.limits
        return {"batch_size": limits.batch_size, "timeout": self.timeout, "workers": limits.workers,
                "max_call_output": limits.max_call_output}

    def status(self) -> CallStatus | None:
        """A snapshot of the call running now (``None`` when none is): hosts done, failed, skipped, those
        running with when each started, the current wave. Safe from another thread or a callback."""
        pool = self._pool
        if pool is None:
            return None
        keys = self._keys
        return pool.status(keys.__getitem__)

    def _run(self, build: Build, indices: list[int], on_result: OnResult | None = None,
             on_timed_result: OnTimedResult | None = None, journaled: _Journaled | None = None,
             rollout: Rollout | None = None, on_output: OnOutput | None = None,
             stop: Callable[[], bool] | None = None) -> MultiResult:
        if rollout is not None and not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be a hussh.Rollout, got {rollout!r}")
        if not indices:
            return MultiResult()
        keys = self._keys
        with self._lock:
            recorder = None if journaled is None else journaled.journal.start(
                journaled.operation, [keys[i] for i in indices], _with_rollout(journaled.options, rollout),
                journaled.resumes, journaled.how)
            on_host = _on_host(keys, recorder, on_result, on_timed_result)
            try:
                if self._pool is None:
                    limits = self.limits
                    self._pool = self._engine.pool(self._specs, limits.batch_size, limits.workers, limits.retry)
                    self._finalizer = weakref.finalize(self, self._pool.release)
                results, seconds = self._pool.call(build, indices, self._progress, on_host, self.limits.max_call_output,
                                                   rollout, on_output, stop)
            finally:
                if recorder is not None:
                    recorder.end()
        finished = MultiResult(((keys[i], results[i]) for i in indices), {keys[i]: seconds[i] for i in indices})
        finished.run_id = None if recorder is None else recorder.run_id
        return finished


class MultiFileTailer:
    """Tails one file per host; offsets live in the worker owning each host, so reads move only new bytes.

    ``read()`` returns host -> text added since the last read; a host whose tail failed maps to
    ``""`` and ``errors[host]`` says why. After exit, ``contents`` maps host -> everything appended
    while the tailer was open (``{}`` before), as upstream's does. ``follow()``, without entering,
    streams each host's text from the moment its own tail opens.
    """

    def __init__(self, mc: MultiConnection, files: dict[str, str], since: float | None = None,
                 lines: int = 10) -> None:
        self._mc = mc
        self.files = files
        self.since = since
        self.lines = lines
        self.errors: dict[str, str] = {}
        self.contents: dict[str, str] = {}
        self._open: list[int] = []

    @property
    def hosts(self) -> list[str]:
        """The hosts this tailer follows, in the order given."""
        return list(self.files)

    def __enter__(self) -> MultiFileTailer:
        mc = self._mc
        paths = {mc._index[h]: path for h, path in self.files.items()}
        results = mc._run(calls.tail_open(paths, self.since, self.lines), sorted(paths))
        self._record(results)
        self._open = [mc._index[h] for h, r in results.items() if r.status == 0]
        return self

    def follow(self, on_text: OnText, *, interval: float = 0.5, until: Callable[[], bool] | None = None,
               on_result: OnResult | None = None) -> MultiResult:
        """Follow every host's file, calling ``on_text(host, text)`` in this thread with what is appended, each
        host from the moment its own tail is open: a host still connecting, or one that never answers,
        holds no other back (``read()`` inside ``with`` waits for every host's tail to open first).

        Each host's tail starts as ``since`` and ``lines`` say (see ``MultiConnection.tail``); ``on_text(host,
        "")`` says that it is open, then every byte appended reaches ``on_text`` once and in order (split
        where reads split it, never inside a UTF-8 character). Hosts are read every ``interval`` seconds
        (0: as soon as the last read returned), at once again after a read of 1 MiB. A host whose tail
        cannot open, or fails later (its file removed, its connection lost), ends with its error, in
        ``errors`` and ``on_result(host, result)`` as it happens; the others go on. Returns when every
        host has ended, or once ``until()`` is true (asked at least every second): hosts followed then
        end with status 0, those not open yet are ``Skipped``. Ctrl-C stops it at once, as any call.
        """
        if not isinstance(interval, (int, float)) or not 0 <= interval < math.inf:
            raise ValueError(f"interval must be a number of seconds >= 0, got {interval!r}")
        mc = self._mc
        keys = mc._keys
        paths = {mc._index[h]: path for h, path in self.files.items()}

        def output(index: int, data: bytes) -> None:
            on_text(keys[index], text(data))

        def ended(host: str, result: SSHResult) -> None:
            if result.status != 0 and result.error != SKIPPED:
                self.errors[host] = result.stderr
            if on_result is not None:
                on_result(host, result)

        return mc._run(calls.tail_follow(paths, self.since, self.lines, float(interval)), sorted(paths), ended,
                       on_output=output, stop=until)

    def read(self, from_pos: int | None = None) -> dict[str, str]:
        """Text appended on each host since the last read (or from byte ``from_pos`` if given)."""
        results = self._mc._run(calls.tail_read(from_pos), self._open)
        self._record(results)
        return {host: results[host].stdout if host in results and results[host].status == 0 else ""
                for host in self.files}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        results = self._mc._run(calls.tail_close(), self._open)
        self._open = []  # closed: a later read() maps every host to "", as upstream's does
        self._record(results)
        self.contents = {host: results[host].stdout if host in results and results[host].status == 0 else ""
                         for host in self.files}

    def _record(self, results: MultiResult) -> None:
        for host, result in results.items():
            if result.status != 0:
                self.errors[host] = result.stderr


class _Journaled(NamedTuple):
    """A call to record: where, what, with which settings, and the run it resumes (if any) and how."""

    journal: Journal
    operation: Operation
    options: dict[str, object]
    resumes: int | None = None
    how: str | None = None


def _on_host(keys: list[str], recorder: Recorder | None, on_result: OnResult | None,
             on_timed_result: OnTimedResult | None) -> OnHost | None:
    """The pool's per-host callback: the journal's row first (committed), then the caller's callbacks."""
    if recorder is None and on_result is None and on_timed_result is None:
        return None

    def on_host(index: int, result: SSHResult, seconds: float, wave: int | None) -> None:
        if recorder is not None:
            recorder.host(keys[index], result, seconds, wave)
        if on_result is not None:
            on_result(keys[index], result)
        if on_timed_result is not None:
            on_timed_result(keys[index], result, seconds)
    return on_host


def _with_rollout(options: dict[str, object], rollout: Rollout | None) -> dict[str, object]:
    """A journaled run's options, with its rollout's plan (never its callback)."""
    if rollout is None:
        return options
    return {**options, "rollout": {"canary": rollout.canary, "waves": list(rollout.waves or ()) or None,
                                   "max_failures": rollout.max_failures,
                                   "count_connect_failures": rollout.count_connect_failures,
                                   "on_exceeded": rollout.on_exceeded, "pause": rollout.pause}}


def _command_operation(how: _How, **fields: Any) -> Operation:
    """A command run as the journal keeps it: its stdin by size and SHA-256 (never the bytes), and sudo."""
    stdin, sudo, _ = how  # the sudo password is never recorded
    if not stdin:
        return Operation("command", sudo=sudo, **fields)
    return Operation("command", size=len(stdin), sha256=hashlib.sha256(stdin).hexdigest(), sudo=sudo, **fields)


def _recorded_data(run_id: int, operation: Operation, data: str | bytes | None) -> bytes:
    """The data a run sent (a transfer's file, a command's stdin): ``data``, else a transfer's local file read
    again; refused unless its SHA-256 matches."""
    if data is None:
        if operation.kind == "command":
            raise ValueError(f"run {run_id} sent its commands {operation.size} bytes of input: pass the same data= "
                             "again (a command that reads its stdin would otherwise get none)")
        if operation.local is None:
            raise ValueError(f"run {run_id} wrote data given in memory (sftp_write_data): pass the same data= again")
        try:
            with open(operation.local, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ValueError(f"run {run_id} copied {operation.local}, which cannot be read now: {exc.strerror}") \
                from None
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if hashlib.sha256(payload).hexdigest() != operation.sha256:
        raise ValueError(f"the data differs from what run {run_id} sent ({operation.size} bytes, SHA-256 "
                         f"{operation.sha256}): resuming would leave hosts with different contents")
    return payload


def _spec_of(conn: Connectable) -> ConnectSpec:
    spec = conn if isinstance(conn, ConnectSpec) else getattr(conn, "spec", None)
    if not isinstance(spec, ConnectSpec):
        raise TypeError(f"expected hussh Connection or AsyncConnection objects, got {type(conn).__name__}")
    return spec


class _Own:
    """A host's options under what it says for itself (``user@host:port``, its inventory user and port),
    merged once per user, port and options (a fleet's hosts share a few)."""

    def __init__(self) -> None:
        self._merged: dict[tuple[str | None, int | None, int], tuple[ConnectOptions, ConnectOptions]] = {}

    def __call__(self, user: str | None, port: int | None, options: ConnectOptions) -> ConnectOptions:
        if user is None and port is None:
            return options
        key = (user, port, id(options))
        found = self._merged.get(key)
        if found is None:  # ``options`` is kept with the result, so its id stays its own
            found = self._merged[key] = (options, ConnectOptions(username=user, port=port).over(options))
        return found[1]


class _GroupLayers:
    """Each host's options from ``from_inventory``'s ``group_options``: its groups' over the shared ones,
    merged once per set of groups (10,000 hosts fall into a few)."""

    def __init__(self, inventory: Inventory, group_options: Mapping[str, ConnectOptions],
                 shared: ConnectOptions) -> None:
        for group, options in group_options.items():
            if not isinstance(options, ConnectOptions):
                raise TypeError(f"group_options[{group!r}] must be a hussh.ConnectOptions, got {options!r}")
        self._groups = [(set(inventory.hosts_of(group)), options) for group, options in group_options.items()]
        self._shared = shared
        self._merged: dict[tuple[int, ...], ConnectOptions] = {}

    def of(self, host: str) -> ConnectOptions:
        if not self._groups:
            return self._shared
        member = tuple(i for i, (hosts, _) in enumerate(self._groups) if host in hosts)
        merged = self._merged.get(member)
        if merged is None:
            merged = self._shared
            for i in member:
                merged = self._groups[i][1].over(merged)
            self._merged[member] = merged
        return merged


def _target(name: str) -> Target:
    if not isinstance(name, str):
        raise TypeError(f"host names must be strings, got {name!r}")
    return parse_target(name)


def _unique_keys(names: list[str], specs: list[ConnectSpec]) -> list[str]:
    """Result keys: the names as given; names used twice become ``host:port``, then ``user@host:port``."""
    keys = list(names)
    for widen in (lambda s: s.address, lambda s: f"{s.username}@{s.address}"):
        seen: dict[str, int] = {}
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
        if all(count == 1 for count in seen.values()):
            return keys
        keys = [widen(s) if seen[k] > 1 else k for k, s in zip(keys, specs)]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    raise ValueError(f"the same connection was given more than once: {', '.join(duplicates)}")


_How = tuple[bytes, bool, str | None]
"""How commands run beyond the command itself: (stdin, sudo, sudo_password), ``p.Execute``'s last fields."""


def _how(input: str | bytes | None, sudo: bool, sudo_password: str | None) -> _How:
    """Check and encode ``execute``'s stdin and sudo options once, in the caller, for every worker."""
    stdin = input.encode() if isinstance(input, str) else bytes(input or b"")
    if len(stdin) > MAX_STDIN:
        raise ValueError(f"input is sent to each worker in one request; {len(stdin)} bytes is over its "
                         f"{MAX_STDIN} byte limit")
    if sudo_password is not None and not sudo:
        raise ValueError("sudo_password is only used with sudo=True")
    check_password(sudo_password)
    return stdin, sudo, sudo_password


MAX_STDIN = calls.MAX_PAYLOAD
"""The largest ``input`` of ``execute``: what fits in one worker request beside the commands."""
