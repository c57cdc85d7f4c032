"""What a serving engine (vLLM, SGLang) needs to know about a checkpoint: its architecture and its
weight bytes by how tensor parallelism shards them.

vLLM and SGLang shard a decoder the same way (SGLang's parallel layers are a fork of vLLM's), so the
facts are shared here and each runtime adds its own rules (which pre-quantized formats it loads,
its constants) in ``planner/runtimes/<name>/``. Every tensor of the safetensors headers lands in one
class, by how the engines' layers split it across tensor-parallel ranks (vllm 0.34.0 source;
sglang 0.5.23 in brackets):

* ``split``: column- or row-parallel Linears (q/o projections, MLP, routed and shared experts):
  ``1/tp`` of the bytes on each rank (``ColumnParallelLinear``/``RowParallelLinear``,
  vllm model_executor/layers/linear.py:500 ``divide(output_size, self.tp_size)``; FusedMoE splits
  every expert's intermediate dimension the same way without expert parallelism);
* ``kv``: the k/v projections: each rank holds ``max(1, kv_heads // tp)`` heads, replicated once
  ``tp > kv_heads`` (QKVParallelLinear, vllm linear.py:1114-1119; [sglang srt/models/llama.py:183-193
  asserts ``heads % tp == 0`` and ``kv_heads % tp == 0`` or ``tp % kv_heads == 0``]);
* ``replicated``: norms, biases of 1-D shape, the MoE router (``GateLinear``, e.g.
  models/mixtral.py:111), MLA's down-projections ``q_a_proj``/``kv_a_proj_with_mqa``
  (``ReplicatedLinear`` and ``disable_tp=True``: models/deepseek_v2.py:966, :1059);
* ``embed``/``lm_head``: vocab-parallel, rows padded to a multiple of 64 and split
  (vllm model_executor/layers/vocab_parallel_embedding.py:39 ``DEFAULT_VOCAB_PADDING_SIZE = 64``,
  :100 ``pad_vocab_size``, :309 ``divide(num_embeddings_padded, tp_size)``; [sglang
  srt/layers/vocab_parallel_embedding.py:48 ``DEFAULT_VOCAB_PADDING_SIZE = 64``]).

Layers at or past ``num_hidden_layers`` (DeepSeek-V3's multi-token-prediction layer 61) are not
loaded without speculative decoding, so they are not counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from planner.core.errors import BadConfig, UnsupportedModel
from planner.core.records import Snapshot, _ToDict, from_plain
from planner.model.arch import read_arch
from planner.model.prequant import detect

# Vocabulary rows are padded to a multiple of 64 and split over TP (vllm vocab_parallel_embedding.py:39,
# :100; sglang srt/layers/vocab_parallel_embedding.py:48).
VOCAB_PADDING = 64

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
class ServingModel(_ToDict):
    """A serving engine's facts about one checkpoint (``ModelFacts``)."""

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
    #: the indices of the sliding-window layers (``layer_types``)
    sliding_layer_ids: tuple[int, ...] = ()
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


