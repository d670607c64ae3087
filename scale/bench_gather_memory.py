"""Peak memory of the caller and of each worker when every host prints the same large output.

    python -m scale.bench_gather_memory [--hosts 200] [--mb 6.7] [--ways cli,library] [--port 2571]

Every host runs ``head -c N FILE`` on one file shared by all (so all outputs are identical), through
``hussh run -b`` (gathering: each distinct output printed once) and through the library
(``MultiConnection.execute``). Each way runs in a fresh process; this one samples the VmHWM of that
process and of every worker below it until it exits (workers exit with it, so they are sampled
while alive: their VmHWM only grows, so the last sample is the peak). Issue 22 measured one worker
at 1.3 GB for 200 hosts x 6.7 MB with ``-g`` (now ``-b``) and the caller at 69 MB; with outputs alike
held once and the call's output budget charged once for them, every host succeeds (99 of 200 failed
with ``OutputLimitExceeded`` before) and each of 2 workers peaks at about 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hussh.testing import KEY_USER, LoopbackFleet, loopback_addresses
from scale.bench_hostile_output import descendants

REPO = Path(__file__).resolve().parent.parent

LIBRARY = """
import sys
from hussh.multi_conn import MultiConnection
hosts, port, user, key, command = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mc = MultiConnection.from_shared_auth(hosts, username=user, private_key=key, port=port, host_key_checking="off")
with mc:
    results = mc.execute(command)
print(len({r.stdout for r in results.values()}), sum(r.status == 0 for r in results.values()))
"""


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident memory of ``pid`` in KiB, or ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def watch(argv: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run ``argv``; sample its and its workers' peaks every 20 ms until it exits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=REPO)
        caller = 0
        workers: dict[int, int] = {}
        started = time.monotonic()
        while proc.poll() is None:
            caller = max(caller, vm_hwm_kib(proc.pid) or 0)
            try:
                below = descendants(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                below = []
            for pid in below:
                workers[pid] = max(workers.get(pid, 0), vm_hwm_kib(pid) or 0)
            time.sleep(0.02)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return {"exit": proc.returncode, "wall": round(wall, 1), "caller_mib": round(caller / 1024),
                "workers_mib": sorted((round(kib / 1024) for kib in workers.values()), reverse=True),
                "stdout_bytes": len(out.read()), "stderr_tail": err.read()[-300:].decode(errors="replace")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scale.bench_gather_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--mb", type=float, default=6.7, help="output per host, in MB (10**6 bytes)")
    parser.add_argument("--ways", default="cli,library", help="cli (hussh run -b), library; comma-separated")
    parser.add_argument("--port", type=int, default=2291)
    parser.add_argument("--octet", type=int, default=93, help="fleet addresses are 127.<octet>.0.x")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hussh-gather-"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> int:
    """Both ways against one fleet, the shared file and the home in ``work``."""
    size = int(args.mb * 1_000_000)
    shared = work / "output"
    shared.write_bytes(b"hussh gathering output line\n" * (size // 28 + 1))
    shared.chmod(0o644)
    work.chmod(0o755)
    command = f"head -c {size} {shared}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(work)}
    with LoopbackFleet(loopback_addresses(args.hosts, args.octet), port=args.port) as fleet:
        key = str(fleet.credentials.client_key)
        names = work / "hosts"
        names.write_text("\n".join(fleet.addresses) + "\n")
        ways = {
            "cli": [sys.executable, "-m", "hussh", "run", "-b", "--hostfile", str(names), "--port", str(args.port),
                    "-l", KEY_USER, "-i", key, "-o", "StrictHostKeyChecking=no", command],
            "library": [sys.executable, "-c", LIBRARY, ",".join(fleet.addresses), str(args.port), KEY_USER, key,
                        command],
        }
        for way in args.ways.split(","):
            row = {"way": way, "hosts": args.hosts, "bytes_per_host": size, **watch(ways[way], env)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
