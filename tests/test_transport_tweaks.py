"""The reaches into asyncssh internals (hussh/_asyncssh_internals.py) still take effect against real sshd.

Each tweak degrades to asyncssh's own behaviour when the private names it relies on are gone; these
tests fail when that happens silently: packets and transport writes of real logins are recorded
where they leave asyncssh (its base ``send_packet``) and compared with what hussh meant to send.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import os
import re
import tomllib
from pathlib import Path

import asyncssh
import pytest
import uvloop
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_USERAUTH_REQUEST
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, String

from hussh import _asyncssh_internals as internals
from hussh.aio import AsyncConnection
from hussh.testing import KEY_USER, PASSWORD, PASSWORD_USER

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sent(monkeypatch) -> list[tuple[int, bytes]]:
    """Every packet asyncssh actually sends (type, payload), recorded below hussh's own send_packet."""
    packets: list[tuple[int, bytes]] = []
    send = SSHConnection.send_packet

    def recording(self, pkttype, *args, handler=None):
        packets.append((pkttype, b"".join(args)))
        return send(self, pkttype, *args, handler=handler)

    monkeypatch.setattr(SSHConnection, "send_packet", recording)
    return packets


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, 30))


def auth_methods(packets: list[tuple[int, bytes]]) -> list[bytes]:
    """The method of every login request sent (user, service, method are its first three strings)."""
    methods = []
    for pkttype, payload in packets:
        if pkttype == MSG_USERAUTH_REQUEST:
            packet = SSHPacket(payload)
            packet.get_string(), packet.get_string()
            methods.append(packet.get_string())
    return methods


def test_the_tested_asyncssh_is_installed_and_every_tweak_is_on():
    assert internals.VERSION_TESTED, f"asyncssh {asyncssh.__version__} is outside {internals.TESTED_RANGE}"
    assert internals.CORK_AVAILABLE and internals.SKIP_NONE_PROBE_AVAILABLE and internals.HIDE_AUTH_AVAILABLE
    assert internals.CONFIG_CACHE_AVAILABLE
    assert internals.GCM_REUSE_AVAILABLE and internals.AWAITABLE_SHORTCUT_AVAILABLE and internals.SFTP_TASKS_AVAILABLE
    assert internals.SFTP_START_AVAILABLE and internals.SFTP_PIPELINE_AVAILABLE
    assert internals.SFTP_CLOSE_UNAWAITED_AVAILABLE
    assert getattr(SSHLogger.log, "_hussh", False), "the log speed-ups are not installed"


def test_the_declared_asyncssh_range_is_the_tested_one():
    """pyproject pins what TESTED_RANGE says, and its floor is past the Terrapin fix (2.14.2)."""
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in dependencies if d.startswith("asyncssh"))
    low, high = re.fullmatch(r"asyncssh>=([\d.]+),<([\d.]+)", spec.split(";")[0].strip()).groups()  # type: ignore[union-attr]
    assert (tuple(map(int, low.split("."))), tuple(map(int, high.split(".")))) == internals.TESTED_RANGE
    assert internals.TESTED_RANGE[0] >= (2, 14, 2)


def test_no_empty_ignore_packets_and_fewer_writes_than_packets(fleet, sent):
    async def body() -> int:
        writes = internals.FleetConnection.writes
        async with AsyncConnection(fleet.addresses[0], port=fleet.port, username=PASSWORD_USER,
                                   password=PASSWORD) as conn:
            for _ in range(5):  # stdin's data and its end of file leave in one loop turn: one write
                assert (await conn.execute("cat", input=b"hi\n")).stdout == "hi\n"
        return internals.FleetConnection.writes - writes

    writes = run(body())
    assert (MSG_IGNORE, String(b"")) not in sent  # asyncssh would send one before every encrypted packet
    assert len(sent) > 20  # kex, login, 5 sessions
    assert 0 < writes < len(sent), f"{writes} corked writes for {len(sent)} packets"


def test_packets_of_one_loop_turn_leave_in_one_write(fleet, sent):
    async def body() -> tuple[int, int]:
        async with AsyncConnection(fleet.addresses[0], port=fleet.port, username=PASSWORD_USER,
                                   password=PASSWORD) as conn:
            await conn.execute("true")
            await asyncio.sleep(0)  # let the last turn's flush happen first
            before, count = internals.FleetConnection.writes, len(sent)
            for _ in range(5):  # five packets in this turn (non-empty ignores: sent, and harmless)
                conn._conn.send_packet(MSG_IGNORE, String(b"x"))  # type: ignore[union-attr]
            await asyncio.sleep(0)
            return internals.FleetConnection.writes - before, len(sent) - count

    writes, packets = run(body())
    assert (writes, packets) == (1, 5)


