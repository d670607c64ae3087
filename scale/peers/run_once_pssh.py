"""parallel-ssh (the library; its package has no command): one command on every host, each output line
printed as ``host: line``, for ``scale/bench_cli.py``. Runs in its own venv; stdlib + parallel-ssh only.

    python run_once_pssh.py --targets FILE --user U --key K --batch N COMMAND
"""

import argparse
import sys

from pssh.clients import ParallelSSHClient

parser = argparse.ArgumentParser()
parser.add_argument("--targets", required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--batch", type=int, default=100)
parser.add_argument("command")
args = parser.parse_args()
with open(args.targets) as handle:
    targets = [line.strip().rpartition(":") for line in handle if line.strip()]
hosts, ports = [t[0] for t in targets], {int(t[2]) for t in targets}
assert len(ports) == 1, "one port for every host"
client = ParallelSSHClient(hosts, user=args.user, pkey=args.key, port=ports.pop(), pool_size=args.batch,
                           allow_agent=False)
output = client.run_command(args.command, stop_on_errors=False)
client.join(output)
failed = 0
for host_out in output:
    if host_out.exception is not None or host_out.exit_code != 0:
        failed += 1
        print(f"{host_out.host}: {host_out.exception}", file=sys.stderr)
        continue
    for line in host_out.stdout:
        sys.stdout.write(f"{host_out.host}: {line}\n")
sys.exit(1 if failed else 0)
