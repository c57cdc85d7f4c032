"""Fixed per-device costs, load-time transients and allocator slack.

CPU figures were measured on this project's CI machine class (2 vCPU x86-64 with AVX512-BF16,
torch 2.13.0 CPU, transformers 5.24, bitsandbytes 0.50.2) in fresh processes, reading
/proc/self/status (benchmarks/results/cpu-baseline.md). GPU figures are leads from peers until
``benchmarks/gpu_calibration.py`` runs on a lent GPU; each says which.
"""

from __future__ import annotations

from planner.records import Scheme
from planner.units import MiB

# --- CPU (measured) -------------------------------------------------------------------------
# RSS of a process after `import torch`, `import transformers` and the Auto class: 254,865,408 B
# (243 MiB; three runs within 0.1 MiB).
CPU_IMPORTS = 243 * MiB
# Importing bitsandbytes adds 122,184,000 B (116.5 MiB; three runs): its CPU backend and kernels.
CPU_BNB_IMPORT = 117 * MiB
# What from_pretrained leaves behind besides the weights (model object, loading machinery): RSS
# after load minus weights was 88 MiB anonymous for every model and dtype measured (150M-1B).
CPU_LOADER = 88 * MiB
# Anonymous memory the first forward adds and keeps: 95 MiB with bf16/fp16 weights in
# nn.Linear (oneDNN's bf16 kernels), 15-20 MiB with fp32 or bnb layers (150M-1B, constant in size).
CPU_RUNTIME_HALF = 95 * MiB
CPU_RUNTIME_OTHER = 20 * MiB

# --- GPU (leads; uncalibrated here: no GPU was lent to this project's sessions) ----------------
# CUDA context + cuBLAS/cuDNN handles of a torch process. Peers: Ollama settled on 457 MiB for CUDA,
# gpu_poor uses 650 MB, llama.cpp keeps 1024 MiB free; torch 2.x with lazy module loading sits in
# the 400-600 MiB range on Ampere/Hopper. 600 MiB until the calibration script measures it.
CUDA_CONTEXT = 600 * MiB
# Caching-allocator slack over what tensors hold: segments rounded to 2 MiB and fragmentation over
# a generate (PyTorch CUDA caching allocator docs). Peers use x1.15-x1.2 on everything; we apply 5 %
# to weights and 15 % to the transient parts until calibrated.
GPU_SLACK_WEIGHTS = 0.05
GPU_SLACK_TRANSIENT = 0.15


def cpu_fixed(scheme: Scheme, *, executes: bool) -> int:
    """What a CPU process costs besides weights, cache and activations."""
    total = CPU_IMPORTS + CPU_LOADER
    if scheme.bnb:
        total += CPU_BNB_IMPORT
    if executes:
        total += CPU_RUNTIME_HALF if scheme.quantization == "none" and scheme.dtype != "float32" else CPU_RUNTIME_OTHER
    return total


def gpu_fixed() -> int:
    return CUDA_CONTEXT


def gpu_slack(weights: int, transient: int) -> int:
    return int(weights * GPU_SLACK_WEIGHTS + transient * GPU_SLACK_TRANSIENT)


GPU_SLACK_FRACTION = GPU_SLACK_WEIGHTS
