"""The solver: (footprint, hardware, constraints) -> the plan to use, its alternatives, and why
the others were rejected. Pure: no I/O, no clock, no randomness.

Search space: dtype (fp32, bf16 where every GPU used supports it, fp16), quantization (none, bnb
int8, bnb nf4; or the checkpoint's own when it is pre-quantized, never stacked), placement (all on
GPUs, GPUs + CPU offload, + disk offload, CPU only, CPU + disk), and for several GPUs either the
first alone or all of them, sequential or balanced.

Policies (``prefer``):
- "speed" (default): the highest precision that keeps every weight on accelerators; when nothing
  fits there, the fastest plan by estimated tokens/s.
- "quality": the highest precision that fits anywhere, then speed.
- "memory": the smallest weights that fit, then speed.

Precision is *effective*: loading a bf16 checkpoint in fp32 adds no precision, so the two rank
equal and the faster (bf16) wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.runtimes.transformers import quantizers as formats
from planner.core.errors import NoFeasiblePlan, UsageError
from planner.model.footprint import Footprint, Unit, input_embedding
from planner.runtimes.transformers.memory import activations, budget, kv, weights
from planner.runtimes.transformers.placement import Assignment, Cost, Slot, assign, balanced_caps, flat_device_map, split_groups
from planner.core.records import Gpu, Hardware, Plan, Scheme
from planner.runtimes.transformers.speed import tokens_per_second
from planner.core.units import MiB, fmt_bytes

DTYPES = ("float32", "bfloat16", "float16")
QUANTS = ("none", "int8", "nf4")
PREFERENCES = ("speed", "quality", "memory")
_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}
# Headroom left unused on every device, as a fraction of its free memory with a floor; it covers
# what the memory model gets wrong on the low side. In benchmarks/accuracy (45 CPU scenarios, 121
# runs, predicted against the highest run of each), on the small models (peaks under 2.2 GiB) the
# worst under-predictions were 63, 59, 57 and 54 MiB (at most 7.1 %): the floor is twice the worst,
# because a scenario's highest run is only the highest of 2-8 runs of a scattered peak (spread up
# to 484 MiB). At the boundary 5 % of free memory is 5.3 % of the peak, and it takes over from the
# floor above 2.5 GiB free, where the full-size runs (1B and 7B, 1.7-19.6 GiB) were at worst 0.8 %
# low (137 MiB of 19.6 GiB). See benchmarks/accuracy/RESULTS.md and the README ("How much headroom").
DEFAULT_MARGIN_FRACTION = 0.05
DEFAULT_MARGIN_FLOOR = 128 * MiB
# Tokens the emitted script generates after the prefill, planned into the KV cache.
DEFAULT_NEW_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Constraints:
    """What the user asked for.

    Attributes:
        context: prompt tokens per sequence (prefill length).
        batch: sequences generated together.
        new_tokens: tokens generated after the prefill.
        prefer: "speed", "quality" or "memory".
        dtype: force this load dtype.
        quantization: force "none", "int8" or "nf4".
        offload: allow CPU and disk offload.
        margin_fraction, margin_floor: headroom kept free on every device.
    """

    context: int = 4096
    batch: int = 1
    new_tokens: int = DEFAULT_NEW_TOKENS
    prefer: str = "speed"
    dtype: str | None = None
    quantization: str | None = None
    offload: bool = True
    margin_fraction: float = DEFAULT_MARGIN_FRACTION
    margin_floor: int = DEFAULT_MARGIN_FLOOR

    def __post_init__(self) -> None:
        if self.context < 1 or self.batch < 1 or self.new_tokens < 0:
            raise UsageError("context and batch must be at least 1")
        if self.prefer not in PREFERENCES:
            raise UsageError(f"--prefer {self.prefer!r} is not one of {', '.join(PREFERENCES)}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.quantization is not None and self.quantization not in QUANTS:
            raise UsageError(f"--quantization {self.quantization!r} is not one of {', '.join(QUANTS)}")


@dataclass(frozen=True, slots=True)
class Solution:
    """The chosen plan, the other plans that fit (best first), and those that do not."""

    chosen: Plan
    alternatives: tuple[Plan, ...]
    rejected: tuple[Plan, ...]


@dataclass(frozen=True, slots=True)
class _Candidate:
    scheme: Scheme
    placement: str
    strategy: str
    gpus: tuple[Gpu, ...]


def solve(fp: Footprint, hw: Hardware, c: Constraints) -> Solution:
    """Choose how to load ``fp`` on ``hw``.

    Raises:
        NoFeasiblePlan: nothing fits; ``rejections`` holds every candidate with its reasons.
    """
    plans: list[Plan] = []
    seen: set[tuple] = set()
    for cand in _candidates(fp, hw, c):
        plan = evaluate(fp, hw, c, cand)
        key = (plan.scheme, tuple(sorted((k, str(v)) for k, v in plan.device_map.items())))
        if plan.fits and key in seen:
            continue  # "gpu+cpu" that put nothing on the cpu is the "gpu" plan again
        seen.add(key)
        plans.append(plan)
    fitting = [p for p in plans if p.fits]
    rejected = tuple(p for p in plans if not p.fits)
    if not fitting:
        raise NoFeasiblePlan(f"no plan fits {hw.name}", rejections=rejected)
    ranked = sorted(fitting, key=_rank_key(c.prefer), reverse=True)
    return Solution(chosen=ranked[0], alternatives=tuple(ranked[1:]), rejected=rejected)


def _rank_key(prefer: str):
    def key(p: Plan) -> tuple:
        on_acc = p.placement in ("gpu", "mps")
        fewer_gpus = -sum(1 for d in p.memory if d.startswith("cuda"))
        if prefer == "speed":
            return (on_acc, p.quality if on_acc else 0, p.tokens_per_s, fewer_gpus)
        if prefer == "quality":
            return (p.quality, on_acc, p.tokens_per_s, fewer_gpus)
        return (-sum(m.weights for m in p.memory.values()), p.tokens_per_s, fewer_gpus)

    return key


def _candidates(fp: Footprint, hw: Hardware, c: Constraints):
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


def _gpu_candidates(scheme: Scheme, hw: Hardware, c: Constraints):
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


def evaluate(fp: Footprint, hw: Hardware, c: Constraints, cand: _Candidate) -> Plan:
    """Place and price one candidate; a plan that does not fit says why."""
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
        devices[g.device] = (g.free_bytes, _margin(g.free_bytes, c))
    ram = hw.ram_free - sum(g.free_bytes for g in cand.gpus if g.unified)
    devices["cpu"] = (max(0, ram), _margin(max(0, ram), c))
    if "disk" in cand.placement:
        devices["disk"] = (hw.disk_free, _margin(hw.disk_free, c))
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

    if result.unplaced:
        reasons.append(_shortfall(cand, costs, slots, devices, t))
    else:
        for d, m in memory.items():
            if m.required > m.capacity:
                reasons.append(f"{scheme.label} needs {fmt_bytes(m.required)} on {d}, {fmt_bytes(m.capacity)} usable")

    device_map = {name: _map_value(dev) for name, dev in flat_device_map(costs, result.device_of).items()}
    return Plan(
        scheme=scheme,
        placement=cand.placement,
        strategy=cand.strategy,
        device_map=device_map,
        memory=memory,
        tokens_per_s=_speed(fp, hw, cand, costs, result),
        quality=_quality(fp, scheme),
        fits=not reasons,
        reasons=tuple(reasons),
        notes=tuple(_notes(fp, cand, result) + formats.notes(fp, cand.scheme, cand.gpus) + _split_notes(cand, costs, result)),
        offloaded_bytes=sum(memory[d].weights for d in ("cpu", "disk") if d in memory and cand.gpus),
        disk_bytes=memory["disk"].total if "disk" in memory else 0,
    )


def reprice(fp: Footprint, hw: Hardware, c: Constraints, plan: Plan) -> Plan:
    """``plan``'s scheme, placement and strategy on the same GPUs, placed and priced again under ``c``.

    The units may land elsewhere (a longer context leaves less room for weights); the kind of
    plan does not change. Used by :mod:`planner.solve.context` to search the largest context.
    """
    if plan.placement == "mps":
        gpus = hw.gpus[:1]
    elif plan.placement.startswith("gpu"):
        gpus = hw.gpus[:1] if plan.strategy == "single" else hw.gpus
    else:
        gpus = ()
    return evaluate(fp, hw, c, _Candidate(plan.scheme, plan.placement, plan.strategy, tuple(gpus)))


def _margin(free: int, c: Constraints) -> int:
    return max(int(free * c.margin_fraction), c.margin_floor)


def _costs(fp: Footprint, c: Constraints, scheme: Scheme, *, offload_possible: bool, cpu_exec: bool,
           dequantize: bool = False, split: bool = False) -> list[Cost]:
    """One cost per unit in forward order; with ``split``, MoE layers' dense parts in order and
    their experts modules after everything else, so that the sequential walk offloads experts
    before any dense layer (expert-first, as llama.cpp's fit does)."""
    arch = fp.arch
    width = scheme.dtype_bytes
    stored_width = {"float32": 4, "bfloat16": 2, "float16": 2}.get(fp.stored_dtype, 2)
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


def _shortfall(cand: _Candidate, costs: list[Cost], slots: list[Slot], devices: dict[str, tuple[int, int]],
               t: budget.Transients) -> str:
    label = cand.scheme.label
    if len(slots) == 1:
        d = slots[0].device
        free, margin = devices[d]
        slot = slots[0]
        units = sum(int((c.on_exec - c.kv) * slot.weight_scale + c.kv * slot.transient_scale) for c in costs if c.tied_to is None)
        need = units + (free - margin - slot.room)
        return f"{label} needs {fmt_bytes(need)} on {d}, {fmt_bytes(free - margin)} usable"
    where = " and ".join(s.device for s in slots)
    usable = ", ".join(f"{s.device} {fmt_bytes(devices[s.device][0] - devices[s.device][1])}" for s in slots)
    return f"{label} does not fit once {where} are full (usable: {usable})"

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
        out.append(f"{s.quantization} with disk offload on a CPU-only machine: transformers leaves every offloaded module unquantized")
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
    return tokens_per_second(
        gpu_reads={d: (r[0], gpu_bw[d]) for d, r in reads.items()},
        cpu_exec_bytes=cpu_exec, ram_bandwidth=hw.ram_bandwidth,
        pcie_bytes=pcie, pcie_bandwidth=pcie_bw, disk_bytes=disk, disk_bandwidth=hw.disk_bandwidth,
        quantization=cand.scheme.quantization, dtype=cand.scheme.dtype,
    )


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


def _map_value(device: str) -> int | str:
    return int(device.split(":")[1]) if device.startswith("cuda:") else device
