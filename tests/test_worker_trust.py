"""Workers are not trusted with the caller's state: a worker answers only for the hosts of its own shard.

A stand-in worker speaks the real protocol for each engine (a process on the local engine's pipes, a
Ray actor streaming batches) and adds frames a compromised worker could send: a host key for another
worker's host, for a hop its host does not have, a key that is not one, the old frame that named a
host and a known_hosts file of its own, a result for another worker's host. Each is a protocol
violation: that worker's hosts fail with ``WorkerLost`` saying what it sent, the other worker's
results are kept, and no known_hosts file is written. An honest ``KeyLearned`` is recorded under the
name and in the file the caller resolved for that host and hop (the control case).

Three hosts, two workers: worker (shard) 0 has hosts 0 and 2, worker 1 has host 1.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import asyncssh
import msgspec
import pytest

from hussh._result import RawResult
from hussh._spec import ConnectSpec, Retry
from hussh.multi_conn import MultiConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER
from hussh.workers import _spawn
from hussh.workers import protocol as p
from hussh.workers.pool import WorkerPool, _Worker
from raycluster import local_ray_cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
ENCODER = msgspec.msgpack.Encoder()
REQ = 1  # the first call of a new pool
KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()

Run = Callable[[list[ConnectSpec], dict[int, bytes]], dict[int, object]]


def frames(*messages: object) -> bytes:
    return b"".join(p.frame(ENCODER.encode(m)) for m in messages)


def fleet_specs(tmp_path: Path) -> list[ConnectSpec]:
    """Three hosts recording in ``known_hosts``; host 2 behind a bastion recording in ``bastion_hosts``."""
    known = (str(tmp_path / "known_hosts"),)
    bastion = ConnectSpec("jump", hostname="Bastion.example", port=2200, known_hosts=(str(tmp_path / "bastion_hosts"),))
    return [ConnectSpec("web0", hostname="10.0.0.10", known_hosts=known),
            ConnectSpec("web1", hostname="10.0.0.11", port=2222, known_hosts=known),
            ConnectSpec("web2", hostname="10.0.0.12", known_hosts=known, jump=bastion)]


def files_of(tmp_path: Path) -> dict[str, list[str]]:
    """Every file in ``tmp_path``: its lines, sorted (workers answer in any order)."""
    return {path.name: sorted(path.read_text().splitlines()) for path in tmp_path.iterdir() if path.is_file()}


# ------------------------------------------------------------------------------- the local engine

STAND_IN = textwrap.dedent("""
    import os, sys
    import msgspec
    from hussh._result import RawResult
    from hussh.workers import protocol as p

    read_fd, write_fd, extra = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    requests = p.FrameDecoder(p.Request, p.MAX_REQUEST)
    while chunk := os.read(read_fd, 1 << 16):
        for message in requests.feed(chunk):
            if isinstance(message, p.Shutdown):
                sys.exit(0)
            if isinstance(message, p.Connect):  # the extra frames, then an honest answer for each host
                honest = [*(p.HostDone(message.req, i, RawResult(b"", b"", 0)) for i in message.indices),
                          p.CallDone(message.req)]
                os.write(write_fd, extra + b"".join(p.frame(msgspec.msgpack.encode(m)) for m in honest))
