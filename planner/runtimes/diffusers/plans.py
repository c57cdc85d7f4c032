"""Candidate settings of a pipeline on a machine, each priced per device and per phase.

Per device, a plan's peak is the largest phase (text encoding, denoising, VAE decode): what is
resident on the device in that phase plus the phase's working memory. What is resident depends
on the offload mode:

* none: every component, the whole call (loaded with ``device_map="cuda"``: RAM keeps no copy);
* model (``enable_model_cpu_offload``): the phase's component only; RAM holds the pipeline;
* sequential (``enable_sequential_cpu_offload``): the phase's largest leaf module;
* group (``enable_group_offload``, block level, one block per group): the component's
  ungrouped parameters plus one group (two with a CUDA stream, which prefetches the next);
  RAM holds the pipeline (twice with a stream: the pinned copies), or with a disk folder only
  a few groups.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

from planner.core.records import Constraints, DeviceMemory, Gpu, Hardware, Plan, Speed
from planner.core.units import MiB, fmt_bytes
from planner.runtimes.diffusers import memory
from planner.runtimes.diffusers.facts import PipelineFacts
from planner.runtimes.diffusers.settings import DTYPE_BYTES, DiffusersSettings

# --- fixed costs -------------------------------------------------------------------------------
# RSS of a process with torch, diffusers and transformers imported and the pipeline object built,
# besides its weights. It depends on what else is installed: diffusers and transformers import the
# optional packages they find (scipy, boto3, ...). Measured in the emitted script on tiny pipelines
# (tests/test_diffusers_run.py: 1-2 MiB pipelines, 1-2 steps, MALLOC_MMAP_THRESHOLD_=65536): peak RSS
# 452-456 MiB in a venv holding only fitcheck's test extra; 524-555 MiB under a Python with 60 more
# packages (scipy, boto3, moto, ipython, ...: `import torch, diffusers, transformers` alone went from
# 416 to 488 MiB). fitcheck charges the fuller environment's figure.
CPU_BASE = 560 * MiB
# The same process on a CUDA machine: the CUDA runtime, cuBLAS and cuDNN are mapped in. PR #11682's
# Flux-dev run without offload held 1.838 GB (bytes / 1024^3) of RAM with every weight on the GPU.
CPU_BASE_CUDA = int(1.838 * 1024**3)
# CUDA context + cuBLAS/cuDNN handles: the lead the transformers runtime uses (600 MiB, its
# memory/overhead.py: peers Ollama 457 MiB, gpu_poor 650 MB); uncalibrated here (no GPU lent).
CUDA_CONTEXT = 600 * MiB
# Caching-allocator slack on the transient parts (PyTorch caching allocator rounds segments to
# 2 MiB and fragments over a run); the transformers runtime's lead, uncalibrated here.
GPU_SLACK_TRANSIENT = 0.15
# Group offload to disk: RAM holds the groups in flight besides the process; PR #11682 (Flux-dev,
# H100): 2.81 GB RAM with disk against 1.84 GB without offload, about 1 GB: two of Flux's largest
# groups (0.68 GB each in bf16) are in flight at once.
DISK_GROUPS_IN_RAM = 2
# Group offload with streams pins a second copy of the offloaded weights in RAM (diffusers
# hooks/group_offloading.py ModuleGroup pinned cpu_param_dict; the "about 2x model size").
STREAM_RAM_COPIES = 2

# --- speed (rough; ranks the modes, see docs/diffusers.md) ------------------------------------
# Effective host->device rate of each offload mode as a fraction of the link's PCIe bandwidth,
# from PR #11682's Flux-dev timings on an H100 SXM (PCIe 5.0 x16, 63 GB/s; 28 steps at 1024^2;
# 6.59 s without offload): model 21.68 s moves 2 x 33.7 GB per call -> 4.5 GB/s; group 47.69 s
# moves 28 x 23.8 GB + 9.9 GB -> 16.4 GB/s; group+disk 55.47 s -> 13.8 GB/s; sequential 68.41 s
# -> 10.9 GB/s.
LINK_FRACTION = {"model": 0.071, "group": 0.26, "group_disk": 0.22, "sequential": 0.17}
# Compute rate: FLOP per byte of memory bandwidth a GPU sustains on these models (assumption:
# H100 SXM 989 TFLOPs dense bf16 / 3.35 TB/s = 295, at ~35 % utilisation ~100).
GPU_FLOP_PER_BYTE = 100
# CPU: measured 6.9 GFLOP/s on this project's 2-vCPU machine (SD 1.5 UNet, 256^2, fp32, by the
# FLOP model below: benchmarks/diffusers/calib.jsonl), per logical CPU ~3.5 GFLOP/s.
CPU_FLOPS_PER_CORE = 3.5e9
# A UNet step costs about 2 x parameters x latent pixels / 16 FLOP (its convolutions run mostly
# at 1/2-1/8 resolution; an assumption that gives ~0.45 TFLOP for SD 1.5 at 512^2, one image).
UNET_TOKEN_DIVISOR = 16
# Share of the shorter of compute and transfer a CUDA stream does not hide (assumption: no
# published stream timing; the synchronisation at each group boundary stays exposed).
STREAM_UNHIDDEN = 0.25
# Compute-time factor of a bnb-quantized denoiser (assumption, uncalibrated: LLM.int8's
# mixed-precision decomposition is the slow one; nf4 dequantizes each weight per matmul).
BNB_SLOWDOWN = {"int8": 1.8, "nf4": 1.3}
# Compute-time factor of a UNet with attention slicing: measured on CPU, the real SD 1.5 UNet at
# 512^2 with CFG, fp32: 211 s sliced "max" against 98 s with SDPA (calib.jsonl rows 5 and 7, one
# machine state); the loop over heads loses SDPA's fused kernel. Uncalibrated on a GPU.
ATTN_SLICING_SLOWDOWN = 2.15


def request_settings(facts: PipelineFacts, request: Constraints) -> tuple[tuple[int, int], int, bool, int]:
    """(resolution, batch, guidance, steps) asked for, with the pipeline's defaults."""
    res = request.option("resolution") or memory.default_resolution(facts)
    guidance = request.option("guidance")
    if guidance is None:
        guidance = memory.default_guidance(facts)
    steps = request.option("steps") or default_steps(facts)
    return (int(res[0]), int(res[1])), request.batch, bool(guidance), int(steps)


