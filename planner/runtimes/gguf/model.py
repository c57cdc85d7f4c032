"""The GGUF runtime's model facts: what llama.cpp's memory model needs, from one GGUF header.

Hyperparameters come from the ``{arch}.*`` keys llama.cpp reads (llama.cpp vendored in
llama-cpp-python 0.3.36: src/llama-arch.cpp:165 LLM_KV_NAMES, src/llama-model.cpp:1298
``load_hparams`` and each arch's src/models/*.cpp); tensor bytes per layer from the tensor infos
(``blk.{i}.*`` is layer i; ``output.weight``/``output_norm.weight`` the output layer; the rest,
``token_embd.weight`` above all, the input layer that llama.cpp keeps on the CPU).

Only the selected group's headers are read (planner.sources.gguf_files); the other quant groups
of the repo are sized from their listed file sizes, each layer scaled by the ratio of the file
sizes (:meth:`GgufModel.group_layers`); plans from them say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from planner.core.errors import UnsupportedModel
from planner.core.records import Snapshot, _ToDict, from_plain
from planner.runtimes.gguf.files import groups

FACTS_VERSION = "gguf-5"  # 5: Layer.experts_repack
_BLK = re.compile(r"^blk\.(\d+)\.")
# Types the ggml CPU backend repacks into its CPU_REPACK buffer, a second copy beside the mapped
# file, on x86 (llama.cpp vendored in llama-cpp-python 0.3.36, ggml/src/ggml-cpu/repack.cpp:4925
# ggml_repack_get_optimal_repack_type: Q4_0 with AVX2 at :4974, Q4_K with AVX2 at :5006, Q2_K
# with AVX512 at :5033, IQ4_NL with AVX2 at :5072, MXFP4 with AVX2 at :5094; each needs ne[1] % 8
# == 0). Measured here: both copies are resident: a 6-layer Q4_0 model (44.6 MB file) peaked at
# 164.4 MiB RSS against 128.1 MiB for its Q4_1 twin (49.5 MB, not repacked), the difference being
# the 41.89 MiB "CPU_REPACK model buffer"; MXFP4 repacks too (0.73 + 0.73 MiB). Q8_0, Q4_1,
# Q5_0, Q5_1 and F16 are not repacked on x86. On ARM (NEON dotprod / i8mm) the same function also
# repacks Q5_K (:5050), Q6_K (:5061), Q8_0 (:5105) and Q1_0 (:5127): not modelled (fitcheck
# plans the x86 set). token_embd never is (get_rows reads it: src/llama-model-loader.cpp:1404
# logs it "cannot be used with preferred buffer type CPU_REPACK").
REPACKED = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "Q2_K", "MXFP4"})
# the routed experts: common/common.h:1198 LLM_FFN_EXPS_REGEX "\\.ffn_(up|down|gate|gate_up)_(ch|)exps",
# the tensors --cpu-moe / --n-cpu-moe override (src/llama-arch.cpp:679 names the chexps)
_EXPS = re.compile(r"^blk\.\d+\.ffn_(gate|up|down|gate_up)_(ch)?exps\.")
# The sliding-window pattern llama.cpp sets per architecture when the file does not carry one
# (load_swa_pattern(ml, n) in src/models/gemma2.cpp:6, gemma3.cpp:7, gemma3n.cpp:5, cohere2.cpp:5,
# llama4.cpp:19, openai-moe.cpp:9 (gpt-oss), afmoe.cpp:17, olmo2.cpp:9, plamo3.cpp:9, mellum.cpp:11,
# muse-glimmer.cpp:13; arch names src/llama-arch.cpp:11-158); src/llama-model.cpp:3433-3441 reads
# the file's array or number first; src/llama-hparams.cpp:8-17 set_swa_pattern: layer il is SWA
# unless il % n == n - 1, or with dense_first (cohere2moe.cpp:28, laguna.cpp:39) unless il % n == 0.
# Any other arch keeps a full cache on every layer whatever its sliding_window key says
# (llama-model.cpp:1383 clears is_swa; llama, qwen2, mistral never read the key).
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "llama4": 4, "gpt-oss": 2, "afmoe": 4, "olmo2": 4,
               "plamo3": 8, "mellum": 4, "muse-glimmer": 4}
SWA_DENSE_FIRST = {"cohere2moe": 4, "laguna": 4}
# Architectures whose cache is not the plain per-layer K/V and that fitcheck has not checked
# against a real llama.cpp load (tests/test_gguf_caches.py checks deepseek2, mamba, mamba2, jamba,
# granitehybrid, nemotron_h, lfm2 and falcon-h1): refused rather than guessed, with the reason.
UNVERIFIED_CACHES = {
    "rwkv": "RWKV's token-shift and WKV state (llama.cpp n_embd_r = token_shift_count x n_embd, "
            "n_embd_s = n_embd x wkv_head_size) has not been checked against a llama.cpp load",
    "arwkv": "RWKV-7 time mixing with a token-shift and WKV state, not checked against a llama.cpp load",
    "qwen3next": "its gated delta-net layers' conv and recurrent state have not been checked against a llama.cpp load",
    "qwen35": "its gated delta-net layers' conv and recurrent state have not been checked against a llama.cpp load",
    "lfm2moe": "its routed-expert layers after the dense lead have not been checked against a llama.cpp load",
    "plamo2": "its Mamba and attention layer split has not been checked against a llama.cpp load",
    "nemotron_h_moe": "its three layer kinds with routed experts on a latent (moe_latent_size) and MTP blocks "
                      "have not been checked against a llama.cpp load",
}
RECURRENT_PREFIXES = tuple(UNVERIFIED_CACHES)
# Recurrent (all layers) and hybrid (a layer is recurrent where its head_count_kv is 0) archs
# sized from their ssm.* keys: src/llama-arch.cpp llm_arch_is_recurrent / llm_arch_is_hybrid;
# jamba's and granitehybrid's load_arch_hparams set is_recr_impl[i] = n_head_kv(i) == 0
# (llama.cpp vendored in llama-cpp-python 0.3.36, src/models/jamba.cpp:12, src/models/granite-hybrid.cpp:24).
RECURRENT_ARCHS = frozenset({"mamba", "mamba2"})
HYBRID_ARCHS = frozenset({"jamba", "granitehybrid", "nemotron_h", "lfm2", "falcon-h1"})
# falcon-h1 runs attention and a Mamba-2 mixer side by side in every layer: each layer holds K/V
# and a state (src/llama-model.cpp create_memory: filter_attn and filter_recr both true;
# src/models/falcon-h1.cpp load_arch_hparams fills is_recr_impl with true).
PARALLEL_ARCHS = frozenset({"falcon-h1"})
# lfm2's recurrent layers are short convolutions: a conv state of n_embd x (l_cache - 1) f32 and no
# SSM state (src/llama-hparams.cpp:214-217 n_embd_r; n_embd_s is ssm_d_state x ssm_d_inner = 0),
# held here as d_conv = shortconv.l_cache, d_inner = n_embd, d_state 0.
SHORTCONV_ARCHS = frozenset({"lfm2"})
# Archs whose Mamba layers are Mamba-2 and read ssm.group_count (n_group: B and C are
# n_group x d_state wide, so the conv state is (d_conv - 1) x (d_inner + 2 n_group d_state));
# mamba and jamba do not read the key and llama.cpp keeps n_group 0 for them
# (src/models/mamba2.cpp:8, src/models/granite-hybrid.cpp:14, src/llama-hparams.cpp:229).
MAMBA2_ARCHS = frozenset({"mamba2", "granitehybrid", "nemotron_h", "falcon-h1"})
# nemotron_h has three layer kinds: Mamba-2 where head_count_kv and feed_forward_length are both
# 0, attention where head_count_kv is not, an FFN block (no cache at all) where
# feed_forward_length is not (src/models/nemotron-h.cpp:10-12; create_memory's filter_attn /
# filter_recr in src/llama-model.cpp both require n_ff(il) == 0).
RECURRENT_NEEDS_NO_FFN = frozenset({"nemotron_h"})


@dataclass(frozen=True, slots=True)
class Layer(_ToDict):
    """One repeating layer: its tensor bytes, of which ``experts`` are the routed experts
    (``ffn_*_exps``), its KV heads, whether it is a sliding-window layer, and the bytes of its
    matrices the CPU backend repacks into a second copy when they are kept on the CPU:
    ``repack`` all of them, ``experts_repack`` the experts' share (repacked also when
    --n-cpu-moe keeps a GPU layer's experts on the CPU: planner.runtimes.gguf.plans.evaluate)."""

    bytes: int
    experts: int
    n_head_kv: int
    swa: bool = False
    repack: int = 0
    recurrent: bool = False
    experts_repack: int = 0


