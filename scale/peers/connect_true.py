"""Connect + ``true`` + close on every target through one library: this project, upstream hussh or parallel-ssh.

    python connect_true.py --tool hussh|upstream|pssh --targets FILE --user U --key K [--batch N] [--again]

``--batch 0`` leaves the tool's own default concurrency; ``--again`` runs ``true`` a second time on
the live connections (the round-trip table's "execute on a live connection"). Marks: ``connected``
(hussh, upstream), ``true``, ``again``, ``closed``; parallel-ssh connects inside its first
``run_command``. Run in the tool's venv (upstream hussh shares this project's import name).
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

import os
import sys
from importlib.metadata import version


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--tool", choices=("hussh", "upstream", "pssh"), required=True)
    parser.add_argument("--again", action="store_true", help="a second `true` on the live connections")


run = parse_args(__doc__, _options)
tool, again = run.options.tool, run.options.again
batch = {"batch_size": run.batch} if run.batch > 0 else {}
port = run.common_port or 22
tally = Tally(run)


def library_run() -> dict[str, str | None]:
    """hussh or upstream hussh: each host's error (None: `true` exited 0 every time)."""
    if tool == "hussh":  # the working tree, not an installed copy
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        auth = {"password": run.password} if run.password is not None else {"private_key": run.key}
    else:
        auth = {"password": run.password} if run.password is not None else {"key_path": run.key}
    from hussh.multi_conn import MultiConnection

    run.mark("imported")
    mc = MultiConnection.from_shared_auth(run.hosts, username=run.user, port=port, **batch, **auth)
    errors: dict[str, str | None] = dict.fromkeys(run.hosts)
    with mc:
        run.mark("connected")
        for mark in ("true", "again") if again else ("true",):
            results = mc.execute("true")
            run.mark(mark)
            for host in run.hosts:
                result = results.get(host, None)
                if errors[host] is None and (result is None or result.status != 0):
                    errors[host] = "no result" if result is None else f"exit {result.status}: {result.stderr[:200]}"
    run.mark("closed")
    return errors


def pssh_run() -> dict[str, str | None]:
    """parallel-ssh at its defaults (retries included) but for the agent: each host's error."""
    from pssh.clients import ParallelSSHClient

    run.mark("imported")
    auth = {"password": run.password} if run.password is not None else {"pkey": run.key}
    pool = {"pool_size": run.batch} if run.batch > 0 else {}
    client = ParallelSSHClient(run.hosts, user=run.user, port=port, allow_agent=False, **pool, **auth)
    errors: dict[str, str | None] = dict.fromkeys(run.hosts)
    for mark in ("true", "again") if again else ("true",):
        output = client.run_command("true", stop_on_errors=False)
        client.join(output)
        run.mark(mark)
        for host_out in output:
            if errors[host_out.host] is None:
                if host_out.exception is not None:
                    errors[host_out.host] = f"{type(host_out.exception).__name__}: {host_out.exception}"
                elif host_out.exit_code != 0:
                    errors[host_out.host] = f"exit {host_out.exit_code}"
    for host_client in list(client._host_clients.values()):  # no public disconnect-all
        host_client._disconnect()
    client._host_clients.clear()
    run.mark("closed")
    return errors


name = {"hussh": "hussh", "upstream": "hussh", "pssh": "parallel-ssh"}[tool]
VERSION = version(name) if tool != "hussh" else "working tree"  # read before descriptors run out
try:
    outcome = pssh_run() if tool == "pssh" else library_run()
except Exception as exc:  # noqa: BLE001 - a failure of the whole call fails every host, reported as such
    outcome = dict.fromkeys(run.hosts, f"the whole call raised {type(exc).__name__}: {exc}")
for host, error in outcome.items():
    tally.check(host, error is None, error)
tally.report(tool, VERSION, batch=run.batch or "default")