def default_steps(facts: PipelineFacts) -> int:
    """num_inference_steps' default in each pipeline's __call__: 50 for SD/SDXL, 28 for SD3 and
    Flux (pipeline_flux.py, pipeline_stable_diffusion_3.py), 4 for schnell (its model card)."""
    if facts.pipeline.startswith(("Flux", "StableDiffusion3")):
        return 4 if not facts.denoiser.config.get("guidance_embeds", True) else 28
    return 50


def _half(facts: PipelineFacts, gpu: Gpu | None) -> str:
    """fp16 or bf16: the denoiser's stored half type where the device computes it (Flux is bf16)."""
    stored = facts.denoiser.dtype
    if stored == "BF16" and (gpu is None or gpu.bf16 or gpu.backend == "mps"):
        return "bfloat16"
    return "float16"


def _t5s(facts: PipelineFacts) -> tuple[str, ...]:
    return tuple(c.name for c in facts.by_role("text_encoder") if "T5" in c.cls)


def candidates(facts: PipelineFacts, hw: Hardware, request: Constraints) -> list[DiffusersSettings]:
    """Every settings record worth pricing on ``hw`` (one device: the first GPU, else the CPU)."""
    res, batch, guidance, steps = request_settings(facts, request)
    gpu = hw.gpus[0] if hw.gpus else None
    tile = int((facts.vae.config.get("sample_size") or 512) if facts.vae else 0)
    tile = tile if isinstance(tile, int) else 512
    vaes = [(False, False)]
    if batch > 1:
        vaes.append((True, False))
    if facts.vae is not None and max(res) > tile:
        vaes += [(False, True)] + ([(True, True)] if batch > 1 else [])
    drops: list[tuple[str, ...]] = [()]
    if facts.pipeline.startswith("StableDiffusion3") and facts.component("text_encoder_3"):
        drops.append(("text_encoder_3",))  # SD3 runs without its T5 (text_encoder_3=None, tokenizer_3=None)
    base = DiffusersSettings(device=gpu.device if gpu else "cpu", dtype="float32", offload="none", resolution=res, batch=batch,
                             guidance=guidance, steps=steps, variant=facts.variant)
    out: list[DiffusersSettings] = []
    if gpu is None:
        dtypes = [request.dtype] if request.dtype else ["float32", "bfloat16"]
        for dtype, (sl, ti), drop in product(dtypes, vaes, drops):
            # fp32 loads the default (full-precision) files when every component has them
            variant = "" if dtype == "float32" and "" in facts.complete else facts.variant
            out.append(replace(base, dtype=dtype, vae_slicing=sl, vae_tiling=ti, dropped=drop, variant=variant))
        return out
    dtype = request.dtype or _half(facts, gpu)
    if gpu.unified or gpu.backend != "cuda":
        for (sl, ti), drop in product(vaes, drops):
            out.append(replace(base, dtype=dtype, vae_slicing=sl, vae_tiling=ti, dropped=drop))
        return out
    den = facts.denoiser.name
    quants: list[tuple[tuple[str, str], ...]] = [()]
    if request.quantization in (None, "nf4", "int8"):
        for q in ((request.quantization,) if request.quantization else ("int8", "nf4")):
            quants.append(((den, q),))
            t5 = _t5s(facts)
            if t5:
                quants.append(tuple(sorted([(den, q), *((n, q) for n in t5)])))
                quants.append(tuple((n, q) for n in t5))
    offloads = [("none", False, False)]
    if request.offload:
        offloads += [("model", False, False), ("group", False, False), ("group", True, False), ("group", False, True),
                     ("sequential", False, False)]
    for (mode, stream, disk), (sl, ti), drop, quant in product(offloads, vaes, drops, quants):
        if quant and mode not in ("none", "model"):
            continue  # bnb modules are placed by accelerate; group/sequential offload of them is not supported
        quant = tuple((c, q) for c, q in quant if c not in drop)
        if quant and request.quantization is None and not any(c == den for c, _ in quant) and not _t5s(facts):
            continue
        out.append(replace(base, dtype=dtype, offload=mode, group_stream=stream, group_disk=disk, vae_slicing=sl, vae_tiling=ti,
                           quantized=quant, dropped=drop))
    return list(dict.fromkeys(out))


