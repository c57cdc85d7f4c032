"""The Ray placement group of vLLM cluster plans, created on a simulated Ray cluster.

``plan.placement_group`` is what ``vllm serve --distributed-executor-backend ray`` asks Ray for
(vLLM 0.34.0 v1/executor/ray_utils.py:371-378). Here ``ray.cluster_utils.Cluster`` starts a head and
workers in this machine with fake GPUs (``num_gpus``), one Ray node per node of the plan's hardware,
all bound to 127.0.0.1; the plan's group must become ready there and land ``gpus_per_node`` bundles on
each node it uses, and a plan wider than the cluster must not. The GPU-free part (the bundles) runs
without Ray; the rest skips where ray is not installed (it is in the ``test`` extra).

Loopback: ``ray.init(address="127.0.0.1:PORT")`` rewrites a loopback address to the host's
(ray/_private/services.py:786-803 resolve_ip_for_localhost -> get_node_ip_address), and the driver
then waits for a GCS that listens on 127.0.0.1 only (seen here: "Failed to connect to GCS at address
192.0.2.2:..."). get_node_ip_address answers the loopback address when ray_constants.ENABLE_RAY_CLUSTER
is off (services.py:815-819), which RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 sets at import
(ray_constants.py:657-661); it is set before ray is imported, and in the children through the
environment. The GCS and node ports are picked by Ray (port 0), so two xdist workers do not clash.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import vllm_models as vm

from planner import api
from planner.core.records import Constraints, Plan
from planner.hardware import cluster
from planner.runtimes.vllm import emit

LOOPBACK = "127.0.0.1"
READY_S = 30  # a group of 24 bundles was ready within 1 s here once the cluster was up
NOT_READY_S = 3  # an infeasible group stays pending for good; 3 s shows it did not become ready


def _plan(hardware: str, nodes: int | None = None, **options: Any) -> Plan:
    snap = vm.snapshot("meta-llama/Llama-3.1-405B")
    # "quality" keeps bf16, so 405B spans the nodes (docs/vllm.md "Layouts found")
    r = api.plan(snap.id, hardware=cluster.load(hardware, nodes=nodes), snapshot=snap, runtime="vllm",
                 constraints=Constraints(context=8192, prefer="quality").with_options(**options))
    assert r.solution is not None
    return r.solution.chosen


def _layout(p: Plan) -> tuple[int, int, int, int]:
    s = emit.settings_of(p).parallel
    return s.tensor, s.pipeline, s.nodes, s.gpus_per_node


def test_the_bundles_are_one_gpu_per_rank_and_one_node_needs_no_group() -> None:
    p = _plan("8x-h100-sxm-80gb", nodes=2)
    assert _layout(p) == (8, 2, 2, 8)
    assert emit.placement_group(p) == {"bundles": [{"GPU": 1.0}] * 16, "strategy": "PACK"}
    one = _plan("8x-h100-sxm-80gb", tp=8, pp=1)
    assert _layout(one)[2] == 1 and emit.placement_group(one) is None


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """The mixed cluster profile (2x 8x H100 + 1x 8x A100) as Ray nodes of 8 fake GPUs and 1 CPU each,
    the driver connected; shut down when the module's tests are done."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = pytest.importorskip("ray")
        from ray._private import ray_constants
        from ray.cluster_utils import Cluster

        # where another test imported ray first, the constant was read already
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        hw = cluster.load("mixed-h100-a100")
        gpus = [len(n) for n in hw.cuda_by_node()]
        # num_cpus 1: vLLM's workers take num_cpus=0 (ray_executor_v2.py:386); the head needs one for the driver's tasks
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": gpus[0], "node_ip_address": LOOPBACK,
                                                          "include_dashboard": False})
        try:
            for n in gpus[1:]:
                c.add_node(num_cpus=1, num_gpus=n, node_ip_address=LOOPBACK)
            ray.init(address=c.address, _node_ip_address=LOOPBACK, log_to_driver=False)
            try:
                yield ray
            finally:
                ray.shutdown()
        finally:
            c.shutdown()


def _bundles_per_node(ray: Any, doc: dict[str, Any]) -> list[int]:
    """Create the group, wait until it is ready, and count its bundles on each Ray node."""
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    pg = placement_group(doc["bundles"], strategy=doc["strategy"])
    try:
        ray.get(pg.ready(), timeout=READY_S)
        where = placement_group_table(pg)["bundles_to_node_id"]
        return sorted(Counter(where.values()).values())
    finally:
        remove_placement_group(pg)


def test_two_nodes_tp8_pp2_group_is_ready_with_a_stage_per_node(ray_cluster: Any) -> None:
    p = _plan("8x-h100-sxm-80gb", nodes=2)
    assert _layout(p) == (8, 2, 2, 8)
    doc = emit.placement_group(p)
    assert doc is not None
    # PACK fills two of the three nodes: 8 bundles on each, a whole TP group per node (no warning in
    # vLLM's _verify_bundles, ray_utils.py:76)
    assert _bundles_per_node(ray_cluster, doc) == [8, 8]


def test_mixed_cluster_tp8_pp3_group_takes_every_node(ray_cluster: Any) -> None:
    p = _plan("mixed-h100-a100", pp=3)
    assert _layout(p) == (8, 3, 3, 8)
    doc = emit.placement_group(p)
    assert doc is not None and len(doc["bundles"]) == 24
    assert _bundles_per_node(ray_cluster, doc) == [8, 8, 8]


def test_a_plan_wider_than_the_cluster_never_becomes_ready(ray_cluster: Any) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    p = _plan("8x-h100-sxm-80gb", nodes=4, pp=4)
    assert _layout(p) == (8, 4, 4, 8)
    doc = emit.placement_group(p)
    assert doc is not None and len(doc["bundles"]) == 32  # the cluster has 24 GPUs
    pg = placement_group(doc["bundles"], strategy=doc["strategy"])
    try:
        start = time.monotonic()
        ready, _ = ray_cluster.wait([pg.ready()], timeout=NOT_READY_S)
        assert ready == [] and time.monotonic() - start >= NOT_READY_S * 0.9
    finally:
        remove_placement_group(pg)
