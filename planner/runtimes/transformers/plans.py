"""The transformers runtime's search space: every (dtype, quantization, placement, GPU set) it can
load, each placed and priced per device. The generic solver (planner.solve.solver) ranks them.

Search space: dtype (fp32, bf16 where every GPU used supports it, fp16), quantization (none, bnb
int8, bnb nf4; or the checkpoint's own when it is pre-quantized, never stacked), placement (all on
GPUs, GPUs + CPU offload, + disk offload, CPU only, CPU + disk), and for several GPUs either the
first alone or all of them, sequential or balanced.

Precision is *effective*: loading a bf16 checkpoint in fp32 adds no precision, so the two rank
equal and the faster (bf16) wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from planner.core.errors import UsageError
from planner.core.records import Constraints, DeviceMemory, Gpu, Hardware, Plan, Speed
from planner.core.units import LOAD_DTYPE_BYTES, fmt_bytes
from planner.model.footprint import Footprint, Unit, input_embedding
from planner.runtimes.transformers import quantizers as formats
from planner.runtimes.transformers.memory import activations, budget, kv, weights
from planner.runtimes.transformers.placement import Assignment, Cost, Slot, assign, balanced_caps, flat_device_map, split_groups
from planner.runtimes.transformers.settings import QUANTS, Scheme, TransformersSettings
from planner.runtimes.transformers.speed import PREFILL_TOKEN_SHARE, cpu_load_seconds, tokens_per_second

RUNTIME = "transformers"
DTYPES = tuple(LOAD_DTYPE_BYTES)
_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}


def plans(fp: Footprint, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every candidate placed and priced; a plan that does not fit says why.

    Raises:
        UsageError: ``c`` forces a dtype or quantization this runtime does not know.
    """
    if c.dtype is not None and c.dtype not in DTYPES:
        raise UsageError(f"--dtype {c.dtype!r} is not one of {', '.join(DTYPES)}")
    if c.quantization is not None and c.quantization not in QUANTS:
        raise UsageError(f"--quantization {c.quantization!r} is not one of {', '.join(QUANTS)}")
    out: list[Plan] = []
    seen: set[tuple[object, ...]] = set()
    for cand in _candidates(fp, hw, c):
        plan = evaluate(fp, hw, c, cand)
        s = _settings(plan)
        key = (s.scheme, tuple(sorted((k, str(v)) for k, v in s.device_map.items())))
        if plan.fits and key in seen:
            continue  # "gpu+cpu" that put nothing on the cpu is the "gpu" plan again
        seen.add(key)
        out.append(plan)
    return out


def smallest_weights(fp: Footprint) -> int:
    """A lower bound of any plan's weights: every unit in its smallest form (nf4, or as stored)."""
    scheme = Scheme("bfloat16", "prequantized" if fp.prequant else "nf4")
    return sum(min(weights.unit_bytes(u, scheme, offloaded=False, prequant=fp.prequant), u.stored_bytes) for u in fp.units)


def _settings(plan: Plan) -> TransformersSettings:
    s = plan.settings
    if not isinstance(s, TransformersSettings):
        raise TypeError(f"not a transformers plan: {plan.runtime}")
    return s


@dataclass(frozen=True, slots=True)
class _Candidate:
    scheme: Scheme
    placement: str
    strategy: str
    gpus: tuple[Gpu, ...]


def _candidates(fp: Footprint, hw: Hardware, c: Constraints) -> Iterator[_Candidate]:
    dtypes = [c.dtype] if c.dtype else list(DTYPES)
    if fp.prequant is not None:
        quants = ["prequantized"]
        dtypes = [d for d in dtypes if d != "float32"] or dtypes
    else:
        quants = [c.quantization] if c.quantization else list(QUANTS)
    for dtype in dtypes:
        for q in quants:
            scheme = Scheme(dtype, q)
            if hw.gpus:
                yield from (_runtime_format(fp, cand) for cand in _gpu_candidates(scheme, hw, c))
            for placement in ("cpu", "cpu+disk") if c.offload else ("cpu",):
                yield _runtime_format(fp, _Candidate(scheme, placement, "single", ()))


def _runtime_format(fp: Footprint, cand: _Candidate) -> _Candidate:
    """A pre-quantized candidate as the runtime loads it on the candidate's devices (planner.runtimes.transformers.quantizers):
    a load that dequantizes becomes a plain scheme in the load dtype; refusals are rejected later."""
    q = formats.runtime_quantization(fp, cand.gpus, cand.scheme.quantization)
    return cand if q == cand.scheme.quantization else _Candidate(Scheme(cand.scheme.dtype, q), cand.placement, cand.strategy, cand.gpus)


