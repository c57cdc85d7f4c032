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
# On a CPU, decode is bound by compute (at the few cores a desktop or a VM gives torch) or by RAM
# bandwidth, whichever is slower. Compute: thread-seconds (wall seconds x torch's threads) per
# parameter per token, fitted by `benchmarks/speed/cpu_speed.py fit` to the wall time of a
# Llama-3.2-1B-shaped model at 2 and 16 decoder layers, 3 rounds, on an idle 2-vCPU Intel Xeon
# (AVX-512 BF16, AMX; load average 0.9-1.7), torch 2.13, bitsandbytes 0.50 without the `kernels`
# package (benchmarks/speed/results-fit.json, RESULTS.md 2026-12-02 21:35): the slope over the
# layers is a layer's cost (its linears, attention, norms, framework overhead), the rest the output
# head. Checked out of sample at 4 and 8 layers (results-check.json). Wall time, not CPU time:
# OpenMP threads spin while they wait, so CPU time grows with the contention (the first fit, from
# CPU time on a machine at load 18-28, had bnb 2-3x too slow). nf4 decodes fastest on this CPU
# (bnb's CPU 4-bit GEMV reads 4x fewer bytes); int8, bf16 and fp32 are within 15 % of each other.
CPU_LAYER_S_PER_PARAM = {("none", "bfloat16"): 0.492e-9, ("none", "float32"): 0.422e-9,
                         ("nf4", "bfloat16"): 0.196e-9, ("int8", "bfloat16"): 0.449e-9}
# The output head is one large GEMV in the load dtype under every scheme (bnb skips lm_head): per
# dtype, the mean of the intercepts of the schemes computing in it (bf16: 0.325, 0.349 and 0.392e-9
# from bf16, nf4 and int8; fp32: 0.345e-9).
CPU_HEAD_S_PER_PARAM = {"bfloat16": 0.355e-9, "float32": 0.345e-9}
# Bandwidth: fraction of RAM bandwidth a decode step reaches per byte read (a lead: a 97M bf16
# model at 86.6 tok/s read 16.8 GB/s on a 2-vCPU CI machine, about half its bandwidth).
CPU_BANDWIDTH_EFFICIENCY = 0.5
# Load, wall seconds (the checkpoint in the page cache): a fixed part (from_pretrained's setup;
# bnb's import and replacement of the linears) and a part per parameter converted (a dtype cast,
# or bnb quantizing a linear), from the same fit run (medians, 2 -> 16 layers): bf16 as stored
# 2.79 -> 2.89 s; fp32 3.46 -> 5.17 s (a cast of 0.38 G and 1.24 G parameters: 1.7 and 1.9 ns each
# over the 2.8 s fixed); nf4 8.80 -> 37.24 s (33.4 ns per linear quantized, 4.7 s fixed); int8
# 6.00 -> 13.22 s (8.5 ns, 5.0 s fixed). Pre-quantized checkpoints load as stored, like bf16 (not
# measured). Llama-3.2-1B in nf4 is then 37 s against 2.9 s in bf16 (issue 13 measured 48 s and
# 1.3 s on another machine).
CPU_LOAD_FIXED_S = {"none": 2.8, "nf4": 4.7, "int8": 5.0, "prequantized": 2.8}
CPU_LOAD_S_PER_CAST_PARAM = 1.9e-9
CPU_LOAD_S_PER_QUANTIZED_PARAM = {"nf4": 33.4e-9, "int8": 8.5e-9}
# A prompt token costs this fraction of a decode step (prefill runs as matrix-matrix products):
# 16-token prompts took 1.0-1.5 decode steps in the benchmark (first_token_cpu_s).
PREFILL_TOKEN_SHARE = 1 / 16
# Defaults when a device's bandwidth is unknown (a --gpu override with no model, an unknown CPU):
# PCIe 4.0 x16 effective 25 GB/s (PCI-SIG 4.0 spec: 31.5 GB/s raw, ~80 % achieved with pinned
# memory), dual-channel DDR4-3200 51.2 GB/s, a consumer NVMe at 3 GB/s, and a GPU at 500 GB/s
# (between an RTX 4060's 272 and an RTX 3090's 936).
DEFAULT_PCIE = 25_000_000_000
DEFAULT_RAM_BANDWIDTH = 51_200_000_000
DEFAULT_DISK_BANDWIDTH = 3_000_000_000
DEFAULT_GPU_BANDWIDTH = 500_000_000_000
# Threads when the machine's CPU count is unknown: a 4-core laptop.
DEFAULT_CPU_THREADS = 4