def resident(facts: PipelineFacts, s: DiffusersSettings, phase: memory.Phase) -> int:
    """Weights on the compute device during ``phase`` under ``s``."""
    live = [c for c in facts.components if c.name not in s.dropped]
    a = DTYPE_BYTES[s.dtype]
    up = sum(c.parameters * (4 - a) for c in live if c.name in phase.upcast)  # fp32 copy of an upcast VAE
    if s.offload == "none":
        return sum(memory.weight_bytes(c, s) for c in live) + up
    active = [c for c in live if c.name in phase.components]
    if s.offload == "model":
        return sum(memory.weight_bytes(c, s) for c in active) + up
    if s.offload == "sequential":
        return max((c.largest_leaf for c in active), default=0) * (4 if phase.upcast else a)
    groups = 2 if s.group_stream else 1
    return sum((c.ungrouped + groups * c.largest_group) for c in active) * (4 if phase.upcast else a)


def price(facts: PipelineFacts, hw: Hardware, request: Constraints, s: DiffusersSettings) -> Plan:
    """``s`` priced on ``hw``: memory per device (peak phase), speed, and whether it fits."""
    live = [c for c in facts.components if c.name not in s.dropped]
    all_weights = sum(memory.weight_bytes(c, s) for c in live)
    steps = memory.phases(facts, s)
    per_phase = {p.name: (resident(facts, s, p), p.activations) for p in steps}
    peak_name, (peak_w, peak_a) = max(per_phase.items(), key=lambda kv: sum(kv[1]))
    notes: list[str] = []
    reasons: list[str] = []
    mem: dict[str, DeviceMemory] = {}
    cpu_free = hw.ram_free
    if s.device == "cpu":
        total = CPU_BASE + all_weights + peak_a
        mem["cpu"] = _device("cpu", all_weights, peak_a, CPU_BASE, total, cpu_free, request, load=CPU_BASE + all_weights)
    else:
        gpu = hw.gpus[0]
        slack = int(peak_a * GPU_SLACK_TRANSIENT)
        total = peak_w + peak_a + CUDA_CONTEXT + slack
        mem[gpu.device] = _device(gpu.device, peak_w, peak_a, CUDA_CONTEXT + slack, total, gpu.free_bytes, request)
        if not gpu.unified:
            base = CPU_BASE_CUDA
            if s.offload == "none":
                ram_w, load = 0, base + max((c.largest_leaf for c in live), default=0) * 4
            elif s.offload == "group" and s.group_disk:
                ram_w = DISK_GROUPS_IN_RAM * max(c.largest_group for c in live) * DTYPE_BYTES[s.dtype]
                load = base + all_weights  # loaded to RAM first, then written to the folder
                # safetensors files are memory-mapped: tensors kept in their stored dtype are page
                # cache until the folder is written (reclaimable); cast ones are copies
                mapped = sum(memory.weight_bytes(c, s) for c in live if _STORED.get(c.dtype) == s.dtype)
                total = max(base + ram_w, load)
                mem["cpu"] = _device("cpu", ram_w, 0, base, total, cpu_free, request, load=load,
                                     reclaimable=min(mapped, total - base - ram_w))
                ram_w = -1
            else:
                ram_w = all_weights * (STREAM_RAM_COPIES if s.group_stream else 1)
                load = base + all_weights
            if ram_w >= 0:
                mem["cpu"] = _device("cpu", ram_w, 0, base, max(base + ram_w, load), cpu_free, request, load=load)
        if s.group_disk:
            written = sum(memory.weight_bytes(c, s) for c in live)
            mem["disk"] = _device("disk", written, 0, 0, written, hw.disk_free, request)
    for d in mem.values():
        if d.required > d.capacity:
            reasons.append(f"{s.label.rpartition(' on ')[0]} needs {fmt_bytes(d.required)} on {d.device} "
                           f"(peak in {peak_name if d.device != 'disk' and (d.device != 'cpu' or s.device == 'cpu') else 'loading'}); "
                           f"{fmt_bytes(d.capacity)} usable")
    notes.append(f"peak in {peak_name}: {fmt_bytes(peak_w)} of weights + {fmt_bytes(peak_a)} working memory")
    return Plan(
        runtime="diffusers",
        label=s.label,
        settings=s,
        memory=mem,
        speed=speed(facts, hw, s),
        quality=_quality(facts, s),
        fits=not reasons,
        reasons=tuple(reasons),
        notes=tuple(notes),
        on_accelerators=s.device != "cpu" and s.offload == "none",
        offloaded_bytes=0 if s.offload == "none" or s.device == "cpu" else all_weights,
        disk_bytes=mem["disk"].total if "disk" in mem else 0,
    )


