"""Benchmark: resolving N hosts against an ssh config, hussh's cached resolution vs asyncssh's own load.

    python -m scale.bench_config --hosts 10000 --blocks 20 --repeat 5

Writes a config of ``--blocks`` ``Host web<i>-*`` blocks (User, Port, IdentityFile, ProxyJump), an
``Include`` of two more files, a ``Match host`` block and a ``Host *`` block, then times
``MultiConnection.from_shared_auth`` (which resolves every host: config, jump chain, spec) and
asyncssh's ``SSHClientConfig.load`` per host (what ``asyncssh.connect`` does for each connection),
and prints milliseconds per host and their ratio. No network: nothing connects.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from asyncssh.config import SSHClientConfig

from hussh.multi_conn import MultiConnection


def write_config(directory: Path, blocks: int) -> Path:
    included = directory / "conf.d"
    included.mkdir()
    (included / "apps.conf").write_text("Host app-*\n    User app\n    HostName %h.internal\n")
    (included / "dbs.conf").write_text("Host pg-*\n    User postgres\n    Port 5022\n")
    lines = [f"Include {included}/*.conf\n"]
    lines += [f"Host web{i}-*\n    User deploy{i}\n    Port {2200 + i}\n    IdentityFile ~/.ssh/id_{i}\n"
              f"    ProxyJump jump{i % 3}.example\n" for i in range(blocks)]
    lines.append("Match host db*\n    User dbadmin\n")
    lines.append("Host *\n    ServerAliveInterval 30\n    ConnectTimeout 10\n    HashKnownHosts yes\n")
    path = directory / "config"
    path.write_text("".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--blocks", type=int, default=20, help="Host blocks in the config (default 20)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--asyncssh-sample", type=int, default=1000,
                        help="hosts resolved with asyncssh's own loader (it is slow; default 1000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        config = write_config(Path(directory), args.blocks)
        names = [f"web{i % args.blocks}-{i}" for i in range(args.hosts)]
        ours = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            MultiConnection.from_shared_auth(names, password="unused", ssh_config=config)
            ours.append((time.perf_counter() - started) / args.hosts * 1000)
        theirs = []
        sample = names[:args.asyncssh_sample]
        for _ in range(args.repeat):
            started = time.perf_counter()
            for name in sample:
                SSHClientConfig.load(None, [config], False, False, False, "root", (), name, ())
            theirs.append((time.perf_counter() - started) / len(sample) * 1000)
    ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
    print(f"{args.hosts} hosts, config of {args.blocks} Host blocks (+ Include, Match, Host *), {args.repeat} reps:")
    print(f"  hussh from_shared_auth (config + ProxyJump + spec): {ours_ms:.3f} ms/host, "
          f"{ours_ms * args.hosts / 1000:.2f} s for all")
    print(f"  asyncssh SSHClientConfig.load per host:           {theirs_ms:.3f} ms/host, "
          f"{theirs_ms * args.hosts / 1000:.2f} s for all (extrapolated from {len(sample)})")
    print(f"  ratio asyncssh/hussh: {theirs_ms / ours_ms:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
