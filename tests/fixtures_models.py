"""Test data for model repos: safetensors headers, sparse sharded layouts, tiny real models.

Three levels, cheapest first:

* :func:`safetensors_header` builds a byte-exact safetensors header for any tensor layout;
  served as a :class:`fakehub.SparseFile` it stands for the whole file at no cost.
* :func:`sparse_repo_files` splits a layout into shards plus ``model.safetensors.index.json``,
  with the shard naming schemes found on the Hub; :func:`decoder_tensors` writes the layout of
  a Llama-style decoder (70B in a few kilobytes).
* :func:`make_tiny_model` saves a small model with real random weights and an offline
  tokenizer via transformers, for tests that load and run what was planned.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fakehub import FileContent, SparseFile

# Bits per element for every safetensors dtype string (safetensors' Rust `Dtype::bitsize`).
DTYPE_BITS: Mapping[str, int] = MappingProxyType({
    "BOOL": 8, "U8": 8, "I8": 8,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16,
    "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
})

DEFAULT_METADATA: Mapping[str, str] = MappingProxyType({"format": "pt"})
INDEX_FILE = "model.safetensors.index.json"

TensorSpec = tuple[str, tuple[int, ...]]


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor occupies in a safetensors file; sub-byte dtypes are packed."""
    return math.ceil(math.prod(shape) * DTYPE_BITS[dtype] / 8)


def safetensors_header(
    tensors: Mapping[str, TensorSpec],
    metadata: Mapping[str, str] | None = DEFAULT_METADATA,
    *,
    header_size: int | None = None,
) -> tuple[bytes, int]:
    """Build a safetensors header: the 8-byte little-endian length and the JSON.

    Tensors are laid out contiguously in the given order. The JSON is padded with spaces to a
    multiple of 8 bytes, as the safetensors library does, or to exactly ``header_size`` bytes
    (the value of the length prefix) to probe size boundaries.

    Returns:
        The header bytes and the size of the whole file they describe.
    """
    entries: dict[str, Any] = {}
    if metadata is not None:
        entries["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape) in tensors.items():
        nbytes = tensor_nbytes(dtype, tuple(shape))
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    if header_size is None:
        header_size = len(raw) + (-len(raw)) % 8
    if header_size < len(raw):
        raise ValueError(f"header_size {header_size} is smaller than the JSON ({len(raw)} bytes)")
    raw += b" " * (header_size - len(raw))
    return struct.pack("<Q", header_size) + raw, 8 + header_size + offset


ShardNaming = str | Callable[[int, int], str]
_NAMINGS: Mapping[str, Callable[[int, int], str]] = MappingProxyType({
    # transformers' default: 1-based, five digits.
    "standard": lambda i, n: f"model-{i + 1:05d}-of-{n:05d}.safetensors",
    # Some exports count from zero.
    "zero-based": lambda i, n: f"model-{i:05d}-of-{n:05d}.safetensors",
    # DeepSeek-V3 and its derivatives: five-digit index, six-digit count.
    "six-digit": lambda i, n: f"model-{i + 1:05d}-of-{n:06d}.safetensors",
})


def sparse_repo_files(
    tensors: Mapping[str, TensorSpec],
    shards: int = 1,
    naming: ShardNaming = "standard",
    *,
    metadata: Mapping[str, str] | None = DEFAULT_METADATA,
) -> dict[str, FileContent]:
    """Split ``tensors`` into ``shards`` sparse safetensors files of similar size.

    With ``shards=1`` the result is a single ``model.safetensors``; otherwise shard files named
    by ``naming`` (``"standard"``, ``"zero-based"``, ``"six-digit"`` or a callable ``(i, n)``)
    and a ``model.safetensors.index.json`` with ``weight_map`` and ``metadata.total_size`` (tensor
    bytes, as transformers writes it) and ``metadata.total_parameters``.
    """
    names = list(tensors)
    if not 1 <= shards <= len(names):
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    if shards == 1:
        header, size = safetensors_header(tensors, metadata)
        return {"model.safetensors": SparseFile(header, size)}
    sizes = [tensor_nbytes(*tensors[name]) for name in names]
    per_shard = sum(sizes) / shards
    groups: list[list[str]] = [[]]
    written = 0
    for position, (name, size) in enumerate(zip(names, sizes)):
        # Open the next shard once this one holds its share, or when every remaining tensor
        # is needed to give each remaining shard at least one.
        if groups[-1] and len(groups) < shards and (
            written >= per_shard * len(groups) or len(names) - position == shards - len(groups)
        ):
            groups.append([])
        groups[-1].append(name)
        written += size
    name_of = _NAMINGS[naming] if isinstance(naming, str) else naming
    files: dict[str, FileContent] = {}
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        filename = name_of(i, shards)
        header, size = safetensors_header({name: tensors[name] for name in group}, metadata)
        files[filename] = SparseFile(header, size)
        weight_map.update(dict.fromkeys(group, filename))
    index = {
        "metadata": {"total_parameters": sum(math.prod(shape) for _, shape in tensors.values()),
                     "total_size": sum(sizes)},
        "weight_map": weight_map,
    }
    files[INDEX_FILE] = json.dumps(index, indent=2).encode()
    return files


def decoder_tensors(
    *,
    layers: int,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    dtype: str = "BF16",
    tied: bool = False,
    head_dim: int | None = None,
) -> dict[str, TensorSpec]:
    """The tensor layout of a Llama-style decoder, named as transformers saves it.

    ``decoder_tensors(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8,
    vocab=128256)`` is Llama-3-70B: 70,553,706,496 parameters.
    """
    head_dim = head_dim or hidden // heads
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": (dtype, (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (dtype, (hidden,))
        out[p + "self_attn.q_proj.weight"] = (dtype, (heads * head_dim, hidden))
        out[p + "self_attn.k_proj.weight"] = (dtype, (kv_heads * head_dim, hidden))
        out[p + "self_attn.v_proj.weight"] = (dtype, (kv_heads * head_dim, hidden))
        out[p + "self_attn.o_proj.weight"] = (dtype, (hidden, heads * head_dim))
        out[p + "post_attention_layernorm.weight"] = (dtype, (hidden,))
        out[p + "mlp.gate_proj.weight"] = (dtype, (intermediate, hidden))
        out[p + "mlp.up_proj.weight"] = (dtype, (intermediate, hidden))
        out[p + "mlp.down_proj.weight"] = (dtype, (hidden, intermediate))
    out["model.norm.weight"] = (dtype, (hidden,))
    if not tied:
        out["lm_head.weight"] = (dtype, (vocab, hidden))
    return out


# --------------------------------------------------------------------------------------------
# Tiny real models
# --------------------------------------------------------------------------------------------

# Small enough that building takes about a second on two cores and loading a few milliseconds.
_TINY_BASE: Mapping[str, Any] = MappingProxyType({
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "vocab_size": 1024,
})

# What makes each architecture interesting to a memory planner.
TINY_ARCHS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "llama": {},
    "qwen2": {},
    "mistral": {"sliding_window": 64},  # sliding-window attention caps the KV cache
    "gemma2": {"sliding_window": 64, "head_dim": 16},  # alternating sliding layers, tied embeddings
    "gemma3_text": {"sliding_window": 64, "head_dim": 16},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},  # MoE: experts dominate the weights
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
                  "shared_expert_intermediate_size": 64},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "head_dim": 16},
})

