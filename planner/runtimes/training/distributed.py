"""Per-GPU model-state memory of data-parallel training across GPUs and nodes: DDP, DeepSpeed
ZeRO-2/3 (with and without CPU offload), FSDP full sharding and FSDP hybrid sharding.

DeepSpeed's own estimators (deepspeed/runtime/zero/stage_1_and_2.py
``estimate_zero2_model_states_mem_needs`` and stage3.py ``estimate_zero3_model_states_mem_needs``)
count 16-bit parameters and gradients (2 + 2 B), and fp32 master weights with Adam's two states
(12 B) per parameter, for P parameters over G GPUs in all (G = num_nodes x num_gpus_per_node,
stage3.py line 3753 of DeepSpeed edaa722, stage_1_and_2.py line 3087); CPU is per node:

    ZeRO-2:            GPU 4P + 16P/G                 CPU 4P x gpus_per_node x 1.5
    ZeRO-2 + offload:  GPU 2P                         CPU P x max(4G, 16) x 1.5
    ZeRO-3:            GPU 4L + 18P/G                 (L: the largest layer's parameters)
    ZeRO-3 + offload:  GPU 4L                         CPU 18P / num_nodes x 1.5

(ZeRO-3's host term divides by the nodes: ``gpus_factor = 1 / num_nodes``, stage3.py lines 3754
and 3762. DeepSpeed's ZeRO-2 GPU line has been 2P + 18P/G since its PR #5099 of 2024,
stage_1_and_2.py line 3095; fitcheck keeps the 4P + 16P/G of the replicated 16-bit gradients.)
fitcheck's host share is the partitions of the node's own ranks: the states of P over G GPUs,
times the GPUs of one node, the same 1/num_nodes; it does not price the fp32 copy each rank loads
before ZeRO-2 partitions it, which DeepSpeed's ``max(4G, 16)`` counts for the whole cluster.

FSDP's HYBRID_SHARD (``fsdp-hybrid``) shards like FULL_SHARD within a node and replicates across
nodes (torch/distributed/fsdp/api.py, ShardingStrategy, line 55 in torch 2.13: "Apply FULL_SHARD
within a node, and replicate parameters across nodes"): FSDP's formula with G = the GPUs of one node.

fitcheck keeps their structure but prices the parts with the plan's own widths (an 8-bit
optimizer's 2 B instead of Adam's 8; the optimizer's real state), so that a ZeRO plan and a
one-GPU plan of the same settings agree at G = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.runtimes.training.memory import Parts

# DeepSpeed's estimators multiply host memory by 1.5 for buffers (``additional_buffer_factor=1.5``
# in both estimators).
DS_CPU_BUFFER_FACTOR = 1.5
# ZeRO-3 gathers a module's 16-bit parameters to run it, and prefetches the next: DeepSpeed's
# estimator charges 4 B per parameter of the largest module (stage3.py ``largest_layer_memory = 4
# * largest_layer_params``, where ``model_to_params`` takes the largest module's own parameters,
# ``m.parameters(recurse=False)``: the embedding, vocab x hidden, for an LLM). FSDP wraps each
# decoder layer (TRANSFORMER_BASED_WRAP) and its default prefetch (BACKWARD_PRE) holds two units
# unsharded. fitcheck charges the larger of the two.
DS_GATHER_BYTES = 4
GATHERED_LAYERS = 2


@dataclass(frozen=True, slots=True)
class Sharded:
    """Per-GPU model states under a strategy, and what goes to the host (per node)."""

    weights: int
    gradients: int
    optimizer: int
    step: int
    cpu: int


def shard(p: Parts, strategy: str, *, gpus: int, gpus_per_node: int, trainable: int, frozen: int, largest_layer: int,
          largest_module: int, layer_width: int) -> Sharded:
    """``p`` (one replica's parts) spread over ``gpus`` GPUs in all, ``gpus_per_node`` on each
    node, under ``strategy``; ``cpu`` is per node.

    Args:
        trainable: bytes of the trainable parameters' master copy inside ``p.weights``.
        frozen: bytes of frozen weights inside ``p.weights`` (a LoRA base model).
        largest_layer: parameters of the largest decoder layer.
        largest_module: parameters of the largest single tensor (module) of the model.
        layer_width: bytes per parameter of a gathered layer (the compute dtype).
    """
    g = max(1, gpus_per_node if strategy == "fsdp-hybrid" else gpus)
    if strategy in ("single", "ddp"):
        # DDP copies every gradient into its reducer's buckets unless gradient_as_bucket_view=True
        # (torch.nn.parallel.DistributedDataParallel docs: "the saved memory size will be equal to
        # the total gradients size"); the emitted script sets it, so no copy is added.
        return Sharded(p.weights, p.gradients, p.optimizer, p.step, 0)
    gathered = max(GATHERED_LAYERS * largest_layer * layer_width, DS_GATHER_BYTES * largest_module)
    if strategy == "zero2":
        # replicated 16-bit weights and (as DeepSpeed's estimator charges) 16-bit gradients;
        # partitioned fp32 gradients, master weights and optimizer states
        return Sharded(frozen + _half(trainable, layer_width) + trainable // g, _half(trainable, layer_width) + p.gradients // g,
                       p.optimizer // g, p.step // g, 0)
    if strategy == "zero2-offload":
        host = int((trainable + p.gradients + p.optimizer) * DS_CPU_BUFFER_FACTOR) * gpus_per_node // g
        return Sharded(frozen + _half(trainable, layer_width), 0, 0, 0, host)
    if strategy in ("zero3", "fsdp", "fsdp-hybrid"):
        # everything partitioned (over one node's GPUs for fsdp-hybrid), the 16-bit working copy too, and the gathered layers
        return Sharded(gathered + (frozen + trainable + _half(trainable, layer_width)) // g, p.gradients // g, p.optimizer // g,
                       p.step // g, 0)
    if strategy == "zero3-offload":
        # the host holds the 16-bit parameters too (DeepSpeed's 18 B per parameter: 2 + 16)
        host = int((frozen + trainable + _half(trainable, layer_width) + p.gradients + p.optimizer) * DS_CPU_BUFFER_FACTOR) * gpus_per_node // g
        return Sharded(gathered, 0, 0, 0, host)
    raise ValueError(strategy)


def _half(master: int, width: int) -> int:
    """The 16-bit working copy of fp32 master weights (4 B each) that ZeRO keeps besides them."""
    return master // 4 * width


def deepspeed_estimate(stage: int, *, params: int, largest_module: int, gpus: int, gpus_per_node: int, offload: bool) -> tuple[int, int]:
    """(GPU bytes, CPU bytes) per DeepSpeed's own estimators of model states (the formulas in the
    module docstring, with their defaults ``zero_init=True``, ``cpu_offload_params=True``), for
    comparing fitcheck's sharding with them."""
    nodes = max(1, gpus // max(1, gpus_per_node))
    if stage == 2:
        if offload:
            return 2 * params, int(params * max(4 * gpus, 16) * DS_CPU_BUFFER_FACTOR)
        return 4 * params + 16 * params // gpus, int(params * 4 * gpus_per_node * DS_CPU_BUFFER_FACTOR)
    gathered = DS_GATHER_BYTES * largest_module
    if offload:
        return gathered, int(params * 18 / nodes * DS_CPU_BUFFER_FACTOR)
    return gathered + 18 * params // gpus, int(largest_module * 4 * gpus_per_node * DS_CPU_BUFFER_FACTOR)
