"""Upstream hussh from PyPI (Rust): ``MultiConnection.from_shared_auth`` -> connect, ``true``, ``whoami``, close.

Run with a venv holding PyPI's ``hussh`` (its own venv: the import name clashes with this project).
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

from importlib.metadata import version

run = parse_args(__doc__)
VERSION = version("hussh")  # read now: once every descriptor is in use, reading package metadata fails

from hussh.aio import AsyncConnection  # noqa: E402
from hussh.multi_conn import MultiConnection  # noqa: E402

run.mark("imported")
port = run.common_port
auth = {"password": run.password} if run.password is not None else {"key_path": run.key}
if port is not None:
    mc = MultiConnection.from_shared_auth(run.hosts, username=run.user, port=port, batch_size=run.batch, **auth)
else:  # from_shared_auth has one port for all: build per-host connections instead
    mc = MultiConnection([AsyncConnection(t.host, username=run.user, port=t.port, **auth) for t in run.targets],
                         batch_size=run.batch)
tally = Tally(run)
try:
    with mc:
        run.mark("connected")
        first = mc.execute("true")
        run.mark("true")
        second = mc.execute("whoami")
        run.mark("whoami")
except Exception as exc:  # noqa: BLE001 - upstream raises for the whole call (e.g. out of descriptors)
    for target in run.targets:
        tally.host(target.name, None, None, None, f"the whole call raised {type(exc).__name__}: {exc}")
    tally.report("upstream", VERSION)
    raise SystemExit(0) from None
run.mark("closed")

for target in run.targets:
    a, b = first.get(target.host, None), second.get(target.host, None)
    if a is None or b is None:
        tally.host(target.name, None, None, None, "no result for this host")
        continue
    error = (a.stderr or None) if a.status != 0 else (b.stderr or None) if b.status != 0 else None
    tally.host(target.name, a.status, b.status, b.stdout, error)
tally.report("upstream", VERSION)