def _dequantized(fp: Footprint, scheme: Scheme) -> bool:
    return fp.prequant is not None and scheme.quantization == "none"


def _split_experts(fp: Footprint, cand: _Candidate) -> bool:
    """Whether MoE layers may be placed as dense part + experts module (expert-first offload).

    accelerate runs every offloaded module on the main device, so with one GPU (or the CPU) the
    experts can go to cpu/disk while attention stays put; across several GPUs each layer's parts
    must stay together, so there whole layers are placed.
    """
    return cand.strategy == "single" and any(u.parts for u in fp.units)


def _gpu_candidates(scheme: Scheme, hw: Hardware, c: Constraints) -> Iterator[_Candidate]:
    gpus = hw.gpus
    if gpus[0].backend == "mps":
        yield _Candidate(scheme, "mps", "single", gpus[:1])
        return
    sets = [(gpus[:1], "single")]
    if len(gpus) > 1:
        sets += [(gpus, "sequential"), (gpus, "balanced")]
    placements = ("gpu", "gpu+cpu", "gpu+cpu+disk") if c.offload else ("gpu",)
    for used, strategy in sets:
        for placement in placements:
            yield _Candidate(scheme, placement, strategy, used)


def evaluate(fp: Footprint, hw: Hardware, c: Constraints, cand: _Candidate, *, roomy: bool = False) -> Plan:
    """Place and price one candidate; a plan that does not fit says why (``roomy``: this is the
    candidate priced with room to spare on its one device, to learn what it needs)."""
    scheme = cand.scheme
    reasons = _static_rejections(fp, hw, cand) + formats.rejections(fp, cand.scheme, cand.placement, cand.gpus)
    arch = fp.arch
    width = scheme.dtype_bytes
    cpu_exec = not cand.gpus
    offloading = bool(cand.gpus) and "cpu" in cand.placement
    t = budget.Transients(
        prefill=activations.prefill_bytes(arch, context=c.context, batch=c.batch, dtype_bytes=width,
                                          quantization=scheme.quantization, largest_linear=fp.largest_linear,
                                          heap_linear=weights.largest_heap_linear(fp.units), cpu=cpu_exec),
        logits=activations.logits_bytes(arch, batch=c.batch),
        quantize=fp.largest_linear * width if scheme.bnb else 0,
    )
    costs = _costs(fp, c, scheme, offload_possible=offloading or "disk" in cand.placement, cpu_exec=cpu_exec,
                   dequantize=_dequantized(fp, scheme), split=_split_experts(fp, cand))

    devices: dict[str, tuple[int, int]] = {}
    for g in cand.gpus:
        devices[g.device] = (g.free_bytes, c.margin(g.free_bytes))
    ram = hw.ram_free - sum(g.free_bytes for g in cand.gpus if g.unified)
    devices["cpu"] = (max(0, ram), c.margin(max(0, ram)))
    if "disk" in cand.placement:
        devices["disk"] = (hw.disk_free, c.margin(hw.disk_free))
    ws, ts = budget.gpu_scales()
    slots = [Slot(g.device, "gpu", budget.rooms(g.device, free=devices[g.device][0], margin=devices[g.device][1], scheme=scheme,
                                                t=t, executes=True), executes=True, weight_scale=ws, transient_scale=ts)
             for g in cand.gpus]
    if cpu_exec or offloading:
        free, margin = devices["cpu"]
        slots.append(Slot("cpu", "cpu", budget.rooms("cpu", free=free, margin=margin, scheme=scheme, t=t, executes=cpu_exec),
                          executes=cpu_exec))
    if "disk" in devices:
        slots.append(Slot("disk", "disk", devices["disk"][0] - devices["disk"][1], executes=False))

    caps = balanced_caps(costs, [s for s in slots if s.kind == "gpu"]) if cand.strategy == "balanced" else None
    result = assign(costs, slots, caps=caps)
    executing = {s.device for s in slots if s.executes}
    memory = budget.account(costs, result, devices=devices, executing=executing, scheme=scheme, t=t)

    if result.unplaced and len(slots) == 1 and not roomy:
        # What the plan needs is what it holds once everything is placed: price it again with room
        # to spare on its one device, and compare every device's need with what is usable here
        # (so that "needs N" is the amount that makes it fit, issue 13 item 7).
        big_hw, big_cand = _roomy(hw, cand, slots[0].device)
        big_plan = evaluate(fp, big_hw, c, big_cand, roomy=True)
        big = big_plan.memory
        # the plan's memory is then what it needs, against what this machine has
        memory = {d: replace(big[d], capacity=m.capacity, free=m.free, margin=m.margin) if d in big else m for d, m in memory.items()}
        reasons += _needs(scheme.label, memory)
    elif result.unplaced:
        reasons.append(_shortfall(cand, slots, devices))
    else:
        reasons += _needs(scheme.label, memory)

    speed = big_plan.speed if result.unplaced and len(slots) == 1 and not roomy else _speed_record(fp, hw, c, cand, costs, result)
    device_map = {name: _map_value(dev) for name, dev in flat_device_map(costs, result.device_of).items()}
    settings = TransformersSettings(scheme=scheme, placement=cand.placement, strategy=cand.strategy, device_map=device_map)
    kept_experts = _kept_experts(fp, scheme, memory)
    return Plan(
        runtime=RUNTIME,
        label=_label(settings, kept_experts, sum(m.weights for m in memory.values())),
        settings=settings,
        memory=memory,
        speed=speed,
        quality=_quality(fp, scheme),
        fits=not reasons,
        reasons=tuple(reasons),
        notes=tuple(_notes(fp, cand, result) + formats.notes(fp, cand.scheme, cand.gpus) + _split_notes(cand, costs, result)
                    + _expert_notes(scheme, kept_experts, memory)),
        on_accelerators=cand.placement in ("gpu", "mps"),
        offloaded_bytes=sum(memory[d].weights for d in ("cpu", "disk") if d in memory and cand.gpus),
        disk_bytes=memory["disk"].total if "disk" in memory else 0,
        kv_bytes=kv.total_bytes(arch, context=c.context, new_tokens=c.new_tokens, batch=c.batch, dtype_bytes=width),
        kv_bytes_per_token=kv.bytes_per_token(arch, dtype_bytes=width),
    )


