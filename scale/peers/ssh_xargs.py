"""OpenSSH's client driven by ``xargs -P <batch>``: one ``ssh [-J bastion] host 'true && whoami'`` per host.

The way a shell user fans out without a library: a new ssh process (and, through a bastion, a
second one for ``-J``'s ``ssh -W``) and a new login per host, one session running both commands.
Keys only (``BatchMode=yes``), ``StrictHostKeyChecking=no``, ``UserKnownHostsFile=/dev/null``;
``--config`` is an ssh_config naming the identities (and the bastion host alias for ``--jump``).
"""

from _common import Tally, parse_args  # first: marks the runner's start

# isort: split

import os
import subprocess
import tempfile


def _options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--config", required=True, help="ssh_config file (-F)")
    parser.add_argument("--jump", help="ProxyJump target, e.g. a Host alias of --config")


run = parse_args(__doc__, _options)
opts = run.options
version = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.split(",")[0].strip()
run.mark("imported")
out = tempfile.mkdtemp(prefix="ssh-xargs-")
jump = f"-J {opts.jump} " if opts.jump else ""
script = (f'ssh -F {opts.config} {jump}-p "$2" "$1" "true && whoami" >"{out}/$1.out" 2>"{out}/$1.err"; '
          f'echo $? >"{out}/$1.rc"')
listing = "".join(f"{t.host} {t.port}\n" for t in run.targets)
subprocess.run(["xargs", "-P", str(run.batch), "-n", "2", "sh", "-c", script, "_"], input=listing, text=True,
               check=False)
run.mark("closed")
tally = Tally(run)
for t in run.targets:
    try:
        rc = int(open(os.path.join(out, f"{t.host}.rc")).read().strip() or -1)
        stdout = open(os.path.join(out, f"{t.host}.out")).read()
        stderr = open(os.path.join(out, f"{t.host}.err")).read()
    except (OSError, ValueError) as exc:
        tally.check(t.name, False, f"no result: {exc}")
        continue
    tally.check(t.name, rc == 0 and stdout.strip() == run.user, f"exit {rc}: {stderr.strip()[:200]}")
subprocess.run(["rm", "-rf", out], check=False)
tally.report("ssh-xargs" + ("-J" if opts.jump else ""), version)
