"""Per-rank memory of an SGLang server, as SGLang 0.5.23 sizes its KV pool.

SGLang takes a baseline after the distributed start-up and before loading weights: the free
memory of the tightest rank (``pre_model_load_memory``, srt/distributed/bootstrap.py:193-223). It
loads the weights and gives the KV pool what is free then less the headroom it keeps for
activations and CUDA graphs (srt/mem_cache/kv_cache_configurator.py:2990-3047,
``_profile_available_bytes``)::

    rest   = free_after_weights - pre_model_load_memory x (1 - mem_fraction_static)
           = mem_fraction_static x pre_model_load_memory - weights
    tokens = rest // cell_size, rounded down to the page size      (model_executor/pool_configurator.py:637-647)
    cell_size = kv_heads_per_rank x (head_dim + v_head_dim) x layers x dtype bytes    (:491-498)
              = (kv_lora_rank + qk_rope_head_dim) x layers x dtype bytes for MLA     (:378-384)

``rest <= 0`` stops the server: "Loaded weights leave no GPU memory for the KV cache"
(kv_cache_configurator.py:3036-3047). The pool is the same on every rank (the tightest rank's
free memory sets it).

Sliding-window layers: SGLang gives a separate SWA pool only to the architectures its
``is_hybrid_swa_model`` lists (srt/configs/model_config.py:2651-2680: Llama 4, Gemma 4, GPT-OSS
and others); Gemma-2/3 and Mistral are not among them, so their sliding layers take full-length
KV like the others. fitcheck sizes every model that way (for the listed ones this over-counts).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.serving import ServingModel, kv_bytes_per_token_layer, rank_weights

GiB = 1024**3
MiB = 1024**2

# The CUDA context, cuBLAS handles and lazy-loaded kernels a rank holds before SGLang's baseline.
# Assumption: 1 GiB, the figure fitcheck's vLLM runtime assumes for the same context (PyTorch
# contexts take a few hundred MiB on recent GPUs).
CUDA_CONTEXT = 1 * GiB
# NCCL and custom all-reduce buffers of a rank that talks to others, allocated by
# init_torch_distributed before the baseline. Assumption: the 1.79 GiB that tensor parallelism 2
# added to vLLM 0.6.5's non-torch memory (vllm-project/vllm PR 10511). With it, SGLang's published
# pool of Qwen3-235B-A22B-FP8 at TP 4 (367,404 tokens, vllm issue 21348) is predicted within 0.8 %
# (tests/test_sglang_plans.py); without it 9 % above.
COMMUNICATION = 1833 * MiB
# _page_size_default (srt/arg_groups/overrides.py:1341-1363): page_size 1 on CUDA unless an
# attention backend asks for more (FlashMLA and TensorRT-LLM MLA force 64: overrides.py:1146-1163).
PAGE_SIZE = 1
# --kv-cache-dtype values and their bytes per value (srt/arg_groups/fields/model.py:197-220).
KV_DTYPE_BYTES = {"auto": 2, "bf16": 2, "bfloat16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}


@dataclass(frozen=True, slots=True)
class RankMemory:
    """One rank: its weights, the baseline free memory, the KV pool's bytes and the headroom."""

    weights: int
    baseline: int  # pre_model_load_memory: the tightest rank's free memory after the start-up
    static: int  # mem_fraction_static x baseline: weights + KV pool
    overhead: int  # CUDA context (+ communication buffers) held before the baseline

    @property
    def kv_available(self) -> int:
        return self.static - self.weights

    @property
    def headroom(self) -> int:
        """What SGLang leaves for activations and CUDA graphs: baseline x (1 - fraction)."""
        return self.baseline - self.static


def cell_size(model: ServingModel, tp: int, kv_dtype: str) -> int:
    """KV bytes one token takes on one rank, over every layer (SGLang's ``cell_size``)."""
    return kv_bytes_per_token_layer(model, tp, KV_DTYPE_BYTES.get(kv_dtype, model.dtype_bytes)) * model.num_layers


def weights_per_rank(model: ServingModel, tp: int, *, online_fp8: bool = False) -> int:
    """Weight bytes on one rank of a ``tp``-wide group holding every layer (no pipeline stages)."""
    return rank_weights(model, tp, (0, model.num_layers), first=True, last=True, online_fp8=online_fp8)


def rank_memory(model: ServingModel, *, tp: int, tightest_free: int, fraction: float, online_fp8: bool = False) -> RankMemory:
    """The memory split of every rank: the tightest rank's free memory is everyone's baseline."""
    overhead = CUDA_CONTEXT + (COMMUNICATION if tp > 1 else 0)
    baseline = max(0, tightest_free - overhead)
    return RankMemory(weights=weights_per_rank(model, tp, online_fp8=online_fp8), baseline=baseline,
                      static=int(baseline * fraction), overhead=overhead)


def pool_tokens(rm: RankMemory, cell: int) -> int:
    """``max_total_num_tokens``: the KV bytes over the cell size, whole pages."""
    if rm.kv_available <= 0 or cell <= 0:
        return 0
    return rm.kv_available // cell // PAGE_SIZE * PAGE_SIZE
