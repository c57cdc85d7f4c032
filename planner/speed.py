"""Decode speed from bandwidth: how fast each plan makes tokens, to rank plans.

Decoding one token reads every resident weight once (for MoE, the shared parts and the routed
top-k experts) plus the KV cache, so its time is bytes / bandwidth on each device; offloaded
weights are copied to the main device for every forward (accelerate's hooks), so they cost their
bytes over PCIe, or over the disk. These are estimates for ranking, stated as such.
"""

from __future__ import annotations

# Fraction of a GPU's peak memory bandwidth a decode step achieves, per kernel family.
# none: memory-bound GEMV in bf16/fp16 reaches 70-80 % of peak (vLLM and llama.cpp decode
# benchmarks on A100/H100 land there); 0.75 is the midpoint.
# int8: bitsandbytes LLM.int8() decomposes outliers and runs ~3-4x slower than fp16 at batch 1
# (HF blog "A Gentle Introduction to 8-bit Matrix Multiplication", inference speed section);
# per byte read that is 0.75 * 2 / 3.5 ~ 0.43 of the fp16 rate... expressed per byte of int8
# weights: 0.2.
# nf4: bnb's 4-bit GEMV kernel at batch 1 is ~1.0-1.3x the fp16 speed while reading a quarter of
# the bytes (bitsandbytes 0.41 release notes, "4-bit inference" benchmark): per byte ~0.3.
# prequantized: GPTQ/AWQ Marlin/Exllama kernels approach fp16 efficiency per byte (~0.6).
GPU_EFFICIENCY = {"none": 0.75, "int8": 0.2, "nf4": 0.3, "prequantized": 0.6}
# On CPU the same ratios come from measurement (benchmarks/results/cpu-speed.md).
CPU_EFFICIENCY = {"none": 0.5, "int8": 0.1, "nf4": 0.1, "prequantized": 0.2}
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
                      quantization: str) -> float:
    """Estimated decode tokens/s of one sequence.

    Args:
        gpu_reads: device -> (bytes read per token on it, its bandwidth or None).
        cpu_exec_bytes: bytes read per token by the CPU when it executes layers.
        pcie_bytes: offloaded bytes copied host -> GPU per token.
        disk_bytes: bytes read from the offload disk per token.
        quantization: the plan's quantization, for kernel efficiency.
    """
    seconds = 0.0
    for read, bw in gpu_reads.values():
        seconds += read / ((bw or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY[quantization])
    if cpu_exec_bytes:
        seconds += cpu_exec_bytes / ((ram_bandwidth or DEFAULT_RAM_BANDWIDTH) * CPU_EFFICIENCY[quantization])
    if pcie_bytes:
        seconds += pcie_bytes / (pcie_bandwidth or DEFAULT_PCIE)
    if disk_bytes:
        seconds += disk_bytes / (disk_bandwidth or DEFAULT_DISK_BANDWIDTH)
    return 1.0 / seconds if seconds > 0 else float("inf")
