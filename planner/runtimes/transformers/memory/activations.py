"""Transient memory of generation: the prefill's working set and the logits.

Only one decoder layer's intermediates are alive at a time, so the prefill peak is one layer's
working set for ``batch x context`` tokens, on top of the cache. What the process holds at that
peak is more than the live tensors: glibc keeps freed heap blocks (anything under its dynamic
mmap threshold, at most 32 MiB) for reuse, and the peak that matters is that of a *later* prefill
(``generate`` after a first call, or the second call of a chat), when the first one's freed
blocks are still held. The CPU coefficients below are fitted to that peak, on the upper side of
the run-to-run scatter (benchmarks/accuracy/RESULTS.md, "What the numbers mean"). GPU prefills
keep the earlier single-forward fit until they are measured.

Structure (transformers 5.24, torch 2.13 CPU):

- SDPA without a mask (causal prefill, no padding: transformers passes ``is_causal=True``) is
  linear in tokens: a few hidden-widths and intermediate-widths of activations per token;
- MoE layers (``grouped_mm`` experts) gather every token once per routed expert: the expert MLP
  works on ``tokens x top_k`` rows of hidden + expert-intermediate width;
- a mask tensor (sliding layers once the prompt passes the window, T5) holds a bool per query x
  key position; ``repeat_kv`` expands K and V to every head when a mask is passed
  (sdpa_attention.py);
- bnb LLM.int8 quantizes each activation (fp16 copy, int8, absmax) and dequantizes an int32
  product through two fp32 tensors (bitsandbytes/backends/default/ops.py): per token, about 14
  bytes per output feature of the widest int8 matmul, and the heap keeps such blocks;
- eager attention (gemma2, gpt_oss: ``_supports_sdpa = False``) materialises the scores: about
  10.4 bytes per head x query x key in bf16 and 8.7 in fp32 (scores, fp32 softmax, cast);
- MLA (DeepSeek) expands the cached latent of the layer to full per-head K and V;
- ``generate`` keeps logits for the last position only (``logits_to_keep=1``) and copies them to
  fp32 (generation/utils.py).
"""

from __future__ import annotations

from planner.core.units import MiB
from planner.model.arch import Arch

