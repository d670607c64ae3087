"""Peak memory of ``sftp_read(remote, local_path)`` through the Ray engine (and the local one, to compare).

    python -m scale.ray_files --hosts 20 --mb 50
    python -m scale.ray_files --hosts 20 --mb 50 --engine local

A loopback sshd fleet serves one file of ``--mb`` random megabytes at every address; a one-machine
Ray cluster (127.0.0.1 only, token authentication, as docs/beyond-one-machine.md starts it) runs
one shard with every host: the worst case for an actor, which saves all the files and sends them
back. The call reads the file from every host to a local path of its own. Before the call (hosts
connected, actors started) the peak RSS of the caller and of each worker process or actor is reset
(``/proc/PID/clear_refs``); after it, each one's peak (``VmHWM``) is printed, with the files checked
byte for byte, beside each one's RSS before the call and the peaks of its private memory and
of its shared memory (Ray's object store, mapped by the caller and the actors) sampled every
10 ms. HOME is a temporary directory (known_hosts, Ray's token).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hussh.multi_conn import MultiConnection  # noqa: E402
from hussh.testing import PASSWORD, PASSWORD_USER, LoopbackFleet, loopback_addresses  # noqa: E402
from hussh.workers.engine import LocalEngine  # noqa: E402


def reset_peak(pid: int) -> None:
    """Make ``pid``'s peak RSS (``VmHWM``) its current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")


def status_mib(pid: int, field: str) -> float:
    """``field`` (``VmRSS``, ``VmHWM``) of ``pid`` in MiB, to a tenth."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Sampler(threading.Thread):
    """Peaks of ``RssAnon`` (private memory) and ``RssShmem`` (shared: Ray's object store) of some
    processes, read every 10 ms: ``VmHWM`` counts both."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peaks = {pid: {"RssAnon": 0.0, "RssShmem": 0.0} for pid in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            for pid in self.pids:
                for field, peak in self.peaks[pid].items():
                    self.peaks[pid][field] = max(peak, status_mib(pid, field))

    def stop(self) -> dict[int, dict[str, float]]:
        self.done.set()
        self.join()
        return self.peaks


def worker_pids(mc: MultiConnection, engine: str) -> list[int]:
    pool = mc._pool
    if engine == "ray":
        return [pid for _, pid, _ in pool.where().values()]  # type: ignore[attr-defined]
    return [worker.pid for worker in pool.workers if worker is not None]  # type: ignore[attr-defined]


def measure(engine_name: str, hosts: list[str], source: Path, out: Path) -> dict:
    engine = LocalEngine()
    if engine_name == "ray":
        from hussh.ray import RayEngine

        engine = RayEngine()  # type: ignore[assignment]
    with MultiConnection.from_shared_auth(hosts, username=PASSWORD_USER, password=PASSWORD, workers=1,
                                          engine=engine) as mc:
        assert not mc.connect().failed
        pids = worker_pids(mc, engine_name)
        for pid in (os.getpid(), *pids):
            reset_peak(pid)
        before = {"caller_before_mib": status_mib(os.getpid(), "VmRSS"),
                  "workers_before_mib": [status_mib(pid, "VmRSS") for pid in pids]}
        sampler = Sampler([os.getpid(), *pids])
        sampler.start()
        started = time.perf_counter()
        results = mc.sftp_read(str(source), str(out / "{host}.bin"))
        seconds = time.perf_counter() - started
        sampled = sampler.stop()
        peaks = {"caller_peak_mib": status_mib(os.getpid(), "VmHWM"),
                 "workers_peak_mib": [status_mib(pid, "VmHWM") for pid in pids], **before,
                 "caller_sampled_peaks_mib": sampled[os.getpid()],
                 "workers_sampled_peaks_mib": [sampled[pid] for pid in pids]}
    assert not results.failed, [r.stderr[:300] for r in results.failed.values()][:3]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert all(hashlib.sha256(path.read_bytes()).hexdigest() == digest for path in out.iterdir())
    return {"engine": engine_name, "hosts": len(hosts), "mb": source.stat().st_size >> 20,
            "seconds": round(seconds, 2), **peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--engine", choices=["ray", "local"], default="ray")
    parser.add_argument("--port", type=int, default=2712)
    parser.add_argument("--second-octet", type=int, default=82)
    args = parser.parse_args()
    os.environ["HOME"] = tempfile.mkdtemp(prefix="hussh-ray-files-home-")
    os.environ.pop("SSH_AUTH_SOCK", None)
    os.environ["PYTHONPATH"] = str(ROOT)  # Ray's workers (started by this process) import this checkout
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # loopback only, see docs/beyond-one-machine.md
    shared = Path(tempfile.mkdtemp(prefix="hussh-ray-files-"))  # the fleet's logins read the file from here
    shared.chmod(0o755)
    source = shared / "payload.bin"
    with open(source, "wb") as handle:
        for _ in range(args.mb):
            handle.write(os.urandom(1 << 20))
    source.chmod(0o644)
    out = Path(tempfile.mkdtemp(prefix="hussh-ray-files-out-"))
    try:
        with LoopbackFleet(loopback_addresses(args.hosts, args.second_octet), port=args.port) as fleet:
            hosts = [str(endpoint) for endpoint in fleet.endpoints]
            if args.engine == "ray":
                import ray

                ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                         object_store_memory=200 << 20)
            try:
                print(json.dumps(measure(args.engine, hosts, source, out)), flush=True)
            finally:
                if args.engine == "ray":
                    ray.shutdown()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(os.environ["HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
