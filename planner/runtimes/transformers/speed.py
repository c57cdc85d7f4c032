"""Decode speed from bandwidth: how fast each plan makes tokens, to rank plans.

Decoding one token reads every resident weight once (for MoE, the shared parts and the routed
top-k experts) plus the KV cache, so its time is bytes / bandwidth on each device; offloaded
weights are copied to the main device for every forward (accelerate's hooks), so they cost their
bytes over PCIe, or over the disk. These are estimates for ranking, stated as such.
"""

from __future__ import annotations

# Fraction of a GPU's peak memory bandwidth a decode step achieves per byte of weights read:
# none: memory-bound GEMV in bf16/fp16 reaches 70-80 % of peak (vLLM and llama.cpp decode
#   benchmarks on A100/H100); 0.75.
# prequantized: GPTQ/AWQ Marlin/Exllama kernels come near fp16 efficiency per byte; 0.6.
GPU_EFFICIENCY = {"none": 0.75, "prequantized": 0.6}
# bitsandbytes on a GPU is not bandwidth-bound at batch 1: it dequantizes (nf4) or decomposes
# outliers (int8) in every matmul, and decodes *slower* than the same model in 16-bit although it
# reads fewer bytes. So its speed is the 16-bit plan's, times its measured ratio to it (whole
# model, batch 1, the same GPU):
# nf4: 0.75 (Mistral-7B, 36.5 vs 48.6 tok/s, bitsandbytes issue #611), 0.64 (Qwen2.5-0.5B on a
#   T4, 7.92 vs 5.05 ms per step, earino.github.io "Your int8 Quantization Is 2.5x Slower Than
#   fp16"), 0.5 (falcon-7b on an A10G, "2x increased latency", text-generation-inference PR #586):
#   0.6.
# int8: 0.15 (LLaMA-7B on an A100, "LLM.int8 is 15% of FP16", bitsandbytes issue #181), 0.26
#   (Qwen2.5-0.5B on a T4, 6.3 vs 24.4 tok/s, github dohu012/llm-quantization-benchmark), 0.40
#   (the same earino post, 12.65 vs 5.05 ms): the median, 0.26.
BNB_GPU_SPEED = {"nf4": 0.6, "int8": 0.26}
# On CPU, per byte of weights read, for (quantization, dtype). bf16 reaches about half of RAM
# bandwidth (a lead: 97M bf16 model at 86.6 tok/s reads 16.8 GB/s on this 2-vCPU CI machine).
# The others come from decode speed measured against bf16 on the same model (research notes Q8:
# fp32 0.6x, int8 1.0x, nf4 1.8x per token) divided by their byte ratio to bf16 for an 8B model
# (fp32 2.0, int8 0.57, nf4 0.36): fp32 0.6, int8 0.28, nf4 0.32. bnb's fast CPU 4-bit path needs
# AVX512-BF16; other CPUs are slower.
CPU_EFFICIENCY = {("none", "bfloat16"): 0.5, ("none", "float16"): 0.5, ("none", "float32"): 0.6,
                  ("int8", "bfloat16"): 0.28, ("int8", "float16"): 0.28, ("int8", "float32"): 0.2,
                  ("nf4", "bfloat16"): 0.32, ("nf4", "float16"): 0.32, ("nf4", "float32"): 0.25,
                  ("prequantized", "bfloat16"): 0.2, ("prequantized", "float16"): 0.2, ("prequantized", "float32"): 0.2}
# Defaults when a device's bandwidth is unknown (a --gpu override with no model, an unknown CPU):
# PCIe 4.0 x16 effective 25 GB/s (PCI-SIG 4.0 spec: 31.5 GB/s raw, ~80 % achieved with pinned
# memory), dual-channel DDR4-3200 51.2 GB/s, a consumer NVMe at 3 GB/s, and a GPU at 500 GB/s
# (between an RTX 4060's 272 and an RTX 3090's 936).
DEFAULT_PCIE = 25_000_000_000
DEFAULT_RAM_BANDWIDTH = 51_200_000_000
DEFAULT_DISK_BANDWIDTH = 3_000_000_000
DEFAULT_GPU_BANDWIDTH = 500_000_000_000


def tokens_per_second(*, gpu_reads: dict[str, tuple[int, int | None]], cpu_exec_bytes: int, ram_bandwidth: int | None,
                      pcie_bytes: int, pcie_bandwidth: int | None, disk_bytes: int, disk_bandwidth: int | None,
                      quantization: str, dtype: str = "bfloat16") -> float:
    """Estimated decode tokens/s of one sequence.

    Args:
        gpu_reads: device -> (bytes read per token on it, its bandwidth or None); for a bnb
            quantization, the bytes those weights would have in the 16-bit compute dtype.
        cpu_exec_bytes: bytes read per token by the CPU when it executes layers.
        pcie_bytes: offloaded bytes copied host -> GPU per token.
        disk_bytes: bytes read from the offload disk per token.
        quantization: the plan's quantization, for kernel efficiency.
        dtype: the plan's dtype (CPU efficiency depends on it).
    """
    seconds = 0.0
    for read, bw in gpu_reads.values():
        if quantization in BNB_GPU_SPEED:  # ``read``: the same weights' bytes in the 16-bit compute dtype
            seconds += read / ((bw or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY["none"] * BNB_GPU_SPEED[quantization])
        else:
            seconds += read / ((bw or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY[quantization])
    if cpu_exec_bytes:
        seconds += cpu_exec_bytes / ((ram_bandwidth or DEFAULT_RAM_BANDWIDTH) * CPU_EFFICIENCY[(quantization, dtype)])
    if pcie_bytes:
        seconds += pcie_bytes / (pcie_bandwidth or DEFAULT_PCIE)
    if disk_bytes:
        seconds += disk_bytes / (disk_bandwidth or DEFAULT_DISK_BANDWIDTH)
    return 1.0 / seconds if seconds > 0 else float("inf")
