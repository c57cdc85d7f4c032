"""Snapshot -> Footprint: what the model's weights are, grouped the way the loader places them.

Every tensor of the loaded files is classified by its *role* (a bnb-quantizable linear weight, an
embedding, the LM head, a routed expert, another float, packed pre-quantized data or its scales)
and grouped into *units*: the modules a device_map can place. Decoder layers are units whole, as
accelerate's ``no_split_modules`` keeps them; everything else is its own module. The memory
model then prices each unit for any (dtype, quantization) without looking at tensors again.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from planner.core.errors import UnsupportedModel
from planner.core.records import Snapshot, Tensor, _ToDict, from_plain
from planner.core.units import DTYPE_BITS, SAFETENSORS_TO_TORCH
from planner.model import naming, prequant, templates
from planner.model.arch import Arch, read_arch

ROLES = ("linear", "embed", "head", "expert", "float", "packed", "qaux", "int")

# A numbered block: "<prefix>.<layers|h|blocks|block|layer>.<index>." (Llama, GPT-2/Falcon/Bloom,
# ViT/Siglip, T5, BERT-style). The prefix is matched lazily so T5's "encoder.block.0.layer.1" groups
# at the block.
_BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blocks|block|layer))\.(\d{1,9})\.")  # no model has 10^9 layers
_EXPERT = re.compile(r"\.experts\.")
# Per-expert checkpoint tensors ("mlp.experts.7.w1.weight") that transformers 5 fuses into one 3-D
# parameter per layer at load (conversion_mapping.py, MergeModulelist): rebuilt, not mmapped.
_SPLIT_EXPERT = re.compile(r"\.experts\.\d+\.")
# MoE routers are their own modules in transformers 5 (MixtralTopKRouter, DeepseekV3TopkRouter),
# not nn.Linear, so bitsandbytes leaves them alone (research notes Q4, exp4c).
_ROUTER = re.compile(r"(\.mlp\.gate\.weight$|\.router\.weight$|\.gate\.e_score_correction_bias$)")
_EMBED = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|embed_in|position_embeddings|embed_positions|\bshared|tok_embeddings|embeddings)\.weight$")
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out|output)\.weight$")
_TOKEN_EMBEDDINGS = frozenset({"embed_tokens", "shared", "wte", "word_embeddings", "embed_in", "tok_embeddings"})
_ENCDEC_EMBED = re.compile(r"(?:^|\.)((?:encoder|decoder)\.embed_tokens\.weight)$")
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
        expert_params: true parameters of routed experts in the unit (packed ones unpacked).
        parts: for a MoE decoder layer whose experts a device_map may place apart from the rest
            (transformers 5 fuses them into one ``...mlp.experts`` module): the dense part (named
            after the layer, its modules in ``keys``) and the experts module, in that order.
        keys: for a dense part, the sibling modules it stands for in a device_map (flat and
            disjoint from the experts module: ``self_attn``, ``input_layernorm``, ``mlp.gate`` ...).
        linear_sizes: (parameters of one weight, how many such weights) of the unit's ``linear``
            role, smallest first: what a load that converts weights one at a time works through
            (the CPU heap keeps the working copies of the small ones; memory/weights.py).
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
    expert_params: int = 0
    parts: tuple[Unit, ...] = ()
    keys: tuple[str, ...] = ()
    linear_sizes: tuple[tuple[int, int], ...] = ()

    def role(self, name: str) -> RoleStats:
        return self.roles.get(name, _EMPTY)

    @property
    def packed_params(self) -> int:
        """Parameters stored packed (pre-quantized), which a dequantizing load rewrites."""
        return self.role("packed").params


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
        components: "vision_tower", "projector", "language_model" (or "encoder", "decoder",
            "shared" for encoder-decoder models) -> (parameters, bytes as stored).
        dequantize_blockers: pre-quantized tensors transformers cannot dequantize (see
            :func:`planner.model.prequant.dequantize_blockers`).
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
    components: dict[str, tuple[int, int]] = field(default_factory=dict)
    dequantize_blockers: tuple[str, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.arch.is_moe

    @property
    def max_position_embeddings(self) -> int | None:
        """The model's trained context (caps the largest-context search)."""
        return self.arch.max_position_embeddings

    @property
    def max_context(self) -> int | None:
        """Tokens (prompt + answer) the model supports: the planner's generic name for the limit."""
        return self.arch.max_position_embeddings

    def unit_index(self) -> dict[str, Unit]:
        """Every unit and split part by name."""
        out: dict[str, Unit] = {}
        for u in self.units:
            out[u.name] = u
            for p in u.parts:
                out.setdefault(p.name, p)
        return out


