"""SGLang candidates: tensor-parallel size (over nodes), KV dtype, online fp8 -> priced Plans.

Each candidate is checked against what SGLang 0.5.23 enforces, with the numbers in the reason:

* ``num_attention_heads % tp == 0``; KV heads: ``kv_heads % tp == 0`` or ``tp % kv_heads == 0``
  (srt/models/llama.py:183-193; QKVParallelLinear ``divide``, srt/layers/linear.py:1139-1142);
* the padded vocabulary and the MLP / expert widths divide by tp (``divide``,
  srt/layers/vocab_parallel_embedding.py:73, srt/layers/linear.py:483-488, srt/distributed/utils.py:75);
* FP8 block-quantized checkpoints: each rank's slice is a multiple of the 128-wide block
  (srt/layers/quantization/fp8.py:590-610);
* ``context_length <= max_position_embeddings`` (srt/configs/model_config.py:1298-1316, unless
  SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN);
* the weights leave KV memory within ``mem_fraction_static`` of the baseline
  (srt/mem_cache/kv_cache_configurator.py:3036-3047);
* the pool holds one request of ``context_length`` tokens and, with ``--users N``, N of them.

Tensor parallelism spans nodes the way SGLang runs large models (``--tp 16 --nnodes 2``): a group
wider than one node takes whole nodes. Pipeline and data parallelism are not planned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from planner.core.records import Constraints, DeviceMemory, Gpu, Hardware, Plan, Speed
from planner.core.units import fmt_bytes
from planner.model.serving import ServingModel, pad_vocab
from planner.runtimes.sglang import defaults, memory
from planner.runtimes.sglang.facts import MIN_CAPABILITY
from planner.runtimes.sglang.settings import KvPool, Layout, SglangSettings

# Online --quantization fp8 of a 16-bit checkpoint: Fp8Config.get_min_capability() is 80
# (srt/layers/quantization/fp8.py:339).
ONLINE_FP8_MIN = (8, 0)
# An FP8 KV cache is offered on GPUs with FP8 hardware (Ada/Hopper, compute capability 8.9).
# Assumption: SGLang 0.5.23's kv_cache_dtype help says only "fp8_e4m3 ... supported for CUDA
# 11.8+" (srt/arg_groups/fields/model.py:197-208); older GPUs convert in software, if at all.
FP8_KV_MIN = (8, 9)
FP8_BLOCK = 128
# Decode efficiency and all-reduce latencies, for ranking layouts only (the leads fitcheck's vLLM
# runtime uses: 75 % of peak bandwidth for a memory-bound decode step, planner/runtimes/
# transformers/speed.py; NCCL small-message all-reduce ~10 us over NVLink, ~25 us over PCIe or the
# network, nccl-tests). Assumptions, not measurements.
DECODE_EFFICIENCY = 0.75
NVLINK_LATENCY = 10e-6
NETWORK_LATENCY = 25e-6
DEFAULT_GPU_BANDWIDTH = 500_000_000_000
KV_FP8 = "fp8_e4m3"


@dataclass(frozen=True, slots=True)
class Request:
    """What the user asked of SGLang, from Constraints.options (planner/cli/options/sglang.py and
    the serving options shared with vLLM)."""

    users: int
    context: int
    tp: int | None
    kv_dtypes: tuple[str, ...]
    mem_fraction: float | None
    max_running_requests: int | None
    online_fp8: bool | None

    @classmethod
    def of(cls, c: Constraints) -> Request:
        kv = c.option("kv_cache_dtype")
        q = c.option("online_fp8")
        return cls(users=int(c.option("users", 1) or 1), context=c.context, tp=c.option("tp"),
                   kv_dtypes=(KV_FP8 if kv == "fp8" else kv,) if kv else ("auto", KV_FP8),
                   mem_fraction=c.option("mem_fraction_static"), max_running_requests=c.option("max_running_requests"),
                   online_fp8=None if q is None else bool(q))



def ranks(hw: Hardware, tp: int) -> list[tuple[str, Gpu]] | None:
    """The (device, GPU) of each rank: the first ``tp`` GPUs of a node, or ``tp / per-node`` whole
    nodes; None when the machine has no such group."""
    nodes = hw.cuda_by_node()
    for n, gpus in enumerate(nodes):
        if tp <= len(gpus):
            return [(f"node{n}:cuda:{i}", gpus[i]) for i in range(tp)]
    per = len(nodes[0]) if nodes else 0
    if per and tp % per == 0 and tp // per <= len(nodes) and all(len(g) == per for g in nodes[:tp // per]):
        return [(f"node{n}:cuda:{i}", g) for n in range(tp // per) for i, g in enumerate(nodes[n])]
    return None


def tp_sizes(hw: Hardware, req: Request) -> list[int]:
    """TP sizes to price: the one asked, else powers of two up to every GPU of the cluster."""
    if req.tp:
        return [req.tp]
    total = sum(len(n) for n in hw.cuda_by_node())
    return [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if t <= total and ranks(hw, t) is not None]


def plans(model: ServingModel, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every candidate, priced; with ``--users`` the layouts larger than the smallest that serves
    them are turned away (the question is "how few GPUs")."""
    req = Request.of(c)
    if not any(hw.cuda_by_node()):
        return [_no_gpu(model, hw)]
    out = [price(model, hw, req, tp=tp, kv_dtype=kv, online_fp8=fp8)
           for tp in tp_sizes(hw, req) for fp8 in _online_fp8_choices(model, hw, req) for kv in req.kv_dtypes]
    if c.option("users") is not None:
        out = _smallest_only(out)
    return out


