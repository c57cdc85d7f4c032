"""Per-rank memory of a vLLM engine, as vLLM 0.34 budgets it (v1/worker/gpu_worker.py:673-790).

vLLM asks for ``requested = ceil(total x gpu_memory_utilization)`` on every GPU
(v1/worker/utils.py:743) and refuses to start where less is free (utils.py:783-796, when the
extensible KV cache is off). It loads the weights, runs one profiling forward pass of
``max_num_batched_tokens`` tokens, estimates the CUDA-graph pool, and gives the KV cache the rest:

    available_kv = requested - non_kv_cache_memory - cudagraph_estimate          (gpu_worker.py:765-769)
    non_kv_cache_memory = weights + non-torch increase + transient activation peak  (utils/mem_utils.py:327-336)

The pool is then cut into blocks of ``block_size`` tokens across every layer the rank holds
(``num_blocks = available // bytes_per_block``, v1/core/kv_cache_planning.py:724); all ranks take
the smallest count, and one block is the null block (v1/core/block_pool.py:164). A request of
``max_model_len`` tokens needs ``cdiv(max_model_len, block_size)`` blocks (v1/kv_cache_interface.py:654-660);
when one such request does not fit, vLLM stops with "To serve at least one request with the
model's max seq len ..." (kv_cache_planning.py:125).

What vLLM measures at start-up (non-torch memory, the activation peak, the CUDA-graph pool) is
estimated here from the architecture; the constants below say where each estimate comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.model import serving
from planner.model.serving import VOCAB_PADDING, kv_bytes_per_token_layer, kv_heads_per_rank, pad_vocab
from planner.runtimes.vllm.facts import VllmModel

__all__ = ["VOCAB_PADDING", "kv_bytes_per_token_layer", "kv_heads_per_rank", "pad_vocab"]

GiB = 1024**3
MiB = 1024**2

# CacheConfig.DEFAULT_BLOCK_SIZE = 64 (vllm 0.34.0 config/cache.py:185; 16 before 0.34).
BLOCK_SIZE = 64
# CacheConfig.DEFAULT_GPU_MEMORY_UTILIZATION = 0.92 (config/cache.py:186), the budget fitcheck
# plans unless asked for another (0.34 defaults to 1.0 with the extensible KV cache, which sizes
# the cache after warm-up; fitcheck always passes the utilisation it planned).
DEFAULT_UTILIZATION = 0.92
# The CUDA context and cuBLAS/NCCL handles a worker creates before vLLM takes its memory snapshot:
# outside vLLM's budget but on the GPU, so ``total x utilisation`` must leave them room.
# Assumption: 1 GiB (PyTorch contexts take a few hundred MiB on recent GPUs; the margin covers
# the handles and lazy-loaded kernels).
CUDA_CONTEXT = 1 * GiB
# Non-torch memory (NCCL buffers, custom all-reduce IPC buffers, attention workspaces). Published
# vLLM logs: "non_torch_memory takes 0.16GiB" on one H100 (kubernetes-sigs/gateway-api-inference-extension
# PR 550); 1.79 GiB at TP 1 and 3.58 GiB at TP 2 in vLLM 0.6.5 (vllm-project/vllm PR 10511).
# 0.5 GiB alone (above the 0.16 GiB of current releases), plus the 1.79 GiB that TP 2 added in
# PR 10511 once a rank talks to others.
NON_TORCH_SINGLE = 512 * MiB
NON_TORCH_PARALLEL = NON_TORCH_SINGLE + 1833 * MiB
# CUDA-graph pool (profiled and taken from the budget since v0.21: gpu_worker.py:740-758, :794).
# Published capture sizes: "Graph capturing finished in 14 secs, took 0.21 GiB" for Llama-3.2-1B
# (16 layers; vllm PR 11349) and 0.13 GiB for a 1B model (generative-computing/mellea PR 416).
# Modelled as a fixed 512 MiB plus 16 MiB per layer on the rank: 0.75 GiB for 16 layers, above
# both published figures.
CUDAGRAPH_BASE = 512 * MiB
CUDAGRAPH_PER_LAYER = 16 * MiB
# The profile run samples max_num_seqs rows of logits twice, the second time through the fp32
# warm-up pipeline (v1/worker/gpu/model_runner.py:1039-1062, _dummy_sampler_run): fp32 logits and
# one working copy.
LOGIT_BYTES = 4
LOGIT_COPIES = 2
# The per-token formula of activations() gives 1.24 GiB (TP 1) and 1.20 GiB (TP 2) for Llama-3-8B
# at 8192 tokens and 256 sequences, where vLLM measured 1.26 GiB for both (PR 10511): 10 % on top
# keeps it above the measurement (tests/test_vllm_published.py).
ACTIVATION_SLACK = 1.10


@dataclass(frozen=True, slots=True)
class Layout:
    """How vLLM spreads one engine over GPUs: ``tp`` x ``pp`` GPUs per replica, ``dp`` replicas
    (``--data-parallel-size``; each DP rank is an engine of its own with its own KV cache), and
    with ``ep`` the MoE layers' experts split whole over the ``tp x dp`` GPUs
    (``--enable-expert-parallel``).

    vLLM's MoE layers span every DP rank: without EP each expert is tensor-sliced over ``tp x dp``
    GPUs, with EP ``ep_size = tp x dp`` and the MoE layers' own tensor parallelism is 1 (vllm 0.34.0
    model_executor/layers/fused_moe/config.py:1234-1282, FusedMoEParallelConfig.make; EP is used only
    when ``tp x dp > 1``, :1234-1237). Attention and dense layers are split by ``tp`` and replicated
    across DP ranks (docs/serving/data_parallel_deployment.md).
    """

    tp: int
    pp: int
    dp: int = 1
    ep: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def moe_ranks(self) -> int:
        """The GPUs one MoE layer's experts are spread over."""
        return self.tp * self.dp

    @property
    def ep_size(self) -> int:
        """The expert-parallel group: ``tp x dp`` with EP, 1 without."""
        return self.tp * self.dp if self.ep and self.tp * self.dp > 1 else 1