# The version of the estimate that cached footprints are keyed by: a fitcheck that estimates
# differently never reuses an older estimate. Raise it with every change to what a Footprint holds
# or how it is computed (this module, templates, arch, prequant, naming, synth, units, records).
ESTIMATOR_VERSION = "2026.12.02-2"


def from_cached(facts: Mapping[str, Any] | None) -> Footprint | None:
    """A footprint cached by an earlier plan (``Footprint.to_dict()``), if given and readable."""
    if facts is None:
        return None
    try:
        fp: Footprint = from_plain(Footprint, dict(facts))
    except (KeyError, TypeError, ValueError):
        return None
    return fp


def estimate(snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> Footprint:
    """Build the footprint of a snapshot, or rebuild the one ``cached`` for its commit.

    Raises:
        BadConfig, UnsupportedModel: from the config, or for tensor layouts fitcheck cannot price.
    """
    hit = from_cached(cached)
    if hit is not None:
        return hit
    arch = read_arch(snapshot.config, where=f"config.json of {snapshot.id}")
    quant = prequant.detect(arch.quantization_config, where=f"config.json of {snapshot.id}")
    tensors = snapshot.tensors
    if snapshot.weight_format == "pytorch":
        from planner.model.synth import synthesize

        tensors = synthesize(arch, snapshot)
    if not tensors:
        raise UnsupportedModel(f"{snapshot.id}: the weight files describe no tensors")

    rename = naming.renamer(arch)
    # (map and itemgetter keep these per-tensor passes in C: 92k tensors on DeepSeek-V3)
    names_in_order = list(map(itemgetter(0), tensors)) if rename is naming.identity else [rename(t.name) for t in tensors]
    names = set(names_in_order)
    tied = arch.tie_word_embeddings and any(_EMBED.search(n) for n in names)
    grouped = list(templates.groups(zip(names_in_order, tensors, strict=True), by_template=quant is None or quant.method != "bitsandbytes"))
    decoder = _decoder_prefix(grouped, arch)
    packed = quant.packed_modules(names) if quant is not None else frozenset()

    acc = _Acc()
    unloaded_bytes = unloaded = 0
    float_bytes: dict[str, int] = defaultdict(int)
    components: dict[str, list[int]] = {}
    expert_params = largest_linear = 0
    nf4_cpu_ok = True

    # Encoder-decoder models share one embedding: transformers ties encoder.embed_tokens and
    # decoder.embed_tokens to ``shared`` (T5, BART: all_tied_weights_keys), so copies saved under
    # those names are loaded once.
    shared = {n.rsplit("shared.weight", 1)[0] for n in names if n.endswith("shared.weight")} if arch.is_encoder_decoder else set()
    for name, t, members in grouped:
        # one representative per group of tensors that differ only in the numbers of their names:
        # role, sizes, kind and sub-module are the same for every member (FINDINGS.md #7)
        unit, kind, layer, sub = _unit_of(name, decoder)
        m = _ENCDEC_EMBED.search(name)
        if _NOT_LOADED.search(name) or (tied and _HEAD.search(name)) or (m is not None and name[: m.start(1)] in shared):
            unloaded_bytes += t.nbytes * len(members)
            unloaded += len(members)
            continue
        role, params, rows = _classify(t, name, quant, moe=arch.is_moe, packed=packed)
        experts = _experts_module(name) if arch.is_moe else None
        if role == "linear":
            largest_linear = max(largest_linear, params)
            nf4_cpu_ok = nf4_cpu_ok and t.shape[0] % 32 == 0 and t.shape[1] % 2 == 0
        rebuilt = t.nbytes if role == "expert" and _SPLIT_EXPERT.search(name) else 0
        module = name.rsplit(".", 1)[0]
        fill = templates.Filler(name, unit, layer, experts, module)
        # members with the same leading numbers share unit, layer and module (the 256 experts of a
        # layer, one experts module): count those prefixes, then name each once
        counts: dict[tuple, int] = defaultdict(int)
        prefixes = Counter(map(itemgetter(slice(0, fill.width)), members)) if members[0] is not None else {None: 1}
        for nums, n in prefixes.items():
            counts[fill(nums)] += n
        loaded = 0
        for (unit_i, layer_i, experts_i, module_i), n in counts.items():
            layer_i = layer_i if kind == "layer" else None
            if layer_i is not None and layer_i >= arch.num_layers:
                unloaded_bytes += t.nbytes * n  # e.g. DeepSeek-V3's MTP layer 61, which transformers skips
                unloaded += n
                continue
            loaded += n
            acc.add(unit_i, kind, layer_i, sub, role, params, t.nbytes, rows, rebuilt, expert=experts is not None, count=n)
            if kind == "layer":
                acc.add_part(unit_i, module_i, experts_i, role, params, t.nbytes, rows, rebuilt, sub, count=n)
        if experts is not None:
            expert_params += params * loaded
        c = components.setdefault(_component(name, kind, arch), [0, 0])
        c[0] += params * loaded
        c[1] += t.nbytes * loaded
        if t.dtype in SAFETENSORS_TO_TORCH and role not in ("packed", "qaux"):
            float_bytes[t.dtype] += t.nbytes * loaded

    units = acc.units()
    embed = input_embedding(units)
    if tied and embed is not None:
        units.append(Unit(name=naming.head_name(arch, embed.name), kind="head", layer=None, params=0,
                          stored_bytes=0, roles={}, tied_to=embed.name))
    for prefix in sorted(shared):
        if embed is not None and embed.name == prefix + "shared":
            # every tied name must be in the device_map, with its source (accelerate's check_device_map)
            units += [Unit(name=f"{prefix}{side}.embed_tokens", kind="tied", layer=None, params=0, stored_bytes=0, roles={},
                           tied_to=embed.name) for side in ("encoder", "decoder")]
    units.sort(key=_forward_order)

    parameters = sum(u.params for u in units)
    active = parameters
    if arch.is_moe and expert_params and arch.num_experts_per_tok:
        active = parameters - expert_params + expert_params * arch.num_experts_per_tok // arch.num_experts
    stored = sum(u.stored_bytes for u in units)
    dominant = max(float_bytes, key=float_bytes.__getitem__) if float_bytes else None
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
        components={k: (v[0], v[1]) for k, v in components.items()},
        dequantize_blockers=prequant.dequantize_blockers(quant, tensors),
    )


