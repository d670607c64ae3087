"""docs/scale-testing.md's example, as written there: does a deploy survive a fleet with 5% of its hosts paused?

40 endpoints in ``make test``; ``make scale-full`` sets HUSSH_SCALE_ENDPOINTS=1000.
"""

import os

import pytest

from hussh.multi_conn import MultiConnection

HOSTS = int(os.environ.get("HUSSH_SCALE_ENDPOINTS", "40"))
# Each endpoint its own release directory: loopback endpoints share this machine's disk.
DEPLOY = ('dir=$HOME/releases/$(echo $SSH_CONNECTION | cut -d" " -f3,4 | tr " " _) && mkdir -p $dir && '
          'echo v2 > $dir/VERSION && cat $dir/VERSION')


def deploy(hosts: list[str], **options):
    """The code under test: every host switches to v2 and reports its version; failures are per host."""
    with MultiConnection.from_shared_auth(hosts, **options, connect_timeout=5, batch_size=100) as mc:
        return mc.execute(DEPLOY, timeout=30)


@pytest.mark.scale
@pytest.mark.hussh_fleet(HOSTS)
def test_deploy_survives_five_percent_of_hosts_paused(hussh_fleet, tmp_path):
    # Every fleet has new host keys: check them against its own list, not ~/.ssh/known_hosts.
    login = dict(**hussh_fleet.credentials.password_auth(), host_key_checking="strict",
                 known_hosts=hussh_fleet.write_known_hosts(tmp_path / "known_hosts"))
    paused = {str(e) for e in hussh_fleet.pause(hussh_fleet.sample(0.05))}

    first = deploy(hussh_fleet.hosts, **login)
    assert set(first.failed) == paused
    assert all(r.stderr.startswith("ConnectTimeout: ") for r in first.failed.values())
    assert {r.stdout for r in first.succeeded.values()} == {"v2\n"}

    hussh_fleet.unpause(paused)
    retry = deploy(sorted(paused), **login)
    assert not retry.failed and len(retry) == len(paused)
