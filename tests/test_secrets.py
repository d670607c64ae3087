"""Passwords and key passphrases never show: not in a repr, a log line at any level (asyncssh's packet
dumps at debug level 3 included), an error message, a traceback or a process's command line.

Every operation and failure path runs with logging at DEBUG; everything printed, logged and written
to stderr (workers write to the caller's) is searched for each secret, as text, as hex and inside
asyncssh's hex dumps, where a secret may be split across lines. The fleet's own password equals its
user name, so the secrets searched for are a wrong password and the encrypted key's passphrases:
they travel (or are used) exactly as a right password would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import traceback
import uuid

import asyncssh
import pytest
import uvloop

from hussh import AuthenticationError, Connection
from hussh._credentials import KeyMaterial
from hussh._spec import ConnectSpec
from hussh.aio import AsyncConnection
from hussh.testing import KEY_PASSPHRASE, KEY_USER, PASSWORD_USER
from procs import run_script

WRONG_PASSWORD = f"wrong-pw-{uuid.uuid4().hex[:12]}"
WRONG_PASSPHRASE = f"wrong-pp-{uuid.uuid4().hex[:12]}"
SECRETS = (WRONG_PASSWORD, WRONG_PASSPHRASE, KEY_PASSPHRASE)
DUMP_LINE = re.compile(r"^\s+[0-9a-f]{8}:((?: [0-9a-f]{2})+)", re.MULTILINE)


def leaks(text: str) -> list[str]:
    """The secrets ``text`` shows in any form, and how."""
    dumped = bytes.fromhex("".join(match.replace(" ", "") for match in DUMP_LINE.findall(text)))
    found = []
    for secret in SECRETS:
        raw = secret.encode()
        forms = {"text": secret in text, "hex": raw.hex() in text.lower(),
                 "spaced hex": " ".join(f"{b:02x}" for b in raw) in text.lower(), "hex dump": raw in dumped}
        found += [f"{secret!r} as {form}" for form, present in forms.items() if present]
    return found


def test_the_search_finds_a_password_split_across_a_packet_dump():
    logger = asyncssh.logging.logger
    record = logger.process("Sent packet", {"extra": {"packet": b"\x00" * 10 + WRONG_PASSWORD.encode()}})[0]
    assert WRONG_PASSWORD not in record.replace("\n", "")  # split by the dump's layout...
    assert leaks(record) == [f"{WRONG_PASSWORD!r} as hex dump"]  # ...and still found


@pytest.fixture
def debug_everything(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="asyncssh")  # hussh keeps it at WARNING unless told
    asyncssh.set_debug_level(3)
    try:
        yield caplog
    finally:
        asyncssh.set_debug_level(1)


def test_single_host_connections_keep_secrets_out_of_reprs_logs_and_errors(fleet, debug_everything, capfd,
                                                                          blackhole, tmp_path, remote_dir):
    host, port = fleet.addresses[0], fleet.port
    key = str(fleet.encrypted_client_key)
    shown: list[str] = []

    def failure(make) -> None:
        try:
            make()
        except Exception as exc:  # noqa: BLE001 - every kind is searched
            shown.extend([repr(exc), str(exc), "".join(traceback.format_exception(exc))])
        else:
            raise AssertionError("expected a failure")

    failure(lambda: Connection(host, port=port, username=PASSWORD_USER, password=WRONG_PASSWORD))
    failure(lambda: Connection(host, port=port, username=KEY_USER, private_key=key, password=WRONG_PASSPHRASE))
    known = tmp_path / "known_hosts"
    known.write_text(f"[{host}]:{port} {fleet.host_public_key(fleet.addresses[1])}\n")
    failure(lambda: Connection(host, port=port, username=PASSWORD_USER, password=WRONG_PASSWORD, known_hosts=known))
    failure(lambda: Connection(blackhole[0], port=blackhole[1], password=WRONG_PASSWORD, connect_timeout=1))
    failure(lambda: Connection("127.0.0.1", port=1, password=WRONG_PASSWORD))
    with Connection(host, port=port, username=KEY_USER, private_key=key, password=KEY_PASSPHRASE) as conn:
        shown += [repr(conn), str(conn), repr(conn.spec), str(conn.spec), repr(conn.execute("echo ok"))]
        conn.sftp_write_data("data", str(remote_dir / "data"))
        shown.append(conn.sftp_read(str(remote_dir / "data")) or "")
        failure(lambda: conn.execute("sleep 5", timeout=100))

    async def async_paths() -> None:
        conn = AsyncConnection(host, port=port, username=KEY_USER, private_key=key, password=KEY_PASSPHRASE)
        async with conn:
            shown.extend([repr(conn), str(conn), repr(await conn.execute("true"))])
        wrong = AsyncConnection(host, port=port, username=PASSWORD_USER, password=WRONG_PASSWORD)
        with pytest.raises(AuthenticationError) as info:
            await wrong.connect()
        shown.extend([repr(wrong), repr(info.value), "".join(traceback.format_exception(info.value))])

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(async_paths(), 60))
    spec = ConnectSpec("h", password=WRONG_PASSWORD)
    shown += [repr(spec), str(spec), repr(list(spec.__rich_repr__())), repr(KeyMaterial(WRONG_PASSPHRASE.encode())),
              repr(list(KeyMaterial(WRONG_PASSPHRASE.encode()).__rich_repr__()))]
    captured = capfd.readouterr()
    logged = debug_everything.text
    assert "Sent MSG_USERAUTH_REQUEST" in logged  # the packet log ran: a password would have been there
    assert any("Trying password auth" in r.getMessage() for r in debug_everything.records)
    assert leaks("\n".join(shown)) == []
    assert leaks(logged) == []
    assert leaks(captured.out + captured.err) == []


SCRIPT = """
    import json, logging, os, sys, threading, traceback
    import asyncssh
    from hussh.multi_conn import MultiConnection
    from hussh import Retry

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # direct-forked workers log here too
    logging.getLogger("asyncssh").setLevel(logging.DEBUG)  # hussh keeps it at WARNING unless told
    asyncssh.set_debug_level(3)
    if os.environ["START"] == "zygote":
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    env = json.loads(os.environ["SECRETS_TEST"])
    hosts, silent = env["hosts"], env["silent"]

    def show(*things):
        for thing in things:
            print(repr(thing), str(thing), flush=True)

    def run(mc, *calls):
        show(mc)
        try:
            for call in calls:
                results = call(mc)
                show(results, *results.items())
            workers = [s.pid for s in mc.shards() if s.pid]
            for pid in workers + sorted({parent(pid) for pid in workers} - {os.getpid()}):  # and the zygote
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    print("cmdline", pid, cmdline.read().replace(b"\\0", b" ").decode(), flush=True)
        finally:
            mc.close()

    def parent(pid):
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])

    def tail(mc):
        with mc.tail("/etc/hostname") as tailer:
            tailer.read()
        return mc.execute("true")

    everything = [lambda mc: mc.connect(), lambda mc: mc.execute("echo ok"),
                  lambda mc: mc.execute("sleep 5", timeout=0.2),
                  lambda mc: mc.sftp_write_data("data", env["remote"] + "/data.{}".format(os.getpid())),
                  lambda mc: mc.sftp_read(env["remote"] + "/data.{}".format(os.getpid())), tail]
    base = dict(port=env["port"], workers=2, connect_timeout=1, retry=Retry(attempts=2, backoff=0))
    run(MultiConnection.from_shared_auth(hosts, username="hussh", password=env["wrong_password"], **base),
        *everything)
    run(MultiConnection.from_shared_auth(hosts, username=env["key_user"], private_key=env["key"],
                                         password=env["passphrase"], **base), *everything)
    run(MultiConnection.from_shared_auth(hosts, username=env["key_user"], private_key=env["key"],
                                         password=env["wrong_passphrase"], **base), *everything)
    run(MultiConnection.from_shared_auth(hosts, username="hussh", password=env["wrong_password"],
                                         known_hosts=env["wrong_known_hosts"], **base), *everything)
    run(MultiConnection.from_shared_auth([silent, "127.0.0.1:1"], password=env["wrong_password"],
                                         **{**base, "port": 22}), *everything)
    try:
        MultiConnection.from_shared_auth(hosts, password=env["wrong_password"], port=70000)
    except ValueError:
        traceback.print_exc()