""")


def stand_in_start(pool: WorkerPool, extras: dict[int, bytes]) -> Callable[[], _Worker]:
    """``pool._start`` for stand-ins: worker ``n`` (started in shard order) sends ``extras[n]`` first."""
    started = iter(range(pool.count))

    def start() -> _Worker:
        extra = extras.get(next(started), b"")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        for fd in (to_child_r, from_child_w):
            os.set_inheritable(fd, True)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        args = [sys.executable, "-c", STAND_IN, str(to_child_r), str(from_child_w), extra.hex()]
        try:
            pid = os.posix_spawn(sys.executable, args, env)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        return _Worker(_spawn.Process(pid, os.pidfd_open(pid), None), to_child_w, from_child_r, pool.max_reply)

    return start


def run_local(specs: list[ConnectSpec], extras: dict[int, bytes]) -> dict[int, object]:
    pool = WorkerPool(specs, batch_size=10, workers=2)
    pool._start = stand_in_start(pool, extras)  # type: ignore[method-assign]
    try:
        results, _ = pool.call(lambda req, indices, budget: p.Connect(req, indices), range(len(specs)))
    finally:
        pool.shutdown()
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------- the Ray engine


def stand_in_shard(extras: Mapping[int, bytes | tuple[list[tuple[int, bytes]], bytes]]) -> type:
    """A ``ShardActor`` whose ``handle`` sends ``extras[shard]`` and then an honest answer for each host,
    or, given ``(file pieces, frames)``, that as its whole answer
    (a class made here goes to the actor by value: it may use only what is importable there)."""
    import ray

    from hussh.workers.ray_actor import ShardActor

    class StandInShard(ShardActor):
        @ray.method(num_returns="streaming")
        async def handle(self, payload: bytes, assigned: object = None, window: float = 0.0, lanes: int = 1):
            call = self.requests.decode(payload)
            assert isinstance(call, p.Connect | p.ReadFile)  # the calls the tests below make
            extra = extras.get(int(self.name.rsplit("-", 1)[1]), b"")
            if isinstance(extra, tuple):  # (file pieces, frames): its whole answer
                yield extra
                return
            paths = getattr(call, "local_paths", None) or [""] * len(call.indices)
            honest = [p.HostDone(call.req, i, RawResult(os.fsencode(path), b"", 0))
                      for i, path in zip(call.indices, paths)]
            pieces = [(i, b"honest") for i, path in zip(call.indices, paths) if path]
            yield pieces, extra + b"".join(p.frame(self.encoder.encode(m)) for m in [*honest, p.CallDone(call.req)])

    return ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(StandInShard)


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory) -> Iterator[Run]:
    with local_ray_cluster(tmp_path_factory, ["a"]):
        import hussh.workers.ray_engine as ray_engine
        from hussh.ray import RayEngine

        def run(specs: list[ConnectSpec], extras: dict[int, bytes], read_to: Path | None = None) -> dict[int, object]:
            """A Connect call, or with ``read_to`` an ``sftp_read`` to files there."""
            def build(req: int, indices: list[int], budget: int) -> p.Call:
                if read_to is None:
                    return p.Connect(req, indices)
                return p.ReadFile(req, indices, "/remote", [str(read_to / str(i)) for i in indices])

            pool = ray_engine.RayPool(specs, batch_size=10, workers=2, retry=Retry(), engine=RayEngine())
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(ray_engine, "RemoteShard", stand_in_shard(extras))
                try:
                    results, _ = pool.call(build, range(len(specs)))
                finally:
                    pool.shutdown()
            return results  # type: ignore[return-value]

        yield run


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def run(request) -> Run:
    return run_local if request.param == "local" else request.getfixturevalue("ray_run")


# ------------------------------------------------------------------------------- the tests


def test_real_workers_record_their_hosts_and_bastions_keys(fleet, isolated_home, tmp_path):
    """The control case on real sshd: keys learned through a shared bastion, recorded as before."""
    (isolated_home / ".ssh").mkdir(exist_ok=True)
    (isolated_home / ".ssh" / "id_ed25519").write_bytes(Path(fleet.client_key).read_bytes())
    (isolated_home / ".ssh" / "id_ed25519").chmod(0o600)
    known = tmp_path / "known_hosts"
    bastion, *targets = fleet.addresses
    with MultiConnection.from_shared_auth(targets, username=PASSWORD_USER, password=PASSWORD, port=fleet.port,
                                          known_hosts=known, proxy_jump=f"{KEY_USER}@{bastion}:{fleet.port}",
                                          ssh_config=False, workers=2) as mc:
        assert not mc.execute("true").failed
    expected = "".join(fleet.known_hosts_line(address) for address in fleet.addresses)
    assert sorted(known.read_text().splitlines()) == sorted(expected.splitlines())


def test_an_honest_key_is_recorded_under_the_callers_name_and_file(run, tmp_path):
    results = run(fleet_specs(tmp_path), {0: frames(p.KeyLearned(REQ, 2, 1, KEY), p.KeyLearned(REQ, 0, 0, KEY)),
                                          1: frames(p.KeyLearned(REQ, 1, 0, KEY))})
    assert all(r.status == 0 for r in results.values())
    assert files_of(tmp_path) == {"known_hosts": [f"10.0.0.10 {KEY}", f"[10.0.0.11]:2222 {KEY}"],
                                  "bastion_hosts": [f"[bastion.example]:2200 {KEY}"]}


def old_form(tmp_path: Path) -> list[object]:
    """``KeyLearned`` as it was: a spec of the worker's own, naming host ``*`` and a file of its choice."""
    return ["KeyLearned", REQ, ConnectSpec("*", known_hosts=(str(tmp_path / "elsewhere"),)), KEY]