@dataclass(frozen=True, slots=True)
class Rank:
    """One GPU of a layout: its device name, stage, DP replica, the GPU's figures."""

    device: str
    stage: int
    total: int
    free: int
    name: str
    replica: int = 0


@dataclass(frozen=True, slots=True)
class RankMemory:
    """What one rank holds: weights, the profile-run activations, non-torch memory and CUDA
    graphs, the budget, and what is left for the KV cache."""

    weights: int
    activations: int
    non_torch: int
    cudagraphs: int
    budget: int
    layers: int

    @property
    def kv_available(self) -> int:
        return self.budget - self.weights - self.activations - self.non_torch - self.cudagraphs


def stage_layers(num_layers: int, pp: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each pipeline stage: ``num_layers // pp`` each, the remainder one each to
    the stages before the last (vllm distributed/utils.py:240-256, get_pp_indices)."""
    parts = [num_layers // pp] * pp
    remaining = num_layers % pp
    for i in range(2, remaining + 2):
        parts[-i] += 1
    out, start = [], 0
    for n in parts:
        out.append((start, start + n))
        start += n
    return out


def rank_weights(model: VllmModel, tp: int, pp: int, stage: int, *, online_fp8: bool = False, dp: int = 1,
                 ep: bool = False) -> int:
    """Weight bytes on one rank of ``stage`` (the sharding rules of planner.model.serving); with
    ``dp`` replicas the routed experts spread over ``tp x dp`` GPUs, whole with ``ep`` (:class:`Layout`)."""
    return serving.rank_weights(model, tp, stage_layers(model.num_layers, pp)[stage], first=stage == 0, last=stage == pp - 1,
                                pp=pp, online_fp8=online_fp8, moe_ranks=tp * dp, whole_experts=ep and tp * dp > 1)


def activations(model: VllmModel, tp: int, pp: int, stage: int, *, batched_tokens: int, max_num_seqs: int,
                dp: int = 1) -> int:
    """The transient peak of vLLM's profiling forward of ``batched_tokens`` tokens on one rank.

    Per token: the residual and hidden states, the attention projections, and the MLP's
    gate/up output and activation (or the routed experts' intermediate for ``topk`` experts),
    in the model dtype; the last stage adds the sampler's fp32 logits of ``max_num_seqs`` rows.
    The MLP part is not divided by TP: vLLM 0.6.5 measured the same 1.26 GiB peak at TP 1 and
    TP 2 for Llama-3-8B (PR 10511); see ACTIVATION_SLACK.

    With ``dp`` data-parallel ranks a MoE layer runs on the tokens of all of them: the default
    all2all backend (``allgather_reducescatter``, vllm 0.34.0 config/parallel.py:229) all-gathers
    every DP rank's hidden states before the experts (distributed/device_communicators/all2all.py:108,
    :138), the DP ranks profile together with ``max_num_batched_tokens`` each, and the fused-MoE
    workspaces are sized on the gathered token count in one chunk (fused_moe/modular_kernel.py:1184-1243):
    the routed-expert part counts ``dp x batched_tokens`` tokens.
    """
    d = model.dtype_bytes
    h = model.hidden_size
    heads = max(1, model.num_heads // tp)
    if model.mla:
        attn = heads * 2 * (model.mla_qk_dim + model.mla_v_dim)  # q and k, v and the attention output
    else:
        attn = heads * model.k_head_dim + 2 * kv_heads_per_rank(model, tp) * model.k_head_dim
    mlp = 3 * model.intermediate_size
    if model.num_experts:
        mlp = max(mlp if model.intermediate_size else 0,
                  dp * (model.experts_per_tok * (3 * model.expert_intermediate_size + h) + 4 * model.num_experts // d))
    per_token = (4 * h + attn + mlp) * d
    peak = batched_tokens * per_token
    if stage == pp - 1:
        peak += max_num_seqs * pad_vocab(model.vocab_size) * LOGIT_BYTES * LOGIT_COPIES
    return int(peak * ACTIVATION_SLACK)


def rank_memory(model: VllmModel, rank: Rank, *, tp: int, pp: int, utilization: float, batched_tokens: int,
                max_num_seqs: int, online_fp8: bool = False, dp: int = 1, ep: bool = False) -> RankMemory:
    """Everything one rank holds besides the KV cache, and its budget (``dp``, ``ep``: :class:`Layout`)."""
    start, end = stage_layers(model.num_layers, pp)[rank.stage]
    layers = end - start
    # vLLM's total is torch's cudaMemGetInfo total; the profiles' free_bytes is that figure for a
    # headless GPU (profile sources: "PyTorch ... total capacity of 79.19 GiB"), which is the lower
    # of the two and so the safe base for the KV budget.
    budget = math.ceil(rank.free * utilization)
    return RankMemory(
        weights=rank_weights(model, tp, pp, rank.stage, online_fp8=online_fp8, dp=dp, ep=ep),
        activations=activations(model, tp, pp, rank.stage, batched_tokens=batched_tokens, max_num_seqs=max_num_seqs,
                                dp=dp if model.num_experts else 1),
        # a DP rank of a MoE model talks to the others in every MoE layer; a dense one's DP ranks
        # are independent engines (v1/engine/core.py:1719-1727, reconfigure_for_independent_dp_rank)
        non_torch=NON_TORCH_PARALLEL if tp * pp * (dp if model.num_experts else 1) > 1 else NON_TORCH_SINGLE,
        cudagraphs=CUDAGRAPH_BASE + CUDAGRAPH_PER_LAYER * layers,
        budget=budget,
        layers=layers,
    )


@dataclass(frozen=True, slots=True)
class KvGroups:
    """How vLLM's hybrid KV cache manager groups the attention layers (vllm 0.34.0
    v1/core/kv_cache_planning.py:462-604, ``_get_kv_cache_groups_uniform_page_size``).

    Layers of one kind (full attention, sliding window) are split into groups of ``group_size``
    layers (the smaller kind's count, or the larger's when it is under 1.5x the smaller: :566-578),
    each kind's i-th group taking ``layers[i::groups]`` (:599). All groups draw block ids from one
    pool, and a block holds one page of every layer of the largest group on the rank
    (``_get_kv_cache_bytes_per_block``, :620-639), so the pool's blocks cost ``page x
    block_layers`` bytes on each rank. A model without sliding layers is one group of all its
    layers: the formula vLLM has always used.

    Attributes:
        full: the groups of full-attention layers (each a tuple of layer indices).
        sliding: the groups of sliding-window layers.
    """

    full: tuple[tuple[int, ...], ...]
    sliding: tuple[tuple[int, ...], ...]

    def block_layers(self, start: int, end: int) -> int:
        """The layers one block spans on a rank holding layers ``[start, end)``."""
        return max((sum(1 for i in g if start <= i < end) for g in (*self.full, *self.sliding)), default=0)


def kv_groups(model: VllmModel) -> KvGroups:
    """The KV cache groups of ``model`` (see :class:`KvGroups`)."""
    sliding = set(model.sliding_layer_ids) if model.sliding_window else set()
    full_ids = [i for i in range(model.num_layers) if i not in sliding]
    slide_ids = sorted(sliding)
    kinds = [k for k in (full_ids, slide_ids) if k]
    if len(kinds) == 1:
        return KvGroups(full=(tuple(full_ids),) if full_ids else (), sliding=(tuple(slide_ids),) if slide_ids else ())
    small, large = min(len(k) for k in kinds), max(len(k) for k in kinds)
    size = large if large < small * 1.5 else small  # kv_cache_planning.py:566-578
    def split(ids: list[int]) -> tuple[tuple[int, ...], ...]:
        n = -(-len(ids) // size)
        return tuple(tuple(ids[i::n]) for i in range(n))  # layers[i::num_groups] (:599)
    return KvGroups(full=split(full_ids), sliding=split(slide_ids))


def kv_read_tokens(model: VllmModel, start: int, end: int, context: int) -> int:
    """Token-layers of KV one decode step reads for a sequence of ``context`` tokens on a rank
    holding layers ``[start, end)``: ``context`` on a full-attention layer, at most the window on
    a sliding one: a query attends to itself and the ``sliding_window - 1`` tokens before it
    (``window_size = (sliding_window - 1, 0)``, vllm 0.34.0 v1/attention/backends/flash_attn.py:164-166)."""
    window = model.sliding_window
    sliding = set(model.sliding_layer_ids) if window else set()
    return sum(min(context, window) if i in sliding and window else context for i in range(start, end))


def in_flight_tokens(pp: int, batched_tokens: int) -> int:
    """Tokens scheduled but not yet settled: ``max_concurrent_batches x max_num_batched_tokens``
    (vllm config/vllm.py:560-577); async scheduling, on by default for generative models with the
    multiprocessing and Ray executors (config/vllm.py:1610-1637; RayExecutorV2 is a
    MultiprocExecutor, v1/executor/ray_executor_v2.py:239), makes it ``pp + 1`` batches."""
    return (pp + 1) * batched_tokens


def request_blocks(model: VllmModel, groups: KvGroups, max_model_len: int, *, pp: int, batched_tokens: int) -> int:
    """Blocks one request of ``max_model_len`` tokens takes from the pool: the sum over groups
    (v1/core/kv_cache_utils.py:1082-1114, ``get_max_concurrency_for_kv_cache_config``). A full
    group needs ``cdiv(max_model_len, block)`` (FullAttentionSpec); a sliding group
    ``cdiv(min(window - 1 + in-flight tokens, max_model_len), block) + 1``, the +1 because the
    window need not start at a block boundary (v1/kv_cache_interface.py:930-969,
    SlidingWindowSpec.max_admission_blocks_per_request). vLLM gives a sliding layer the primary
    block size when the attention backend runs it (model_executor/layers/attention/attention.py:669-693)."""
    full = -(-max_model_len // BLOCK_SIZE)
    out = len(groups.full) * full
    if groups.sliding and model.sliding_window:
        tokens = min(model.sliding_window - 1 + in_flight_tokens(pp, batched_tokens), max_model_len)
        out += len(groups.sliding) * (-(-tokens // BLOCK_SIZE) + 1)
    return out
