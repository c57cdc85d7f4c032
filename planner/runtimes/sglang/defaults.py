"""The defaults SGLang 0.5.23 derives from the GPU at start-up, as its server-argument hooks do.

Source: ``pip download sglang==0.5.23 --no-deps`` (the release on PyPI while this was written),
``sglang/srt/arg_groups/memory_hook.py`` ``handle_gpu_memory_settings`` (lines 47-343) and
``reserve_for_graph_mb`` (:355-399), ``sglang/srt/arg_groups/cuda_graph_hook.py`` (the capture
sizes, :480-531). SGLang reads the GPU's capacity with ``nvidia-smi --query-gpu=memory.total``
(``srt/utils/common.py:802-832``, the smallest of the visible GPUs), in MiB, and every threshold
below is in MiB as there.

The default path is modelled: CUDA, no disaggregation, no speculative decoding, no DP attention,
no DeepEP, no post-capture KV sizing (``SGLANG_ENABLE_POST_CAPTURE_KV_SIZING`` defaults to False,
``srt/environ.py:640``), the decode CUDA graph on (``Backend.FULL``) and the prefill graph
``breakable`` on CUDA (``srt/model_executor/cuda_graph_config.py:119-153``).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024**2

# memory_hook.py:89-171: (capacity below, in MiB) -> (chunked_prefill_size, decode max_bs with
# tp < 4, decode max_bs with tp >= 4). T4/4080; A10/4090/5090; A100-40G/L40; H100/A100-80G;
# H20/H200; B200/MI300 (the last row, capacity of 160 GiB and more).
_BY_CAPACITY: tuple[tuple[float, int, int, int], ...] = (
    (20 * 1024, 2048, 8, 8),
    (35 * 1024, 4096, 48, 160),
    (60 * 1024, 4096, 32, 160),
    (90 * 1024, 8192, 256, 512),
    (160 * 1024, 8192, 256, 512),
    (float("inf"), 16384, 512, 512),
)
# memory_hook.py:301-310: the activation working set scales with max(chunked_prefill_size, 2048)
# tokens at 1.5 MiB each, over a 512 MiB constant (attention-backend metadata).
ACTIVATION_FLOOR_TOKENS = 2048
ACTIVATION_MIB_PER_TOKEN = 1.5
RESERVED_BASE_MIB = 512
# memory_hook.py:312: "adjustments for large parallel size": tp x pp / 8 GiB.
PARALLEL_MIB_PER_8_RANKS = 1024
# memory_hook.py:314-315: GPUs above 60 GiB keep at least 10 GiB back.
BIG_GPU_MIB = 60 * 1024
BIG_GPU_FLOOR_MIB = 10 * 1024
# reserve_for_graph_mb (memory_hook.py:363-389): 2 MiB per decode batch size up to max_bs; the
# prefill graph: 8 MiB per captured size, or 1.5 GiB for MLA backends ("MLA backend overhead is
# much higher than expected with fa3").
DECODE_GRAPH_MIB_PER_BS = 2
PREFILL_GRAPH_MIB_PER_SIZE = 8
PREFILL_GRAPH_MLA_MIB = 1.5 * 1024
# memory_hook.py:241-247: the prefill graph's largest size is chunked_prefill_size, at most 8192
# for MLA; with pp > 1 and the breakable backend at most 8192 (_DEFAULT_PP_PREFILL_CUDA_GRAPH_MAX_TOKENS,
# :25, :250-257). (A model path naming Llama-2 caps it at 4096, :259-263: 8 MiB per size less
# reserve, not modelled; fitcheck passes the fraction it planned.)
PREFILL_GRAPH_MLA_MAX = 8192
PREFILL_GRAPH_PP_MAX = 8192
# kv_cache_configurator.py:3123-3132 (resolve_max_num_reqs): with no --max-running-requests,
# token_capacity / context_len x 512 clamped to [2048, 4096], at most half the token capacity.
RUNNING_REQUESTS_PER_CONTEXT = 512
RUNNING_REQUESTS_MIN = 2048
RUNNING_REQUESTS_MAX = 4096


@dataclass(frozen=True, slots=True)
class GpuDefaults:
    """What SGLang picks for one layout on one kind of GPU.

    Attributes:
        capacity_mib: the GPU's memory as nvidia-smi reports it (MiB).
        chunked_prefill_size: tokens per prefill chunk.
        cuda_graph_max_bs: the largest decode batch captured in a CUDA graph.
        prefill_graph_sizes: how many prefill token counts are captured.
        reserved_mib: what ``mem_fraction_static`` leaves for activations and CUDA graphs.
        mem_fraction_static: ``round((capacity - reserved) / capacity, 3)`` (memory_hook.py:324-328).
    """

    capacity_mib: float
    chunked_prefill_size: int
    cuda_graph_max_bs: int
    prefill_graph_sizes: int
    reserved_mib: float
    mem_fraction_static: float


def prefill_capture_sizes(max_bs: int) -> list[int]:
    """generate_prefill_cuda_graph_batch_sizes (cuda_graph_hook.py:480-497)."""
    sizes = (list(range(4, 33, 4)) + list(range(48, 257, 16)) + list(range(288, 513, 32)) + list(range(576, 1025, 64))
             + list(range(1280, 4097, 256)) + list(range(4608, max_bs + 1, 512)))
    return [s for s in sizes if s <= max_bs]


def gpu_defaults(total_bytes: int, *, tp: int, pp: int = 1, mla: bool = False,
                 max_running_requests: int | None = None) -> GpuDefaults:
    """SGLang's defaults for a ``tp`` x ``pp`` layout on GPUs of ``total_bytes`` each."""
    capacity = total_bytes / MiB
    row = next(r for r in _BY_CAPACITY if capacity < r[0])
    chunked = row[1]
    max_bs = row[2] if tp < 4 else row[3]
    if max_running_requests is not None and max_bs > max_running_requests:
        max_bs = max_running_requests  # memory_hook.py:178-185: the decode graph never exceeds the request cap
    prefill_max = min(PREFILL_GRAPH_MLA_MAX, chunked) if mla else chunked
    if pp > 1:
        prefill_max = min(prefill_max, PREFILL_GRAPH_PP_MAX)
    sizes = len(prefill_capture_sizes(prefill_max))
    reserved = RESERVED_BASE_MIB + max(chunked, ACTIVATION_FLOOR_TOKENS) * ACTIVATION_MIB_PER_TOKEN
    reserved += tp * pp / 8 * PARALLEL_MIB_PER_8_RANKS
    reserved += max_bs * DECODE_GRAPH_MIB_PER_BS + (PREFILL_GRAPH_MLA_MIB if mla else sizes * PREFILL_GRAPH_MIB_PER_SIZE)
    if capacity > BIG_GPU_MIB:
        reserved = max(reserved, BIG_GPU_FLOOR_MIB)
    fraction = round((capacity - reserved) / capacity, 3) if capacity > 0 else 0.0
    return GpuDefaults(capacity_mib=capacity, chunked_prefill_size=chunked, cuda_graph_max_bs=max_bs, prefill_graph_sizes=sizes,
                       reserved_mib=reserved, mem_fraction_static=fraction)


def max_running_requests(token_capacity: int, context_len: int, asked: int | None = None) -> int:
    """The running-request cap SGLang settles on once the KV pool is sized (resolve_max_num_reqs)."""
    if asked is not None:
        return max(0, min(asked, token_capacity // 2))
    estimated = int(token_capacity / max(1, context_len) * RUNNING_REQUESTS_PER_CONTEXT)
    estimated = max(min(estimated, RUNNING_REQUESTS_MAX), RUNNING_REQUESTS_MIN)
    return max(0, min(estimated, token_capacity // 2))
