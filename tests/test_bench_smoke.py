"""The benchmarks cannot rot unnoticed (issue 24, item 5): the cheap part of ``make bench-smoke``.

Every script of scale/ imports and parses its options, and the two cheapest benchmarks run once on
3 loopback hosts, through hussh and through every open experiment of scale/peers/_experiments.py
(which patch private names of hussh: a rename shows here), completing every host. ``make
bench-smoke`` runs every benchmark at 50-200 hosts against every peer (minutes; the peers' venvs
come from the network), so CI runs only this.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TEST_PORT

REPO = Path(__file__).resolve().parent.parent
NO_OPTIONS = {  # scripts without an option parser: imported only
    "bench_inventory": "takes a host count as its one argument",
    "plots": "reads a plot's spec from stdin",
    "upstream_api": "runs under upstream hussh's interpreter only",
}


def scripts() -> list[str]:
    """The runnable modules of scale/ (the peers' runners run in the tiny runs below, in their tools' venvs)."""
    return sorted(path.stem for path in (REPO / "scale").glob("*.py") if "__main__" in path.read_text())


def test_every_benchmark_script_imports_and_parses_its_options():
    """One interpreter imports each script and runs it with ``--help``; any other exit is reported by name."""
    probe = textwrap.dedent("""
        import contextlib, importlib, io, json, runpy, sys
        failures = {}
        for name, parse in json.loads(sys.argv[1]):
            sys.argv = [name, "--help"]
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    if parse:
                        runpy.run_module(f"scale.{name}", run_name="__main__")
                    else:
                        importlib.import_module(f"scale.{name}")
            except SystemExit as exit:
                if exit.code not in (0, None):
                    failures[name] = f"exit {exit.code}"
            except BaseException as error:
                failures[name] = f"{type(error).__name__}: {error}"
            else:
                if parse:
                    failures[name] = "--help did not exit"
            if parse and name not in failures and "usage:" not in out.getvalue():
                failures[name] = "no usage in --help"
        print(json.dumps(failures))
    """)
    names = [(name, name not in NO_OPTIONS) for name in scripts()]
    assert len(names) > 20 and set(NO_OPTIONS) <= {name for name, _ in names}
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(names)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {}


TINY = {
    "bench": ["--hosts", "3", "--tools", "hussh,hussh+all", "--second-octet", "90"],
    "bench_files": ["--hosts", "3", "--write-mb", "1", "--read-mb", "1", "--tools", "hussh", "--second-octet", "91"],
}


@pytest.mark.parametrize("name", TINY)
def test_the_cheapest_benchmarks_complete_every_host(name, tmp_path):
    """Once, no warm-up, no waiting for a quiet machine, on this session's port; every run exits 0 with 3/3."""
    result = tmp_path / "runs.json"
    command = [sys.executable, "-m", f"scale.{name}", *TINY[name], "--repeat", "1", "--quiet-wait", "0",
               "--no-warmup", "--port", str(TEST_PORT), "--json", str(result)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=110,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(result.read_text())["runs"]
    assert {run["tool"] for run in runs} == set(TINY[name][TINY[name].index("--tools") + 1].split(","))
    for run in runs:
        assert (run["exit_code"], run["timed_out"], run["completed"]) == (0, False, 3), run


def test_the_latency_benchmark_prints_a_row_per_setting_and_its_verdicts():
    """``scale.bench_latency`` on 3 hosts behind a 5 ms relay, hussh alone at its default and at 2, once:
    every table row is well formed (numbers where numbers belong) and the goals are judged; no timing checked."""
    command = [sys.executable, "-m", "scale.bench_latency", "--hosts", "3", "--rtts", "0.005", "--batches", "2",
               "--tools", "hussh", "--repeat", "1", "--quiet-wait", "0", "--no-warmup", "--port", str(TEST_PORT),
               "--second-octet", "96", "--json", os.devnull]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=110,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| hussh |")]
    assert [(cells[1].strip(), cells[2].strip(), cells[3].strip()) for cells in rows] == \
        [("default (100)", "3", "5"), ("equal (2)", "3", "5")]
    for cells in rows:
        wall, *numbers = [cells[4].split()[0], *cells[5:14]]
        assert all(float(value) >= 0 for value in (wall, *numbers)), cells
        assert cells[14].strip() == "3/3"
    assert "hussh at batch 100, 5 ms: wall" in done.stdout
    assert float(rows[1][6]) == pytest.approx(2 * 6 * 0.005)  # the floor: ceil(3 / 2) batches x 6 round trips x rtt