# CPU, per token, in units of the compute dtype: hidden-sized and intermediate-sized buffers held
# at the peak of a repeated prefill. Fitted in benchmarks/accuracy to the highest runs of the bf16
# and fp32 scenarios of llama-gqa, gemma3-tied and mistral-swa (h 1024, intermediate 2816-3584,
# 128-8192 tokens of batch 1 and 4), after the mask terms below: the highest per-token cost
# measured was gemma3's, 73 KiB (gemma3-bf16-c4096; this gives 61), then llama's at batch 4,
# 54 KiB (llama-bf16-c2048-b4; this gives 58), and mistral's, 64 (this gives 68). Llama at batch 1
# held 32-43 KiB, so it is over-predicted by up to 13 %. (Was 9 and 3 from a single forward.)
HIDDEN_WIDTHS = 12
INTERMEDIATE_WIDTHS = 6
# MoE: widths per routed (token, expert) row, of hidden and of the expert's intermediate size
# (gathered input, gate/up product, activation, down output, weighted and reordered copies;
# integrations/moe.py grouped_mm_experts_forward). Fitted on mixtral-moe (h 768, 8 experts of
# 1024, top-2), scenarios mixtral-bf16-c2048 and mixtral-bf16-c512-b4.
EXPERT_ROW_WIDTHS = 9
# Fixed part of the prefill working set (the first forward's lasting allocations, oneDNN
# primitives, RoPE tables): llama-bf16-c128 peaked 640-658 MiB against 647 MiB of imports,
# loader, weights and cache, so this is small. (Was 64 MiB, plus 95 MiB of CPU_RUNTIME_HALF.)
PREFILL_FIXED = 24 * MiB
# bnb LLM.int8 on CPU: heap blocks an earlier prefill left, in proportion to the largest int8
# weight whose fp32 copy is under glibc's mmap threshold (the heap keeps only those), and per token 35 bytes per output feature of the widest int8 matmul (int32 product,
# two fp32 dequantization tensors, fp16 and int8 copies of the input). Fitted on the highest runs
# of llama-int8-c2048, llama-int8-c512-b4, gemma3-int8-c1024, mistral-int8-c4096 and
# mixtral-int8-c1024; the lowest runs of the same plans sit 300-500 MiB below (glibc's heap
# keeps the blocks in some runs only).
INT8_RETAINED_PER_PARAM = 92
INT8_PER_OUT_TOKEN = 35
# The retained part measured at most 330 MiB (mistral-int8-c4096, largest int8 weight 3.7M
# elements). Heap blocks come from working copies under glibc's 32 MiB mmap threshold, so they do
# not grow with the model without bound; the cap is set at about 1.5x the largest seen.
# Llama-3.2-1B (llama1b-int8-c256, largest heap-sized weight 4.2M elements, 386 MB by the rate)
# stayed under it.
INT8_RETAINED_MAX = 512 * MiB
# bnb 4-bit on CPU: the prefill dequantizes each weight to the compute dtype before the matmul
# (bitsandbytes functional.dequantize_4bit), and the per-token working set of the quantized
# (dense) part is larger than bf16's by this factor. Fitted with the quantize heap held on top
# (overhead.CPU_QUANTIZE_COPIES) to the highest runs of llama-nf4-c4096, gemma3-nf4-c8192 and
# mistral-nf4-c2048-b4 (errors +45, -42 and +173 MiB); 1.45 before that heap was counted apart,
# which left Llama-3.2-1B 258 MiB under its measured peak.
NF4_TOKEN_FACTOR = 1.15
# GPU (leads, unchanged until benchmarks/gpu_calibration.py runs on a GPU): the research notes'
# single-forward CPU fit (16.45 B x hidden + 5.99 B x intermediate in bf16, rounded up to 9 and 3
# elements), a 64 MiB fixed part, and 4 B per mask element (padding-mask measurement, exp7).
GPU_HIDDEN_WIDTHS = 9
GPU_INTERMEDIATE_WIDTHS = 3
GPU_PREFILL_FIXED = 64 * MiB
GPU_MASK_BYTES = 4
# Eager attention scores per head x query x key position: 10.4 B measured in bf16, 8.7 in fp32.
EAGER_SCORE_BYTES = {2: 10.4, 4: 8.7}
# An explicit attention mask: one bool per query x key position per sequence (masking_utils'
# sdpa_mask); torch's CPU flash attention reads it as is. mistral-bf16-c8192 (window 1024) and
# mistral-bf16-c1024-b4 leave the same per-token cost as the unmasked models with 1 byte, and
# 48 KiB less per token with 3 (a bool plus a bf16 copy).
MASK_BYTES = 1
# Models that run eager attention in transformers 5.24 (_supports_sdpa = False).
EAGER_MODEL_TYPES = frozenset({"gemma2", "gpt_oss"})
# generate's fp32 copy of the last position's logits (batch x vocab x 4) plus the model-dtype
# logits and the processors' working copy; gemma2's softcapping adds two more.
LOGIT_COPIES = 3


