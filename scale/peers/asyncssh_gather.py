"""Plain asyncssh on one event loop: ``asyncio.gather`` of every host under ``Semaphore(batch)``.

Each host: ``asyncssh.connect(host, port, username, password, known_hosts=None)``, ``true``,
``whoami``, close. ``--uvloop`` runs the same code on uvloop instead of asyncio's default loop.
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

import asyncio

run = parse_args(__doc__, lambda parser: parser.add_argument(
    "--uvloop", action="store_true", help="run on uvloop instead of asyncio's default loop"))
use_uvloop = run.options.uvloop

import asyncssh  # noqa: E402

run.mark("imported")
auth = {"password": run.password} if run.password is not None else {"client_keys": [run.key]}


async def one(sem: asyncio.Semaphore, host: str, port: int) -> tuple[int | None, int | None, str | None, str | None]:
    async with sem:
        try:
            async with asyncssh.connect(host, port, username=run.user, known_hosts=None, **auth) as conn:
                first = await conn.run("true")
                second = await conn.run("whoami")
            return first.exit_status, second.exit_status, second.stdout, None
        except Exception as exc:  # noqa: BLE001 - a host's failure is its result
            return None, None, None, f"{type(exc).__name__}: {exc}"


async def main() -> list[tuple[int | None, int | None, str | None, str | None]]:
    sem = asyncio.Semaphore(run.batch)
    return await asyncio.gather(*(one(sem, t.host, t.port) for t in run.targets))


if use_uvloop:
    import uvloop

    results = uvloop.run(main())
else:
    results = asyncio.run(main())
run.mark("closed")

tally = Tally(run)
for target, (a, b, out, error) in zip(run.targets, results):
    tally.host(target.name, a, b, out, error)
tally.report("asyncssh-uvloop" if use_uvloop else "asyncssh", asyncssh.__version__)