_STORED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _device(name: str, weights: int, act: int, overhead: int, total: int, free: int, request: Constraints,
            load: int = 0, reclaimable: int = 0) -> DeviceMemory:
    margin = request.margin(free)
    reclaimable = min(reclaimable, total)
    return DeviceMemory(device=name, weights=weights, kv_cache=0, activations=act, overhead=overhead, total=total,
                        capacity=max(0, free - margin), free=free, margin=margin, load=load, reclaimable=reclaimable,
                        required=total - reclaimable)


def _quality(facts: PipelineFacts, s: DiffusersSettings) -> int:
    """Weight bits, averaged over the parameters that run (a dropped T5 costs its share as 0 bits:
    prompts then reach the model through CLIP alone)."""
    bits = {"nf4": 4, "int8": 8}
    total = weighted = 0
    for c in facts.components:
        total += c.parameters
        if c.name in s.dropped:
            continue
        q = s.quant_of(c.name)
        weighted += c.parameters * (bits[q] if q else 8 * DTYPE_BYTES[s.dtype])
    return round(weighted / total) if total else 16


def speed(facts: PipelineFacts, hw: Hardware, s: DiffusersSettings) -> Speed:
    """Seconds per image: compute, plus the host->device traffic of the offload mode."""
    den = facts.denoiser
    w, h = s.resolution
    lat = (w // memory.vae_scale(facts)) * (h // memory.vae_scale(facts))
    batch = s.batch * (2 if s.guidance else 1)
    if memory.is_unet(den):
        tokens = lat / UNET_TOKEN_DIVISOR
    else:
        tokens = lat / 4 + memory.text_tokens(facts, s.dropped)
    step_flop = 2 * den.parameters * tokens * batch
    if s.device == "cpu" or not hw.gpus:
        rate = (hw.cpu_count or 2) * CPU_FLOPS_PER_CORE
    else:
        gpu = hw.gpus[0]
        rate = (gpu.bandwidth or 500e9) * GPU_FLOP_PER_BYTE
    compute = s.steps * step_flop / rate
    q = s.quant_of(den.name)
    if q:  # bnb dequantizes per matmul: slower than the half-precision kernels (assumption, see docs)
        compute *= BNB_SLOWDOWN[q]
    if s.attention_slicing and memory.is_unet(den):
        compute *= ATTN_SLICING_SLOWDOWN
    link = (hw.gpus[0].pcie_bandwidth if hw.gpus else None) or 15.75e9
    live = [c for c in facts.components if c.name not in s.dropped]
    den_bytes = memory.weight_bytes(den, s)
    rest = sum(memory.weight_bytes(c, s) for c in live) - den_bytes
    transfer = 0.0
    if s.device != "cpu" and s.offload == "model":
        transfer = 2 * (den_bytes + rest) / (link * LINK_FRACTION["model"])
    elif s.device != "cpu" and s.offload in ("group", "sequential"):
        key = "group_disk" if s.group_disk else s.offload
        moved = s.steps * den_bytes + rest
        transfer = moved / (link * LINK_FRACTION[key])
        if s.group_stream:  # prefetch overlaps the next group's copy with this one's compute, in part
            overlapped = max(compute, transfer) + STREAM_UNHIDDEN * min(compute, transfer)
            return Speed(image_s=round(overlapped / s.batch, 3))
    return Speed(image_s=round((compute + transfer) / s.batch, 3))


def plans(facts: PipelineFacts, hw: Hardware, request: Constraints) -> list[Plan]:
    """Every candidate, priced, in tiers as an expert reaches for them: the full pipeline in the
    planned dtype first; quantized components only when no such plan fits without offload or with
    model offload (bnb costs quality and, for int8, speed); SD3 without its T5 only when nothing
    else fits at all (prompts then reach it through CLIP alone). A tier is dropped, not just
    ranked lower, because the solver's "speed" policy puts any plan that keeps every weight on
    the GPU first; ``--quantization`` asks for the quantized tier outright."""
    priced = [price(facts, hw, request, s) for s in candidates(facts, hw, request)]

    def tier(p: Plan) -> int:
        s = p.settings
        assert isinstance(s, DiffusersSettings)
        return 2 if s.dropped else 1 if s.quantized else 0

    def fast_fit(p: Plan) -> bool:
        s = p.settings
        assert isinstance(s, DiffusersSettings)
        return p.fits and s.offload in ("none", "model")

    keep = {0}
    if request.quantization in ("nf4", "int8") or not any(fast_fit(p) for p in priced if tier(p) == 0):
        keep.add(1)
    if not any(p.fits for p in priced if tier(p) in (0, 1)):
        keep.add(2)
    out = [p for p in priced if tier(p) in keep]
    if request.quantization in ("nf4", "int8"):
        out = [p for p in out if tier(p) != 0] or out
    return _annotate(facts, hw, request, out)


def _annotate(facts: PipelineFacts, hw: Hardware, request: Constraints, out: list[Plan]) -> list[Plan]:
    """Apply ``--attention-slicing`` to UNet plans: "auto" (the default) prices slicing and keeps
    it only where it lowers the peak, "on" slices every plan, "off" never slices. Slicing is
    "max" (one head's scores at a time: the least memory; "auto" holds half the heads' at once,
    unet_2d_condition.py:754-760). Flux and SD3 transformers have no ``set_attention_slice``: there
    it is a no-op, never planned, and "on" says so."""
    mode = str(request.option("attention_slicing") or "auto")
    if not memory.is_unet(facts.denoiser):
        if mode != "on":
            return out
        note = (f"attention slicing not planned: {facts.denoiser.cls} has no set_attention_slice, so "
                f"enable_attention_slicing does nothing on {facts.pipeline}")
        return [replace(p, notes=(*p.notes, note)) for p in out]
    if mode == "off":
        return [replace(p, notes=(*p.notes, "attention slicing off, as asked (--attention-slicing off)")) for p in out]
    done = []
    for p in out:
        s = p.settings
        assert isinstance(s, DiffusersSettings)
        sliced = price(facts, hw, request, replace(s, attention_slicing="max"))
        mine, theirs = max(m.total for m in p.memory.values()), max(m.total for m in sliced.memory.values())
        more = memory.denoise_activations(facts, replace(s, attention_slicing="max")) - memory.denoise_activations(facts, s)
        if mode == "on":
            effect = (f"lowers the denoising peak by {fmt_bytes(-more)}" if more < 0 else
                      f"raises the denoising peak by {fmt_bytes(more)}" if more > 0 else "does not change the denoising peak")
            done.append(replace(sliced, notes=(*sliced.notes, f"attention slicing on, as asked: \"max\" {effect} and is "
                                                              f"about 2x slower (benchmarks/diffusers/calib.jsonl)")))
        elif theirs < mine:
            done.append(sliced)
        else:
            effect = f"raises the denoising peak by {fmt_bytes(more)}" if more > 0 else "does not lower the peak"
            note = (f"attention slicing not planned: with SDPA it {effect} (\"max\"; \"auto\" holds more scores) "
                    f"and is about 2x slower (benchmarks/diffusers/calib.jsonl; --attention-slicing on forces it)")
            done.append(replace(p, notes=(*p.notes, note)))
    return done


def reprice(facts: PipelineFacts, hw: Hardware, request: Constraints, plan: Plan) -> Plan:
    s = plan.settings
    if not isinstance(s, DiffusersSettings):
        raise TypeError(f"not a diffusers plan: {plan.runtime}")
    res, batch, guidance, steps = request_settings(facts, request)
    return price(facts, hw, request, replace(s, resolution=res, batch=batch, guidance=guidance, steps=steps))


def smallest(facts: PipelineFacts) -> int:
    """A lower bound of any plan's memory: the largest leaf module in half precision."""
    return max(c.largest_leaf for c in facts.components) * 2
