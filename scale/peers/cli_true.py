"""``clush`` or the classic ``pssh`` command running ``true`` on every target, for ``scale/bench_latency.py``.

    python cli_true.py --tool clush|pssh --targets FILE --user U --key K [--batch N] --command PATH

Both run the system ``ssh`` per host (``-F /dev/null``, no known_hosts, batch mode) at their own
fan-out (``--batch 0``: clush's 64, pssh's 32) or at ``--batch``. This runner only spawns the
command, waits for it and counts the hosts it completed (clush: exit 0, or every host its errors do
not name; pssh: its ``[SUCCESS]`` lines); marks ``imported`` (spawn) and ``closed`` (reaped).
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

import re
import subprocess


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--tool", choices=("clush", "pssh"), required=True)
    parser.add_argument("--command", required=True, help="path of clush, or of parallel-ssh")


run = parse_args(__doc__, _options)
tool = run.options.tool
port = run.common_port or 22
SSH = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", "-i", run.key or ""]
if tool == "clush":
    fanout = ["-f", str(run.batch)] if run.batch > 0 else []
    argv = [run.options.command, *fanout, "-l", run.user, "-o", " ".join(["-p", str(port), *SSH]),
            "-w", ",".join(run.hosts), "true"]
else:
    parallel = ["-p", str(run.batch)] if run.batch > 0 else []
    options = [arg for name, value in zip(SSH[:-2:2], SSH[1:-2:2], strict=True) if name == "-o"
               for arg in ("-O", value)]
    argv = [run.options.command, *parallel, "-l", run.user, "-h", run.options.targets,
            "-x", f"-F /dev/null -i {run.key}", *options, "true"]
run.mark("imported")
done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
run.mark("closed")
tally = Tally(run)
if tool == "clush":
    named = set(re.findall(r"\b127(?:\.\d+){3}\b", done.stderr)) if done.returncode else set()
    ok = {host for host in run.hosts if host not in named} if done.returncode == 0 or named else set()
else:
    ok = set(re.findall(r"\[SUCCESS\] (\S+?):\d+$", done.stdout, re.MULTILINE))
error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
for host in run.hosts:
    tally.check(host, host in ok, error)
tally.report(tool, f"exit {done.returncode}", batch=run.batch or "default")