def prefill_bytes(arch: Arch, *, context: int, batch: int, dtype_bytes: int, quantization: str = "none",
                  largest_linear: int = 0, heap_linear: int = 0, cpu: bool = False) -> int:
    """Peak transient bytes of one decoder layer during a prefill of ``batch`` x ``context`` tokens.

    Args:
        dtype_bytes: bytes of the compute dtype (the load dtype; bnb computes in it too).
        quantization: with ``cpu``, "int8" and "nf4" add bitsandbytes' CPU working memory.
        heap_linear: elements of the largest quantized weight whose fp32 copy glibc's heap keeps
            (``weights.largest_heap_linear``).
        largest_linear: elements of the largest quantized weight (its output width is what int8's
            per-token buffers scale with).
        cpu: the CPU runs the model (bitsandbytes' CPU kernels and glibc's heap; the GPU kernels
            and PyTorch's caching allocator behave otherwise and are not measured here).
    """
    tokens = batch * context
    h = arch.hidden_size
    if not cpu:
        return _prefill_gpu(arch, context=context, batch=batch, dtype_bytes=dtype_bytes)
    experts = 0
    if arch.is_moe and arch.num_experts_per_tok:
        # attention and shared experts are dense (and what bnb quantizes); routed experts are not
        dense = HIDDEN_WIDTHS * h + INTERMEDIATE_WIDTHS * arch.num_shared_experts * arch.expert_intermediate_size
        experts = EXPERT_ROW_WIDTHS * arch.num_experts_per_tok * (h + arch.expert_intermediate_size)
    else:
        dense = HIDDEN_WIDTHS * h + INTERMEDIATE_WIDTHS * arch.intermediate_size
    dense_bytes = tokens * dense * dtype_bytes
    if cpu and quantization == "nf4":
        dense_bytes = int(dense_bytes * NF4_TOKEN_FACTOR)
    elif cpu and quantization == "int8" and largest_linear:
        out = largest_linear // max(1, h)
        retained = min(int(INT8_RETAINED_PER_PARAM * heap_linear), INT8_RETAINED_MAX)
        dense_bytes += retained + INT8_PER_OUT_TOKEN * out * tokens
    linear = dense_bytes + tokens * experts * dtype_bytes
    attn = _attention(arch, context=context, batch=batch, dtype_bytes=dtype_bytes, mask_bytes=MASK_BYTES)
    return PREFILL_FIXED + linear + attn


def _prefill_gpu(arch: Arch, *, context: int, batch: int, dtype_bytes: int) -> int:
    """The prefill on a GPU: the first CPU fit (research notes, one forward, no heap retention),
    kept until benchmarks/gpu_calibration.py measures PyTorch's caching allocator."""
    tokens = batch * context
    inter = arch.intermediate_size
    if arch.is_moe and arch.num_experts_per_tok:
        # grouped_mm runs each token through its top-k experts: k expert-widths per token.
        inter = max(inter, arch.num_experts_per_tok * arch.expert_intermediate_size)
    linear = tokens * (GPU_HIDDEN_WIDTHS * arch.hidden_size + GPU_INTERMEDIATE_WIDTHS * inter) * dtype_bytes
    attn = _attention(arch, context=context, batch=batch, dtype_bytes=dtype_bytes, mask_bytes=GPU_MASK_BYTES)
    return GPU_PREFILL_FIXED + linear + attn


def _attention(arch: Arch, *, context: int, batch: int, dtype_bytes: int, mask_bytes: int) -> int:
    heads = arch.num_heads
    if arch.outer_model_type in EAGER_MODEL_TYPES or arch.model_type in EAGER_MODEL_TYPES:
        return int(EAGER_SCORE_BYTES.get(dtype_bytes, 10.4) * batch * heads * context * context)
    extra = 0
    masked = arch.is_encoder_decoder or (arch.sliding_window is not None and context >= arch.sliding_window)
    if masked:
        extra += mask_bytes * batch * context * context
        # repeat_kv expands K and V to every head when a mask is passed (sdpa_attention.py)
        extra += 2 * batch * heads * context * arch.head_dim * dtype_bytes
    if arch.mla_rank:
        # MLA expands the latent to per-head K (nope + rope) and V, and keeps kv_b_proj's output
        extra += batch * context * heads * (arch.mla_k_dim + 2 * arch.mla_v_dim + arch.mla_k_dim - arch.mla_rope_dim) * dtype_bytes
    return extra


def logits_bytes(arch: Arch, *, batch: int) -> int:
    """Logits of the last position: the fp32 copy generate makes and its working copies."""
    copies = LOGIT_COPIES + (2 if arch.model_type == "gemma2" else 0)
    return copies * batch * arch.vocab_size * 4