class _Acc:
    """Per-unit (and, for MoE layers, per-part) aggregates of role statistics while tensors are read."""

    def __init__(self) -> None:
        self.stats: dict[str, dict[str, list[int]]] = {}
        self.modules: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.meta: dict[str, tuple[str, int | None]] = {}
        self.rebuilt: dict[str, int] = defaultdict(int)
        self.experts: dict[str, int] = defaultdict(int)
        # layer -> part ("dense" or the experts module's name) -> role stats; the dense part's modules;
        # the experts modules found in the layer (one, for a layer that can be split)
        self.parts: dict[str, dict[str, dict[str, list[int]]]] = defaultdict(dict)
        self.part_rebuilt: dict[tuple[str, str], int] = defaultdict(int)
        self.part_modules: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.dense_modules: dict[str, set[str]] = defaultdict(set)
        self.experts_of: dict[str, set[str]] = defaultdict(set)
        # unit, or (layer, part) -> parameters of one linear weight -> how many
        self.linear_sizes: dict[Any, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, unit: str, kind: str, layer: int | None, sub: str, role: str, params: int, nbytes: int, rows: int,
            rebuilt: int, *, expert: bool, count: int = 1) -> None:
        """Add ``count`` tensors of these sizes to ``unit``."""
        _bump(self.stats.setdefault(unit, {}), role, params, nbytes, rows, count)
        self.modules[unit][sub] += nbytes * count
        self.meta.setdefault(unit, (kind, layer))
        self.rebuilt[unit] += rebuilt * count
        if expert:
            self.experts[unit] += params * count
        if role == "linear":
            self.linear_sizes[unit][params] += count

    def add_part(self, unit: str, module: str, experts: str | None, role: str, params: int, nbytes: int, rows: int,
                 rebuilt: int, sub: str, *, count: int = 1) -> None:
        """Add ``count`` tensors of module ``module`` to the dense part or the experts part of a layer."""
        part = experts or "dense"
        if experts is None:
            self.dense_modules[unit].add(module)
        else:
            self.experts_of[unit].add(experts)
        _bump(self.parts[unit].setdefault(part, {}), role, params, nbytes, rows, count)
        self.part_rebuilt[(unit, part)] += rebuilt * count
        self.part_modules[(unit, part)][sub] += nbytes * count
        if role == "linear":
            self.linear_sizes[(unit, part)][params] += count

    def merge_nested(self) -> None:
        """Merge every unit nested inside another into it, so device_map keys stay disjoint.

        A module holding parameters of its own *and* children with parameters (a projector with
        a bare weight beside a norm) would otherwise give a parent key and a child key, which
        accelerate's dispatch cannot place apart (research notes Q1).
        """
        keep: list[str] = []
        for name in sorted(self.stats, key=lambda n: (n.count("."), n)):
            parent = next((k for k in keep if name.startswith(k + ".")), None)
            if parent is None:
                keep.append(name)
                continue
            for role, v in self.stats.pop(name).items():
                s = self.stats[parent].setdefault(role, [0, 0, 0, 0])
                for i in range(4):
                    s[i] += v[i]
            for sub, n in self.modules.pop(name, {}).items():
                self.modules[parent][sub] += n
            self.rebuilt[parent] += self.rebuilt.pop(name, 0)
            self.experts[parent] += self.experts.pop(name, 0)
            for params, n in self.linear_sizes.pop(name, {}).items():
                self.linear_sizes[parent][params] += n

    def units(self) -> list[Unit]:
        self.merge_nested()
        out = []
        for name in self.stats:
            stats = self.stats[name]
            kind, layer = self.meta[name]
            out.append(Unit(name=name, kind=kind, layer=layer, params=sum(v[0] for v in stats.values()),
                            stored_bytes=sum(v[1] for v in stats.values()), roles={r: RoleStats(*v) for r, v in stats.items()},
                            modules=dict(self.modules[name]), rebuilt_bytes=self.rebuilt.get(name, 0),
                            expert_params=self.experts.get(name, 0), parts=self._split(name, layer),
                            linear_sizes=_sizes(self.linear_sizes.get(name))))
        return out

    def _split(self, name: str, layer: int | None) -> tuple[Unit, ...]:
        """(dense part, experts module) of a MoE layer, when a flat device_map can name them apart."""
        experts = self.experts_of.get(name, set())
        if len(experts) != 1 or "dense" not in self.parts[name]:
            return ()
        (module,) = experts
        keys = _dense_keys(name, module, self.dense_modules[name])
        if keys is None:
            return ()
        out = []
        for part, part_name, kind in (("dense", f"{name}:dense", "layer"), (module, module, "experts")):
            stats = self.parts[name][part]
            out.append(Unit(name=part_name, kind=kind, layer=layer, params=sum(v[0] for v in stats.values()),
                            stored_bytes=sum(v[1] for v in stats.values()), roles={r: RoleStats(*v) for r, v in stats.items()},
                            modules=dict(self.part_modules[(name, part)]), rebuilt_bytes=self.part_rebuilt.get((name, part), 0),
                            expert_params=sum(v[0] for v in stats.values()) if kind == "experts" else 0,
                            keys=keys if kind == "layer" else (), linear_sizes=_sizes(self.linear_sizes.get((name, part)))))
        return tuple(out)


