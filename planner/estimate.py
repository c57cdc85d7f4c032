"""Snapshot -> Footprint: what the model's weights are, grouped the way the loader places them.

Every tensor of the loaded files is classified by its *role* (a bnb-quantizable linear weight, an
embedding, the LM head, a routed expert, another float, packed pre-quantized data or its scales)
and grouped into *units*: the modules a device_map can place. Decoder layers are units whole, as
accelerate's ``no_split_modules`` keeps them; everything else is its own module. The memory
model then prices each unit for any (dtype, quantization) without looking at tensors again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from planner import naming, prequant
from planner.arch import Arch, read_arch
from planner.errors import UnsupportedModel
from planner.records import Snapshot, Tensor, _ToDict
from planner.units import DTYPE_BITS, SAFETENSORS_TO_TORCH

ROLES = ("linear", "embed", "head", "expert", "float", "packed", "qaux", "int")

# A numbered block: "<prefix>.<layers|h|blocks|block|layer>.<index>." (Llama, GPT-2/Falcon/Bloom,
# ViT/Siglip, T5, BERT-style). The prefix is matched lazily so T5's "encoder.block.0.layer.1" groups
# at the block.
_BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks|block|layer))\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.")
# Per-expert checkpoint tensors ("mlp.experts.7.w1.weight") that transformers 5 fuses into one 3-D
# parameter per layer at load (conversion_mapping.py, MergeModulelist): rebuilt, not mmapped.
_SPLIT_EXPERT = re.compile(r"\.experts\.\d+\.")
# MoE routers are their own modules in transformers 5 (MixtralTopKRouter, DeepseekV3TopkRouter),
# not nn.Linear, so bitsandbytes leaves them alone (research notes Q4, exp4c).
_ROUTER = re.compile(r"(\.mlp\.gate\.weight$|\.router\.weight$|\.gate\.e_score_correction_bias$)")
_EMBED = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|embed_in|position_embeddings|embed_positions|\bshared|tok_embeddings|embeddings)\.weight$")
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out|output)\.weight$")
_VISION = re.compile(r"(vision|visual|image|patch_embed|vit\b|img)")
_PROJECTOR = re.compile(r"(multi_modal_projector|mm_projector|projector|merger)")

# Tensors that checkpoints carry but transformers does not load as parameters (they are rebuilt
# at init or were never state): GPT-2's causal-mask buffers "attn.bias"/"attn.masked_bias"
# (modeling_gpt2.py registers them non-persistent), rotary "inv_freq" caches saved by old Llama
# checkpoints (non-persistent since transformers 4.31).
_NOT_LOADED = re.compile(r"(\.attn\.(bias|masked_bias)$|rotary_emb\.inv_freq$|\.rotary\.inv_freq$)")


@dataclass(frozen=True, slots=True)
class RoleStats(_ToDict):
    """Aggregate of one role's tensors in a unit.

    Attributes:
        params: true parameters (packed formats unpacked; scales and zeros are 0).
        bytes: bytes as stored.
        rows: sum of output features of 2-D weights (bnb int8 keeps one fp32 scale per row).
        tensors: how many tensors.
    """

    params: int = 0
    bytes: int = 0
    rows: int = 0
    tensors: int = 0


@dataclass(frozen=True, slots=True)
class Unit(_ToDict):
    """A module the device_map places whole.

    Attributes:
        name: the module name as the loaded transformers model names it.
        kind: "embed", "layer", "head", "norm", "vision", "projector", "encoder" or "other".
        layer: decoder layer index for kind "layer".
        params: true parameter count.
        stored_bytes: bytes as stored in the checkpoint.
        roles: role -> aggregate (see ``ROLES``).
        modules: sub-module (e.g. "self_attn", "mlp.experts") -> bytes as stored, for the report.
        tied_to: for a tied LM head, the unit whose weight it shares.
        rebuilt_bytes: stored bytes of tensors transformers rebuilds at load (per-expert tensors
            fused into one parameter); they cannot stay memory-mapped and are rewritten when offloaded.
    """

    name: str
    kind: str
    layer: int | None
    params: int
    stored_bytes: int
    roles: dict[str, RoleStats]
    modules: dict[str, int] = field(default_factory=dict)
    tied_to: str | None = None
    rebuilt_bytes: int = 0

    def role(self, name: str) -> RoleStats:
        return self.roles.get(name, _EMPTY)


_EMPTY = RoleStats()


@dataclass(frozen=True, slots=True)
class Footprint(_ToDict):
    """The model's weights as fitcheck prices them.

    Attributes:
        arch: the architecture from config.json.
        units: placement units in forward order (embeddings, layers, norms, head).
        parameters: true parameter count (tied weights once, packed formats unpacked).
        active_parameters: parameters used per token (MoE: shared + top-k routed experts).
        stored_bytes: bytes the loaded tensors occupy as stored.
        download_bytes: bytes a download of the repo for loading fetches.
        stored_dtype: the dominant float dtype of the checkpoint ("bfloat16", ...).
        prequant: the pre-quantization of the checkpoint, if any.
        unloaded_bytes: bytes in the files that transformers does not load (mask buffers, MTP layers).
        unloaded_tensors: how many such tensors.
        largest_linear: elements of the largest bnb-quantizable weight (bnb quantizes one tensor
            at a time through a full-precision copy).
        nf4_cpu_ok: every quantizable weight has out_features divisible by 32, which bnb's CPU
            4-bit kernel requires (bitsandbytes functional._convert_weight_packed_for_cpu).
    """

    arch: Arch
    units: tuple[Unit, ...]
    parameters: int
    active_parameters: int
    stored_bytes: int
    download_bytes: int
    stored_dtype: str
    prequant: prequant.PreQuant | None
    unloaded_bytes: int = 0
    unloaded_tensors: int = 0
    largest_linear: int = 0
    nf4_cpu_ok: bool = True

    @property
    def is_moe(self) -> bool:
        return self.arch.is_moe


def estimate(snapshot: Snapshot) -> Footprint:
    """Build the footprint of a snapshot.

    Raises:
        BadConfig, UnsupportedModel: from the config, or for tensor layouts fitcheck cannot price.
    """
    arch = read_arch(snapshot.config, where=f"config.json of {snapshot.id}")
    quant = prequant.detect(arch.quantization_config, where=f"config.json of {snapshot.id}")
    tensors = snapshot.tensors
    if snapshot.weight_format == "pytorch":
        from planner.synth import synthesize

        tensors = synthesize(arch, snapshot)
    if not tensors:
        raise UnsupportedModel(f"{snapshot.id}: the weight files describe no tensors")

    rename = naming.renamer(arch)
    names = {t.name for t in tensors}
    tied = arch.tie_word_embeddings and any(_EMBED.search(n) for n in names)
    has_layers = _decoder_prefix(tensors, arch)

    acc: dict[str, dict[str, list[int]]] = {}
    modules: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    meta: dict[str, tuple[str, int | None]] = {}
    unloaded_bytes = unloaded = 0
    float_bytes: dict[str, int] = defaultdict(int)
    rebuilt: dict[str, int] = defaultdict(int)
    expert_params = largest_linear = 0
    nf4_cpu_ok = True

    for t in tensors:
        name = rename(t.name)
        unit, kind, layer, sub = _unit_of(name, has_layers)
        if _NOT_LOADED.search(name) or (kind == "layer" and layer is not None and layer >= arch.num_layers) or (
            tied and _HEAD.search(name)
        ):
            unloaded_bytes += t.nbytes
            unloaded += 1
            continue
        role, params, rows = _classify(t, name, quant, moe=arch.is_moe)
        if role == "expert":
            expert_params += params
            if _SPLIT_EXPERT.search(name):
                rebuilt[unit] += t.nbytes
        elif role == "linear":
            largest_linear = max(largest_linear, params)
            nf4_cpu_ok = nf4_cpu_ok and t.shape[0] % 32 == 0 and t.shape[1] % 2 == 0
        stats = acc.setdefault(unit, {})
        s = stats.setdefault(role, [0, 0, 0, 0])
        s[0] += params
        s[1] += t.nbytes
        s[2] += rows
        s[3] += 1
        modules[unit][sub] += t.nbytes
        meta.setdefault(unit, (kind, layer))
        if t.dtype in SAFETENSORS_TO_TORCH and role not in ("packed", "qaux"):
            float_bytes[t.dtype] += t.nbytes

    units = [
        Unit(
            name=name,
            kind=meta[name][0],
            layer=meta[name][1],
            params=sum(v[0] for v in stats.values()),
            stored_bytes=sum(v[1] for v in stats.values()),
            roles={r: RoleStats(*v) for r, v in stats.items()},
            modules=dict(modules[name]),
            rebuilt_bytes=rebuilt.get(name, 0),
        )
        for name, stats in acc.items()
    ]
    if tied:
        embed = next((u for u in units if u.kind == "embed"), None)
        if embed is not None:
            units.append(Unit(name=naming.head_name(arch, embed.name), kind="head", layer=None, params=0,
                              stored_bytes=0, roles={}, tied_to=embed.name))
    units.sort(key=_forward_order)

    parameters = sum(u.params for u in units)
    active = parameters
    if arch.is_moe and expert_params and arch.num_experts_per_tok:
        active = parameters - expert_params + expert_params * arch.num_experts_per_tok // arch.num_experts
    stored = sum(u.stored_bytes for u in units)
    dominant = max(float_bytes, key=float_bytes.get) if float_bytes else None
    stored_dtype = SAFETENSORS_TO_TORCH.get(dominant or "", arch.torch_dtype or "bfloat16")
    return Footprint(
        arch=arch,
        units=tuple(units),
        parameters=parameters,
        active_parameters=active,
        stored_bytes=stored,
        download_bytes=download_bytes(snapshot),
        stored_dtype=stored_dtype,
        prequant=quant,
        unloaded_bytes=unloaded_bytes,
        unloaded_tensors=unloaded,
        largest_linear=largest_linear,
        nf4_cpu_ok=nf4_cpu_ok,
    )


def _decoder_prefix(tensors: Iterable[Tensor], arch: Arch) -> str | None:
    """The block prefix of the decoder layers: the non-vision prefix with the most numbered blocks."""
    counts: dict[str, set[int]] = defaultdict(set)
    for t in tensors:
        m = _BLOCK.match(t.name)
        if m and not _VISION.search(m.group(1)):
            counts[m.group(1)].add(int(m.group(2)))
    if not counts:
        return None
    if arch.is_encoder_decoder:
        dec = [p for p in counts if "decoder" in p]
        if dec:
            return dec[0]
    return max(counts, key=lambda p: len(counts[p]))


def _unit_of(name: str, decoder: str | None) -> tuple[str, str, int | None, str]:
    """(unit name, kind, layer index, sub-module) of a (renamed) tensor name."""
    m = _BLOCK.match(name)
    if m:
        prefix, index = m.group(1), int(m.group(2))
        unit = f"{prefix}.{index}"
        rest = name[m.end():]
        sub = ".".join(p for p in rest.split(".")[:-1] if not p.isdigit())[:60] or "."
        if decoder is not None and prefix == decoder:
            return unit, "layer", index, _sub(sub)
        if _VISION.search(prefix):
            return unit, "vision", None, _sub(sub)
        if "encoder" in prefix:
            return unit, "encoder", None, _sub(sub)
        return unit, "other", None, _sub(sub)
    module = name.rsplit(".", 1)[0] if "." in name else name
    if _HEAD.search(name):
        kind = "head"
    elif _EMBED.search(name) and not _VISION.search(module):
        kind = "embed"
    elif _VISION.search(module):
        kind = "vision"
    elif _PROJECTOR.search(module):
        kind = "projector"
    elif "norm" in module.rsplit(".", 1)[-1] or module.endswith(("ln_f", "final_layernorm")):
        kind = "norm"
    else:
        kind = "other"
    return module, kind, None, "."


def _sub(path: str) -> str:
    """Collapse a sub-module path to its first two parts ("self_attn.q_proj" -> "self_attn")."""
    parts = path.split(".")
    if "experts" in parts:
        return ".".join(parts[: parts.index("experts") + 1])
    return parts[0]


def _classify(t: Tensor, name: str, quant: prequant.PreQuant | None, *, moe: bool = False) -> tuple[str, int, int]:
    """(role, true parameters, rows) of one tensor."""
    if quant is not None:
        special = quant.classify(t, name)
        if special is not None:
            return special
    numel = t.numel
    if t.dtype not in SAFETENSORS_TO_TORCH and not t.dtype.startswith("F8") and DTYPE_BITS[t.dtype] >= 8:
        return "int", 0, 0
    rows = t.shape[0] if len(t.shape) >= 2 else 0
    if _HEAD.search(name):
        return "head", numel, rows
    if _EMBED.search(name):
        return "embed", numel, 0
    if _EXPERT.search(name):
        return "expert", numel, rows
    if moe and _ROUTER.search(name):
        return "float", numel, 0
    if len(t.shape) == 2 and name.endswith(".weight"):
        return "linear", numel, rows
    return "float", numel, 0


_KIND_ORDER = {"vision": 0, "projector": 1, "embed": 2, "encoder": 3, "other": 4, "layer": 5, "norm": 6, "head": 7}


def _forward_order(u: Unit) -> tuple[int, int, str]:
    return (_KIND_ORDER.get(u.kind, 4), u.layer if u.layer is not None else _block_index(u.name), u.name)


def _block_index(name: str) -> int:
    m = re.search(r"\.(\d+)$", name)
    return int(m.group(1)) if m else -1


# Files a from_pretrained download fetches besides the weights: configs, tokenizer, chat template.
_SMALL_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py")
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".msgpack", ".h5", ".safetensors", ".nemo", ".mlmodel")


def download_bytes(snapshot: Snapshot) -> int:
    """Bytes a download for loading fetches: the loaded weight files and the small files beside them.

    Duplicate weight sets (``consolidated.safetensors``, ``original/``, other formats) are not
    fetched by ``from_pretrained`` and are not counted.
    """
    weights = set(snapshot.weight_files)
    total = 0
    for f in snapshot.files:
        size = f.size or 0
        if f.path in weights:
            total += size
        elif "/" not in f.path and f.path.endswith(_SMALL_SUFFIXES) and not f.path.endswith(_OTHER_WEIGHTS):
            total += size
    if not any(f.path in weights and f.size for f in snapshot.files):
        # No sizes in the listing (local folders list them; the catalog records them): fall back
        # to the tensors' bytes.
        total += sum(t.nbytes for t in snapshot.tensors)
    return total