def _no_gpu(model: ServingModel, hw: Hardware) -> Plan:
    empty = SglangSettings(layout=Layout(0, 0, 0), kv_cache=KvPool("auto", memory.PAGE_SIZE, 0, 0, 0, 0), context_length=0,
                           mem_fraction_static=0.0, mem_fraction_default=True, chunked_prefill_size=0, cuda_graph_max_bs=0)
    return Plan(runtime="sglang", label=f"{model.torch_dtype} on {hw.name}", settings=empty, memory={}, speed=Speed(), quality=16,
                fits=False, reasons=(f"{hw.name} has no CUDA GPU; fitcheck plans SGLang on CUDA GPUs (use --hardware PROFILE)",))


def _online_fp8_choices(model: ServingModel, hw: Hardware, req: Request) -> Iterable[bool]:
    if req.online_fp8 is not None:
        return (req.online_fp8,)
    if model.quant_method is None and all(g.compute_capability and g.compute_capability >= ONLINE_FP8_MIN for g in hw.gpus):
        return (False, True)
    return (False,)


def _smallest_only(out: list[Plan]) -> list[Plan]:
    """With ``--users``: the fewest GPUs that serve them at the best precision that fits anywhere."""
    fitting = [p for p in out if p.fits]
    if not fitting:
        return out
    best_quality = max(p.quality for p in fitting)
    fewest = min(len(p.memory) for p in fitting if p.quality == best_quality)
    best = next(p for p in fitting if p.quality == best_quality and len(p.memory) == fewest)
    kept: list[Plan] = []
    for p in out:
        if p.fits and len(p.memory) > fewest:
            why = f"uses {len(p.memory)} GPUs; {fewest} already serve the users ({best.label})"
            kept.append(Plan(**{**{f: getattr(p, f) for f in Plan.__dataclass_fields__}, "fits": False, "reasons": (why,)}))
        else:
            kept.append(p)
    return kept


