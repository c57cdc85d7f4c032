"""Decode speed of a vLLM layout: memory-bandwidth bound steps plus the collectives between ranks.

Good enough to rank layouts; not a benchmark. A step reads each rank's weights (for MoE the
experts some token routes to) and the KV of its sequences at the GPU's bandwidth; tensor
parallelism adds two all-reduces per layer, pipeline stages a hop each, and data parallelism on
a MoE model an all-gather and a reduce-scatter of the hidden states per MoE layer (below).
"""

from __future__ import annotations

from planner.core.records import Hardware
from planner.model.serving import expert_bytes
from planner.runtimes.vllm import memory as mem
from planner.runtimes.vllm.facts import VllmModel

# Decode efficiency: the fraction of peak memory bandwidth a memory-bound decode step reaches
# (0.75, the lead planner/runtimes/transformers/speed.py takes for bf16 GEMV on A100/H100).
DECODE_EFFICIENCY = 0.75
# One all-reduce of a small message costs its latency; NCCL's published all-reduce latency is
# ~10 us inside an NVLink node and ~25 us over PCIe or the network (nccl-tests, small messages).
# Assumptions for ranking, not measurements.
NVLINK_LATENCY = 10e-6
PCIE_LATENCY = 25e-6
NETWORK_LATENCY = 25e-6
DEFAULT_GPU_BANDWIDTH = 500_000_000_000
DEFAULT_PCIE = 25_000_000_000
# Between nodes when the cluster does not say: one 400 Gb/s NDR InfiniBand port (docs/vllm.md, Clusters).
DEFAULT_NETWORK = 50_000_000_000


def _gpus(hw: Hardware) -> dict:
    return {f"node{n}:cuda:{i}": g for n, node in enumerate(hw.cuda_by_node()) for i, g in enumerate(node)}


def _node(device: str) -> int:
    return int(device.split(":", 1)[0][4:])


def _local_experts(model: VllmModel, start: int, end: int, layout: mem.Layout) -> float:
    """Routed-expert bytes one rank holds in layers ``[start, end)``."""
    if layout.dp == 1 and not layout.ep:
        return sum(layer.experts for layer in model.layers[start:end]) / layout.tp
    return sum(expert_bytes(model, layer.experts, layout.moe_ranks, whole=layout.ep_size > 1)
               for layer in model.layers[start:end] if layer.experts)


def moe_exchange_s(model: VllmModel, hw: Hardware, rk: list[mem.Rank], layout: mem.Layout, *, start: int, end: int,
                   tokens: int) -> float:
    """Seconds a step of ``tokens`` tokens per DP rank spends moving hidden states between DP ranks.

    vLLM's default all2all backend (``allgather_reducescatter``, config/parallel.py:229) all-gathers
    every DP rank's hidden states before each MoE layer and reduce-scatters the experts' output
    after it (distributed/device_communicators/all2all.py:57-151, AgRsAll2AllManager). In a ring
    each rank receives ``(dp - 1) x tokens x hidden x dtype`` bytes per collective (NCCL's ring
    all-gather moves ``(n - 1)/n`` of the gathered buffer through every link). Over NVLink inside
    a node; once the GPUs span nodes the ring crosses the network, which the ``tp`` rings (one per
    TP rank) share: ``network_bandwidth / tp`` (an assumption: one port per node). Each collective
    also pays its latency. 0 without data parallelism or for a dense model (its DP ranks are
    independent engines).
    """
    if layout.dp == 1 or not model.num_experts:
        return 0.0
    moe_layers = sum(1 for layer in model.layers[start:end] if layer.experts)
    nodes = {_node(r.device) for r in rk}
    if len(nodes) > 1:
        bw = (hw.network_bandwidth or DEFAULT_NETWORK) / layout.tp
        lat = NETWORK_LATENCY
    else:
        link = ([n.link_bandwidth for n in hw.nodes] if hw.nodes else [hw.link_bandwidth])[min(nodes)]
        g = _gpus(hw)[rk[0].device]
        bw = link or g.pcie_bandwidth or DEFAULT_PCIE
        lat = NVLINK_LATENCY if link else PCIE_LATENCY
    moved = (layout.dp - 1) * tokens * model.hidden_size * model.dtype_bytes
    return moe_layers * 2 * (lat + moved / bw)


