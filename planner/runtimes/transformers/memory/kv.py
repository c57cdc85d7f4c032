"""The KV cache transformers allocates during ``generate``.

transformers 5's default cache is a ``DynamicCache`` with one layer object per decoder layer
(cache_utils.py). A full-attention layer keeps K and V of shape
``[batch, kv_heads, tokens, head_dim]`` in the compute dtype; a sliding-window layer
(``DynamicSlidingWindowLayer``) keeps ``sliding_window - 1`` tokens. Under MLA, transformers 5.24's
DeepSeek code caches the compressed latent (``kv_lora_rank``) and the rotary part
(``qk_rope_head_dim``) as one "head" (modeling_deepseek_v3.py; :mod:`planner.model.arch` maps them onto
K and V widths). For encoder-decoder models each decoder layer also keeps cross-attention K/V
over the input.
"""

from __future__ import annotations

from planner.model.arch import Arch


def tokens_cached(arch: Arch, layer: int, tokens: int) -> int:
    """Tokens layer ``layer`` holds after ``tokens`` have been processed.

    A sliding layer keeps ``sliding_window - 1`` tokens (cache_utils.py DynamicSlidingWindowLayer:
    ``keys[:, :, -sliding_window + 1:]``, verified in the research notes, exp6).
    """
    if arch.sliding_window is not None and arch.layer_types[layer] == "sliding_attention":
        return min(tokens, arch.sliding_window - 1)
    return tokens


def layer_bytes(arch: Arch, layer: int, *, context: int, new_tokens: int, batch: int, dtype_bytes: int) -> int:
    """KV bytes of one decoder layer after a prefill of ``context`` and ``new_tokens`` decode steps."""
    per_token = arch.num_kv_heads * (arch.k_head_dim + arch.v_head_dim) * dtype_bytes
    if arch.is_encoder_decoder:
        # self-attention over the generated tokens, cross-attention over the encoded input
        return batch * per_token * (new_tokens + context)
    return batch * per_token * tokens_cached(arch, layer, context + new_tokens)


def total_bytes(arch: Arch, *, context: int, new_tokens: int, batch: int, dtype_bytes: int) -> int:
    """KV bytes of all layers."""
    return sum(layer_bytes(arch, i, context=context, new_tokens=new_tokens, batch=batch, dtype_bytes=dtype_bytes)
               for i in range(arch.num_layers))


def bytes_per_token(arch: Arch, *, dtype_bytes: int) -> int:
    """KV bytes one token of context adds when no layer has reached its window (for tables)."""
    return arch.num_layers * arch.num_kv_heads * (arch.k_head_dim + arch.v_head_dim) * dtype_bytes