def test_logins_send_no_none_probe_and_a_key_signed_at_once(fleet, sent):
    async def login(**credentials: object) -> list[bytes]:
        sent.clear()
        async with AsyncConnection(fleet.addresses[0], port=fleet.port, **credentials):  # type: ignore[arg-type]
            pass
        return auth_methods(sent)

    assert run(login(username=PASSWORD_USER, password=PASSWORD)) == [b"password"]
    # no "none" probe and no unsigned query first: one request, signed (internals._SignAtOnce)
    assert run(login(username=KEY_USER, private_key=str(fleet.client_key))) == [b"publickey"]


def test_login_packets_are_logged_without_their_bytes(fleet, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncssh")  # hussh keeps it at WARNING unless told
    asyncssh.set_debug_level(3)
    try:
        async def login() -> None:
            async with AsyncConnection(fleet.addresses[0], port=fleet.port, username=PASSWORD_USER,
                                       password=PASSWORD):
                pass
        run(login())
    finally:
        asyncssh.set_debug_level(1)
    lines = [r.getMessage() for r in caplog.records if "MSG_USERAUTH_REQUEST" in r.getMessage()]
    assert lines and all("bytes not shown: may hold a password" in line and "\n" not in line for line in lines)
    assert any("Sent MSG_SERVICE_REQUEST" in r.getMessage() and "\n  00000000:" in r.getMessage()
               for r in caplog.records)  # other packets are still dumped


def test_aes_gcm_packets_are_the_ones_asyncssh_would_make():
    """The AES-GCM object kept per direction encrypts, authenticates and counts IVs as asyncssh's own code."""
    assert asyncssh.crypto.cipher.GCMCipher.encrypt_and_sign is internals._gcm_encrypt_and_sign
    spec = importlib.util.spec_from_file_location("asyncssh_cipher_unpatched", asyncssh.crypto.cipher.__file__)
    assert spec is not None and spec.loader is not None
    unpatched = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unpatched)
    unpatched._cipher_algs.update(asyncssh.crypto.cipher._cipher_algs)
    for name, size in (("aes128-gcm", 16), ("aes256-gcm", 32)):
        key, iv = os.urandom(size), os.urandom(4) + b"\xff" * 7 + b"\xfe"  # the invocation counter wraps
        ours, theirs = asyncssh.crypto.cipher.GCMCipher(name, key, iv), unpatched.GCMCipher(name, key, iv)
        reader, their_reader = asyncssh.crypto.cipher.GCMCipher(name, key, iv), unpatched.GCMCipher(name, key, iv)
        for size_blocks in range(1, 6):
            header, data = os.urandom(4), os.urandom(16 * size_blocks)
            sealed = ours.encrypt_and_sign(header, data)
            assert sealed == theirs.encrypt_and_sign(header, data) and ours._iv == theirs._iv
            assert reader.verify_and_decrypt(header, sealed[0][4:], sealed[1]) == data
            assert their_reader.verify_and_decrypt(header, sealed[0][4:], sealed[1]) == data
        assert reader.verify_and_decrypt(b"\0" * 4, b"x" * 16, b"y" * 16) is None  # forged: refused, IV still moves
        assert their_reader.verify_and_decrypt(b"\0" * 4, b"x" * 16, b"y" * 16) is None
        assert reader._iv == their_reader._iv


def test_the_awaitable_shortcut_answers_as_inspect():
    patched = asyncssh.connection.inspect  # type: ignore[attr-defined]  # the module's own import, patched
    check = patched.isawaitable
    assert isinstance(patched, internals._Inspect)

    class Awaitable:
        def __await__(self):
            yield

    async def coroutine() -> None:
        pass

    pending = coroutine()
    assert [check(v) for v in (True, False, None, 0, "x", Awaitable(), pending)] == [
        False, False, False, False, False, True, True]
    pending.close()
    assert patched.signature is inspect.signature  # the rest is inspect's own


def test_an_abandoned_parallel_sftp_transfer_leaves_no_unretrieved_task_errors(caplog):
    """A transfer given up mid-way (a stall, a deadline, Ctrl-C) leaves asyncssh's request tasks to fail as
    the connection goes: their errors are taken, not logged on the user's terminal once per request."""
    import gc

    class Failing(asyncssh.sftp._SFTPParallelIO[bytes]):  # the class the tweak covers: its own _start_tasks
        async def run_task(self, offset: int, size: int) -> tuple[int, bytes]:
            await asyncio.sleep(0.05)
            raise asyncssh.sftp.SFTPNoConnection("Connection not open")

    async def abandoned() -> None:
        transfer = Failing(1, 4, 0, 8)  # 8 blocks, 4 requests in flight
        step = asyncio.ensure_future(anext(aiter(transfer.iter())))
        await asyncio.sleep(0.01)
        step.cancel()  # the caller gives up while its requests are out
        await asyncio.gather(step, return_exceptions=True)
        await asyncio.wait(set(transfer._pending))  # they fail when the connection closes; nobody reads them

    assert internals.SFTP_TASKS_AVAILABLE  # asyncssh within the tested range
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(abandoned())
        gc.collect()
    assert "never retrieved" not in caplog.text