def serving_tokens_per_s(model: VllmModel, hw: Hardware, rk: list[mem.Rank], rms: list[mem.RankMemory], *, tp: int, pp: int,
                         batch: int, context: int, kv_per_layer: int, dp: int = 1, ep: bool = False) -> float:
    """Decode tokens/s of the whole deployment with ``batch`` sequences of ``context`` tokens on
    each DP replica.

    One step reads each rank's weights once for the batch (MoE: the experts some sequence routes
    to, ``1 - (1 - k/E)^tokens`` of them, where the tokens are every DP rank's: the MoE layers run
    on all of them) and every sequence's KV (a sliding-window layer's window at most:
    memory.kv_read_tokens). With pipeline parallelism the batch runs as ``pp`` micro-batches, one
    per stage at a time: the slowest stage sets the pace. The ``dp`` replicas step together (a
    MoE model's DP ranks synchronise in every MoE layer: :func:`moe_exchange_s`), so the
    deployment makes ``dp`` times one replica's tokens.
    """
    layout = mem.Layout(tp, pp, dp, ep)
    gpus = _gpus(hw)
    micro = max(1, batch // pp) if pp > 1 else batch
    routed = micro * (dp if model.num_experts else 1)
    share = 1 - (1 - model.experts_per_tok / model.num_experts) ** routed if model.num_experts else 1.0
    stage_times = []
    for stage in range(pp):
        start, end = mem.stage_layers(model.num_layers, pp)[stage]
        experts = _local_experts(model, start, end, layout)
        kv_tokens = mem.kv_read_tokens(model, start, end, context)  # sliding layers read their window only
        t = 0.0
        for r, rm in zip(rk, rms, strict=True):
            if r.stage != stage:
                continue
            bw = gpus[r.device].bandwidth or DEFAULT_GPU_BANDWIDTH
            read = rm.weights - experts * (1 - share) + micro * kv_tokens * kv_per_layer
            t = max(t, read / (bw * DECODE_EFFICIENCY))
        if tp > 1:
            t += 2 * (end - start) * NVLINK_LATENCY
        t += moe_exchange_s(model, hw, rk, layout, start=start, end=end, tokens=micro)
        stage_times.append(t)
    if pp > 1:
        return dp * micro / max(stage_times) if max(stage_times) > 0 else 0.0
    return dp * batch / stage_times[0] if stage_times[0] > 0 else 0.0


def tokens_per_s(model: VllmModel, hw: Hardware, rk: list[mem.Rank], rms: list[mem.RankMemory], *, tp: int, pp: int,
                 context: int, kv_per_layer: int, dp: int = 1, ep: bool = False) -> float:
    """Decode tokens/s of one sequence: every stage of the replica serving it reads its weights
    (for MoE the routed top-k share of the experts) and its KV at ``context`` tokens (a sliding
    layer's window at most) at the GPU's bandwidth, plus two TP all-reduces per layer, one hop
    between stages, and with data parallelism on a MoE model the exchange of its one token's
    hidden state with the other DP ranks in every MoE layer (:func:`moe_exchange_s`); stages run
    one after another for one sequence, so their times add."""
    layout = mem.Layout(tp, pp, dp, ep)
    seconds = 0.0
    gpus = _gpus(hw)
    expert_share = model.experts_per_tok / model.num_experts if model.num_experts else 1.0
    h_bytes = model.hidden_size * model.dtype_bytes
    links = [n.link_bandwidth for n in hw.nodes] if hw.nodes else [hw.link_bandwidth]
    replica = [(r, rm) for r, rm in zip(rk, rms, strict=True) if r.replica == 0]
    for stage in range(pp):
        members = [(r, rm) for r, rm in replica if r.stage == stage]
        start, end = mem.stage_layers(model.num_layers, pp)[stage]
        experts = _local_experts(model, start, end, layout)
        kv_tokens = mem.kv_read_tokens(model, start, end, context)  # sliding layers read their window only
        t = 0.0
        for r, rm in members:
            bw = gpus[r.device].bandwidth or DEFAULT_GPU_BANDWIDTH
            read = rm.weights - experts * (1 - expert_share) + kv_tokens * kv_per_layer
            t = max(t, read / (bw * DECODE_EFFICIENCY))
        if tp > 1:
            g = gpus[members[0][0].device]
            link = links[_node(members[0][0].device)]
            bw_link = link or g.pcie_bandwidth or DEFAULT_PCIE
            lat = NVLINK_LATENCY if link else PCIE_LATENCY
            t += 2 * (end - start) * (lat + 2 * (tp - 1) / tp * h_bytes / bw_link)
        t += moe_exchange_s(model, hw, rk, layout, start=start, end=end, tokens=1)
        seconds += t
    nodes_used = len({_node(r.device) for r, _ in replica})
    if pp > 1:
        hops_network = max(0, nodes_used - 1)
        seconds += hops_network * (NETWORK_LATENCY + h_bytes / (hw.network_bandwidth or DEFAULT_NETWORK))
        seconds += (pp - 1 - hops_network) * NVLINK_LATENCY
    return 1.0 / seconds if seconds > 0 else 0.0