def price(model: ServingModel, hw: Hardware, req: Request, *, tp: int, kv_dtype: str, online_fp8: bool) -> Plan:
    """One candidate priced on every rank, with its reasons when it does not fit."""
    reasons = list(shape_reasons(model, hw, tp))
    rk = ranks(hw, tp) or []
    if not rk:
        reasons.append(f"tp {tp} needs {tp} GPUs in one node or in whole nodes; {hw.name} has "
                       + ", ".join(str(len(n)) for n in hw.cuda_by_node()) + " per node")
    gpus = [g for _, g in rk]
    if kv_dtype == KV_FP8 and any(g.compute_capability is not None and g.compute_capability < FP8_KV_MIN for g in gpus):
        reasons.append(f"--kv-cache-dtype {KV_FP8} is planned on compute capability 8.9 or newer (FP8 hardware)")
    if online_fp8 and any(g.compute_capability is not None and g.compute_capability < ONLINE_FP8_MIN for g in gpus):
        reasons.append("--quantization fp8 needs compute capability 8.0 or newer")
    # the smallest GPU the layout uses (SGLang reads the smallest visible GPU); without a layout, the machine's
    smallest_total = min((g.total_bytes for g in gpus or [g for n in hw.cuda_by_node() for g in n]), default=0)
    d = defaults.gpu_defaults(smallest_total, tp=tp, mla=model.mla, max_running_requests=req.max_running_requests)
    fraction = req.mem_fraction if req.mem_fraction is not None else d.mem_fraction_static
    context = req.context
    if model.max_position_embeddings is not None and context > model.max_position_embeddings:
        reasons.append(f"context_length {context} exceeds the model's max_position_embeddings {model.max_position_embeddings}")
    tightest = min((g.free_bytes for g in gpus), default=0)
    rm = memory.rank_memory(model, tp=tp, tightest_free=tightest, fraction=fraction, online_fp8=online_fp8)
    cell = memory.cell_size(model, tp, kv_dtype)
    tokens = memory.pool_tokens(rm, cell)
    concurrent = tokens // context if context else 0
    running = defaults.max_running_requests(tokens, context, req.max_running_requests)
    users = req.users
    if rk and rm.kv_available <= 0:
        reasons.append(f"weights {fmt_bytes(rm.weights)} per GPU leave no KV cache within --mem-fraction-static {fraction:g} x "
                       f"{fmt_bytes(rm.baseline)} = {fmt_bytes(rm.static)} (SGLang: 'Loaded weights leave no GPU memory for the "
                       "KV cache')")
    elif rk and concurrent < 1:
        reasons.append(f"one request of context_length {context} needs {fmt_bytes(context * cell)} of KV cache per GPU; "
                       f"{fmt_bytes(rm.kv_available)} is available ({tokens:,} tokens)")
    elif rk and concurrent < users:
        reasons.append(f"the KV pool holds {concurrent} sequences of {context} tokens ({tokens:,} tokens); --users asks for {users}")
    elif rk and running < users:
        reasons.append(f"SGLang caps running requests at {running} (--max-running-requests {req.max_running_requests}, at most "
                       f"half the pool's tokens); --users asks for {users}")
    memory_by_rank: dict[str, DeviceMemory] = {}
    kv_rank = tokens * cell
    for device, g in rk:
        total = rm.weights + kv_rank + rm.headroom + rm.overhead
        memory_by_rank[device] = DeviceMemory(device=device, weights=rm.weights, kv_cache=kv_rank, activations=rm.headroom,
                                              overhead=rm.overhead, total=total, capacity=g.free_bytes, free=g.free_bytes,
                                              margin=max(0, g.free_bytes - total), required=total)
    notes = [f"KV pool: {tokens:,} tokens, {concurrent} concurrent sequences of {context} tokens; SGLang would cap running "
             f"requests at {running}"]
    if req.mem_fraction is not None and rm.headroom < d.reserved_mib * defaults.MiB:
        notes.append(f"--mem-fraction-static {fraction:g} leaves {fmt_bytes(rm.headroom)} for activations and CUDA graphs; "
                     f"SGLang's default ({d.mem_fraction_static:g}) reserves {fmt_bytes(int(d.reserved_mib * defaults.MiB))}")
    if model.sliding_layers:
        notes.append("sliding-window layers take full-length KV: SGLang 0.5.23 gives a separate SWA pool only to the "
                     "architectures is_hybrid_swa_model lists")
    nodes = len({dev.split(":", 1)[0] for dev, _ in rk})
    per_node = max((sum(1 for dev, _ in rk if dev.startswith(f"node{n}:")) for n in range(len(hw.cuda_by_node()))), default=0)
    settings = SglangSettings(
        layout=Layout(tensor=tp, nodes=nodes, gpus_per_node=per_node),
        kv_cache=KvPool(dtype=kv_dtype, page_size=memory.PAGE_SIZE, tokens=tokens, bytes_per_token_per_gpu=cell,
                        max_concurrent_sequences=concurrent, max_running_requests=running),
        context_length=context, mem_fraction_static=fraction, mem_fraction_default=req.mem_fraction is None,
        chunked_prefill_size=d.chunked_prefill_size, cuda_graph_max_bs=d.cuda_graph_max_bs,
        quantization="fp8" if online_fp8 else None, checkpoint_quantization=model.quant_method, dtype=model.torch_dtype, users=users,
        max_running_requests=req.max_running_requests)
    # as vLLM's plans: an fp8 KV cache ranks one "bit" below the model-dtype cache
    quality = (8 if online_fp8 else model.quant_bits) - (1 if kv_dtype == KV_FP8 else 0)
    what = ("fp8 (online)" if online_fp8 else model.quant_detail or model.torch_dtype) + (", fp8 KV" if kv_dtype == KV_FP8 else "")
    gpu = gpus[0].name if gpus else (hw.gpus[0].name if hw.gpus else "no GPU")
    where = f"tp {tp} ({tp}x {gpu}" + (f", {nodes} nodes)" if nodes > 1 else ")")
    reasons = list(dict.fromkeys(reasons))
    return Plan(runtime="sglang", label=f"SGLang {what} on {where}", settings=settings, memory=memory_by_rank,
                speed=Speed(tokens_per_s=tokens_per_s(model, rk, rm, tp=tp, context=context, cell=cell) if rk else None),
                quality=quality, fits=not reasons and bool(rk), reasons=tuple(reasons), notes=tuple(notes), on_accelerators=True,
                kv_bytes=kv_rank * len(rk), kv_bytes_per_token=cell * tp)


