"""parallel-ssh through the workloads it has an API for: ``rounds``, ``sftp-write``, ``outputs``.

It has no in-memory SFTP read and no tailer, so ``sftp-read`` and ``tail`` are not offered here.
``connect_auth()`` connects every host first (as the hussh runners' ``with mc:`` does); its
defaults are kept (``num_retries=3``, ``retry_delay=5``) except ``allow_agent=False``, and
``stop_on_errors=False`` so one host's failure is that host's result.
"""

from _common import Tally, parse_args, timed_rounds, tree_cpu, tree_pss_kib  # first: marks the runner's start

# isort: split

import time
from importlib.metadata import version


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--workload", choices=("rounds", "sftp-write", "outputs"), required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local")
    parser.add_argument("--remote")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--command")


run = parse_args(__doc__, _options)
opts = run.options
VERSION = version("parallel-ssh")  # read now: once every descriptor is in use, reading package metadata fails

from gevent import joinall  # noqa: E402
from pssh.clients import ParallelSSHClient  # noqa: E402

run.mark("imported")
auth = {"password": run.password} if run.password is not None else {"pkey": run.key}
client = ParallelSSHClient(run.hosts, user=run.user, port=run.common_port or 22, pool_size=run.batch,
                           allow_agent=False, **auth)
tally = Tally(run)
extra: dict[str, object] = {"workload": opts.workload}


def execute(command: str) -> dict[str, tuple[int | None, str, str | None]]:
    """host -> (exit code, stdout, error)."""
    output = client.run_command(command, stop_on_errors=False)
    client.join(output)
    results = {}
    for host_out in output:
        if host_out.exception is not None:
            results[host_out.host] = (None, "", f"{type(host_out.exception).__name__}: {host_out.exception}")
        else:
            results[host_out.host] = (host_out.exit_code, "\n".join(host_out.stdout or ()), None)
    return results


def error_of(result: tuple[int | None, str, str | None] | None) -> str | None:
    if result is None:
        return "no result for this host"
    status, _, error = result
    return error or (None if status == 0 else f"exit status {status}")


def rounds() -> None:
    extra.update(timed_rounds(run, tally, opts.rounds, lambda: execute("true"),
                              lambda results, host: error_of(results.get(host))))


def sftp_write() -> None:
    cpu, wall = tree_cpu(), time.perf_counter()
    greenlets = client.copy_file(opts.local, opts.remote)
    joinall(greenlets, raise_error=False)
    extra.update(transfer_s=time.perf_counter() - wall, transfer_cpu_s=tree_cpu() - cpu)
    run.mark("transfer")
    errors = {}
    for host, greenlet in zip(run.hosts, greenlets):
        if greenlet.exception is not None:
            errors[host] = f"{type(greenlet.exception).__name__}: {greenlet.exception}"
    for host in run.hosts:
        tally.check(host, host not in errors, errors.get(host))


def outputs() -> None:
    cpu, wall = tree_cpu(), time.perf_counter()
    results = execute(opts.command)
    extra.update(execute_s=time.perf_counter() - wall, execute_cpu_s=tree_cpu() - cpu,
                 stdout_chars=sum(len(stdout) for _, stdout, _ in results.values()))
    run.mark("execute")
    for host in run.hosts:
        error = error_of(results.get(host))
        # lines joined without their last newline
        if error is None and len(results[host][1]) < opts.size - opts.size // 50:
            error = f"printed {len(results[host][1])} characters, expected about {opts.size}"
        tally.check(host, error is None, error)


try:
    joinall(client.connect_auth(), raise_error=False)  # a host that failed here fails again, as its result
    run.mark("connected")
    extra["pss_connected_kib"] = tree_pss_kib()
    {"rounds": rounds, "sftp-write": sftp_write, "outputs": outputs}[opts.workload]()
    extra["pss_end_kib"] = tree_pss_kib()
except Exception as exc:  # noqa: BLE001 - a failure of the whole call fails every host
    tally = Tally(run)
    for host in run.hosts:
        tally.check(host, False, f"the whole call raised {type(exc).__name__}: {exc}")
for host_client in list(client._host_clients.values()):  # pssh has no public disconnect-all
    host_client._disconnect()
client._host_clients.clear()
run.mark("closed")
tally.report("pssh", VERSION, **extra)