LIES = {
    "a key for another worker's host": (p.KeyLearned(REQ, 1, 0, KEY),
                                        "it sent a host key for host 1, which is not one of its hosts"),
    "a key for a host of no one": (p.KeyLearned(REQ, 7, 0, KEY),
                                   "it sent a host key for host 7, which is not one of its hosts"),
    "a key for a bastion its host has not": (p.KeyLearned(REQ, 0, 1, KEY),
                                             "it sent a host key for hop 1 of host 0, which has no such hop"),
    "a key for a hop past the chain": (p.KeyLearned(REQ, 2, 2, KEY),
                                       "it sent a host key for hop 2 of host 2, which has no such hop"),
    "a key for hop -1": (p.KeyLearned(REQ, 2, -1, KEY),
                         "it sent a host key for hop -1 of host 2, which has no such hop"),
    "a key that is not one": (p.KeyLearned(REQ, 0, 0, "ssh-ed25519 AAAA"),
                              "it sent a host key for host 0 that is not a public key"),
    "a key with a second line": (p.KeyLearned(REQ, 0, 0, f"{KEY}\n* {KEY}"),
                                 "it sent a host key for host 0 that is not a public key"),
    "a key with a comment": (p.KeyLearned(REQ, 0, 0, f"{KEY} evil"),
                             "it sent a host key for host 0 that is not a public key"),
    "the old frame naming * and a file": (old_form, "it sent a malformed frame"),
    "a result for another worker's host": (p.HostDone(REQ, 1, RawResult(b"", b"", 0)),
                                           "it answered for host 1, which it was not asked about"),
    "a start for another worker's host": (p.Started(REQ, 1), "it answered for host 1, which it was not asked about"),
    "a skip it was not told to make": (p.HostDone(REQ, 0, RawResult(b"", b"", -1, "Skipped")),
                                       "it skipped host 0, which it was not told to skip"),
}


@pytest.mark.parametrize("lie", LIES)
def test_a_worker_answering_for_what_is_not_its_own_is_lost_and_nothing_is_written(run, tmp_path, lie):
    message, reason = LIES[lie]
    results = run(fleet_specs(tmp_path), {0: frames(message(tmp_path) if callable(message) else message)})
    for index in (0, 2):  # the lying worker's hosts
        result = results[index]
        assert result.error == "WorkerLost" and reason in result.stderr, result.stderr
    assert results[1].status == 0  # the other worker's host is answered
    assert files_of(tmp_path) == {}  # no known_hosts file written, and nothing elsewhere


FILE_LIES = {
    "a piece of another worker's host's file": ([(1, b"not yours")], b"", "it sent a file for host 1, which it "
                                                "was not asked for"),
    "a result saying a file that it never sent": ([], frames(p.HostDone(REQ, 0, RawResult(b"", b"", 0))),
                                                  "it finished host 0 without its file"),
}


@pytest.mark.ray
@pytest.mark.parametrize("lie", FILE_LIES)
def test_a_shard_sending_files_that_are_not_its_own_is_lost(ray_run, tmp_path, lie):
    pieces, sent, reason = FILE_LIES[lie]
    out = tmp_path / "out"
    out.mkdir()
    results = ray_run(fleet_specs(tmp_path), {0: (pieces, sent)}, out)
    for index in (0, 2):
        result = results[index]
        assert result.error == "WorkerLost" and reason in result.stderr, result.stderr
    assert results[1].status == 0 and (out / "1").read_bytes() == b"honest"
    assert sorted(path.name for path in out.iterdir()) == ["1"]
