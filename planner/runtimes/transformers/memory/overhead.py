"""Fixed per-device costs, load-time transients and allocator slack.

CPU figures were measured on this project's CI machine class (2 vCPU x86-64 with AVX512-BF16,
torch 2.13.0 CPU, transformers 5.24, bitsandbytes 0.50.2) in fresh processes, reading
/proc/self/status (benchmarks/accuracy/RESULTS.md). GPU figures are leads from peers until
``benchmarks/gpu_calibration.py`` runs on a lent GPU; each says which.
"""

from __future__ import annotations

from planner.core.units import MiB
from planner.runtimes.transformers.settings import Scheme

# --- CPU (measured) -------------------------------------------------------------------------
# Every CPU figure is from benchmarks/accuracy (RESULTS.md, results.csv): fitcheck verify's child
# process on the machine listed there, peak RSS (VmHWM) per phase.
# RSS after `import torch`, `import transformers`: 237.9-238.1 MiB in every scenario ("imports"
# phase; the research runs had 243 MiB with the Auto class imported too, the value until then).
CPU_IMPORTS = 240 * MiB
# Importing bitsandbytes adds 116 MiB (353.5-353.7 MiB in the bnb scenarios), but a bnb load is
# sequential, and its loader leaves less behind than the threaded load of an unquantized model:
# 28 MiB less on the benchmark's models (anonymous memory after the load: weights + 65 MiB against
# + 93 MiB), about 50 MiB less on tests/test_verify.py's 7M-parameter model (peak 427-433 MiB
# with nf4, 379 MiB in bf16). Net: 72.
CPU_BNB_IMPORT = 72 * MiB
# What from_pretrained leaves besides the weights (model object, loading machinery, the extra
# shared libraries it maps): load peak minus imports for the memory-mapped bf16 scenarios,
# 110.7-112.3 MiB (93 anonymous + 18 file-backed). (Was 88 MiB, anonymous memory only. The former
# CPU_RUNTIME_HALF/OTHER, 95/20 MiB kept by the first forward, are gone: llama-bf16-c128 peaked at
# 640-658 MiB against 647 MiB of imports, loader, weights and cache; see activations.PREFILL_FIXED.)
CPU_LOADER = 112 * MiB
# glibc's malloc serves blocks below its dynamic mmap threshold from the heap, and keeps them
# when freed; the threshold rises with each freed mmapped block up to this maximum
# (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, malloc/malloc.c). Blocks above it are unmapped at once.
GLIBC_MMAP_THRESHOLD_MAX = 32 * MiB
# Heap the load keeps after converting tensors whose working copies stay under that threshold,
# as a fraction of the converted tensors' bytes in the load dtype:
# - MoE experts fused at load (per layer and projection, stack the experts, then concatenate gate
#   and up): when the fused tensor is itself above the threshold (mmapped), the stacks' heap
#   blocks stay behind: mixtral-fp32-c256 kept 559-590 MiB after fusing 576 MiB of fp32 experts
#   (1.0). When it is below, it reuses them: mixtral-bf16-* kept 84 MiB of 288 (0.3).
# - bnb quantization, per linear weight: each working copy that is under the threshold leaves
#   part of its bytes on the heap. Copies (bytes per parameter, share kept):
#   - int8: the fp32 copy, 4 B: llama-nf4-c128-b4 and the int8 scenarios kept 0-0.75x the bf16
#     stored bytes (1.5 B/param) of weights whose fp32 copy is under it, bimodal from run to run;
#     int8's prefill reuses these blocks (budget.py);
#   - nf4: the fp32 and bf16 copies, and the packed 4-bit result (0.5 B/param). Mistral-7B
#     (mistral7b-nf4-c512) kept 1,935 MiB of anonymous memory after the load that a fixed mmap
#     threshold (MALLOC_MMAP_THRESHOLD_=131072) did not: 0.55x its packed bytes, where only the
#     packed forms (up to 28 MiB) and the k/v projections' copies are under the threshold. The small
#     models (every copy under it) fix the fp32 and bf16 shares: 4 x 0.2 + 2 x 0.2 + 0.5 x 0.55 =
#     1.5 B/param, as int8's. nf4's prefill does not reuse these blocks: Llama-3.2-1B in nf4 held
#     310-410 MiB more at its peak than with a fixed threshold, on top of the prefill (budget.py).
CPU_REBUILD_RETAINED = {"above": 1.0, "below": 0.3}
CPU_QUANTIZE_COPIES: dict[str, tuple[tuple[float, float], ...]] = {
    "int8": ((4, 0.375),),
    "nf4": ((4, 0.2), (2, 0.2), (0.5, 0.55)),
}
# Disk offload with a cast (a bf16 checkpoint run in fp32): accelerate reads each disk layer and
# casts it at every forward; the cast copies' heap blocks stay. Above the prefill's working set,
# the highest runs of llama-fp32-disk-c512-b4 held 0.62x the disk layers' fp32 bytes, and 0.83x
# with 5 of its 8 layers on disk (an earlier placement of the same scenario).
CPU_STREAM_RETAINED = 0.8

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
    """What a CPU process costs besides weights, cache and activations.

    The first forward's own lasting allocations are part of the prefill working set
    (``activations.PREFILL_FIXED``), so ``executes`` changes nothing here.
    """
    total = CPU_IMPORTS + CPU_LOADER
    if scheme.bnb:
        total += CPU_BNB_IMPORT
    return total


def gpu_fixed() -> int:
    return CUDA_CONTEXT


def gpu_slack(weights: int, transient: int) -> int:
    return int(weights * GPU_SLACK_WEIGHTS + transient * GPU_SLACK_TRANSIENT)

