"""config.json -> the architecture facts the memory model needs (:class:`Arch`).

Configs come from strangers: every field is type- and range-checked, and a config that no real
model could have (0 layers, 10^12 heads) is refused with :class:`BadConfig` naming the field.
Field names differ between model families; ``_ALIASES`` maps them the way transformers'
``attribute_map`` does (e.g. GPT-2's ``n_layer`` is ``num_hidden_layers``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

from planner.core.errors import BadConfig, UnsupportedModel
from planner.core.records import _ToDict

# Standard name -> names other families use for it (transformers' per-config ``attribute_map``s:
# GPT2Config, FalconConfig, T5Config, BloomConfig, GPTBigCodeConfig, MptConfig).
_ALIASES: dict[str, tuple[str, ...]] = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim", "d_ff"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
}

# Bounds beyond which a config describes no real model. The largest public models have 126 layers
# (Llama-3.1-405B), 128 heads (DeepSeek-V3), hidden 16384 (405B), vocab 262144 (Gemma 3), 512
# experts (Qwen3-Next); the bounds leave ample room and still stop overflow games.
_BOUNDS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 2_000),
    "hidden_size": (1, 1_000_000),
    "num_attention_heads": (1, 10_000),
    "num_key_value_heads": (1, 10_000),
    "head_dim": (1, 100_000),
    "intermediate_size": (1, 10_000_000),
    "vocab_size": (1, 100_000_000),
    "max_position_embeddings": (1, 1 << 32),
    "sliding_window": (0, 1 << 32),  # 0 means none in some saved configs (Qwen2MoeConfig)
    "num_experts": (1, 100_000),
    "num_experts_per_tok": (1, 100_000),
    "kv_lora_rank": (1, 1_000_000),
    # The same quantities under the names encoder-decoder, MLA and MoE configs use: each is bounded
    # like its standard counterpart (the fuzz run found 16,384 decoder layers accepted before).
    "num_decoder_layers": (1, 2_000),
    "num_layers": (1, 2_000),
    "decoder_attention_heads": (1, 10_000),
    "qk_nope_head_dim": (0, 100_000),
    "qk_rope_head_dim": (1, 100_000),
    "v_head_dim": (1, 100_000),
    "moe_intermediate_size": (1, 10_000_000),
    "n_shared_experts": (0, 100_000),
    "max_window_layers": (0, 2_000),
    "sliding_window_pattern": (0, 2_000),
}

# Names a config gives (model_type, torch_dtype) and Python class names (architectures). Real ones
# are short identifiers ("qwen2_5_vl", "bfloat16", "LlamaForCausalLM"); these strings reach the
# report and the terminal, so nothing else (control characters, quotes, spaces) is accepted.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}\Z")
_CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}\Z")
# Real configs nest 4-6 levels (text_config > rope_scaling, quantization_config > config_groups >
# group > weights); 32 leaves room and keeps recursive walks (JSON encoding, to_dict) far from
# Python's recursion limit.
_MAX_NESTING = 32

# model_type -> how transformers builds it. "auto" is the Auto class that loads it; "kv" how its
# attention stores the cache. Families: decoder-only text, MoE, MLA, multimodal, encoder-decoder.
# Model types whose layers keep a fixed recurrent state instead of (or beside) a KV cache are
# refused: their memory is not modelled yet, and a guess would break the fit promise.
_RECURRENT = frozenset(
    {"mamba", "mamba2", "jamba", "falcon_mamba", "falcon_h1", "zamba", "zamba2", "rwkv", "recurrent_gemma",
     "qwen3_next", "bamba", "granitemoehybrid", "lfm2", "minimax", "xlstm", "nemotron_h", "plamo2"}
)
_ENCODER_DECODER = frozenset({"t5", "mt5", "umt5", "bart", "mbart", "pegasus", "marian", "m2m_100", "nllb_moe",
                              "longt5", "switch_transformers", "led", "blenderbot", "prophetnet"})
_MLA = frozenset({"deepseek_v2", "deepseek_v3", "kimi_k2", "longcat_flash", "glm4_moe_lite"})
# Multimodal (image-text-to-text) types whose module names planner.model.naming maps.
_MULTIMODAL = frozenset({"llava", "llava_next", "gemma3", "mistral3", "paligemma", "qwen2_vl", "qwen2_5_vl"})


@dataclass(frozen=True, slots=True)
class Arch(_ToDict):
    """Architecture facts from config.json.

    Attributes:
        model_type: config's model_type (of the text model for multimodal configs).
        outer_model_type: the top-level model_type (differs for multimodal).
        architectures: config's architectures list.
        auto_class: the transformers Auto class that loads it.
        num_layers: decoder layers that hold a KV cache.
        hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size, vocab_size: as named.
        k_head_dim, v_head_dim: per-head widths stored in the cache (differ under MLA).
        layer_types: "full_attention" or "sliding_attention" per cached layer.
        sliding_window: tokens a sliding layer keeps, when any.
        max_position_embeddings: the trained context, when given.
        tie_word_embeddings: whether lm_head shares the input embedding.
        num_experts, num_experts_per_tok, num_shared_experts: MoE routing (0 when dense).
        is_encoder_decoder: T5/BART-style; the cache then also holds cross-attention K/V.
        encoder_layers: encoder layers (encoder-decoder only).
        has_vision: a vision tower is part of the checkpoint.
        torch_dtype: the config's declared dtype, if any.
        quantization_config: the pre-quantization block, if any (a plain dict).
        expert_intermediate_size: width of one routed expert's MLP (MoE).
        mla_rank, mla_rope_dim, mla_k_dim, mla_v_dim: MLA's latent rank, rotary width, per-head K
            and V widths (0 when not MLA).
    """

    model_type: str
    outer_model_type: str
    architectures: tuple[str, ...]
    auto_class: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    k_head_dim: int
    v_head_dim: int
    intermediate_size: int
    vocab_size: int
    layer_types: tuple[str, ...]
    sliding_window: int | None
    max_position_embeddings: int | None
    tie_word_embeddings: bool
    num_experts: int = 0
    num_experts_per_tok: int = 0
    num_shared_experts: int = 0
    is_encoder_decoder: bool = False
    encoder_layers: int = 0
    has_vision: bool = False
    torch_dtype: str | None = None
    quantization_config: dict[str, Any] | None = None
    expert_intermediate_size: int = 0
    mla_rank: int = 0
    mla_rope_dim: int = 0
    mla_k_dim: int = 0
    mla_v_dim: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


def read_arch(config: Mapping[str, Any], *, where: str = "config.json") -> Arch:
    """Check ``config`` and extract the architecture.

    Raises:
        BadConfig: a field is missing, of the wrong type, or out of any real model's range.
        UnsupportedModel: a model family whose memory fitcheck does not model (recurrent state).
    """
    if not isinstance(config, Mapping):
        raise BadConfig(f"{where}: is a JSON {type(config).__name__}, not an object")
    _check_nesting(config, where)
    outer_type = _str(config, "model_type", where, required=False) or ""
    architectures = config.get("architectures") or ()
    if not isinstance(architectures, (list, tuple)) or not all(isinstance(a, str) and _CLASS_NAME.match(a) for a in architectures):
        raise BadConfig(f"{where}: field 'architectures' must be a list of class names")
    architectures = tuple(architectures)

    text = config
    has_vision = isinstance(config.get("vision_config"), Mapping)
    if isinstance(config.get("text_config"), Mapping):
        text = {**config["text_config"]}
        text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", text.get("tie_word_embeddings")))
    model_type = _str(text, "model_type", where, required=False) or outer_type
    if not model_type and not architectures:
        raise BadConfig(f"{where}: has neither 'model_type' nor 'architectures'; it does not describe a model")
    if model_type in _RECURRENT or outer_type in _RECURRENT:
        raise UnsupportedModel(
            f"{where}: model_type {model_type!r} keeps a recurrent state (Mamba/linear attention) that fitcheck does not model yet",
            hint="fitcheck refuses rather than guesses; attention-only and MoE models are supported",
        )
    is_encdec = bool(config.get("is_encoder_decoder")) or outer_type in _ENCODER_DECODER
    _refuse_unknown(config, text, model_type, outer_type, architectures, is_encdec, where)

    layers = _int(text, "num_hidden_layers", where)
    if is_encdec:
        layers = _int(text, "num_decoder_layers", where, required=False, aliases=("num_decoder_layers", "decoder_layers")) or layers
    hidden = _int(text, "hidden_size", where)
    heads = _int(text, "num_attention_heads", where)
    if is_encdec:
        heads = _int(text, "decoder_attention_heads", where, required=False, aliases=("decoder_attention_heads",)) or heads
    kv_heads = _int(text, "num_key_value_heads", where, required=False)
    if kv_heads is None:
        kv_heads = 1 if text.get("multi_query") is True else heads
    if kv_heads > heads:
        raise BadConfig(f"{where}: field 'num_key_value_heads' ({kv_heads}) exceeds num_attention_heads ({heads})")
    head_dim = _int(text, "head_dim", where, required=False, aliases=("head_dim", "d_kv"))
    if head_dim is None:
        if hidden % heads:
            raise BadConfig(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given")
        head_dim = hidden // heads
    k_dim, v_dim = head_dim, head_dim
    mla = (0, 0, 0, 0)
    if model_type in _MLA:
        # transformers 5.24's DeepseekV3Attention caches the compressed latent: the "keys" slot holds
        # kv_a_layernorm's output [b, 1, seq, kv_lora_rank], the "values" slot the rotary part
        # [b, 1, seq, qk_rope_head_dim] (modeling_deepseek_v3.py:445-460), and each forward expands
        # it to per-head K and V (research notes Q6). Older transformers cached per-head K/V.
        rank = _int(text, "kv_lora_rank", where)
        nope = _int(text, "qk_nope_head_dim", where)
        rope = _int(text, "qk_rope_head_dim", where)
        vdim = _int(text, "v_head_dim", where)
        kv_heads, k_dim, v_dim = 1, rank, rope
        mla = (rank, rope, nope + rope, vdim)
    inter = _int(text, "intermediate_size", where, required=False) or 4 * hidden
    expert_inter = _int(text, "moe_intermediate_size", where, required=False, aliases=("moe_intermediate_size", "expert_intermediate_size")) or inter
    vocab = _int(text, "vocab_size", where)
    max_pos = _int(text, "max_position_embeddings", where, required=False)

    window = _int(text, "sliding_window", where, required=False) or None
    layer_types = _layer_types(text, model_type, layers, window, where)
    if window is None or "sliding_attention" not in layer_types:
        window = None

    experts = _int(text, "num_experts", where, required=False, aliases=("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")) or 0
    per_tok = _int(text, "num_experts_per_tok", where, required=False, aliases=("num_experts_per_tok", "moe_topk", "top_k", "num_experts_per_token")) or 0
    if experts and per_tok > experts:
        raise BadConfig(f"{where}: field 'num_experts_per_tok' ({per_tok}) exceeds the number of experts ({experts})")
    shared = _int(text, "n_shared_experts", where, required=False, aliases=("n_shared_experts", "num_shared_experts")) or 0

    tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings"))
    if tie is None:
        # PretrainedConfig's default is True (configuration_utils.py); model configs that differ set it.
        tie = True
    enc_layers = (_int(text, "num_layers", where, required=False, aliases=("encoder_layers", "num_layers")) or layers) if is_encdec else 0

    quant = config.get("quantization_config")
    if quant is not None and not isinstance(quant, Mapping):
        raise BadConfig(f"{where}: field 'quantization_config' must be an object")
    dtype = config.get("torch_dtype", config.get("dtype", text.get("torch_dtype", text.get("dtype"))))
    if dtype is not None and not (isinstance(dtype, str) and _NAME.match(dtype)):
        raise BadConfig(f"{where}: field 'torch_dtype' must be a dtype name such as 'bfloat16'")

    return Arch(
        model_type=model_type,
        outer_model_type=outer_type or model_type,
        architectures=architectures,
        auto_class=_auto_class(architectures, has_vision, is_encdec),
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        k_head_dim=k_dim,
        v_head_dim=v_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        layer_types=layer_types,
        sliding_window=window,
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(tie),
        num_experts=experts,
        num_experts_per_tok=per_tok,
        num_shared_experts=shared,
        is_encoder_decoder=is_encdec,
        encoder_layers=enc_layers,
        has_vision=has_vision,
        torch_dtype=dtype,
        quantization_config=dict(quant) if quant is not None else None,
        expert_intermediate_size=expert_inter,
        mla_rank=mla[0],
        mla_rope_dim=mla[1],
        mla_k_dim=mla[2],
        mla_v_dim=mla[3],
    )


# Model types fitcheck knows how transformers builds (naming, KV, MoE layout); see README's table.
KNOWN_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "phi", "gemma", "gemma2", "gemma3", "gemma3_text", "granite",
     "olmo", "olmo2", "starcoder2", "gpt2", "gpt_neox", "falcon", "stablelm", "cohere", "mixtral", "qwen2_moe",
     "qwen3_moe", "gpt_oss", "deepseek_v2", "deepseek_v3", "llava", "qwen2_vl", "qwen2_5_vl", "mistral3",
     "llama4", "t5", "bart", "smollm3", "exaone", "internlm2", "ministral", "llava_next", "paligemma",
     "qwen2_vl_text", "qwen2_5_vl_text", "mt5", "umt5"}
)


# Config keys that mark attention or state a plain KV cache does not describe (latent attention,
# linear attention, state-space layers, per-layer block types): an unknown model type carrying one
# is refused rather than sized as a standard decoder.
_NONSTANDARD_KEYS = ("kv_lora_rank", "q_lora_rank", "ssm_cfg", "state_size", "ssm_state_size", "mamba_d_state",
                     "linear_attn_config", "linear_conv_kernel_dim", "conv_kernel", "attn_layer_indices",
                     "layers_block_type", "block_types", "full_attn_idxs", "hybrid_override_pattern", "layer_block_types")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _refuse_unknown(config: Mapping[str, Any], text: Mapping[str, Any], model_type: str, outer_type: str,
                    architectures: tuple[str, ...], is_encdec: bool, where: str) -> None:
    """The rule for model types fitcheck does not know (not in :data:`KNOWN_MODEL_TYPES`).

    fitcheck sizes weights from the headers, whatever the model; what needs knowledge of the type
    is how transformers names its modules (the device_map) and what its cache holds. So an unknown
    type is planned only when both follow from the standard decoder: a decoder-only causal LM
    (architectures ``*ForCausalLM`` / ``*LMHeadModel``) with no vision or audio part and no config
    key of latent, linear or state-space attention. Everything else -- an unknown multimodal or
    encoder-decoder type, another task, or no architectures to tell -- is refused.

    Raises:
        UnsupportedModel: with a hint naming what fitcheck supports.
    """
    outer_known = not outer_type or outer_type in KNOWN_MODEL_TYPES
    if outer_known and model_type in KNOWN_MODEL_TYPES:
        return
    name = outer_type or model_type or (architectures[0] if architectures else "?")
    hint = "supported: decoder-only causal LMs, MoE, and the multimodal/encoder-decoder types " + ", ".join(
        sorted(KNOWN_MODEL_TYPES & (_MULTIMODAL | _ENCODER_DECODER)))
    composite = is_encdec or (outer_type and outer_type != model_type) or any(
        k in config for k in ("vision_config", "audio_config", "speech_config"))
    if not outer_known and composite:
        raise UnsupportedModel(
            f"{where}: model_type {name!r} is a multimodal or encoder-decoder model fitcheck does not know: transformers "
            "renames its modules per model type, so a device_map for it would be a guess", hint=hint)
    if not composite and (not architectures or not architectures[0].endswith(_CAUSAL_SUFFIXES)):
        what = f"architecture {architectures[0]!r}" if architectures else "a config without 'architectures'"
        raise UnsupportedModel(f"{where}: model_type {name!r} with {what} is not a text-generation model fitcheck can size",
                               hint=hint)
    marker = next((k for k in _NONSTANDARD_KEYS if k in text or k in config), None)
    if marker is not None:
        raise UnsupportedModel(
            f"{where}: model_type {name!r} is not one fitcheck knows, and its config field {marker!r} marks attention or "
            "state that a standard KV cache does not describe", hint=hint)


def remote_code_note(config: Any) -> str | None:
    """A note for a config whose model classes live in the repo (``auto_map``) and are not a type
    fitcheck knows: fitcheck sizes it from the headers, never running that code, and says what
    loading it takes. Total on any JSON: called before :func:`read_arch` has checked the config."""
    if not isinstance(config, Mapping) or not isinstance(config.get("auto_map"), Mapping):
        return None
    text = config.get("text_config")
    model_type = (text.get("model_type") if isinstance(text, Mapping) else None) or config.get("model_type")
    if isinstance(model_type, str) and model_type in KNOWN_MODEL_TYPES:
        return None
    return ("config.json points at model code in the repo (auto_map): sized from the headers, that code was not run; "
            "loading the model runs it, so the emitted script enables it only with --trust-remote-code (review the code first)")


def _auto_class(architectures: tuple[str, ...], has_vision: bool, is_encdec: bool) -> str:
    arch = architectures[0] if architectures else ""
    if is_encdec:
        return "AutoModelForSeq2SeqLM"
    if has_vision or arch.endswith("ForConditionalGeneration") or arch.endswith("ForImageTextToText"):
        return "AutoModelForImageTextToText"
    return "AutoModelForCausalLM"


def _layer_types(text: Mapping[str, Any], model_type: str, layers: int, window: int | None, where: str) -> tuple[str, ...]:
    """Per-layer attention kind, the way transformers' configs derive ``layer_types``."""
    given = text.get("layer_types")
    if given is not None:
        if not isinstance(given, list) or len(given) != layers or not all(isinstance(t, str) for t in given):
            raise BadConfig(f"{where}: field 'layer_types' must list one string per layer ({layers})")
        return tuple("sliding_attention" if "sliding" in t or t == "local" else "full_attention" for t in given)
    if window is None:
        return ("full_attention",) * layers
    if model_type == "gemma2":
        # Gemma2Config: even layers slide, odd layers are global (configuration_gemma2.py).
        return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers))
    if model_type in ("gemma3", "gemma3_text"):
        # Gemma3TextConfig: every sliding_window_pattern-th layer (default 6) is global.
        pattern = _int(text, "sliding_window_pattern", where, required=False) or 6
        return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers))
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        # Qwen2Config: layer i slides only if use_sliding_window and i >= max_window_layers.
        if not text.get("use_sliding_window", False):
            return ("full_attention",) * layers
        first = _int(text, "max_window_layers", where, required=False, aliases=("max_window_layers",)) or 0
        return tuple("sliding_attention" if i >= first else "full_attention" for i in range(layers))
    if model_type in ("mistral", "mixtral", "starcoder2", "phi3"):
        return ("sliding_attention",) * layers
    return ("full_attention",) * layers