def _sizes(counts: dict[int, int] | None) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(counts.items())) if counts else ()


def _bump(stats: dict[str, list[int]], role: str, params: int, nbytes: int, rows: int, count: int = 1) -> None:
    s = stats.setdefault(role, [0, 0, 0, 0])
    s[0] += params * count
    s[1] += nbytes * count
    s[2] += rows * count
    s[3] += count


def _experts_module(name: str) -> str | None:
    """The fused experts module a (renamed) tensor belongs to: ``model.layers.3.mlp.experts``."""
    i = name.find(".experts.")
    return name[: i + len(".experts")] if i >= 0 else None


def _dense_keys(layer: str, experts: str, modules: set[str]) -> tuple[str, ...] | None:
    """Flat device_map keys covering a layer's tensors outside its experts module.

    Each tensor's module is named by its shortest prefix that is not the experts module or one of
    its ancestors (``self_attn``, ``mlp.gate``, ``mlp.shared_expert``). None when a tensor sits
    directly on an ancestor of the experts module (then only the whole layer can be placed).
    """
    inner = experts[len(layer) + 1:].split(".")
    keys = set()
    for module in modules:
        rel = module[len(layer) + 1:].split(".") if module.startswith(layer + ".") else []
        depth = 0
        while depth < len(rel) and depth < len(inner) and rel[depth] == inner[depth]:
            depth += 1
        if depth == len(rel) or depth == len(inner):
            return None  # on the layer, the mlp, or inside the experts module itself
        keys.add(f"{layer}." + ".".join(rel[: depth + 1]))
    return tuple(sorted(keys))


