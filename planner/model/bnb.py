"""bitsandbytes 4-bit (NF4/FP4) storage: the bytes a quantized linear weight occupies.

A fact of the format, shared by every runtime that loads bnb 4-bit weights (inference through
transformers, QLoRA fine-tuning).
"""

from __future__ import annotations

# bnb 4-bit: two values per byte, blocks of 64 (Params4bit default blocksize, nn/modules.py), one
# absmax per block. With double quantization (compress_statistics) the absmax is uint8 and a
# second level keeps one fp32 absmax per 256 first-level blocks (functional.quantize_4bit).
NF4_BLOCK = 64
NF4_NESTED_BLOCK = 256
# Per quantized tensor: the 16-entry 4-bit code (fp32) and the 256-entry dynamic map of the second
# level (fp32) plus the offset scalar: 64 + 1024 + 4 bytes (functional.QuantState).
NF4_PER_TENSOR_BYTES = 64 + 1024 + 4
# On CPUs with AVX512-BF16, bnb repacks each 4-bit weight at its first forward and undoes double
# quantization: absmax becomes bf16, 2 bytes per block, plus the 64-byte code (functional.
# _convert_weight_packed_for_cpu; measured n/2 + 2n/64 + 64 exactly, research notes Q4).
NF4_CPU_ABSMAX_BYTES = 2
NF4_CPU_PER_TENSOR_BYTES = 64


def nf4_bytes(params: int, tensors: int, *, cpu: bool = False) -> int:
    """Bytes of ``tensors`` bnb 4-bit weights holding ``params`` parameters together (double
    quantization on, as transformers' ``bnb_4bit_use_double_quant=True``); ``cpu``: the layout bnb
    holds on the CPU after the first forward."""
    blocks = -(-params // NF4_BLOCK)
    if cpu:
        return -(-params // 2) + blocks * NF4_CPU_ABSMAX_BYTES + tensors * NF4_CPU_PER_TENSOR_BYTES
    nested = -(-blocks // NF4_NESTED_BLOCK)
    return -(-params // 2) + blocks + nested * 4 + tensors * NF4_PER_TENSOR_BYTES