_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
_WORDS = ("the model fits on gpu memory layer token weight cache hub shard plan load quant offload disk "
          "expert window head batch sequence").split()


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    suffixes = ("", "s", "ed", "ing", "er")
    return [" ".join(rng.choice(_WORDS) + rng.choice(suffixes) for _ in range(16)) for _ in range(400)]


def make_tokenizer(arch: str, *, vocab_size: int = 1000, seed: int = 0) -> Any:
    """An offline tokenizer that ``AutoTokenizer`` reloads as the same class for ``arch``.

    transformers 5 picks the tokenizer class from the config's ``model_type`` for some
    architectures (Qwen2Tokenizer, GemmaTokenizer) whatever tokenizer_config.json says, and those
    classes rebuild their own pre-tokenizer. So those are trained through their own class; the
    rest get a byte-level BPE wrapped in ``PreTrainedTokenizerFast`` (saved as TokenizersBackend).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    corpus = _corpus(seed)
    class_name = TOKENIZER_MAPPING_NAMES.get(arch) or "TokenizersBackend"
    if class_name.removesuffix("Fast") not in ("TokenizersBackend", "PreTrainedTokenizer"):
        base = tokenizer_class_from_name(class_name)(**_SPECIAL_TOKENS)
        return base.train_new_from_iterator(corpus, vocab_size=vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **_SPECIAL_TOKENS)


def make_tiny_model(
    tmp_dir: str | Path,
    arch: str = "llama",
    dtype: str = "bfloat16",
    *,
    seed: int = 0,
    max_shard_size: str | None = None,
    **config_overrides: Any,
) -> Path:
    """Save a small ``arch`` model with random weights and a working tokenizer; return its folder.

    The folder is ``tmp_dir/<arch>-<dtype>[-...]`` and holds what a Hub repo would:
    config.json, generation_config.json, safetensors weights (sharded with an index when
    ``max_shard_size`` is given, e.g. ``"200KB"``), tokenizer.json and tokenizer_config.json.
    ``config_overrides`` go to the config (e.g. ``num_hidden_layers=4``).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in TINY_ARCHS:
        raise ValueError(f"unsupported arch {arch!r}; choose from {sorted(TINY_ARCHS)}")
    options = {**config_overrides, **({"seed": seed} if seed else {}), **({"shard": max_shard_size} if max_shard_size else {})}
    suffix = "".join(f"-{k}={v}" for k, v in sorted(options.items()))
    if len(suffix) > 150:  # a full config does not fit a file name (255 bytes): name it by its hash
        suffix = "-" + hashlib.sha1(suffix.encode()).hexdigest()[:12]
    folder = Path(tmp_dir) / (f"{arch}-{dtype}{suffix}")
    tokenizer = make_tokenizer(arch, seed=seed)
    settings = {**_TINY_BASE, **TINY_ARCHS[arch], **config_overrides}
    settings.setdefault("bos_token_id", tokenizer.bos_token_id)
    settings.setdefault("eos_token_id", tokenizer.eos_token_id)
    settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    if settings["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {settings['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    config = AutoConfig.for_model(arch, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.eval()
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **save_kwargs)
    tokenizer.save_pretrained(folder)
    return folder