def _pick(config: Mapping[str, Any], name: str, aliases: tuple[str, ...] | None) -> tuple[str, Any]:
    for key in aliases or _ALIASES.get(name, (name,)):
        if key in config and config[key] is not None:
            return key, config[key]
    return name, None


@overload
def _int(config: Mapping[str, Any], name: str, where: str, *, required: Literal[True] = ..., aliases: tuple[str, ...] | None = None) -> int: ...
@overload
def _int(config: Mapping[str, Any], name: str, where: str, *, required: bool, aliases: tuple[str, ...] | None = None) -> int | None: ...
def _int(config: Mapping[str, Any], name: str, where: str, *, required: bool = True, aliases: tuple[str, ...] | None = None) -> int | None:
    key, value = _pick(config, name, aliases)
    if value is None:
        if required:
            raise BadConfig(f"{where}: required field {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        raise BadConfig(f"{where}: field {key!r} must be an integer, got {str(value)[:40]!r}")
    value = int(value)
    lo, hi = _BOUNDS.get(name, (0, 1 << 40))
    if not lo <= value <= hi:
        raise BadConfig(f"{where}: field {key!r} = {value} is outside any real model's range [{lo}, {hi}]")
    return value


def _str(config: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = config.get(name)
    if value is None:
        if required:
            raise BadConfig(f"{where}: required field {name!r} is missing")
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise BadConfig(f"{where}: field {name!r} must be a short name (letters, digits, '_', '-', '.')")
    return value


def _check_nesting(config: Mapping[str, Any], where: str) -> None:
    """Refuse configs nested deeper than any real one, before anything walks them recursively."""
    stack: list[tuple[Any, int]] = [(config, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > _MAX_NESTING:
            raise BadConfig(f"{where}: nested more than {_MAX_NESTING} levels deep; no model config is")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
