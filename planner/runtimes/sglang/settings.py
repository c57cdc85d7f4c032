"""The settings of one SGLang plan: the layout, the memory split, the KV pool and its server flags."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import Settings, _ToDict


@dataclass(frozen=True, slots=True)
class Layout(_ToDict):
    """``tensor`` GPUs in one tensor-parallel group spread over ``nodes`` machines
    (``gpus_per_node`` used on each)."""

    tensor: int
    nodes: int
    gpus_per_node: int


@dataclass(frozen=True, slots=True)
class KvPool(_ToDict):
    """The token-to-KV pool SGLang would allocate.

    Attributes:
        dtype: ``--kv-cache-dtype`` ("auto": the model dtype, or "fp8_e4m3").
        page_size: tokens per page.
        tokens: ``max_total_num_tokens``, the tokens the pool holds (the same on every rank).
        bytes_per_token_per_gpu: SGLang's ``cell_size``: KV bytes one token takes on one rank.
        max_concurrent_sequences: requests of ``context_length`` tokens that fit at once.
        max_running_requests: the running-request cap SGLang derives from the pool.
    """

    dtype: str
    page_size: int
    tokens: int
    bytes_per_token_per_gpu: int
    max_concurrent_sequences: int
    max_running_requests: int


@dataclass(frozen=True, slots=True)
class SglangSettings(Settings):
    """One SGLang plan's settings (the plan's JSON block shows these fields).

    Attributes:
        mem_fraction_static: the share of each GPU's pre-load free memory for weights and the KV
            pool; the rest is SGLang's headroom for activations and CUDA graphs.
        mem_fraction_default: whether that is SGLang's own default for the GPU and layout (else
            ``--mem-fraction-static`` asked for it).
        chunked_prefill_size, cuda_graph_max_bs: SGLang's defaults for the GPU (not emitted).
        max_running_requests: ``--max-running-requests`` when asked for (None: SGLang derives it).
    """

    layout: Layout
    kv_cache: KvPool
    context_length: int
    mem_fraction_static: float
    mem_fraction_default: bool
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    quantization: str | None = None
    checkpoint_quantization: str | None = None
    dtype: str = "bfloat16"
    users: int = 1
    max_running_requests: int | None = None