def build(snapshot: Snapshot, cached: Mapping[str, Any] | None = None, *, engine: str, loads: frozenset[str],
          refused_hint: str = "", refused: str = "{engine} does not load {detail} checkpoints") -> ServingModel:
    """The facts of ``snapshot`` for ``engine`` (or rebuilt from ``cached``, an earlier ``to_dict()``).

    Args:
        engine: the engine's name and version for messages ("vLLM 0.34").
        loads: the pre-quantized formats (``quant_method``) the engine loads; others are refused.
        refused_hint: the hint of that refusal.
        refused: its message, with ``{engine}`` and ``{detail}`` (the format) filled in.

    Raises:
        BadConfig, UnsupportedModel: a config the engine cannot serve or fitcheck cannot size.
    """
    if cached:
        try:
            model: ServingModel = from_plain(ServingModel, dict(cached))
            return model
        except (TypeError, KeyError, ValueError):
            pass  # an older layout: rebuild from the tensors
    where = f"{snapshot.id}/config.json"
    arch = read_arch(snapshot.config, where=where)
    if arch.is_encoder_decoder:
        raise UnsupportedModel(f"{snapshot.id}: encoder-decoder models are not planned for {engine.split()[0]} by fitcheck")
    qc = snapshot.config.get("quantization_config") if isinstance(snapshot.config, Mapping) else None
    quant = detect(qc, where=where) if isinstance(qc, Mapping) else None
    if quant is not None and quant.method not in loads:
        raise UnsupportedModel(f"{snapshot.id}: " + refused.format(engine=engine, detail=quant.detail), hint=refused_hint)
    if not snapshot.tensors:
        raise BadConfig(f"{snapshot.id}: no safetensors headers were read", hint=f"{engine.split()[0]} plans need the safetensors headers")
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
        head = 0  # the engines tie lm_head to the embedding and skip a saved copy
    layers = tuple(LayerBytes(split=r[0], kv=r[1], replicated=r[2], fp8able=r[3], experts=r[4]) for r in acc)
    sliding = sum(1 for lt in arch.layer_types if lt == "sliding_attention")
    return ServingModel(
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
        sliding_layer_ids=tuple(i for i, lt in enumerate(arch.layer_types) if lt == "sliding_attention") if sliding else (),
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


def pad_vocab(vocab: int) -> int:
    """The padded vocabulary (vllm vocab_parallel_embedding.py:100-102 ``pad_vocab_size``)."""
    return (vocab + VOCAB_PADDING - 1) // VOCAB_PADDING * VOCAB_PADDING


def kv_heads_per_rank(model: ServingModel, tp: int) -> int:
    """KV heads one rank caches: ``max(1, kv_heads // tp)``; 1 for MLA (vllm config/model.py:1693-1703;
    sglang srt/configs/model_config.py:1700-1711 ``get_num_kv_heads``)."""
    return 1 if model.mla else max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_layer(model: ServingModel, tp: int, kv_dtype_bytes: int) -> int:
    """KV bytes one token adds to one layer of one rank: heads x (K + V) x dtype; MLA keeps one
    latent of ``kv_lora_rank + rope`` values and no V (vllm v1/kv_cache_interface.py:597-605, :741-755;
    sglang srt/model_executor/pool_configurator.py:379-384 and :492-498)."""
    if model.mla:
        return (model.mla_rank + model.mla_rope_dim) * kv_dtype_bytes
    return kv_heads_per_rank(model, tp) * (model.k_head_dim + model.v_head_dim) * kv_dtype_bytes


def expert_bytes(model: ServingModel, routed: int, moe_ranks: int, *, whole: bool) -> int:
    """Routed-expert bytes of one layer (``routed``) on the busiest of ``moe_ranks`` ranks.

    ``whole`` (expert parallelism): each rank holds whole experts, ``E // ep`` each and one more
    on the first ``E % ep`` ranks (vllm 0.34.0 model_executor/layers/fused_moe/expert_map_manager.py:64-67,
    ``determine_expert_map``), so the busiest holds ``ceil(E / ep)``. Otherwise every expert's
    intermediate dimension is split over the ranks (FusedMoE's tensor parallelism, which with data
    parallelism spans ``tp x dp`` ranks: fused_moe/config.py:1143-1151, ``flatten_tp_across_dp_and_pcp``).
    """
    if whole and model.num_experts:
        return routed * -(-model.num_experts // moe_ranks) // model.num_experts
    return math.ceil(routed / moe_ranks)


def rank_weights(model: ServingModel, tp: int, layers: tuple[int, int], *, first: bool, last: bool, pp: int = 1,
                 online_fp8: bool = False, moe_ranks: int | None = None, whole_experts: bool = False) -> int:
    """Weight bytes on one rank holding decoder layers ``layers`` (start, end) of a ``tp``-wide group:
    the sharding rules of the module docstring. ``first``/``last``: the rank's stage holds the
    embedding / the final norm and lm_head (with ``pp > 1`` a tied head is a copy on the last stage).
    ``moe_ranks`` (default ``tp``): the ranks the routed experts are spread over (``tp x dp`` with
    data parallelism), as whole experts with ``whole_experts`` (:func:`expert_bytes`)."""
    start, end = layers
    kv_share = kv_heads_per_rank(model, tp) if not model.mla else 0
    moe = moe_ranks or tp
    total = 0
    for layer in model.layers[start:end]:
        if layer.experts and (moe != tp or whole_experts):
            split = math.ceil((layer.split - layer.experts) / tp) + expert_bytes(model, layer.experts, moe, whole=whole_experts)
        else:
            split = math.ceil(layer.split / tp)
        kv = layer.kv * kv_share // model.num_kv_heads if model.num_kv_heads and not model.mla else math.ceil(layer.kv / tp)
        if online_fp8 and layer.split + layer.kv:
            # --quantization fp8 stores each 16-bit Linear weight in one byte (vllm fp8.py,
            # Fp8OnlineLinearMethod; sglang srt/layers/quantization/fp8.py, Fp8LinearMethod)
            kept = 1 - layer.fp8able / (2 * (layer.split + layer.kv))
            split, kv = int(split * kept), int(kv * kept)
        total += split + kv + layer.replicated
    rows = pad_vocab(model.vocab_size) // tp
    row_bytes = model.embed_bytes / model.vocab_size if model.vocab_size else 0
    if first:
        total += int(rows * row_bytes) + math.ceil(model.other_bytes / tp)
    if last:
        total += model.final_bytes
        if model.lm_head_bytes:
            total += int(rows * model.lm_head_bytes / model.vocab_size)
        elif model.tie_word_embeddings and pp > 1:
            total += int(rows * row_bytes)  # the last stage holds its own copy of the tied head
    return total