def _component(name: str, kind: str, arch: Arch) -> str:
    """Which part of a multimodal or encoder-decoder model a tensor belongs to, for the report.

    A projector inside the vision tower's module (Qwen2-VL's ``model.visual.merger``) is placed
    with the tower but reported as the projector.
    """
    if kind in ("vision", "projector"):
        return "projector" if any(_PROJECTOR.search(seg) for seg in name.split(".")[:-1]) else "vision_tower"
    if arch.is_encoder_decoder:
        if name.startswith("encoder.") or kind == "encoder":
            return "encoder"
        return "shared" if kind == "embed" and not name.startswith("decoder.") else "decoder"
    return "language_model"


def input_embedding(units: list[Unit] | tuple[Unit, ...]) -> Unit | None:
    """The token embedding (a tied head's weight), not a position embedding."""
    embeds = [u for u in units if u.kind == "embed"]
    return next((u for u in embeds if u.name.rsplit(".", 1)[-1] in _TOKEN_EMBEDDINGS), embeds[0] if embeds else None)


def _decoder_prefix(grouped: list[tuple[str, Tensor, list]], arch: Arch) -> str | None:
    """The block prefix of the decoder layers: the non-vision prefix with the most numbered blocks.

    Works on the groups of :func:`templates.groups` (representative name and every member's numbers). The
    names are the loaded model's (renamed): a device_map and the unit names use them.
    """
    counts: dict[str, set[str]] = defaultdict(set)
    for name, _, members in grouped:
        m = _BLOCK.match(name)
        if not m or _VISION.search(m.group(1)):
            continue
        pos = len(templates.NUM.findall(m.group(1)))  # the block number is the name's pos-th number
        found = counts[m.group(1)]
        if members[0] is None or len(members[0]) <= pos:
            found.add(m.group(2))
        else:  # a group's members all have the same count of numbers
            found.update(map(itemgetter(pos), members))
    if not counts:
        return None
    if arch.is_encoder_decoder:
        dec = [p for p in counts if "decoder" in p]
        if dec:
            return dec[0]
    return max(counts, key=lambda p: len(counts[p]))

def _unit_of(name: str, decoder: str | None) -> tuple[str, str, int | None, str]:
    """(unit name, kind, layer index, sub-module) of a (renamed) tensor name.

    A vision tower or a multimodal projector is one unit, named by its root module
    (``model.vision_tower``, ``model.visual``, ``model.multi_modal_projector``): it then covers
    the tower's non-persistent buffers too (``embeddings.position_ids``, ``rotary_pos_emb``), which
    transformers places by the device_map key that prefixes them, and it is small next to the
    language model (a SigLIP-so400m tower is 0.4B parameters).
    """
    if decoder is None or not name.startswith(decoder + "."):
        segments = name.split(".")
        for i, seg in enumerate(segments[:-1]):
            kind = "vision" if _VISION.search(seg) else "projector" if _PROJECTOR.search(seg) else None
            if kind is not None:
                sub = segments[i + 1] if i + 2 < len(segments) else "."
                return ".".join(segments[: i + 1]), kind, None, sub
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


def _classify(t: Tensor, name: str, quant: prequant.PreQuant | None, *, moe: bool = False,
              packed: frozenset[str] = frozenset()) -> tuple[str, int, int]:
    """(role, true parameters, rows) of one tensor."""
    if quant is not None:
        special = quant.classify(t, name, packed)
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