def reprice(fp: Footprint, hw: Hardware, c: Constraints, plan: Plan) -> Plan:
    """``plan``'s scheme, placement and strategy on the same GPUs, placed and priced again under ``c``.

    The units may land elsewhere (a longer context leaves less room for weights); the kind of
    plan does not change. Used by :mod:`planner.solve.context` to search the largest context.
    """
    s = _settings(plan)
    if s.placement == "mps":
        gpus = hw.gpus[:1]
    elif s.placement.startswith("gpu"):
        gpus = hw.gpus[:1] if s.strategy == "single" else hw.gpus
    else:
        gpus = ()
    return evaluate(fp, hw, c, _Candidate(s.scheme, s.placement, s.strategy, tuple(gpus)))


def _costs(fp: Footprint, c: Constraints, scheme: Scheme, *, offload_possible: bool, cpu_exec: bool,
           dequantize: bool = False, split: bool = False) -> list[Cost]:
    """One cost per unit in forward order; with ``split``, MoE layers' dense parts in order and
    their experts modules after everything else, so that the sequential walk offloads experts
    before any dense layer (expert-first, as llama.cpp's fit does)."""
    arch = fp.arch
    width = scheme.dtype_bytes
    stored_width = LOAD_DTYPE_BYTES.get(fp.stored_dtype, 2)
    cast = width != stored_width or scheme.dtype != fp.stored_dtype
    embed = next((u.name for u in fp.units if u.kind == "embed"), None)
    tied_embed = {u.tied_to for u in fp.units if u.tied_to}
    token_embed = input_embedding(fp.units)
    tokens = c.batch * (c.context + c.new_tokens)

    def cost(u: Unit, layer_kv: int, group: str | None = None) -> Cost:
        acc = weights.unit_bytes(u, scheme, offloaded=False, prequant=fp.prequant, cpu=cpu_exec, dequantize=dequantize)
        off = weights.unit_bytes(u, scheme, offloaded=True, prequant=fp.prequant, dequantize=dequantize) if offload_possible else acc
        quantized = scheme.bnb and u.role("linear").params > 0
        dequantized = dequantize and u.packed_params > 0
        converted = cast or quantized or dequantized or u.rebuilt_bytes > 0
        # rebuilt experts and dequantized weights are rewritten to the offload folder in the load
        # dtype (research notes Q1; MXFP4 experts measured in tests/test_formats.py)
        written = (u.role("expert").params * width if u.rebuilt_bytes else 0) + (u.packed_params * width if dequantized else 0)
        # a cast converts every tensor, so the checkpoint is unmapped after the load; otherwise
        # tensors used in place keep it mapped, with the pages the conversion read
        kept = 0 if cast else weights.converted_stored(u, scheme, dequantize=dequantized)
        streamed = off
        stream_kept = 0
        if cpu_exec:
            # a disk unit, per forward: accelerate reads it from the checkpoint (its pages mapped
            # while read, and a copy) and casts that copy when the load dtype differs (research Q1)
            streamed = off + u.stored_bytes + (u.stored_bytes if cast else 0)
            # (experts rebuilt at load are rewritten in the load dtype: read back without a cast)
            stream_kept = weights.stream_retained(u, scheme) if cast and not u.rebuilt_bytes else 0
        # a CPU run reads a memory-mapped token embedding one row per token (a tied head reads it all)
        unread = 0
        if cpu_exec and not converted and token_embed is not None and u.name == token_embed.name and u.name not in tied_embed:
            unread = min(acc, weights.unread_embedding(u, arch.vocab_size or 0, tokens=tokens))
        return Cost(name=u.name, on_exec=acc - unread + layer_kv, kv=layer_kv, offloaded=off, streamed=streamed,
                    tied_to=u.tied_to, no_disk=u.name in tied_embed or (u.name == embed and bool(tied_embed)),
                    stored=u.stored_bytes, converted=converted, written=written, group=group, keys=u.keys,
                    kept_mapped=kept, retained=weights.load_retained(u, scheme) if converted else 0,
                    quantize_retained=weights.quantize_retained(u, scheme) if converted else 0,
                    stream_retained=stream_kept, unread=unread)

    out, experts = [], []
    for u in fp.units:
        layer_kv = 0
        if u.kind == "layer" and u.layer is not None:
            layer_kv = kv.layer_bytes(arch, u.layer, context=c.context, new_tokens=c.new_tokens, batch=c.batch, dtype_bytes=width)
        if split and u.parts:
            dense, moe = u.parts
            out.append(cost(dense, layer_kv, group=u.name))
            experts.append(cost(moe, 0, group=u.name))
        else:
            out.append(cost(u, layer_kv))
    return out + experts


