"""The library call the ``hussh run`` command wraps, as a short user script would make it: one command on
every host, each output line printed as ``host: line``. ``scale/bench_cli.py`` times it against the command.

    python run_once_hussh.py --targets FILE --port P --user U --key K --batch N COMMAND
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hussh.multi_conn import MultiConnection

parser = argparse.ArgumentParser()
parser.add_argument("--targets", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--batch", type=int, default=100)
parser.add_argument("command")
args = parser.parse_args()
with open(args.targets) as handle:
    hosts = [line.strip() for line in handle if line.strip()]
mc = MultiConnection.from_shared_auth(hosts, username=args.user, private_key=args.key, port=args.port,
                                      batch_size=args.batch)
try:
    results = mc.execute(args.command)
finally:
    mc.close()
out = sys.stdout
for host, result in results.items():
    for line in result.stdout.splitlines():
        out.write(f"{host}: {line}\n")
sys.exit(1 if results.failed else 0)
