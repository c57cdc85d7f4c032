"""What vLLM needs to know about a checkpoint: its architecture and its weight bytes by how they shard.

Every tensor of the safetensors headers lands in one class, by how vLLM's layers split it across
tensor-parallel ranks (vllm 0.34.0 source):

* ``split``: column- or row-parallel Linears (q/o projections, MLP, routed and shared experts):
  ``1/tp`` of the bytes on each rank (``ColumnParallelLinear``/``RowParallelLinear``,
  model_executor/layers/linear.py:500 ``divide(output_size, self.tp_size)``; FusedMoE splits
  every expert's intermediate dimension the same way without expert parallelism);
* ``kv``: the k/v projections: each rank holds ``max(1, kv_heads // tp)`` heads, replicated once
  ``tp > kv_heads`` (QKVParallelLinear, linear.py:1114-1119);
* ``replicated``: norms, biases of 1-D shape, the MoE router (``GateLinear``, e.g.
  models/mixtral.py:111), MLA's down-projections ``q_a_proj``/``kv_a_proj_with_mqa``
  (``ReplicatedLinear`` and ``disable_tp=True``: models/deepseek_v2.py:966, :1059);
* ``embed``/``lm_head``: vocab-parallel, rows padded to a multiple of 64 and split
  (model_executor/layers/vocab_parallel_embedding.py:39 ``DEFAULT_VOCAB_PADDING_SIZE = 64``,
  :100 ``pad_vocab_size``, :309 ``divide(num_embeddings_padded, tp_size)``).

Layers at or past ``num_hidden_layers`` (DeepSeek-V3's multi-token-prediction layer 61) are not
loaded by ``vllm serve`` without speculative decoding, so they are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.core.errors import BadConfig, UnsupportedModel
from planner.core.records import Snapshot, _ToDict, from_plain
from planner.model.arch import read_arch
from planner.model.prequant import detect

FACTS_VERSION = "vllm-3"

# Pre-quantized formats vLLM 0.34 loads (model_executor/layers/quantization/__init__.py:15-51,
# QuantizationMethods); bitsandbytes and GGUF are not among them (removed in 0.33), so such a
# checkpoint is refused rather than planned.
VLLM_PREQUANT = frozenset({"awq", "gptq", "fp8", "fbgemm_fp8", "compressed-tensors", "mxfp4", "modelopt", "modelopt_fp4"})
# Minimum compute capability per format, from each config's get_min_capability(): fp8.py:144
# returns 75 (Marlin weight-only below 8.9); mxfp4.py:73 returns 80. The others are taken as 7.5
# (Turing), the oldest card fitcheck's profiles hold.
MIN_CAPABILITY = {"fp8": (7, 5), "fbgemm_fp8": (7, 5), "mxfp4": (8, 0), "modelopt": (8, 9), "modelopt_fp4": (10, 0),
                  "awq": (7, 5), "gptq": (7, 5), "compressed-tensors": (7, 5)}

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_EMBED = ("embed_tokens", "wte", "word_embeddings", "tok_embeddings")
_REPLICATED = ("norm", "q_a_proj", "kv_a_proj_with_mqa", "mlp.gate.", "block_sparse_moe.gate.", "router", "shared_expert_gate",
               "e_score_correction_bias", "sinks", "rotary_emb")
_TOWER = ("vision", "visual", "multi_modal_projector", "image_newline", "audio_tower", "mm_projector")
_KV = (".k_proj.", ".v_proj.", ".wk.", ".wv.")


@dataclass(frozen=True, slots=True)
class LayerBytes(_ToDict):
    """One decoder layer's weight bytes by how tensor parallelism splits them (module docstring)."""

    split: int = 0
    kv: int = 0
    replicated: int = 0
    #: 16-bit Linear weight bytes that ``--quantization fp8`` stores in one byte per value
    fp8able: int = 0
    #: routed-expert bytes (part of ``split``): a decode step reads ``experts_per_tok / experts`` of them
    experts: int = 0