def _needs(label: str, memory: dict[str, DeviceMemory]) -> list[str]:
    """A reason per device whose need exceeds its usable memory; the need is shown rounded up."""
    return [f"{label} needs {fmt_bytes(m.required, up=True)} on {d}, {_usable(m.free, m.margin)}"
            for d, m in memory.items() if m.required > m.capacity]


def _usable(free: int, margin: int) -> str:
    """What a device offers a plan, in words; a device whose free memory is all margin is too small."""
    if free <= margin:
        return f"nothing usable: its {fmt_bytes(free)} free is within the {fmt_bytes(margin)} margin (the machine is too small)"
    return f"{fmt_bytes(free - margin)} usable"


# Free memory that holds any model: what a device is given to price a plan that did not fit it.
_ROOMY = 1 << 50  # 1 PiB


def _roomy(hw: Hardware, cand: _Candidate, device: str) -> tuple[Hardware, _Candidate]:
    """``hw`` and ``cand`` with ``device`` given room for any model."""
    if device == "cpu":
        return replace(hw, ram_free=_ROOMY, ram_total=max(hw.ram_total, _ROOMY)), cand

    def big(g: Gpu) -> Gpu:
        return replace(g, free_bytes=_ROOMY, total_bytes=max(g.total_bytes, _ROOMY)) if g.device == device else g

    return replace(hw, gpus=tuple(big(g) for g in hw.gpus)), replace(cand, gpus=tuple(big(g) for g in cand.gpus))


def _shortfall(cand: _Candidate, slots: list[Slot], devices: dict[str, tuple[int, int]]) -> str:
    """Why a plan over several devices (GPUs, RAM, disk) does not fit: no single amount fixes it."""
    where = " and ".join(s.device for s in slots)
    usable = ", ".join(f"{s.device} {fmt_bytes(max(0, devices[s.device][0] - devices[s.device][1]))}" for s in slots)
    return f"{cand.scheme.label} does not fit once {where} are full (usable: {usable})"


