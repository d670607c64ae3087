"""The suite's local Ray clusters: loopback only, Ray's token authentication, a HOME of their own.

``conftest.py`` gives the whole session one token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``) and
keeps Ray on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray then takes 127.0.0.1 as every
node's address and its servers listen there only); the nodes here also say ``node_ip_address``
themselves and start no dashboard.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def ray_module():
    return pytest.importorskip("ray", reason="the Ray engine needs Ray: pip install 'hussh-fleet[ray]'")


def node_args(region: str) -> dict:
    """A node of ``region``: no CPUs to hand out (shard actors take ``num_cpus=0``), a small object store."""
    return dict(num_cpus=0, object_store_memory=100 << 20, labels={"region": region}, node_ip_address=LOOPBACK)


class RayCluster:
    """A running cluster: its nodes by region, the HOME and environment its processes share."""

    def __init__(self, cluster, nodes: dict, home: Path, env: dict[str, str]) -> None:
        self.cluster, self.nodes, self.home, self.env = cluster, nodes, home, env

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_ids(self) -> dict[str, str]:
        """Live node id -> region."""
        ray = ray_module()
        return {n["NodeID"]: n["Labels"].get("region") for n in ray.nodes() if n["Alive"]}

    def add(self, region: str) -> None:
        """A new node for ``region`` (after one was removed)."""
        self.nodes[region] = self.cluster.add_node(**node_args(region))


@contextlib.contextmanager
def local_ray_cluster(tmp_path_factory, regions: Sequence[str]) -> Iterator[RayCluster]:
    """A cluster with one node per region (the first is the head), this process connected to it."""
    ray = ray_module()
    from ray.cluster_utils import Cluster

    assert os.environ.get("RAY_AUTH_MODE") == "token" and os.environ.get("RAY_AUTH_TOKEN"), "see conftest.py"
    home = tmp_path_factory.mktemp("ray-home")
    env = {"HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}  # the actors import this checkout
    with pytest.MonkeyPatch.context() as patch:  # node processes inherit this environment
        for name, value in env.items():
            patch.setenv(name, value)
        cluster = Cluster(initialize_head=True, head_node_args={**node_args(regions[0]), "include_dashboard": False})
        try:
            nodes = {regions[0]: cluster.head_node}
            for region in regions[1:]:
                nodes[region] = cluster.add_node(**node_args(region))
            cluster.wait_for_nodes(timeout=120)
            ray.init(address=cluster.address, log_to_driver=False)
            yield RayCluster(cluster, nodes, home, env)
        finally:
            ray.shutdown()
            cluster.shutdown()