def shape_reasons(model: ServingModel, hw: Hardware, tp: int) -> Iterable[str]:
    """Why SGLang's layers refuse ``tp`` for this model, and the format's compute capability."""
    if model.num_heads % tp:
        yield f"tp {tp} does not divide {model.num_heads} attention heads"
    kv = model.num_kv_heads
    if not model.mla and kv % tp and tp % kv:
        yield f"tp {tp} and {kv} KV heads: neither divides the other"
    if pad_vocab(model.vocab_size) % tp:
        yield f"tp {tp} does not divide the padded vocabulary of {pad_vocab(model.vocab_size)}"
    if model.intermediate_size and model.intermediate_size % tp and not model.num_experts:
        yield f"tp {tp} does not divide the MLP width {model.intermediate_size}"
    if model.num_experts and model.expert_intermediate_size % tp:
        yield f"tp {tp} does not divide the expert MLP width {model.expert_intermediate_size}"
    if model.quant_method == "fp8" and tp > 1:
        for w in (x for x in (model.intermediate_size, model.expert_intermediate_size) if x):
            if (w // tp) % FP8_BLOCK:
                yield f"tp {tp} splits the MLP width {w} into {w // tp}, not a multiple of the FP8 block {FP8_BLOCK}"
                break
    need = MIN_CAPABILITY.get(model.quant_method or "")
    for g in hw.gpus:
        if need and g.compute_capability is not None and g.compute_capability < need:
            yield f"{model.quant_detail} needs compute capability {need[0]}.{need[1]}; {g.name} has {g.compute_capability[0]}.{g.compute_capability[1]}"
            break


def tokens_per_s(model: ServingModel, rk: list[tuple[str, Gpu]], rm: memory.RankMemory, *, tp: int, context: int, cell: int) -> float:
    """Decode tokens/s of one sequence: each rank reads its weights (MoE: the routed top-k share of
    the experts) and the sequence's KV at ``context`` tokens, plus two all-reduces per layer."""
    share = model.experts_per_tok / model.num_experts if model.num_experts else 1.0
    experts = sum(layer.experts for layer in model.layers) / tp
    read = rm.weights - experts * (1 - share) + context * cell
    bw = min((g.bandwidth or DEFAULT_GPU_BANDWIDTH) for _, g in rk)
    seconds = read / (bw * DECODE_EFFICIENCY)
    if tp > 1:
        nodes = len({dev.split(":", 1)[0] for dev, _ in rk})
        seconds += 2 * model.num_layers * (NETWORK_LATENCY if nodes > 1 else NVLINK_LATENCY)
    return 1.0 / seconds if seconds > 0 else 0.0