def _static_rejections(fp: Footprint, hw: Hardware, cand: _Candidate) -> list[str]:
    s = cand.scheme
    out = []
    if s.dtype == "bfloat16":
        for g in cand.gpus:
            if not g.bf16:
                cc = f"compute capability {g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "no bf16 support"
                out.append(f"bf16: {g.name} ({cc}) has no native bfloat16")
    if s.dtype == "float16" and not cand.gpus:
        out.append("fp16 on CPU is not planned: many CPU kernels lack float16; bf16 or fp32 run there")
    if s.bnb and not cand.gpus and "disk" in cand.placement:
        # With a cpu/disk map transformers needs llm_int8_enable_fp32_cpu_offload, which leaves every
        # cpu and disk module unquantized (quantizer_bnb_4bit.py:125-128): on a CPU-only machine
        # that quantizes nothing (research notes Q5).
        out.append("with disk offload and no GPU in the plan, transformers leaves every offloaded module unquantized")
    if s.quantization == "nf4" and not cand.gpus and not fp.nf4_cpu_ok:
        out.append("nf4 on CPU: bitsandbytes' CPU 4-bit kernel needs every quantized layer's output size divisible by 32")
    return out


def _quality(fp: Footprint, s: Scheme) -> int:
    if s.quantization == "int8":
        return 8
    if s.quantization == "nf4":
        return 4
    if s.quantization == "prequantized" or _dequantized(fp, s):
        # a dequantized checkpoint holds no more information than it stored
        return fp.prequant.bits if fp.prequant else 16
    stored = _BITS.get(fp.stored_dtype, 16)
    return min(_BITS[s.dtype], stored)


def _speed_record(fp: Footprint, hw: Hardware, c: Constraints, cand: _Candidate, costs: list[Cost], result: Assignment) -> Speed:
    """Decode tokens/s; on a CPU-only plan also the load and the first token (calibrated there,
    benchmarks/speed): a bnb load quantizes for minutes where a bf16 one maps the checkpoint."""
    rate = _speed(fp, hw, cand, costs, result)
    if cand.gpus or not rate or rate == float("inf"):
        return Speed(tokens_per_s=rate)
    load = cpu_load_seconds(params=_cpu_params(fp), quantization=cand.scheme.quantization, dtype=cand.scheme.dtype,
                            stored_dtype=fp.stored_dtype, cpu_count=hw.cpu_count)
    first = load + (1 + c.context * c.batch * PREFILL_TOKEN_SHARE) / rate
    return Speed(tokens_per_s=rate, load_s=round(load, 3), first_token_s=round(first, 3))


def _speed(fp: Footprint, hw: Hardware, cand: _Candidate, costs: list[Cost], result: Assignment) -> float:
    units = fp.unit_index()
    by_name = {x.name: x for x in costs}
    gpu_bw = {g.device: g.bandwidth for g in cand.gpus}
    reads: dict[str, list[int]] = {}
    cpu_exec = pcie = disk = 0
    for name, dev in result.device_of.items():
        cost = by_name[name]
        if cost.tied_to is not None:
            continue
        per_token = _active_fraction(fp, units[name], cost.on_exec - cost.kv) + cost.kv
        if dev in gpu_bw:
            if cand.scheme.bnb:  # bnb's speed is a ratio to the 16-bit plan's (speed.BNB_GPU_SPEED)
                per_token = _active_fraction(fp, units[name], units[name].params * cand.scheme.dtype_bytes) + cost.kv
            reads.setdefault(dev, [0])[0] += per_token
        elif dev == "cpu" and not cand.gpus:
            cpu_exec += per_token
        elif dev == "cpu":
            # accelerate's hook copies an offloaded module whole to the main device per forward:
            # an offloaded experts module costs all its experts, not the routed top-k
            pcie += cost.offloaded + cost.kv
        elif dev == "disk":
            disk += cost.offloaded
            if not cand.gpus:
                cpu_exec += per_token
    pcie_bw = min((g.pcie_bandwidth for g in cand.gpus if g.pcie_bandwidth), default=None)
    cpu_params = _cpu_params(fp) if not cand.gpus else None
    return tokens_per_second(
        gpu_reads={d: (r[0], gpu_bw[d]) for d, r in reads.items()},
        cpu_exec_bytes=cpu_exec, ram_bandwidth=hw.ram_bandwidth,
        pcie_bytes=pcie, pcie_bandwidth=pcie_bw, disk_bytes=disk, disk_bandwidth=hw.disk_bandwidth,
        quantization=cand.scheme.quantization, dtype=cand.scheme.dtype, cpu_params=cpu_params, cpu_count=hw.cpu_count,
    )


