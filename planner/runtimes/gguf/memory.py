"""llama.cpp's memory, per device, for one setting: weights, KV cache, compute and output buffers.

Every constant names its source: a llama.cpp file and function (the tree of ggml-org/llama.cpp,
``src/``), or a measurement with llama-cpp-python 0.3.36 on this machine's CPU (the grid in
docs/gguf.md, "Calibration"). GPU figures are peer figures until a GPU run measures them.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.runtimes.gguf.model import GgufModel
from planner.sources.formats.gguf import TYPE_BY_NAME, row_bytes

MiB = 1024**2
# src/llama-context.cpp (llama_context constructor): n_ctx is padded to 256 cells
# (GGML_PAD(n_ctx, 256)); measured: -c 1000 gives "n_ctx = 1024".
CTX_PAD = 256
# common/common.h and llama-cpp-python Llama(): n_batch 2048 (llama-server) / 512 (llama-cpp-python),
# n_ubatch 512 for both; the graph is reserved for n_ubatch tokens (src/llama-context.cpp
# sched_reserve "worst-case: n_tokens = 512").
N_UBATCH = 512
KV_TYPES = ("f16", "q8_0", "q4_0")

# Compute buffer of the backend that runs the layers (sched_reserve's "compute buffer size"),
# fitted to llama.cpp's own figures on CPU (docs/gguf.md, Calibration: 3 tiny models, n_ctx
# 512-4096, f16/q8_0 cache, flash attention on/off, 30 runs). The graph allocator's peak is the larger of
#  - the output step: the logits of one ubatch and the FFN beside them, 4 x n_ubatch x (n_vocab + n_ff)
#    (model w: 17.63 MiB measured, 17.63 predicted);
#  - attention without flash attention: the KQ scores and the f32 mask, n_ubatch x n_kv x
#    (n_head + 1) x 4, plus 6 n_embd floats per token (models m, e: 8.01/13.01/23.01/43.01 MiB at
#    n_ctx 512-4096, predicted 8/13/23/43; w: 24.01/42.01/78.01, predicted 24/42/78; ollama
#    fs/ggml/ggml.go GraphSize has the same KQ term);
#  - with flash attention: the f16 mask n_ubatch x n_kv x 2 plus 12 n_embd floats per token
#    (measured 9-10 n_embd, one outlier 13 at m/1024);
# and a quantized cache adds 4 n_embd floats per token (w, q8_0, n_ctx 512: 21.17 MiB measured).
FA_FLOATS_PER_EMBD = 12
QUANT_KV_FLOATS_PER_EMBD = 4
COMPUTE_SLACK = 1024 * 1024  # the measured figures exceed the fitted terms by 0.01 MiB; the m/1024 outlier by 0.42
# The ggml CPU backend's work buffer, allocated beside the compute buffer when the CPU runs
# attention without flash attention: KQ converted to f16 for the product with V, n_ubatch x n_kv
# x n_head x 2 bytes (ggml/src/ggml-cpu/ggml-cpu.c ggml_graph_plan: MUL_MAT work_size =
# ggml_row_size(vec_dot_type, nelements(src1))); it explains the RSS that grows with n_ctx
# beyond the compute buffer (m: 12.2 MiB more at n_ctx 4096 than 512; predicted 14).
# A process running llama-cpp-python with its ggml CPU backend, before any model: peak RSS of
# the grid's runs less every buffer llama.cpp logged and the work buffer, 40-47.7 MiB
# (docs/gguf.md). llama-server and Ollama's runner are taken as the same (peer figures: the
# same ggml backends in a native process, with their HTTP server instead of Python).
PROCESS_BASE = {"llama-cpp-python": 50 * MiB, "llama.cpp": 50 * MiB, "ollama": 50 * MiB}
# CUDA context, cuBLAS workspace and the backend's pools per GPU: a peer figure, ollama
# discover/gpu.go cudaMinimumMemory = 457 MiB, until the GPU calibration measures it.
GPU_CONTEXT = 457 * MiB


def pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


@dataclass(frozen=True, slots=True)
class Setting:
    """The knobs of one llama.cpp context."""

    n_ctx: int
    n_gpu_layers: int
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = False
    n_seq: int = 1
    n_cpu_moe: int = 0
    swa_full: bool = False
    n_ubatch: int = N_UBATCH


def kv_type_problem(m: GgufModel, s: Setting) -> str | None:
    """Why llama.cpp refuses this cache type combination, or None.

    src/llama-context.cpp llama_init_from_model: "V cache quantization requires flash_attn";
    "K cache type %s with block size %u does not divide n_embd_head_k=%u" (and the same for V).
    """
    for which, t, dim in (("K", s.type_k, m.head_dim_k), ("V", s.type_v, m.head_dim_v)):
        name = t.upper()
        if name not in TYPE_BY_NAME:
            return f"cache type {t!r} is not a ggml type"
        block = TYPE_BY_NAME[name][1]
        if dim % block:
            return f"{which} cache type {t} has blocks of {block}, which do not divide the head dim {dim}"
    if s.type_v.upper() not in ("F16", "F32", "BF16") and not s.flash_attn:
        return f"a quantized V cache ({s.type_v}) needs flash attention"
    return None


def cells(m: GgufModel, s: Setting, swa: bool) -> int:
    """KV cells of a layer: n_ctx padded to 256; a sliding-window layer keeps
    pad256(min(n_ctx, n_swa x n_seq + n_ubatch)) unless --swa-full (src/llama-kv-cache-iswa.cpp
    size_swa)."""
    full = pad(s.n_ctx)
    if swa and m.n_swa and not s.swa_full:
        return min(full, pad(m.n_swa * s.n_seq + s.n_ubatch))
    return full


def kv_layer(m: GgufModel, il: int, s: Setting) -> int:
    """Bytes of layer ``il``'s K and V (src/llama-kv-cache.cpp: k = ggml_new_tensor_3d(type_k,
    n_embd_k_gqa, kv_size, n_stream); rows of head_dim x n_head_kv)."""
    la = m.layers[il]
    n = cells(m, s, la.swa)
    return n * (row_bytes(s.type_k.upper(), m.head_dim_k * la.n_head_kv) + row_bytes(s.type_v.upper(), m.head_dim_v * la.n_head_kv))


def kv_per_token(m: GgufModel, s: Setting) -> int:
    return sum(row_bytes(s.type_k.upper(), m.head_dim_k * la.n_head_kv) + row_bytes(s.type_v.upper(), m.head_dim_v * la.n_head_kv)
               for la in m.layers)


def compute(m: GgufModel, s: Setting) -> int:
    """The compute buffer of a backend that runs layers (see the constants above)."""
    ub = min(s.n_ubatch, pad(s.n_ctx))
    n_kv = pad(s.n_ctx)
    logits = 4 * ub * (m.n_vocab + m.n_ff)
    if s.flash_attn:
        attn = 2 * ub * n_kv + 4 * ub * FA_FLOATS_PER_EMBD * m.n_embd
    else:
        # attention logit soft-capping (gemma2) keeps one more n_kv-wide row per token: measured
        # 27.51 MiB logged for a tiny gemma2 at n_ctx 2048 against 23.0 without the term
        attn = 4 * ub * (n_kv * (m.n_head + 1 + (1 if m.attn_softcap else 0)) + 6 * m.n_embd)
    quantized = s.type_k.upper() not in ("F16", "F32", "BF16") or s.type_v.upper() not in ("F16", "F32", "BF16")
    return max(logits, attn) + (4 * ub * QUANT_KV_FLOATS_PER_EMBD * m.n_embd if quantized else 0) + COMPUTE_SLACK


def cpu_work(m: GgufModel, s: Setting) -> int:
    """The CPU backend's work buffer when it runs attention (0 with flash attention)."""
    return 0 if s.flash_attn else 2 * min(s.n_ubatch, pad(s.n_ctx)) * pad(s.n_ctx) * m.n_head


