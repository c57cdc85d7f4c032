"""Transient memory of a forward pass: prefill working set and logits.

PROVISIONAL coefficients, to be replaced by the CPU measurements (benchmarks/accuracy).
"""

from __future__ import annotations

from planner.arch import Arch

# Bytes per token per unit of width, at the peak of one decoder layer's prefill.
HIDDEN_COPIES = 6
INTERMEDIATE_COPIES = 3


def prefill_bytes(arch: Arch, *, context: int, batch: int, dtype_bytes: int) -> int:
    """Peak transient bytes of one decoder layer during a prefill of ``batch`` x ``context`` tokens."""
    tokens = batch * context
    inter = arch.intermediate_size
    if arch.is_moe:
        inter = max(inter, arch.intermediate_size)
    q_width = arch.num_heads * arch.head_dim
    return tokens * (HIDDEN_COPIES * arch.hidden_size + INTERMEDIATE_COPIES * inter + 2 * q_width) * dtype_bytes


def logits_bytes(arch: Arch, *, batch: int) -> int:
    """Logits of the last position, upcast to fp32, plus the sampling copy generate makes."""
    return 2 * batch * arch.vocab_size * 4