def _cpu_params(fp: Footprint) -> dict[str, int]:
    """Parameters a CPU run computes with per token: "layer" (decoder layers and every other
    module but the embeddings and the head, MoE experts at their routed share), "head" (the output
    head, or the embedding tied to it), "linear" (of the layers, the linears bnb quantizes) and
    "embed" (looked up, not computed) and "cast" (every stored parameter once: what a load in
    another dtype converts)."""
    out = {"layer": 0, "head": 0, "linear": 0, "embed": 0, "cast": sum(u.params for u in fp.units)}
    by_name = {u.name: u for u in fp.units}
    for u in fp.units:
        if u.kind == "head":
            tied = by_name.get(u.tied_to) if u.tied_to else None
            out["head"] += u.params or (tied.params if tied is not None else 0)
        elif u.kind in ("embed", "tied"):
            out["embed"] += u.params
        else:
            out["layer"] += _active_fraction(fp, u, u.params)
            out["linear"] += u.role("linear").params
    return out


def _active_fraction(fp: Footprint, unit: Unit, resident: int) -> int:
    """Bytes of a unit read per token: MoE layers read only the routed top-k experts."""
    arch = fp.arch
    experts = unit.expert_params
    if not arch.is_moe or not experts or not unit.params:
        return resident
    share = experts / unit.params
    active = (1 - share) + share * arch.num_experts_per_tok / arch.num_experts
    return int(resident * active)


def _notes(fp: Footprint, cand: _Candidate, result: Assignment) -> list[str]:
    notes = []
    if cand.scheme.quantization == "nf4" and not cand.gpus:
        notes.append("bitsandbytes' fast CPU 4-bit matmul needs the `kernels` package (pip install 'kernels>=0.11.1'; it fetches "
                     "kernels-community/quantization-bitsandbytes from the Hub); the speed estimate is without it (benchmarks/speed)")
    if cand.scheme.bnb and any(v in ("cpu", "disk") for v in result.device_of.values()) and cand.gpus:
        notes.append("offloaded modules stay unquantized (llm_int8_enable_fp32_cpu_offload)")
    return notes


def _split_notes(cand: _Candidate, costs: list[Cost], result: Assignment) -> list[str]:
    split = split_groups(costs, result.device_of)
    if not split:
        return []
    where = cand.gpus[0].device if cand.gpus else "cpu"
    return [f"experts of {len(split)} MoE layers offloaded before any dense layer; attention and routers stay on {where}; "
            "each offloaded experts module is streamed whole per forward"]


def _kept_experts(fp: Footprint, scheme: Scheme, memory: dict[str, DeviceMemory]) -> int:
    """Bytes of MoE experts a bnb plan leaves in the load dtype: transformers fuses them into 3-D
    parameters (conversion_mapping.py), which are not ``nn.Linear``, and bitsandbytes replaces
    only ``nn.Linear`` (integrations/bitsandbytes.py ``replace_with_bnb_linear``)."""
    if not scheme.bnb:
        return 0
    return sum(u.role("expert").params for u in fp.units) * scheme.dtype_bytes


# A bnb plan whose unquantized experts are at least this share of its weights is labelled by what
# is really quantized ("nf4 dense, bf16 experts"): a plain "nf4" would promise 4-bit experts.
KEPT_EXPERTS_LABEL_SHARE = 0.2


def _label(settings: TransformersSettings, kept: int, weights: int) -> str:
    if not kept or kept < KEPT_EXPERTS_LABEL_SHARE * weights:
        return settings.label
    s = settings.scheme
    where = settings.label.partition(" on ")[2]
    return f"{s.quantization} dense, {_short(s.dtype)} experts on {where}"


def _short(dtype: str) -> str:
    return Scheme(dtype, "none").label


def _expert_notes(scheme: Scheme, kept: int, memory: dict[str, DeviceMemory]) -> list[str]:
    if not kept:
        return []
    weights = sum(m.weights for d, m in memory.items()) or 1
    return [f"{scheme.quantization} quantizes the dense layers only: the fused MoE experts, {fmt_bytes(kept)} "
            f"({min(100, round(100 * kept / weights))} % of the weights), stay in {_short(scheme.dtype)} "
            "(bitsandbytes replaces nn.Linear modules; transformers fuses experts into 3-D parameters)"]


def _map_value(device: str) -> int | str:
    return int(device.split(":")[1]) if device.startswith("cuda:") else device