@dataclass(frozen=True, slots=True)
class Group(_ToDict):
    """One quant file (or split set) of the repo: its files and listed bytes."""

    quant: str
    files: tuple[str, ...]
    size: int


@dataclass(frozen=True, slots=True)
class GgufModel(_ToDict):
    """What the GGUF runtime plans from.

    Attributes:
        repo: the repo id or local path.
        arch: ``general.architecture``.
        quant: the quant group read (e.g. "Q4_K_M").
        files: its files (shard 1 first).
        n_embd, n_head, head_dim_k, head_dim_v, n_vocab, n_ctx_train, n_swa, n_expert,
            n_expert_used, n_ff: llama.cpp's hparams of the same names.
        layers: the repeating layers 0..n_layer-1.
        input_bytes: tensors outside the layers and the output layer (token_embd), kept on the CPU.
        output_bytes: the output layer (output.weight, output_norm); when tied, the token
            embedding llama.cpp duplicates onto the output layer's device.
        embd_bytes: token_embd.weight alone.
        tied: no output.weight (llama.cpp loads token_embd again as the output, TENSOR_DUPLICATED).
        weight_bytes: all tensor bytes of the files read.
        parameters: elements of all tensors.
        groups: every quant group of the repo.
        mla: a DeepSeek-style MLA cache (``attention.key_length_mla``): K holds the compressed
            latent (head_dim_k = kv_lora_rank + rope dim, one head) and V is a view of it.
        ssm_d_conv, ssm_d_inner, ssm_d_state, ssm_n_group: the Mamba hparams of the recurrent
            layers (``ssm.conv_kernel``, ``ssm.inner_size``, ``ssm.state_size``, ``ssm.group_count``).
    """

    repo: str
    arch: str
    quant: str
    files: tuple[str, ...]
    n_embd: int
    n_head: int
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int
    n_ff: int
    layers: tuple[Layer, ...]
    input_bytes: int
    output_bytes: int
    embd_bytes: int
    tied: bool
    weight_bytes: int
    params: int
    n_swa: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    groups: tuple[Group, ...] = field(default_factory=tuple)
    name: str = ""
    output_repack: int = 0
    attn_softcap: bool = False
    mla: bool = False
    ssm_d_conv: int = 0
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_n_group: int = 0

    @property
    def parameters(self) -> int:
        return self.params

    @property
    def download_bytes(self) -> int:
        for g in self.groups:
            if g.quant == self.quant:
                return g.size
        return self.weight_bytes

    @property
    def max_position_embeddings(self) -> int | None:
        """The trained context (``{arch}.context_length``): the largest-context search stops there."""
        return self.n_ctx_train or None

    @property
    def n_layer(self) -> int:
        return len(self.layers)

    def group(self, quant: str) -> Group | None:
        for g in self.groups:
            if g.quant == quant:
                return g
        return None

    def scaled(self, quant: str) -> GgufModel:
        """This model as another quant group of the repo: every tensor scaled by the ratio of the
        groups' listed sizes (their headers were not read)."""
        if quant == self.quant:
            return self
        g = self.group(quant)
        if g is None or not g.size:
            raise UnsupportedModel(f"{self.repo}: has no quant {quant!r}")
        f = g.size / max(1, self.weight_bytes)
        layers = tuple(replace(la, bytes=int(la.bytes * f), experts=int(la.experts * f), repack=int(la.repack * f),
                               experts_repack=int(la.experts_repack * f)) for la in self.layers)
        return replace(self, quant=quant, files=g.files, layers=layers, input_bytes=int(self.input_bytes * f),
                       output_bytes=int(self.output_bytes * f), embd_bytes=int(self.embd_bytes * f), weight_bytes=g.size,
                       output_repack=int(self.output_repack * f))


