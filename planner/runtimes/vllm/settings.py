"""The settings of one vLLM plan: the layout, the KV cache, and the engine flags it is served with."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import Settings, _ToDict


@dataclass(frozen=True, slots=True)
class Parallel(_ToDict):
    """How the ranks are laid out: ``tensor`` GPUs per pipeline stage, ``pipeline`` stages, on
    ``nodes`` machines of ``gpus_per_node`` GPUs used each (the most any node uses)."""

    tensor: int
    pipeline: int
    nodes: int
    gpus_per_node: int


@dataclass(frozen=True, slots=True)
class KvCache(_ToDict):
    """The KV pool vLLM would allocate.

    Attributes:
        dtype: ``--kv-cache-dtype`` ("auto": the model dtype, or "fp8").
        block_size: tokens per block.
        blocks: blocks in the pool (the same on every rank), the null block included.
        tokens: tokens the pool holds for requests: ``(blocks - 1) x block_size``.
        bytes_per_token_per_gpu: KV bytes one token adds on the rank with the most layers.
        max_concurrent_sequences: requests of ``max_model_len`` tokens that fit at once.
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