@dataclass(frozen=True, slots=True)
class VllmModel(_ToDict):
    """The vLLM runtime's facts about one checkpoint (``ModelFacts``)."""

    model_type: str
    architectures: tuple[str, ...]
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    k_head_dim: int
    v_head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int | None
    tie_word_embeddings: bool
    torch_dtype: str
    dtype_bytes: int
    embed_bytes: int
    lm_head_bytes: int
    final_bytes: int
    other_bytes: int
    layers: tuple[LayerBytes, ...]
    parameters: int
    download_bytes: int
    num_experts: int = 0
    experts_per_tok: int = 0
    expert_intermediate_size: int = 0
    mla_rank: int = 0
    mla_rope_dim: int = 0
    #: MLA's per-head query/key and value widths (qk_nope + qk_rope, v_head_dim): the prefill's
    #: decompressed K/V, for the activation peak
    mla_qk_dim: int = 0
    mla_v_dim: int = 0
    sliding_layers: int = 0
    sliding_window: int | None = None
    quant_method: str | None = None
    quant_detail: str = ""
    quant_bits: int = 16
    #: GPTQ/AWQ group size (values per scale along the input dimension); 0 when none
    quant_group: int = 0
    skipped_layers: int = 0
    #: parameters of the routed experts (a token runs experts_per_tok / num_experts of them)
    expert_parameters: int = 0

    @property
    def active_parameters(self) -> int:
        if not self.num_experts:
            return self.parameters
        return self.parameters - self.expert_parameters + self.expert_parameters * self.experts_per_tok // self.num_experts

    @property
    def mla(self) -> bool:
        return self.mla_rank > 0

    @property
    def weight_bytes(self) -> int:
        layers = sum(x.split + x.kv + x.replicated for x in self.layers)
        return self.embed_bytes + self.lm_head_bytes + self.final_bytes + self.other_bytes + layers


