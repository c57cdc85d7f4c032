"""llama.cpp's memory, per device, for one setting: weights, KV cache, compute and output buffers.

Every constant names its source: a llama.cpp file:line (the tree vendored in llama-cpp-python
0.3.36, ggml-org/llama.cpp@0c1e57098 by its CHANGELOG; the sdist's vendor/llama.cpp), or a
measurement with llama-cpp-python 0.3.36 on this machine's CPU (the grid in docs/gguf.md,
"Calibration"). GPU figures are peer figures until a GPU run measures them.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.runtimes.gguf.model import GgufModel
from planner.sources.formats.gguf import TYPE_BY_NAME, row_bytes

MiB = 1024**2
# src/llama-context.cpp:290 (llama_context constructor): n_ctx is padded to 256 cells
# (GGML_PAD(n_ctx, 256)); measured: -c 1000 gives "n_ctx = 1024".
CTX_PAD = 256
# common/common.h:453-454 and llama-cpp-python's Llama() (llama_cpp/llama.py:76-77): n_batch 2048
# (llama-server) / 512 (llama-cpp-python), n_ubatch 512 for both; the graph is reserved for
# min(n_ctx, n_ubatch) tokens (src/llama-context.cpp:629, logged "worst-case: n_tokens" at :655).
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
RECURRENT_FLOATS_PER_INNER = 7
RECURRENT_BESIDE_LOGITS = 2
# Mamba-2 layers: the scan's B and C (2 n_group d_state wide) take 3 floats per token each
# column, and the scan's output carries the final states of the n_seq sequences (ggml_ssm_scan
# returns y and the states in one tensor, src/models/mamba-base.cpp build_mamba2_layer), which
# the graph keeps beside about half of one more copy. Measured on 7 tiny mamba2 models (d_inner
# 512-2048, d_state 64/128, n_group 1/2/4, 8-32 heads), n_ctx 512/4096/1024 with 1/4 sequences:
# 6.53 d_inner + 3.0 x 2 n_group d_state floats per token (7.28/8.04/9.54/13.81/29.13 MiB
# logged at n_group d_state 64/128/256/64/256), and 4 sequences add 0.80/1.55/5.17 MiB where 4
# states of one layer are 0.53/1.03/4.12 MiB; the head count adds under 0.02 MiB.
RECURRENT_FLOATS_PER_BC = 3
RECURRENT_STATE_COPIES_X2 = 3
# A hybrid's Mamba layers run beside the attention mask (a graph input, live for the whole graph:
# f32 without flash attention, f16 with it) and about 2 n_embd floats per token more. Measured
# with flash attention on tiny granitehybrids (n_embd 256/512) and a jamba, n_ctx 512-16384: the
# buffer grows by exactly the f16 mask (1.00 MiB per 1024 cells: 8.68/12.18/16.18 MiB at n_ctx
# 512/4096/8192; jamba 7.05/10.55/14.55/22.55 to 16384) over a base 0.90 (n_embd 256) and 1.98
# MiB (n_embd 512) above the pure mamba2 figure; jamba's base equals its pure mamba's 6.55.
HYBRID_FLOATS_PER_EMBD = 2
COMPUTE_SLACK = 1024 * 1024  # the measured figures exceed the fitted terms by 0.01 MiB; the m/1024 outlier by 0.42
# The ggml CPU backend's work buffer, allocated beside the compute buffer when the CPU runs
# attention without flash attention: KQ converted to f16 for the product with V, n_ubatch x n_kv
# x n_head x 2 bytes (ggml/src/ggml-cpu/ggml-cpu.c:2883-2887 ggml_graph_plan: MUL_MAT work_size =
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

    src/llama-context.cpp:3840-3846 llama_init_from_model: "quantized V cache requires
    flash_attn to be enabled" when it is off (with -fa auto llama.cpp turns it on instead; fitcheck
    emits -fa on|off); :3851-3870: "K cache type %s with block size %u does not divide
    n_embd_head_k=%u" (and the same for V) with flash attention.
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
    """KV cells of a layer, all sequences: n_ctx padded to 256, split among the n_seq streams
    (fitcheck emits -np, so llama-server's cache is not unified); a sliding-window layer keeps
    pad256(min(n_ctx_seq, n_swa + n_ubatch)) per stream unless --swa-full."""
    # llama.cpp vendored in llama-cpp-python 0.3.36 (ggml-org/llama.cpp@0c1e57098),
    # src/llama-context.cpp:290-296: n_ctx = GGML_PAD(n_ctx, 256); without a unified cache each of
    # the n_seq streams gets n_ctx_seq = GGML_PAD(n_ctx / n_seq, 256) cells (measured: a jamba at
    # -c 2048 with 3 sequences logs 2304 cells, 2.25 MiB). src/llama-kv-cache-iswa.cpp:73: size_swa
    # = GGML_PAD(min(n_ctx_seq, n_swa x (unified ? n_seq : 1) + n_ubatch), 256) per stream
    # (measured, tiny gemma2 with n_swa 256, tests/test_gguf_real.py: -c 2048/4096/1000/8192 with
    # 2/4/3/2 sequences log 768/768/512/768 SWA cells per stream).
    n_ctx_seq = pad(pad(s.n_ctx) // s.n_seq) if s.n_seq > 1 else pad(s.n_ctx)
    n_stream = max(1, s.n_seq)
    if swa and m.n_swa and not s.swa_full:
        return pad(min(n_ctx_seq, m.n_swa + s.n_ubatch)) * n_stream
    return n_ctx_seq * n_stream


def _kv_row(m: GgufModel, n_head_kv: int, s: Setting) -> int:
    """Bytes of one cell of one attention layer: K and V rows of head_dim x n_head_kv. With an MLA
    cache (deepseek2 and the archs that reuse it) K is the latent, kv_lora_rank + rope dim on one
    head (the GGUF's key_length), and V is a view of K's first kv_lora_rank values, no bytes of
    its own: llama.cpp logs "V (f16): 0.00 MiB" (measured, tests/test_gguf_caches.py)."""
    k = row_bytes(s.type_k.upper(), m.head_dim_k * n_head_kv)
    return k if m.mla else k + row_bytes(s.type_v.upper(), m.head_dim_v * n_head_kv)


def state_layer(m: GgufModel) -> int:
    """f32 bytes of one recurrent layer's state for one sequence: the conv state, n_embd_r() =
    (d_conv - 1) x (d_inner + 2 n_group d_state), and the SSM state, n_embd_s() = d_state x
    d_inner (src/llama-hparams.cpp:208 n_embd_r, :236 n_embd_s; src/llama-memory-recurrent.cpp:102-103
    allocates r and s as F32 rows of those widths per cell)."""
    r = (m.ssm_d_conv - 1 if m.ssm_d_conv > 0 else 0) * (m.ssm_d_inner + 2 * m.ssm_n_group * m.ssm_d_state)
    return 4 * (r + m.ssm_d_state * m.ssm_d_inner)


def kv_layer(m: GgufModel, il: int, s: Setting) -> int:
    """Bytes of layer ``il``'s cache. An attention layer: K and V (src/llama-kv-cache.cpp:233:
    k = ggml_new_tensor_3d(type_k, n_embd_k_gqa, kv_size, n_stream)). A recurrent layer: its
    state times max(1, n_seq_max) cells, whatever n_ctx (src/llama-model.cpp:2670-2675 create_memory:
    llama_memory_recurrent(..., std::max((uint32_t) 1, cparams.n_seq_max), ...)); the hybrid
    memory gives each layer one of the two (src/llama-memory-hybrid.cpp:31-50 filter_attn /
    filter_recr), or both where a recurrent layer also attends (falcon-h1: its layers have KV heads)."""
    la = m.layers[il]
    state = state_layer(m) * max(1, s.n_seq) if la.recurrent else 0
    if la.recurrent and not la.n_head_kv:
        return state
    return state + cells(m, s, la.swa) * _kv_row(m, la.n_head_kv, s)


def kv_per_token(m: GgufModel, s: Setting) -> int:
    """Cache bytes each token of context adds (recurrent state does not grow with it)."""
    return sum(_kv_row(m, la.n_head_kv, s) for la in m.layers if not la.recurrent or la.n_head_kv)


def compute(m: GgufModel, s: Setting) -> int:
    """The compute buffer of a backend that runs layers (see the constants above)."""
    ub = min(s.n_ubatch, pad(s.n_ctx))
    n_kv = pad(s.n_ctx)
    logits = 4 * ub * (m.n_vocab + m.n_ff)
    if any(la.recurrent for la in m.layers):
        # a Mamba block's activations: the larger of about 7 d_inner floats per token (ssm_in's
        # 2 d_inner, the conv and scan buffers) and the logits with 2 d_inner beside them.
        # Measured on tiny mambas (expansion 2, d_state 16-32), every n_ctx 512-4096: d_inner
        # 512/1024/2048 log 6.55/13.09/26.30 MiB (6.55 d_inner floats per token each; 4
        # sequences add under 0.9 MiB); d_inner 512 with n_vocab 8000 logs 17.13 (logits 15.63).
        scan = 4 * ub * (RECURRENT_FLOATS_PER_INNER * m.ssm_d_inner + RECURRENT_FLOATS_PER_BC * 2 * m.ssm_n_group * m.ssm_d_state)
        if m.ssm_n_group:
            scan += RECURRENT_STATE_COPIES_X2 * max(1, s.n_seq) * state_layer(m) // 2
        logits = max(logits + 4 * ub * RECURRENT_BESIDE_LOGITS * m.ssm_d_inner, scan)
        if not any(la.n_head_kv for la in m.layers):  # no attention, no mask: nothing grows with n_ctx
            return logits + COMPUTE_SLACK
        mask = (2 if s.flash_attn else 4) * ub * n_kv
        logits = max(logits, scan + mask + 4 * ub * HYBRID_FLOATS_PER_EMBD * m.n_embd)
    if s.flash_attn:
        attn = 2 * ub * n_kv + 4 * ub * FA_FLOATS_PER_EMBD * m.n_embd
    else:
        # attention logit soft-capping (gemma2) keeps one more n_kv-wide row per token: measured
        # 27.51 MiB logged for a tiny gemma2 at n_ctx 2048 against 23.0 without the term
        attn = 4 * ub * (n_kv * (m.n_head + 1 + (1 if m.attn_softcap else 0)) + 6 * m.n_embd)
    if m.mla:
        # MLA attention in the latent space keeps per head the absorbed query (head_dim_k) twice
        # and the latent output (head_dim_v) per token, beside the KQ rows. Fitted to tiny
        # deepseek2 models (kv_lora_rank 128, rope 32): n_head 4 without flash attention logs
        # 15.01/24.88/44.88 MiB at n_ctx 1024/2048/4096 (predicted 17.5/27.5/47.5); n_head 8,
        # n_vocab 4000: 27.01/80.13 (predicted 30.0/84.0) and with flash attention 10.32/13.01
        # (predicted 15.0/18.0); without the term the last two were under-predicted.
        attn += 4 * ub * m.n_head * (2 * m.head_dim_k + m.head_dim_v)
    quantized = s.type_k.upper() not in ("F16", "F32", "BF16") or s.type_v.upper() not in ("F16", "F32", "BF16")
    return max(logits, attn) + (4 * ub * QUANT_KV_FLOATS_PER_EMBD * m.n_embd if quantized else 0) + COMPUTE_SLACK


def cpu_work(m: GgufModel, s: Setting) -> int:
    """The CPU backend's work buffer when it runs attention (0 with flash attention)."""
    return 0 if s.flash_attn else 2 * min(s.n_ubatch, pad(s.n_ctx)) * pad(s.n_ctx) * m.n_head


def output_buffer(m: GgufModel, s: Setting) -> int:
    """The host output buffer: n_vocab x n_outputs x 4 (src/llama-context.cpp:2116
    output_reserve: n_outputs_max = max(n_outputs, n_seq_max) at :2120, logits n_vocab x
    n_outputs_max at :2141),
    reserved for n_seq outputs at first (the logits of one token per sequence)."""
    return m.n_vocab * max(1, s.n_seq) * 4


def gpu_of_layers(m: GgufModel, s: Setting, splits: list[float]) -> list[int]:
    """The device of each layer index 0..n_layer (n_layer: the output layer): -1 for the CPU,
    else the GPU's position. src/llama-model.cpp:1589-1597 load_tensors: i_gpu_start =
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
