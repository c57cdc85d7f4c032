"""The settings of one vLLM plan: the layout, the KV cache, and the engine flags it is served with."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import Settings, _ToDict


@dataclass(frozen=True, slots=True)
class Parallel(_ToDict):
    """How the ranks are laid out: ``tensor`` GPUs per pipeline stage, ``pipeline`` stages,
    ``data`` data-parallel replicas of that (``--data-parallel-size``), on ``nodes`` machines of
    ``gpus_per_node`` GPUs used each (the most any node uses). ``expert``: the expert-parallel
    size, ``tensor x data`` with ``--enable-expert-parallel`` (whole experts per GPU), 1 without
    (each expert tensor-sliced over ``tensor x data`` GPUs)."""

    tensor: int
    pipeline: int
    nodes: int
    gpus_per_node: int
    data: int = 1
    expert: int = 1


@dataclass(frozen=True, slots=True)
class KvCache(_ToDict):
    """The KV pool vLLM would allocate.

    Attributes:
        dtype: ``--kv-cache-dtype`` ("auto": the model dtype, or "fp8").
        block_size: tokens per block.
        blocks: blocks in the pool (the same on every rank), the null block included; with data
            parallelism, of each DP replica's own pool.
        tokens: tokens the pool holds for requests: ``(blocks - 1) x block_size`` (one replica's,
            what each DP engine logs as "GPU KV cache size").
        bytes_per_token_per_gpu: KV bytes one token adds on the rank with the most layers.
        max_concurrent_sequences: requests of ``max_model_len`` tokens that fit at once, over
            all DP replicas (``data x`` one replica's).
    """

    dtype: str
    block_size: int
    blocks: int
    tokens: int
    bytes_per_token_per_gpu: int
    max_concurrent_sequences: int


@dataclass(frozen=True, slots=True)
class VllmSettings(Settings):
    """One vLLM plan's settings (the plan's JSON block shows these fields)."""

    parallel: Parallel
    kv_cache: KvCache
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    quantization: str | None = None
    checkpoint_quantization: str | None = None
    dtype: str = "bfloat16"
    users: int = 1