def build(snap: Snapshot, cached: Mapping[str, Any] | None = None) -> GgufModel:
    """The facts from a snapshot read with a "gguf" selection (or from their cached ``to_dict()``)."""
    if cached is not None:
        try:
            return from_plain(GgufModel, dict(cached))
        except (TypeError, KeyError, ValueError):
            pass
    if snap.weight_format != "gguf" or not snap.gguf or not snap.gguf.get("headers"):
        raise UnsupportedModel(f"{snap.id}: no GGUF headers were read")
    md = snap.gguf["headers"][0]["metadata"]
    arch = md.get("general.architecture")
    if not isinstance(arch, str):
        raise UnsupportedModel(f"{snap.id}: GGUF has no general.architecture")
    mla = f"{arch}.attention.key_length_mla" in md and f"{arch}.attention.value_length_mla" in md
    ssm = arch in RECURRENT_ARCHS or arch in HYBRID_ARCHS
    why = _unverified_cache(arch)
    if not why and arch in HYBRID_ARCHS and md.get(f"{arch}.nextn_predict_layers"):
        why = f"its {md[f'{arch}.nextn_predict_layers']} MTP (nextn) blocks are not sized"
    if why:
        raise UnsupportedModel(f"{snap.id}: GGUF architecture {arch!r} is not sized by fitcheck yet: {why}")
    if (f"{arch}.attention.kv_lora_rank" in md and not mla) or (f"{arch}.ssm.state_size" in md and not ssm) \
            or (f"{arch}.ssm.group_count" in md and arch not in MAMBA2_ARCHS):
        raise UnsupportedModel(f"{snap.id}: GGUF architecture {arch!r} (recurrent or MLA cache) is not sized by fitcheck yet")

    def key(name: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{name}", default)

    n_layer = _int(key("block_count"), snap.id, "block_count")
    n_embd = _int(key("embedding_length"), snap.id, "embedding_length")
    if arch in RECURRENT_ARCHS:  # no attention: head counts are 0 (convert_hf_to_gguf.py MambaModel)
        n_head = n_head_kv = [0] * n_layer
    else:
        n_head = _per_layer(key("attention.head_count"), n_layer, snap.id, "attention.head_count")
        n_head_kv = _per_layer(key("attention.head_count_kv", n_head), n_layer, snap.id, "attention.head_count_kv")
    ffs = _per_layer(key("feed_forward_length", 0), n_layer, snap.id, "feed_forward_length", zero=True) \
        if arch in RECURRENT_NEEDS_NO_FFN else [0] * n_layer
    recurrent = [arch in RECURRENT_ARCHS or arch in PARALLEL_ARCHS or (arch in HYBRID_ARCHS and n_head_kv[il] == 0 and ffs[il] == 0)
                 for il in range(n_layer)]
    d_conv = d_inner = d_state = 0
    if any(recurrent) and arch in SHORTCONV_ARCHS:
        d_conv, d_inner = _int(key("shortconv.l_cache"), snap.id, "shortconv.l_cache"), n_embd
    elif any(recurrent):
        d_conv = _int(key("ssm.conv_kernel"), snap.id, "ssm.conv_kernel")
        d_inner = _int(key("ssm.inner_size"), snap.id, "ssm.inner_size")
        d_state = _int(key("ssm.state_size"), snap.id, "ssm.state_size")
    n_group = _int(key("ssm.group_count"), snap.id, "ssm.group_count") if any(recurrent) and arch in MAMBA2_ARCHS else 0
    head0 = max(n_head) or 1
    if arch in RECURRENT_ARCHS:  # no K/V at all (the converter writes key_length 0)
        head0 = head_dim_k = head_dim_v = 0
    else:
        head_dim_k = _int(key("attention.key_length", n_embd // head0), snap.id, "attention.key_length")
        head_dim_v = _int(key("attention.value_length", n_embd // head0), snap.id, "attention.value_length")
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = key("vocab_size") or (tokens["length"] if isinstance(tokens, dict) else len(tokens) if isinstance(tokens, list) else 0)
    n_swa = int(key("attention.sliding_window", 0) or 0)
    pattern = key("attention.sliding_window_pattern")
    swa = [False] * n_layer
    if n_swa:
        if isinstance(pattern, list) and len(pattern) == n_layer:
            swa = [bool(p) for p in pattern]
        elif arch in SWA_PATTERN or arch in SWA_DENSE_FIRST:
            first = arch in SWA_DENSE_FIRST
            n = pattern if isinstance(pattern, int) and pattern > 0 else (SWA_DENSE_FIRST if first else SWA_PATTERN)[arch]
            swa = [il % n != 0 if first else il % n < n - 1 for il in range(n_layer)]
        else:  # llama.cpp does not window this arch: every layer keeps the full cache
            n_swa = 0

    per: list[list[int]] = [[0, 0, 0, 0] for _ in range(n_layer)]
    input_bytes = output_bytes = output_repack = params = 0
    names = set()
    embd = 0
    for t in snap.tensors:
        names.add(t.name)
        n = 1
        for d in t.shape:
            n *= d
        params += n
        m = _BLK.match(t.name)
        if m and int(m.group(1)) < n_layer:
            i = int(m.group(1))
            per[i][0] += t.nbytes
            exps = bool(_EXPS.match(t.name))
            if exps:
                per[i][1] += t.nbytes
            if t.dtype in REPACKED and len(t.shape) >= 2:
                per[i][2] += t.nbytes
                per[i][3] += t.nbytes if exps else 0
        elif t.name.startswith(("output.", "output_norm.")):
            output_bytes += t.nbytes
            if t.dtype in REPACKED and len(t.shape) >= 2:
                output_repack += t.nbytes
        else:
            input_bytes += t.nbytes
            if t.name == "token_embd.weight":
                embd = t.nbytes
    tied = "output.weight" not in names
    if tied:
        output_bytes += embd
    weight = sum(t.nbytes for t in snap.tensors)
    layers = tuple(Layer(bytes=b, experts=e, n_head_kv=n_head_kv[i], swa=swa[i], repack=rp, recurrent=recurrent[i], experts_repack=erp)
                   for i, (b, e, rp, erp) in enumerate(per))
    listing = groups(snap.files)
    gs = tuple(Group(quant=q, files=tuple(f.path for f in fs), size=sum(f.size or 0 for f in fs)) for q, fs in listing.items())
    read_files = tuple(snap.weight_files)
    quant = next((g.quant for g in gs if g.files == read_files), "")
    if not quant:
        from planner.runtimes.gguf.files import quant_of

        quant = quant_of(read_files[0]) if read_files else "?"
        gs = (*gs, Group(quant=quant, files=read_files, size=weight))
    ff = key("feed_forward_length", 0)
    n_ff = max(ff) if isinstance(ff, list) else int(ff or 0)
    return GgufModel(repo=snap.id, arch=arch, quant=quant, files=read_files, n_embd=n_embd, n_head=head0, head_dim_k=head_dim_k,
                     head_dim_v=head_dim_v, n_vocab=int(n_vocab), n_ctx_train=int(key("context_length", 0) or 0), n_ff=n_ff,
                     layers=layers, input_bytes=input_bytes, output_bytes=output_bytes, embd_bytes=embd, tied=tied, weight_bytes=weight,
                     params=params, n_swa=n_swa, n_expert=int(key("expert_count", 0) or 0),
                     n_expert_used=int(key("expert_used_count", 0) or 0), groups=gs, output_repack=output_repack,
                     attn_softcap=bool(key("attn_logit_softcapping", 0)), mla=mla, ssm_d_conv=d_conv, ssm_d_inner=d_inner,
                     ssm_d_state=d_state, ssm_n_group=n_group,
                     name=str(md.get("general.name", "")))


def _unverified_cache(arch: str) -> str:
    """Why fitcheck does not size ``arch``'s cache ("" when it does)."""
    for prefix, why in UNVERIFIED_CACHES.items():
        if arch.startswith(prefix):
            return why
    return ""


def _int(v: Any, repo: str, what: str) -> int:
    if type(v) is not int or v <= 0 or v > 1 << 24:
        raise UnsupportedModel(f"{repo}: GGUF {what} is {str(v)[:40]!r}, not a positive count")
    return v


def _per_layer(v: Any, n_layer: int, repo: str, what: str, zero: bool = False) -> list[int]:
    """One count per layer from a scalar or an array key; ``zero``: a scalar 0 is allowed (FFN widths)."""
    if isinstance(v, list):
        if len(v) != n_layer or not all(type(x) is int and 0 <= x <= (1 << 24 if zero else 1 << 16) for x in v):
            raise UnsupportedModel(f"{repo}: GGUF {what} is not one count per layer")
        return list(v)
    if zero and v == 0:
        return [0] * n_layer
    return [_int(v, repo, what)] * n_layer
