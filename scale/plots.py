"""Plots for scale/README.md, drawn from a JSON spec on stdin; imports only matplotlib.

    echo '{"series": [{"label": "hussh", "points": [[1000, 9.3, 79.2], ...]}], "path": "x.png", "title": "..."}' \
        | python -m scale.plots scaling

Kept apart from the benchmarks so it can run in a venv of its own (``/opt/hussh-bench/venv-plot``)
when the project's venv has no matplotlib.
"""

from __future__ import annotations

import json
import sys


def scaling(spec: dict) -> None:
    """Wall seconds and peak PSS against hosts, one line per series, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (wall, memory) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for series in spec["series"]:
        hosts = [p[0] for p in series["points"]]
        style = "--" if series.get("dashed") else "-"
        wall.plot(hosts, [p[1] for p in series["points"]], style, marker="o", label=series["label"])
        memory.plot(hosts, [p[2] for p in series["points"]], style, marker="o", label=series["label"])
    for ax, label in ((wall, "wall seconds (whole process, median)"), (memory, "peak PSS sum of the client, MiB")):
        ax.set_xlabel("hosts")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    wall.legend(fontsize=7)
    fig.suptitle(spec.get("title", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(spec["path"])
    print(f"[plots] {spec['path']}", file=sys.stderr)


if __name__ == "__main__":
    {"scaling": scaling}[sys.argv[1]](json.load(sys.stdin))