def facts(snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> VllmModel:
    """The facts of ``snapshot`` (or rebuilt from ``cached``, an earlier ``to_dict()``).

    Raises:
        BadConfig, UnsupportedModel: a config vLLM cannot serve or fitcheck cannot size.
    """
    if cached:
        try:
            model: VllmModel = from_plain(VllmModel, dict(cached))
            return model
        except (TypeError, KeyError, ValueError):
            pass  # an older layout: rebuild from the tensors
    where = f"{snapshot.id}/config.json"
    arch = read_arch(snapshot.config, where=where)
    if arch.is_encoder_decoder:
        raise UnsupportedModel(f"{snapshot.id}: encoder-decoder models are not planned for vLLM by fitcheck")
    qc = snapshot.config.get("quantization_config") if isinstance(snapshot.config, Mapping) else None
    quant = detect(qc, where=where) if isinstance(qc, Mapping) else None
    if quant is not None and quant.method not in VLLM_PREQUANT:
        raise UnsupportedModel(f"{snapshot.id}: vLLM 0.34 does not load {quant.detail} checkpoints",
                               hint="vLLM removed bitsandbytes and GGUF; use an AWQ, GPTQ, FP8 or unquantized checkpoint")
    if not snapshot.tensors:
        raise BadConfig(f"{snapshot.id}: no safetensors headers were read", hint="vLLM plans need the safetensors headers")
    dtype = (arch.torch_dtype or "bfloat16") if (arch.torch_dtype or "bfloat16") in ("bfloat16", "float16") else "bfloat16"
    n = arch.num_layers
    q_width = arch.num_heads * arch.k_head_dim
    kv_width = arch.num_kv_heads * arch.k_head_dim
    acc = [[0, 0, 0, 0, 0] for _ in range(n)]
    embed = head = final = other = skipped = params = expert_params = 0
    skipped_layers: set[int] = set()
    for t in snapshot.tensors:
        params += t.numel
        name = t.name
        # a vision tower's own "layers.N" are not decoder layers: its weights go with the first stage
        m = None if any(k in name for k in _TOWER) else _LAYER.search(name)
        if m is None:
            if any(k in name for k in _TOWER):
                other += t.nbytes
            elif any(k in name for k in _EMBED):
                embed += t.nbytes
            elif name.startswith("lm_head") or ".lm_head." in name or name.endswith("lm_head.weight"):
                head += t.nbytes
            elif "norm" in name:
                final += t.nbytes
            else:
                other += t.nbytes
            continue
        i = int(m.group(1))
        if i >= n:
            skipped += t.nbytes
            skipped_layers.add(i)
            continue
        row = acc[i]
        leaf = name[m.end() - 1:]
        if len(t.shape) <= 1 and not any(k in leaf for k in _KV) or any(k in leaf for k in _REPLICATED):
            row[2] += t.nbytes
        elif any(k in leaf for k in _KV):
            row[1] += t.nbytes
        elif ".qkv_proj." in leaf and q_width + 2 * kv_width > 0:
            kv = t.nbytes * 2 * kv_width // (q_width + 2 * kv_width)
            row[1] += kv
            row[0] += t.nbytes - kv
        else:
            row[0] += t.nbytes
            if "experts." in leaf and "shared_expert" not in leaf:
                row[4] += t.nbytes
                expert_params += t.numel
        if t.dtype in ("BF16", "F16") and len(t.shape) == 2 and not any(k in leaf for k in ("norm", "gate.weight", "router")):
            row[3] += t.nbytes
    if arch.tie_word_embeddings:
        head = 0  # vLLM ties lm_head to the embedding and skips a saved copy
    layers = tuple(LayerBytes(split=r[0], kv=r[1], replicated=r[2], fp8able=r[3], experts=r[4]) for r in acc)
    sliding = sum(1 for lt in arch.layer_types if lt == "sliding_attention")
    return VllmModel(
        model_type=arch.model_type, architectures=arch.architectures, num_layers=n, hidden_size=arch.hidden_size,
        num_heads=arch.num_heads, num_kv_heads=arch.num_kv_heads, k_head_dim=arch.k_head_dim, v_head_dim=arch.v_head_dim,
        intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
        max_position_embeddings=arch.max_position_embeddings, tie_word_embeddings=arch.tie_word_embeddings,
        torch_dtype=dtype, dtype_bytes=2, embed_bytes=embed, lm_head_bytes=head, final_bytes=final, other_bytes=other,
        layers=layers, parameters=params, download_bytes=_download_bytes(snapshot),
        num_experts=arch.num_experts if arch.is_moe else 0, experts_per_tok=arch.num_experts_per_tok if arch.is_moe else 0,
        expert_intermediate_size=arch.expert_intermediate_size, mla_rank=arch.mla_rank, mla_rope_dim=arch.mla_rope_dim,
        mla_qk_dim=arch.mla_k_dim, mla_v_dim=arch.mla_v_dim,
        sliding_layers=sliding, sliding_window=arch.sliding_window if sliding else None,
        quant_method=quant.method if quant else None, quant_detail=quant.detail if quant else "",
        quant_bits=quant.bits if quant else 16, quant_group=_group(qc) if quant and quant.method in ("gptq", "awq") else 0,
        skipped_layers=len(skipped_layers), expert_parameters=expert_params,
    )


def _group(qc: Mapping[str, Any] | None) -> int:
    g = (qc or {}).get("group_size", (qc or {}).get("q_group_size", 0))
    return g if isinstance(g, int) and not isinstance(g, bool) and g > 0 else 0


def _download_bytes(snapshot: Snapshot) -> int:
    sizes = {f.path: f.size or 0 for f in snapshot.files}
    listed = sum(sizes.get(f, 0) for f in snapshot.weight_files)
    return listed or sum(t.nbytes for t in snapshot.tensors)
