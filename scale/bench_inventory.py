"""How long reading an inventory takes, per format, at 100,000 hosts (issue 22: linear, under a second).

    PYTHONPATH=. python scale/bench_inventory.py [HOSTS] [RUNS]

Writes each format's file into a private temporary directory, at HOSTS hosts (default 100,000) and
at a tenth of that, then loads them in turns (every format once per round, RUNS rounds, default 5)
and prints each one's median wall and CPU seconds, and how much longer the big file took than the
small one (10 when reading is linear). When PyYAML is installed, its fastest loader reads the same
Ansible YAML file in the same rounds, as a peer: Ansible itself parses YAML inventories with it.
Nothing is asserted: this prints the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from hussh.inventory import load

FORMATS = ("hosts.ini", "hosts.yml", "hosts.json", "genders", "groups.yaml")


def files(directory: str, hosts: int) -> dict[str, str]:
    """One inventory per format, ``hosts`` hosts in 100 groups, every host with an address and a port."""
    names = [f"node{i:06d}" for i in range(hosts)]
    groups = {f"g{g:03d}": names[g::100] for g in range(100)}
    ini = "".join(f"[{g}]\n" + "".join(f"{h} ansible_host=10.{i % 250}.0.1 ansible_port=22\n"
                                        for i, h in enumerate(members)) for g, members in groups.items())
    yml = "all:\n  children:\n" + "".join(
        f"    {g}:\n      hosts:\n" + "".join(f"        {h}:\n          ansible_host: 10.0.0.1\n" for h in members)
        for g, members in groups.items())
    listing = {g: {"hosts": members} for g, members in groups.items()}
    listing["_meta"] = {"hostvars": {h: {"ansible_host": "10.0.0.1", "ansible_port": 22} for h in names}}
    genders = "".join(f"{h} g{i % 100:03d},rack={i // 40}\n" for i, h in enumerate(names))
    clush = "roles:\n" + "".join(f"  {g}: '{','.join(members)}'\n" for g, members in groups.items())
    os.makedirs(directory, exist_ok=True)
    written = {}
    for name, text in zip(FORMATS, (ini, yml, json.dumps(listing), genders, clush), strict=True):
        path = written[name] = os.path.join(directory, name)
        with open(path, "w") as file:
            file.write(text)
    return written


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def pyyaml_loader() -> Callable[[str], object] | None:
    try:
        import yaml
    except ImportError:
        return None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return lambda text: yaml.load(text, Loader=loader)


def main() -> None:
    hosts = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    directory = tempfile.mkdtemp(prefix="hussh-inventory-bench-")
    try:
        sizes = {hosts: files(os.path.join(directory, "big"), hosts),
                 hosts // 10: files(os.path.join(directory, "small"), hosts // 10)}
        peer = pyyaml_loader()
        yaml_text = open(sizes[hosts]["hosts.yml"]).read()
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for _ in range(runs):  # every format once per round, so load on the machine spreads evenly
            for size, paths in sizes.items():
                for name, path in paths.items():
                    samples.setdefault((name, size), []).append(timed(lambda path=path: load(path)))
            if peer is not None:
                samples.setdefault(("PyYAML", hosts), []).append(timed(lambda: peer(yaml_text)))
        print(f"median of {runs} runs, formats in turns; wall and CPU seconds")
        for name in FORMATS:
            inventory = load(sizes[hosts][name])
            chosen = inventory.select("g001:g002:!node000101")
            wall, cpu = (statistics.median(x) for x in zip(*samples[name, hosts], strict=True))
            small = statistics.median(c for _, c in samples[name, hosts // 10])
            print(f"{name:12} {len(inventory.hosts):>8,} hosts  wall {wall:6.3f} s  cpu {cpu:6.3f} s "
                  f"({len(inventory.hosts) / cpu:>9,.0f} hosts/s)  x{cpu / small:4.1f} the CPU of {hosts // 10:,} "
                  f"hosts  select {len(chosen):,}")
        if peer is not None:
            wall, cpu = (statistics.median(x) for x in zip(*samples["PyYAML", hosts], strict=True))
            ours = statistics.median(c for _, c in samples["hosts.yml", hosts])
            print(f"{'PyYAML':12} {'':>8} (hosts.yml parsed only)  wall {wall:6.3f} s  cpu {cpu:6.3f} s  "
                  f"hussh's whole load takes x{ours / cpu:.2f} its CPU")
        else:
            print("PyYAML is not installed: no peer figure for the YAML reader")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