"""


@pytest.mark.parametrize("start", ["direct", "zygote"])
def test_multiconnection_keeps_secrets_out_of_everything_it_shows(fleet, blackhole, tmp_path, remote_dir, start):
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"[{a}]:{fleet.port} {fleet.host_public_key(fleet.addresses[(i + 1) % 4])}\n"
                             for i, a in enumerate(fleet.addresses)))
    env = {"hosts": fleet.addresses, "port": fleet.port, "silent": "{}:{}".format(*blackhole), "key_user": KEY_USER,
           "key": str(fleet.encrypted_client_key), "passphrase": KEY_PASSPHRASE, "wrong_password": WRONG_PASSWORD,
           "wrong_passphrase": WRONG_PASSPHRASE, "wrong_known_hosts": str(known), "remote": str(remote_dir)}
    proc = run_script(SCRIPT, {"SECRETS_TEST": json.dumps(env), "START": start})
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "AuthenticationError" in out and "HostKeyError" in out and "ConnectTimeout" in out
    assert "CommandTimeout" in out and "ConnectError" in out and "cmdline" in out
    if start == "direct":  # the workers inherited the logging set-up and wrote asyncssh's packet dumps
        assert "Sent MSG_USERAUTH_REQUEST" in err and "Sent MSG_CHANNEL_REQUEST" in err
    assert leaks(out) == []
    assert leaks(err) == []
