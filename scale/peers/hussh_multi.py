"""This project: ``MultiConnection.from_shared_auth`` -> connect, ``true``, ``whoami``, close.

Run with the project's venv; the working tree's ``hussh`` (repo root) is imported, not an
installed copy. ``--experiments a,b`` first applies candidate optimizations from
``_experiments.py`` (patches in this parent process, inherited by the forked workers).
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

import os
import sys


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--experiments", default="", help="comma-separated names from _experiments.EXPERIMENTS")
    parser.add_argument("--workers", type=int, help="worker processes (default: hussh's choice)")
    parser.add_argument("--jump", help="bastion as user@host:port (proxy_jump), logged in to with --jump-key")
    parser.add_argument("--jump-key", help="private key of the bastion login")


run = parse_args(__doc__, _options)
experiments = [e for e in run.options.experiments.split(",") if e]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if experiments:
    import _experiments

import hussh  # noqa: E402
from hussh.multi_conn import MultiConnection  # noqa: E402

if experiments:
    _experiments.apply(experiments)
run.mark("imported")
port = run.common_port
names = run.hosts if port is not None else [t.name for t in run.targets]
auth = {"password": run.password} if run.password is not None else {"private_key": run.key}
options: dict[str, object] = {"workers": run.options.workers} if run.options.workers else {}
if run.options.jump:
    from hussh.aio import AsyncConnection

    jump_user, _, jump_target = run.options.jump.rpartition("@")
    jump_host, _, jump_port = jump_target.rpartition(":")
    options["proxy_jump"] = AsyncConnection(jump_host, username=jump_user, private_key=run.options.jump_key,
                                            port=int(jump_port))
mc = MultiConnection.from_shared_auth(names, username=run.user, port=port or 22, batch_size=run.batch,
                                      **auth, **options)
tally = Tally(run)
try:
    with mc:
        run.mark("connected")
        first = mc.execute("true")
        run.mark("true")
        second = mc.execute("whoami")
        run.mark("whoami")
        workers = mc._pool.count if mc._pool else None
except Exception as exc:  # noqa: BLE001 - a failure of the whole call fails every host, reported as such
    for name in names:
        tally.host(name, None, None, None, f"the whole call raised {type(exc).__name__}: {exc}")
    tally.report("hussh", hussh.__version__, experiments=experiments)
    raise SystemExit(0) from None
run.mark("closed")

for name in names:
    a, b = first[name], second[name]
    error = None
    if a.status != 0:
        error = a.stderr or None
    elif b.status != 0:
        error = b.stderr or None
    tally.host(name, a.status, b.status, b.stdout, error)
tally.report("hussh" + "".join(f"+{e}" for e in experiments), hussh.__version__,
             workers=workers, experiments=experiments)
