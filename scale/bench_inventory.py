"""How long reading an inventory takes, per format, at 100,000 hosts (issue 22: linear, under a second).

    PYTHONPATH=. python scale/bench_inventory.py [HOSTS]

Writes each format's file into a private temporary directory, then prints the seconds to load it and
to select a pattern from it (best of three). Nothing is asserted: this prints the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from hussh.inventory import load


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
    written = {}
    for name, text in (("hosts.ini", ini), ("hosts.yml", yml), ("hosts.json", json.dumps(listing)),
                       ("genders", genders), ("groups.yaml", clush)):
        path = written[name] = os.path.join(directory, name)
        with open(path, "w") as file:
            file.write(text)
    return written


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    hosts = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    directory = tempfile.mkdtemp(prefix="hussh-inventory-bench-")
    try:
        for name, path in files(directory, hosts).items():
            loading = best_of(3, lambda path=path: load(path))
            inventory = load(path)
            started = time.perf_counter()
            chosen = inventory.select("g001:g002:!node000101")  # a fresh inventory: nothing cached yet
            selecting = time.perf_counter() - started
            print(f"{name:12} {len(inventory.hosts):>8,} hosts  load {loading:6.3f} s "
                  f"({len(inventory.hosts) / loading:>9,.0f} hosts/s)  select {len(chosen):,} in {selecting:.3f} s")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
