"""Transient memory of generation: the prefill's working set and the logits.

Only one decoder layer's intermediates are alive at a time, so the prefill peak is one layer's
working set for ``batch x context`` tokens, on top of the cache. Measured on CPU with
transformers 5.24 / torch 2.13 (benchmarks/results/activations-cpu.md, fitted over Llama-shaped
models with hidden 768-2048 and intermediate 2048-8192, contexts 1k-16k tokens, batch 1-4):

- SDPA without a mask (causal prefill, no padding: transformers passes ``is_causal=True``) is
  linear in tokens: about 8 hidden-widths plus 3 intermediate-widths of activations per token;
- a mask tensor (sliding layers once the prompt passes the window, T5) adds 4 bytes per query x
  key position, and ``repeat_kv`` expands K and V to every head;
- eager attention (gemma2, gpt_oss: ``_supports_sdpa = False``) materialises the scores: about
  10.4 bytes per head x query x key in bf16 and 8.7 in fp32 (scores, fp32 softmax, cast);
- MLA (DeepSeek) expands the cached latent of the layer to full per-head K and V;
- ``generate`` keeps logits for the last position only (``logits_to_keep=1``) and copies them to
  fp32 (generation/utils.py).
"""

from __future__ import annotations

from planner.arch import Arch
from planner.units import MiB

# Per token, in units of the activation dtype: hidden-sized and intermediate-sized buffers alive
# at the prefill peak (fit: 16.45 B x hidden + 5.99 B x intermediate in bf16, i.e. 8.2 and 3.0
# elements; we round up to 9 and 3 to cover the fit's scatter).
HIDDEN_WIDTHS = 9
INTERMEDIATE_WIDTHS = 3
# Fixed part of the prefill working set: 15-72 MiB in the fits' intercepts; 64 MiB.
PREFILL_FIXED = 64 * MiB
# Eager attention scores per head x query x key position: 10.4 B measured in bf16, 8.7 in fp32.
EAGER_SCORE_BYTES = {2: 10.4, 4: 8.7}
# An explicit attention mask: 4 B per query x key position per sequence (measured +65 MiB at 4k,
# +241 MiB at 8k, i.e. L^2 x 4).
MASK_BYTES = 4
# Models that run eager attention in transformers 5.24 (_supports_sdpa = False).
EAGER_MODEL_TYPES = frozenset({"gemma2", "gpt_oss"})
# generate's fp32 copy of the last position's logits (batch x vocab x 4) plus the model-dtype
# logits and the processors' working copy; gemma2's softcapping adds two more.
LOGIT_COPIES = 3


def prefill_bytes(arch: Arch, *, context: int, batch: int, dtype_bytes: int) -> int:
    """Peak transient bytes of one decoder layer during a prefill of ``batch`` x ``context`` tokens."""
    tokens = batch * context
    inter = arch.intermediate_size
    if arch.is_moe and arch.num_experts_per_tok:
        # grouped_mm runs each token through its top-k experts: k expert-widths per token.
        inter = max(inter, arch.num_experts_per_tok * arch.expert_intermediate_size)
    linear = tokens * (HIDDEN_WIDTHS * arch.hidden_size + INTERMEDIATE_WIDTHS * inter) * dtype_bytes
    attn = _attention(arch, context=context, batch=batch, dtype_bytes=dtype_bytes)
    return PREFILL_FIXED + linear + attn


def _attention(arch: Arch, *, context: int, batch: int, dtype_bytes: int) -> int:
    heads = arch.num_heads
    if arch.outer_model_type in EAGER_MODEL_TYPES or arch.model_type in EAGER_MODEL_TYPES:
        return int(EAGER_SCORE_BYTES.get(dtype_bytes, 10.4) * batch * heads * context * context)
    extra = 0
    masked = arch.is_encoder_decoder or (arch.sliding_window is not None and context >= arch.sliding_window)
    if masked:
        extra += MASK_BYTES * batch * context * context
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