def output_buffer(m: GgufModel, s: Setting) -> int:
    """The host output buffer: n_vocab x n_outputs x 4 (src/llama-context.cpp output_reserve),
    reserved for n_seq outputs at first (the logits of one token per sequence)."""
    return m.n_vocab * max(1, s.n_seq) * 4


def gpu_of_layers(m: GgufModel, s: Setting, splits: list[float]) -> list[int]:
    """The device of each layer index 0..n_layer (n_layer: the output layer): -1 for the CPU,
    else the GPU's position. src/llama-model.cpp load_tensors: i_gpu_start =
    max(n_layer + 1 - n_gpu_layers, 0); act_gpu_layers = min(n_gpu_layers, n_layer + 1);
    layer_gpu = upper_bound(splits, (il - i_gpu_start) / act_gpu_layers) over the cumulative,
    normalised tensor split."""
    n = m.n_layer
    start = max(n + 1 - s.n_gpu_layers, 0)
    act = min(s.n_gpu_layers, n + 1) if splits else 0
    cum, total = [], sum(splits) or 1.0
    acc = 0.0
    for x in splits:
        acc += x
        cum.append(acc / total)
    out = []
    for il in range(n + 1):
        if il < start or il - start >= act:
            out.append(-1)
            continue
        frac = (il - start) / act
        gpu = next((i for i, c in enumerate(cum) if frac < c), len(cum) - 1)
        out.append(gpu)
    return out
