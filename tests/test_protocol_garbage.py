"""The pipe protocol under garbage, both directions: truncated frames, random bytes, unknown tags, length
headers claiming gigabytes, frames for calls or hosts that do not exist.

``FrameDecoder`` (used by both sides) is checked property by property; then a real worker process is
fed garbage on its request pipe (it must exit, never hang or buffer without bound) and the parent's
pool is fed garbage by a stand-in worker (its hosts fail with ``WorkerLost``, the call returns).
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading
import time
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hussh import SSHResult
from hussh._result import RawResult
from hussh._spec import ConnectSpec
from hussh.workers import _spawn
from hussh.workers import protocol as p
from hussh.workers.pool import WorkerPool, _Worker
from procs import rss_kib

ENCODER = msgspec.msgpack.Encoder()
ints = st.integers(min_value=0, max_value=2**31)
texts = st.text(max_size=40)
replies = st.one_of(
    st.builds(p.HostDone, ints, ints, st.builds(RawResult, st.binary(max_size=40), st.binary(max_size=40),
                                                st.integers(-1, 255), texts, texts),
              st.floats(0, 1e6)),
    st.builds(p.KeyLearned, ints, ints, ints, texts),
    st.builds(p.Output, ints, ints, st.binary(max_size=40)),
    st.builds(p.Alive, ints),
    st.builds(p.CallDone, ints),
)
requests = st.one_of(
    st.builds(p.Execute, ints, st.lists(st.tuples(ints, texts), max_size=5)),
    st.builds(p.Connect, ints, st.lists(ints, max_size=5)),
    st.builds(p.WriteData, ints, st.lists(ints, max_size=5), st.binary(max_size=200), texts),
    st.builds(p.TailRead, ints, st.lists(ints, max_size=5)),
    st.builds(p.TailFollow, ints, st.lists(st.tuples(ints, texts), max_size=5)),
    st.builds(p.Close, ints, st.lists(ints, max_size=5)),
    st.just(p.Shutdown()),
)
SIDES: dict[str, tuple[Any, st.SearchStrategy[Any], int]] = {
    "parent": (p.Reply, replies, 1 << 16), "worker": (p.Request, requests, p.MAX_REQUEST)}


def frames(messages: list[object]) -> bytes:
    return b"".join(p.frame(ENCODER.encode(m)) for m in messages)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def unknown_tag(tag: str, req: int) -> bytes:
    return p.frame(msgspec.msgpack.encode([tag, req]))


@pytest.mark.parametrize("side", SIDES)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), cuts=st.lists(st.integers(0, 1 << 16), max_size=20))
def test_valid_frames_come_out_whole_however_the_pipe_splits_them(side, data, cuts):
    kind, messages, limit = SIDES[side]
    sent = data.draw(st.lists(messages, max_size=12))
    decoder = p.FrameDecoder(kind, limit)
    received = [m for chunk in split(frames(sent), cuts) for m in decoder.feed(chunk)]
    assert received == sent and decoder.error == "" and not decoder.buffer


@settings(max_examples=300)
@example(side="parent", garbage=b"\xff\xff\xff\xff" + b"x" * 100, cuts=[])  # a header claiming 4 GiB
@example(side="worker", garbage=b"\x40\x00\x00\x01", cuts=[])  # 1 GiB + 1: one byte over the limit
@example(side="parent", garbage=b"\x00\x00\x00\x03\xc1\xc1\xc1", cuts=[5])  # 0xc1 is never msgpack
@example(side="worker", garbage=unknown_tag("Reboot", 1), cuts=[2])
@example(side="parent", garbage=unknown_tag("Execute", 1), cuts=[])  # a request where a reply belongs
@given(side=st.sampled_from(sorted(SIDES)), garbage=st.binary(max_size=4096),
       cuts=st.lists(st.integers(0, 4096), max_size=10))
def test_garbage_never_raises_never_buffers_past_one_frame_and_stops_the_decoder(side, garbage, cuts):
    kind, _, limit = SIDES[side]
    decoder = p.FrameDecoder(kind, limit)
    for chunk in split(garbage, cuts):
        for message in decoder.feed(chunk):
            assert isinstance(message, p.Request if side == "worker" else p.Reply)
        if decoder.error:
            assert not decoder.buffer and decoder.feed(frames([p.Shutdown()])) == []  # nothing more, ever
            break
        if len(decoder.buffer) >= p.HEADER.size:
            (size,) = p.HEADER.unpack_from(decoder.buffer)
            assert size <= limit and len(decoder.buffer) < p.HEADER.size + size  # one unfinished frame at most


@settings(max_examples=100)
@given(sent=st.lists(replies, min_size=1, max_size=5), garbage=st.binary(min_size=1, max_size=200))
def test_frames_before_garbage_are_delivered(sent, garbage):
    decoder = p.FrameDecoder(p.Reply, 1 << 16)
    assert decoder.feed(frames(sent) + garbage)[: len(sent)] == sent


@pytest.mark.parametrize("claimed, expected", [(2**32 - 1, "a frame of 4294967295 bytes, more than the 100 allowed"),
                                               (101, "a frame of 101 bytes, more than the 100 allowed")])
def test_a_header_over_the_limit_is_refused_before_its_payload_arrives(claimed, expected):
    decoder = p.FrameDecoder(p.Reply, 100)
    assert decoder.feed(struct.pack(">I", claimed)) == []
    assert decoder.error == expected and not decoder.buffer


# ------------------------------------------------------------------ a real worker fed garbage

class LiveWorker:
    """A worker process started as the pool starts one, with the test holding the parent's pipe ends."""

    def __init__(self) -> None:
        to_child_r, self.requests = os.pipe()
        self.replies, from_child_w = os.pipe()
        try:
            self.process = _spawn.start(to_child_r, from_child_w)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.received = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.replies, 1 << 16):
            self.received += chunk

    def send(self, data: bytes) -> bool:
        """Write ``data``; False if the worker stopped reading (it exited)."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.requests, view):]
        except BrokenPipeError:
            return False
        return True

    def hang_up(self) -> None:
        if self.requests >= 0:
            os.close(self.requests)
            self.requests = -1

    def exits_within(self, seconds: float) -> bool:
        return self.process.exited(seconds)

    def stop(self) -> None:
        self.hang_up()
        if not self.process.exited(5):
            self.process.kill()
            self.process.exited(5)
        self.process.reap()
        self.reader.join(timeout=5)
        os.close(self.replies)


@pytest.fixture
def live_worker():
    started: list[LiveWorker] = []

    def start() -> LiveWorker:
        started.append(LiveWorker())
        return started[-1]

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(garbage=b"\xff\xff\xff\xff")
@example(garbage=unknown_tag("Reboot", 1))
@example(garbage=frames([p.Execute(1, [(7, "true")])]))  # a host this worker was never given
@example(garbage=frames([p.TailRead(9, [0])]) + b"\x00\x00")  # a call for a tailer of nobody, then half a header
@given(garbage=st.binary(max_size=2048))
def test_a_worker_fed_garbage_exits_and_answers_only_in_frames(live_worker, garbage):
    worker = live_worker()
    worker.send(garbage)
    worker.hang_up()  # whatever the garbage was, end of file must end the worker
    assert worker.exits_within(10), "the worker hung on garbage"
    worker.reader.join(timeout=5)
    decoder = p.FrameDecoder(p.Reply, 1 << 20)
    decoder.feed(bytes(worker.received))
    assert decoder.error == "" and not decoder.buffer  # it never answers with garbage of its own


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", unknown_tag("Reboot", 1),
                                     frames([p.Execute(1, [(7, "true")])]), b"\x00\x00\x00\x02\xc1\xc1"],
                         ids=["4 GiB header", "unknown tag", "host not given", "malformed"])
def test_a_worker_stops_by_itself_on_what_cannot_be_a_request(live_worker, garbage):
    worker = live_worker()
    worker.send(garbage)
    assert worker.exits_within(10), "the worker kept waiting after garbage"


def test_a_worker_buffers_a_big_request_only_as_it_arrives(live_worker):
    worker = live_worker()
    before = rss_kib(worker.process.pid)
    assert worker.send(struct.pack(">I", p.MAX_REQUEST) + b"\x00" * (1 << 20))  # claims 1 GiB, sends 1 MiB
    assert not worker.exits_within(0.5)  # a legitimate, unfinished request: it waits for the rest...
    assert rss_kib(worker.process.pid) - before < 64 * 1024  # ...holding what came, not what was claimed
    worker.hang_up()
    assert worker.exits_within(10)


# ------------------------------------------------------------------ the parent fed garbage

class StandIn:
    """A worker slot whose process just sleeps and whose replies the test writes."""

    def __init__(self, pool: WorkerPool) -> None:
        self.sleeper = subprocess.Popen(["sleep", "600"])
        requests_r, requests_w = os.pipe()
        replies_r, self.replies = os.pipe()
        self.requests = requests_r
        process = _spawn.Process(self.sleeper.pid, os.pidfd_open(self.sleeper.pid), None)
        pool.workers[0] = _Worker(process, requests_w, replies_r, pool.max_reply)

    def write_and_hang_up(self, data: bytes) -> None:
        try:
            os.write(self.replies, data) if data else None
        except BrokenPipeError:
            pass
        os.close(self.replies)

    def close(self) -> None:
        os.close(self.requests)
        if self.sleeper.poll() is None:  # the pool killed and reaped it when it lost the worker
            self.sleeper.kill()
            self.sleeper.wait()


def garbage_call(garbage: bytes, hosts: int = 3) -> dict[int, SSHResult]:
    pool = WorkerPool([ConnectSpec(f"h{i}") for i in range(hosts)], batch_size=10, workers=1)
    stand_in = StandIn(pool)
    writer = threading.Thread(target=stand_in.write_and_hang_up, args=(garbage,))
    writer.start()
    try:
        started = time.monotonic()
        results, _ = pool.call(lambda req, idx, budget: p.Execute(req, [(i, "true") for i in idx]), range(hosts))
        assert time.monotonic() - started < 10
        writer.join(timeout=10)
        assert pool.workers[0] is None  # lost, to be replaced on the next call
        return results
    finally:
        stand_in.close()


@settings(max_examples=60, deadline=None)
@example(garbage=b"\xff\xff\xff\xff" + b"\x00" * 64)
@example(garbage=frames([p.HostDone(0, 1, RawResult(b"from a call long gone", b"", 0))]))  # stale: ignored
@example(garbage=frames([p.HostDone(1, 99, RawResult(b"not asked", b"", 0))]))  # a host outside the call
@example(garbage=frames([p.Alive(1)]) + unknown_tag("Bogus", 1))
@example(garbage=frames([p.HostDone(1, 0, RawResult(b"ok", b"", 0))])[:-3])  # truncated, then the pipe closes
@example(garbage=frames([p.Output(1, 0, b"a command streams nothing")]))
@given(garbage=st.binary(max_size=8192))
def test_the_parent_fails_a_garbling_worker_with_workerlost_and_returns(garbage):
    results = garbage_call(garbage)
    assert sorted(results) == [0, 1, 2]
    for result in results.values():
        assert result.status == -1 and result.error == "WorkerLost"
        assert result.stderr.startswith("WorkerLost: worker process lost before this host finished: it ")


def test_the_parent_names_what_was_wrong():
    said = {garbage: garbage_call(garbage)[0].stderr for garbage in (
        b"\xff\xff\xff\xff", unknown_tag("Bogus", 1), frames([p.HostDone(1, 99, RawResult(b"", b"", 0))]), b"",
        frames([p.Output(1, 0, b"")]), frames([p.Output(1, 99, b"")]))}
    assert "it sent a frame of 4294967295 bytes, more than the" in said[b"\xff\xff\xff\xff"]
    assert "it sent a malformed frame" in said[unknown_tag("Bogus", 1)]
    stray = frames([p.HostDone(1, 99, RawResult(b"", b"", 0))])
    assert "it answered for host 99, which it was not asked about" in said[stray]
    assert "it exited" in said[b""]
    assert "it sent output for host 0 in a call that streams none" in said[frames([p.Output(1, 0, b"")])]
    assert "it answered for host 99, which it was not asked about" in said[frames([p.Output(1, 99, b"")])]