def cpu_threads(cpu_count: int | None) -> int:
    """Threads torch computes with: its intra-op pool takes the physical cores, half the logical
    CPUs of an SMT machine (the profiles count logical CPUs); a 2-vCPU VM runs 2 (measured here)."""
    if not cpu_count:
        return DEFAULT_CPU_THREADS
    return cpu_count if cpu_count <= 2 else max(1, cpu_count // 2)


def cpu_decode_seconds(*, params: dict[str, int], quantization: str, dtype: str, cpu_count: int | None,
                       ram_bandwidth: int | None, read_bytes: int = 0) -> float:
    """Seconds per decoded token on the CPU: the slower of compute and RAM bandwidth.

    Args:
        params: parameters run per token: "layer" (decoder layers, the routed experts only) and
            "head" (the output head).
    """
    if quantization in ("nf4", "int8"):
        # bnb's CPU kernels compute in bf16 whatever the load dtype (backends/cpu/ops.py casts A)
        layer = CPU_LAYER_S_PER_PARAM[(quantization, "bfloat16")]
    else:
        layer = CPU_LAYER_S_PER_PARAM[("none", _cpu_dtype(dtype))]
    head = CPU_HEAD_S_PER_PARAM[_cpu_dtype(dtype)]
    compute = (params.get("layer", 0) * layer + params.get("head", 0) * head) / cpu_threads(cpu_count)
    memory = read_bytes / ((ram_bandwidth or DEFAULT_RAM_BANDWIDTH) * CPU_BANDWIDTH_EFFICIENCY)
    return max(compute, memory)


def cpu_load_seconds(*, params: dict[str, int], quantization: str, dtype: str, stored_dtype: str,
                     cpu_count: int | None = None) -> float:
    """Seconds ``from_pretrained`` takes on the CPU (the checkpoint in the page cache): fixed
    setup, plus casting every parameter when the load dtype differs from the stored one, plus bnb
    quantizing the decoder layers' linears. ``cpu_count`` is unused: the load is mostly one core's work."""
    total = params.get("cast", params.get("layer", 0) + params.get("head", 0) + params.get("embed", 0))
    seconds = CPU_LOAD_FIXED_S.get(quantization, CPU_LOAD_FIXED_S["none"])
    if dtype != stored_dtype:
        seconds += total * CPU_LOAD_S_PER_CAST_PARAM
    if quantization in CPU_LOAD_S_PER_QUANTIZED_PARAM:
        seconds += params.get("linear", params.get("layer", 0)) * CPU_LOAD_S_PER_QUANTIZED_PARAM[quantization]
    return seconds


def _cpu_dtype(dtype: str) -> str:
    return "float32" if dtype == "float32" else "bfloat16"


def tokens_per_second(*, gpu_reads: dict[str, tuple[int, int | None]], cpu_exec_bytes: int, ram_bandwidth: int | None,
                      pcie_bytes: int, pcie_bandwidth: int | None, disk_bytes: int, disk_bandwidth: int | None,
                      quantization: str, dtype: str = "bfloat16", cpu_params: dict[str, int] | None = None,
                      cpu_count: int | None = None) -> float:
    """Estimated decode tokens/s of one sequence.

    Args:
        gpu_reads: device -> (bytes read per token on it, its bandwidth or None); for a bnb
            quantization, the bytes those weights would have in the 16-bit compute dtype.
        cpu_exec_bytes: bytes read per token by the CPU when it executes layers.
        pcie_bytes: offloaded bytes copied host -> GPU per token.
        disk_bytes: bytes read from the offload disk per token.
        quantization: the plan's quantization, for kernel efficiency.
        dtype: the plan's dtype (CPU speed depends on it).
        cpu_params: parameters the CPU runs per token, when it executes layers (see
            :func:`cpu_decode_seconds`); cpu_count: the machine's logical CPUs.
    """
    seconds = 0.0
    for read, bw in gpu_reads.values():
        if quantization in BNB_GPU_SPEED:  # ``read``: the same weights' bytes in the 16-bit compute dtype
            seconds += read / ((bw or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY["none"] * BNB_GPU_SPEED[quantization])
        else:
            seconds += read / ((bw or DEFAULT_GPU_BANDWIDTH) * GPU_EFFICIENCY[quantization])
    if cpu_exec_bytes or cpu_params:
        seconds += cpu_decode_seconds(params=cpu_params or {}, quantization=quantization, dtype=dtype, cpu_count=cpu_count,
                                      ram_bandwidth=ram_bandwidth, read_bytes=cpu_exec_bytes)
    if pcie_bytes:
        seconds += pcie_bytes / (pcie_bandwidth or DEFAULT_PCIE)
    if disk_bytes:
        seconds += disk_bytes / (disk_bandwidth or DEFAULT_DISK_BANDWIDTH)
    return 1.0 / seconds if seconds > 0 else float("inf")
