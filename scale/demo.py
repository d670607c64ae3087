"""The main job on a laptop: start N real sshd endpoints on loopback, run a command on all of them
through ``MultiConnection``, print the summary, tear the fleet down.

    python -m scale.demo --hosts 300 --command 'uptime'
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from hussh.multi_conn import MultiConnection
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses
from scale.ports import first_free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=300, help="loopback SSH endpoints to start (default 300)")
    parser.add_argument("--command", default="echo $(whoami)@$(echo $SSH_CONNECTION | cut -d' ' -f3): $(uptime)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--port", type=int, help="the endpoints' port (default: the first from 2300 up that nothing "
                                                 "listens on, apart from a fleet of the user's or a test run's)")
    args = parser.parse_args()
    args.port = args.port or first_free(range(2300, 2400))

    started = time.monotonic()
    print(f"starting {args.hosts} sshd endpoints on 127.88.x.y:{args.port} ...", flush=True)
    with LoopbackFleet(loopback_addresses(args.hosts, second_octet=88), port=args.port) as fleet:
        print(f"fleet ready in {time.monotonic() - started:.1f}s ({len(fleet.nodes())} sshd processes)")
        ran = time.monotonic()
        with tempfile.TemporaryDirectory() as scratch:  # the fleet's fresh host keys, checked strictly
            known_hosts = fleet.write_known_hosts(Path(scratch) / "known_hosts")
            mc = MultiConnection.from_shared_auth(fleet.addresses, username=PASSWORD_USER, password=PASSWORD,
                                                  port=fleet.port, batch_size=args.batch_size,
                                                  known_hosts=known_hosts, host_key_checking="strict", ssh_config=False)
            with mc:
                results = mc.execute(args.command)
        elapsed = time.monotonic() - ran
    for host, result in list(results.items())[:3]:
        print(f"  {host}: {result.stdout.strip()}")
    if len(results) > 3:
        print(f"  ... and {len(results) - 3} more")
    print(f"{results!r} in {elapsed:.2f}s (connect + command + close, batch_size={args.batch_size})")
    for reason, count in collections.Counter(r.stderr.strip() for r in results.failed.values()).most_common(5):
        print(f"  {count} x {reason}")
    raise SystemExit(0 if not results.failed else 1)


if __name__ == "__main__":
    main()
