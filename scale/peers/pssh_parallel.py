"""parallel-ssh (libssh2 + gevent): ``ParallelSSHClient`` -> ``true``, ``whoami``, disconnect.

parallel-ssh connects inside ``run_command``; its defaults are kept (``num_retries=3``,
``retry_delay=5``), as a user would get them, except ``allow_agent=False`` (the bench's
environment has no agent anyway). ``stop_on_errors=False`` so one host's failure is that host's
result instead of an exception ending the run.
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

from importlib.metadata import version


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--proxy", help="bastion as user@host:port (parallel-ssh's proxy_host and friends)")
    parser.add_argument("--proxy-key", help="private key of the bastion login")


run = parse_args(__doc__, _options)
VERSION = version("parallel-ssh")  # read now: once every descriptor is in use, reading package metadata fails

from pssh.clients import ParallelSSHClient  # noqa: E402
from pssh.config import HostConfig  # noqa: E402

run.mark("imported")
auth = {"password": run.password} if run.password is not None else {"pkey": run.key}
port = run.common_port
host_config = None if port is not None else [HostConfig(port=t.port, user=run.user, **auth) for t in run.targets]
proxy = {}
if run.options.proxy:
    proxy_user, _, proxy_target = run.options.proxy.rpartition("@")
    proxy_host, _, proxy_port = proxy_target.rpartition(":")
    proxy = {"proxy_host": proxy_host, "proxy_port": int(proxy_port), "proxy_user": proxy_user,
             "proxy_pkey": run.options.proxy_key}
client = ParallelSSHClient(run.hosts, user=run.user, port=port or 22, pool_size=run.batch,
                           host_config=host_config, allow_agent=False, **auth, **proxy)


def execute(command: str) -> list[tuple[int | None, str, str | None]]:
    """(exit code, stdout, error) per host, in host order."""
    output = client.run_command(command, stop_on_errors=False)
    client.join(output)
    results = []
    for host_out in output:
        if host_out.exception is not None:
            results.append((None, "", f"{type(host_out.exception).__name__}: {host_out.exception}"))
        else:
            stdout = "\n".join(host_out.stdout or ())
            results.append((host_out.exit_code, stdout, None))
    return results


try:
    first = execute("true")
    run.mark("true")
    second = execute("whoami")
    run.mark("whoami")
except Exception as exc:  # noqa: BLE001 - a failure of the whole call fails every host
    tally = Tally(run)
    for target in run.targets:
        tally.host(target.name, None, None, None, f"the whole call raised {type(exc).__name__}: {exc}")
    tally.report("pssh" + ("-proxy" if proxy else ""), VERSION)
    raise SystemExit(0) from None
for host_client in list(client._host_clients.values()):  # pssh has no public disconnect-all
    host_client._disconnect()
client._host_clients.clear()
run.mark("closed")

tally = Tally(run)
for target, (a_status, _, a_err), (b_status, b_out, b_err) in zip(run.targets, first, second):
    tally.host(target.name, a_status, b_status, b_out, a_err or b_err)
tally.report("pssh" + ("-proxy" if proxy else ""), VERSION)
