"""vLLM candidates: layouts (TP x PP over the nodes), KV dtype, utilisation, lengths -> priced Plans.

Each candidate is checked against the constraints vLLM enforces, with the numbers in the reason:

* ``num_attention_heads % tp == 0`` (config/model.py:1577-1584);
* KV heads: ``kv_heads % tp == 0`` or ``tp % kv_heads == 0`` (QKVParallelLinear's ``divide``,
  model_executor/layers/linear.py:1113-1119);
* the padded vocabulary divides by tp (vocab_parallel_embedding.py:309);
* FP8 block-quantized checkpoints: each rank's MLP slice is a multiple of the 128-wide block
  (quantization/utils/fp8_utils.py:1361);
* ``pp <= num_layers``; ``max_model_len <= max_position_embeddings`` (config/model.py, unless
  VLLM_ALLOW_LONG_MAX_MODEL_LEN);
* free memory covers ``total x utilisation`` plus the CUDA context (v1/worker/utils.py:783-796);
* the KV pool holds one request of ``max_model_len`` (kv_cache_planning.py:125) and, with
  ``--users N``, N of them at once. With sliding-window layers a request holds their window, not
  ``max_model_len``, in the KV cache groups of vLLM's hybrid manager (memory.KvGroups).

A tensor-parallel group never spans nodes (the recommended layout: TP = GPUs per node, PP =
nodes); stages fill the nodes in order, so a node of 8 GPUs holds two stages of TP 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from planner.core.records import Constraints, DeviceMemory, Hardware, Plan, Speed
from planner.core.units import fmt_bytes
from planner.runtimes.vllm import memory as mem
from planner.runtimes.vllm.facts import MIN_CAPABILITY, VllmModel
from planner.runtimes.vllm.settings import KvCache, Parallel, VllmSettings

# vLLM's GPU worker needs compute capability 7.0 or newer (platforms/cuda.py; V1 dropped Pascal).
MIN_COMPUTE = (7, 0)
# Online --quantization fp8: W8A8 FP8 kernels need 8.9 (Ada/Hopper); on 8.0-8.6 vLLM falls back to
# the Marlin weight-only FP8 kernel (fp8.py:144 get_min_capability 75). Offered from 8.0.
ONLINE_FP8_MIN = (8, 0)
# FP8 checkpoints with block scales: each rank's slice of a Linear must be a multiple of the block.
FP8_BLOCK = 128
# Default max_num_batched_tokens / max_num_seqs of `vllm serve` (engine/arg_utils.py:3011-3043):
# >= 160 GiB GPUs 16384 / 1024; >= 70 GiB and not A100: 8192 / 1024; otherwise 2048 / 256.
_BIG_GPU = 160 * 1024**3
_LARGE_GPU = 70 * 1024**3
# Decode efficiency: the fraction of peak memory bandwidth a memory-bound decode step reaches
# (0.75, the lead planner/runtimes/transformers/speed.py takes for bf16 GEMV on A100/H100).
DECODE_EFFICIENCY = 0.75
# One all-reduce of a small message costs its latency; NCCL's published all-reduce latency is
# ~10 us inside an NVLink node and ~25 us over PCIe or the network (nccl-tests, small messages).
# Assumptions for ranking, not measurements.
NVLINK_LATENCY = 10e-6
PCIE_LATENCY = 25e-6
NETWORK_LATENCY = 25e-6
DEFAULT_GPU_BANDWIDTH = 500_000_000_000


@dataclass(frozen=True, slots=True)
class Request:
    """What the user asked of vLLM, from Constraints.options (planner/cli/options/vllm.py)."""

    users: int
    max_model_len: int | None  # None: "auto", the largest that fits
    tp: int | None
    pp: int | None
    kv_dtypes: tuple[str, ...]
    utilization: float
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    online_fp8: bool | None  # None: try both where the checkpoint is 16-bit

    @classmethod
    def of(cls, c: Constraints) -> Request:
        mml = c.option("max_model_len")
        kv = c.option("kv_cache_dtype")
        q = c.option("online_fp8")
        return cls(
            users=int(c.option("users", 1) or 1),
            max_model_len=None if mml == "auto" else int(mml) if mml is not None else c.context,
            tp=c.option("tp"), pp=c.option("pp"),
            kv_dtypes=(kv,) if kv else ("auto", "fp8"),
            utilization=float(c.option("gpu_memory_utilization", mem.DEFAULT_UTILIZATION)),
            max_num_seqs=c.option("max_num_seqs"), max_num_batched_tokens=c.option("max_num_batched_tokens"),
            online_fp8=None if q is None else bool(q),
        )



def layouts(model: VllmModel, hw: Hardware, req: Request) -> list[tuple[int, int]]:
    """The (tp, pp) pairs to price: TP in powers of two up to the largest node (and the one asked),
    PP up to the stages the nodes hold."""
    nodes = hw.cuda_by_node()
    widest = max((len(n) for n in nodes), default=0)
    tps = {t for t in (1, 2, 4, 8, 16, 32, 64) if t <= widest}
    if req.tp:
        tps = {req.tp}
    out = []
    for tp in sorted(tps):
        stages = sum(len(n) // tp for n in nodes)
        pps = [req.pp] if req.pp else list(range(1, min(stages, model.num_layers) + 1))
        out += [(tp, pp) for pp in pps]
    return out


def ranks(hw: Hardware, tp: int, pp: int) -> list[mem.Rank] | None:
    """The GPUs of each rank, stages filling the nodes in order; None when they do not fit."""
    out: list[mem.Rank] = []
    stage = 0
    for n, gpus in enumerate(hw.cuda_by_node()):
        for s in range(len(gpus) // tp):
            if stage == pp:
                break
            for local in range(s * tp, (s + 1) * tp):
                g = gpus[local]
                out.append(mem.Rank(device=f"node{n}:cuda:{local}", stage=stage, total=g.total_bytes, free=g.free_bytes,
                                    name=g.name))
            stage += 1
    return out if stage == pp else None


def plans(model: VllmModel, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every candidate, priced; with ``--users`` the larger layouts than the smallest that serves
    them are turned away (the question is "how few GPUs")."""
    req = Request.of(c)
    out: list[Plan] = []
    if not any(hw.cuda_by_node()):
        return [_no_gpu(model, hw)]
    for tp, pp in layouts(model, hw, req):
        for fp8 in _online_fp8_choices(model, hw, req):
            for kv in req.kv_dtypes:
                out.append(price(model, hw, req, tp=tp, pp=pp, kv_dtype=kv, online_fp8=fp8))
    if req.users > 1 or c.option("users") is not None:
        out = _smallest_only(out)
    return out


def _no_gpu(model: VllmModel, hw: Hardware) -> Plan:
    empty = VllmSettings(parallel=Parallel(0, 0, 0, 0), kv_cache=KvCache("auto", mem.BLOCK_SIZE, 0, 0, 0, 0), max_model_len=0,
                         gpu_memory_utilization=0.0, max_num_seqs=0, max_num_batched_tokens=0)
    return Plan(runtime="vllm", label=f"{model.torch_dtype} on {hw.name}", settings=empty, memory={}, speed=Speed(), quality=16,
                fits=False, reasons=(f"{hw.name} has no CUDA GPU; vLLM serves on GPUs (use --hardware PROFILE to plan for one)",))


def _online_fp8_choices(model: VllmModel, hw: Hardware, req: Request) -> Iterable[bool]:
    if req.online_fp8 is not None:
        return (req.online_fp8,)
    if model.quant_method is None and all(g.compute_capability and g.compute_capability >= ONLINE_FP8_MIN for g in hw.gpus):
        return (False, True)
    return (False,)


def _smallest_only(out: list[Plan]) -> list[Plan]:
    """With ``--users``: the fewest GPUs that serve them at the best precision that fits anywhere;
    layouts with more GPUs are turned away (plans on fewer GPUs at a lower precision stay, as
    alternatives the solver ranks below)."""
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
            kept.append(Plan(**{**_fields(p), "fits": False, "reasons": (why,)}))
        else:
            kept.append(p)
    return kept


def _fields(p: Plan) -> dict:
    return {f: getattr(p, f) for f in Plan.__dataclass_fields__}


def price(model: VllmModel, hw: Hardware, req: Request, *, tp: int, pp: int, kv_dtype: str, online_fp8: bool) -> Plan:
    """One candidate priced on every rank, with its reasons when it does not fit."""
    reasons = list(_shape_reasons(model, hw, tp, pp))
    rk = ranks(hw, tp, pp) or []
    if not rk:
        reasons.append(f"tp {tp} x pp {pp} needs {tp * pp} GPUs in groups of {tp} per node; {hw.name} has "
                       + ", ".join(str(len(n)) for n in hw.cuda_by_node()) + " per node")
    smallest_total = min((r.total for r in rk), default=0)
    batched = req.max_num_batched_tokens or _default_batched(smallest_total, rk)
    users = req.users
    mml_cap = model.max_position_embeddings
    max_model_len = req.max_model_len
    seqs = req.max_num_seqs or max(users, 256 if smallest_total < _LARGE_GPU else 1024)
    if req.max_num_seqs and req.max_num_seqs < users:
        reasons.append(f"--max-num-seqs {req.max_num_seqs} schedules fewer sequences than --users {users}")
    kv_bytes = 1 if kv_dtype.startswith("fp8") else model.dtype_bytes
    if kv_dtype.startswith("fp8") and any((r_cc := _cc(hw, r)) is not None and r_cc < (8, 0) for r in rk):
        reasons.append("--kv-cache-dtype fp8 needs compute capability 8.0 or newer")
    per_layer = mem.kv_bytes_per_token_layer(model, tp, kv_bytes)
    page = mem.BLOCK_SIZE * per_layer

    rms = [mem.rank_memory(model, r, tp=tp, pp=pp, utilization=req.utilization, batched_tokens=batched, max_num_seqs=seqs,
                           online_fp8=online_fp8) for r in rk]
    groups = mem.kv_groups(model)
    spans = mem.stage_layers(model.num_layers, pp)
    # the layers one block spans on each rank: all its layers, or with sliding-window layers the
    # largest KV cache group it holds (memory.KvGroups)
    block_layers = [groups.block_layers(*spans[r.stage]) for r in rk]
    blocks = min((rm.kv_available // (page * n) if rm.kv_available > 0 and n else 0 for rm, n in zip(rms, block_layers, strict=True)),
                 default=0)
    usable = max(0, blocks - 1)
    sliding = bool(groups.sliding) and model.sliding_window is not None

    def need_of(length: int) -> int:
        return mem.request_blocks(model, groups, length, pp=pp, batched_tokens=batched)

    if max_model_len is None:  # --max-model-len auto: the largest length whose `users` requests fit
        per_seq = usable // max(1, users)
        if not sliding:
            max_model_len = min(per_seq * mem.BLOCK_SIZE, mml_cap or per_seq * mem.BLOCK_SIZE)
        else:  # a sliding group's blocks stop growing at the window: search the length
            max_model_len = _longest(lambda n: need_of(n) <= per_seq, mml_cap or (1 << 32))
        max_model_len = max(max_model_len, 1)
    if mml_cap is not None and max_model_len > mml_cap:
        reasons.append(f"max_model_len {max_model_len} exceeds the model's max_position_embeddings {mml_cap}")
    need = need_of(max_model_len)
    concurrent = usable // need if need else 0
    # vLLM's "GPU KV cache size" is concurrency x max_model_len (v1/core/kv_cache_utils.py:1141-1149);
    # without sliding layers that is the pool's tokens, the figure fitcheck has always reported
    tokens = usable * max_model_len // need if sliding and need else usable * mem.BLOCK_SIZE

    memory: dict[str, DeviceMemory] = {}
    for r, rm, n_layers in zip(rk, rms, block_layers, strict=True):
        asked = math.ceil(r.total * req.utilization)
        # one line per kind of problem: the first rank that has it (the others are alike or in the JSON)
        if asked + mem.CUDA_CONTEXT > r.free and not any(x.startswith("--gpu-memory-utilization") for x in reasons):
            reasons.append(f"--gpu-memory-utilization {req.utilization:g} asks {fmt_bytes(asked)} of {r.device}'s "
                           f"{fmt_bytes(r.total)}, but only {fmt_bytes(r.free - mem.CUDA_CONTEXT)} is free besides the CUDA context")
        fixed = rm.weights + rm.activations + rm.non_torch + rm.cudagraphs
        if rm.kv_available <= 0 and not any("leave no KV cache" in x for x in reasons):
            reasons.append(f"{r.device}: weights {fmt_bytes(rm.weights)} + activations {fmt_bytes(rm.activations)} + CUDA graphs "
                           f"{fmt_bytes(rm.cudagraphs)} + non-torch {fmt_bytes(rm.non_torch)} = {fmt_bytes(fixed)} leave no KV "
                           f"cache within {fmt_bytes(rm.budget)} ({req.utilization:g} x {fmt_bytes(r.free)})")
        kv_rank = blocks * page * n_layers
        overhead = rm.non_torch + rm.cudagraphs + mem.CUDA_CONTEXT
        total = rm.weights + kv_rank + rm.activations + overhead
        capacity = rm.budget + mem.CUDA_CONTEXT
        memory[r.device] = DeviceMemory(device=r.device, weights=rm.weights, kv_cache=kv_rank, activations=rm.activations,
                                        overhead=overhead, total=total, capacity=capacity, free=r.free,
                                        margin=max(0, r.free - capacity), required=total)
    if rk and all(rm.kv_available > 0 for rm in rms):
        if concurrent < 1:
            worst, worst_layers = min(zip(rms, block_layers, strict=True), key=lambda x: x[0].kv_available // max(1, page * x[1]))
            reasons.append(f"one request of max_model_len {max_model_len} needs {fmt_bytes(need * page * worst_layers)} of KV "
                           f"cache per GPU; {fmt_bytes(worst.kv_available)} is available (vLLM: 'To serve at least one "
                           "request with the model's max seq len')")
        elif concurrent < users:
            reasons.append(f"the KV cache holds {concurrent} sequences of {max_model_len} tokens ({tokens:,} tokens); "
                           f"--users asks for {users}")
    reasons = list(dict.fromkeys(reasons))
    max_layers = max((rm.layers for rm in rms), default=0)
    nodes_used = len({d.split(":", 1)[0] for d in memory})
    per_node = max((sum(1 for d in memory if d.startswith(f"node{n}:")) for n in range(len(hw.cuda_by_node()))), default=0)
    settings = VllmSettings(
        parallel=Parallel(tensor=tp, pipeline=pp, nodes=nodes_used, gpus_per_node=per_node),
        kv_cache=KvCache(dtype=kv_dtype, block_size=mem.BLOCK_SIZE, blocks=blocks, tokens=tokens,
                         bytes_per_token_per_gpu=per_layer * max_layers, max_concurrent_sequences=concurrent),
        max_model_len=max_model_len, gpu_memory_utilization=req.utilization, max_num_seqs=seqs, max_num_batched_tokens=batched,
        quantization="fp8" if online_fp8 else None, checkpoint_quantization=model.quant_method, dtype=model.torch_dtype,
        users=users,
    )
    # Plan.quality ranks precision: an fp8 KV cache stores attention state in 8 bits, so such a
    # plan ranks one below the same weights with the model-dtype cache (chosen only when needed).
    quality = (8 if online_fp8 else model.quant_bits) - (1 if kv_dtype.startswith("fp8") else 0)
    what = ("fp8 (online)" if online_fp8 else model.quant_detail or model.torch_dtype) + (", fp8 KV" if kv_dtype == "fp8" else "")
    gpu = rk[0].name if rk else (hw.gpus[0].name if hw.gpus else "no GPU")
    where = f"tp {tp} x pp {pp} ({tp * pp}x {gpu}" + (f", {nodes_used} nodes)" if nodes_used > 1 else ")")
    notes = [f"KV cache: {tokens:,} tokens, {concurrent} concurrent sequences of {max_model_len} tokens"]
    batch = min(concurrent, seqs, users if users > 1 else concurrent)
    if rk and batch > 1:
        serving = serving_tokens_per_s(model, hw, rk, rms, tp=tp, pp=pp, batch=batch, context=max_model_len // 2,
                                       kv_per_layer=per_layer)
        notes.append(f"serving estimate: about {serving:,.0f} tokens/s in total at {batch} sequences of ~{max_model_len // 2} "
                     "tokens of context (memory-bandwidth bound decode; not a benchmark)")
    if model.skipped_layers:
        notes.append(f"{model.skipped_layers} layer(s) past num_hidden_layers (multi-token prediction) are not loaded by vllm serve")
    if sliding:
        full_need = len(groups.full) * math.ceil(max_model_len / mem.BLOCK_SIZE)
        notes.append(f"{model.sliding_layers} of {model.num_layers} layers slide over {model.sliding_window} tokens: a request of "
                     f"{max_model_len} tokens holds {need} blocks in {len(groups.full) + len(groups.sliding)} KV cache group(s) "
                     f"({full_need} for full attention; vLLM's hybrid KV cache manager)")
    return Plan(
        runtime="vllm", label=f"{what} on {where}", settings=settings, memory=memory,
        speed=Speed(tokens_per_s=_tokens_per_s(model, hw, rk, rms, tp=tp, pp=pp, context=max_model_len, kv_per_layer=per_layer)
                    if rk else None),
        quality=quality, fits=not reasons and bool(rk), reasons=tuple(reasons), notes=tuple(notes), on_accelerators=True,
        kv_bytes=sum(m.kv_cache for m in memory.values()),
        kv_bytes_per_token=per_layer * model.num_layers * tp,  # every TP rank caches its share (MLA: a copy)
    )


def _longest(ok: Callable[[int], bool], cap: int) -> int:
    """The largest n in [1, cap] with ok(n) (ok is monotone: true up to some n); 0 if none."""
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cc(hw: Hardware, r: mem.Rank) -> tuple[int, int] | None:
    node, _, local = r.device.partition(":cuda:")
    gpus = hw.cuda_by_node()[int(node[4:])]
    return gpus[int(local)].compute_capability


def _shape_reasons(model: VllmModel, hw: Hardware, tp: int, pp: int) -> Iterable[str]:
    if model.num_heads % tp:
        yield f"tp {tp} does not divide {model.num_heads} attention heads"
    kv = model.num_kv_heads
    if not model.mla and kv % tp and tp % kv:
        yield f"tp {tp} and {kv} KV heads: neither divides the other"
    vocab = mem.pad_vocab(model.vocab_size)
    if vocab % tp:
        yield f"tp {tp} does not divide the padded vocabulary of {vocab}"
    if model.intermediate_size and model.intermediate_size % tp and not model.num_experts:
        yield f"tp {tp} does not divide the MLP width {model.intermediate_size}"
    if model.num_experts and model.expert_intermediate_size % tp:
        yield f"tp {tp} does not divide the expert MLP width {model.expert_intermediate_size}"
    if model.quant_method == "fp8":
        widths = [w for w in (model.intermediate_size, model.expert_intermediate_size) if w]
        for w in widths:
            if tp > 1 and (w // tp) % FP8_BLOCK:
                yield f"tp {tp} splits the MLP width {w} into {w // tp}, not a multiple of the FP8 block {FP8_BLOCK}"
                break
    if model.quant_group and tp > 1:
        # Marlin kernels (GPTQ/AWQ): a row-parallel slice must hold whole groups and be a multiple
        # of 128 (quantization/utils/marlin_utils.py:172-204, GPTQ_MARLIN_MIN_THREAD_K = 128 at :28)
        for w in (model.expert_intermediate_size if model.num_experts else model.intermediate_size,):
            part = w // tp
            if w and (part % model.quant_group or part % 128):
                yield (f"tp {tp} splits the MLP width {w} into {part}, not a multiple of the quantization group "
                       f"{model.quant_group} and of 128")
    if pp > model.num_layers:
        yield f"pp {pp} exceeds the {model.num_layers} layers"
    for g in hw.gpus:
        if g.compute_capability is not None and g.compute_capability < MIN_COMPUTE:
            yield f"{g.name} (compute capability {g.compute_capability[0]}.{g.compute_capability[1]}) is older than vLLM supports (7.0)"
            break
        need = MIN_CAPABILITY.get(model.quant_method or "")
        if need and g.compute_capability is not None and g.compute_capability < need:
            yield f"{model.quant_detail} needs compute capability {need[0]}.{need[1]}; {g.name} has {g.compute_capability[0]}.{g.compute_capability[1]}"
            break


def _default_batched(total: int, rk: list[mem.Rank]) -> int:
    # engine/arg_utils.py:3011-3043, the OPENAI_API_SERVER context of `vllm serve`
    if total >= _BIG_GPU:
        return 16384
    if total >= _LARGE_GPU and not any("a100" in r.name.lower() for r in rk):
        return 8192
    return 2048


def serving_tokens_per_s(model: VllmModel, hw: Hardware, rk: list[mem.Rank], rms: list[mem.RankMemory], *, tp: int, pp: int,
                         batch: int, context: int, kv_per_layer: int) -> float:
    """Decode tokens/s of the whole engine with ``batch`` sequences of ``context`` tokens each.

    One step reads each rank's weights once for the batch (MoE: the experts some sequence routes
    to, ``1 - (1 - k/E)^batch`` of them) and every sequence's KV (a sliding-window layer's
    window at most: memory.kv_read_tokens). With pipeline parallelism the
    batch runs as ``pp`` micro-batches, one per stage at a time: the slowest stage sets the pace.
    """
    gpus = {f"node{n}:cuda:{i}": g for n, node in enumerate(hw.cuda_by_node()) for i, g in enumerate(node)}
    micro = max(1, batch // pp) if pp > 1 else batch
    share = 1 - (1 - model.experts_per_tok / model.num_experts) ** micro if model.num_experts else 1.0
    stage_times = []
    for stage in range(pp):
        start, end = mem.stage_layers(model.num_layers, pp)[stage]
        experts = sum(layer.experts for layer in model.layers[start:end]) / tp
        kv_tokens = mem.kv_read_tokens(model, start, end, context)  # sliding layers read their window only
        t = 0.0
        for r, rm in zip(rk, rms, strict=True):
            if r.stage != stage:
                continue
            bw = gpus[r.device].bandwidth or DEFAULT_GPU_BANDWIDTH
            read = rm.weights - experts * (1 - share) + micro * kv_tokens * kv_per_layer
            t = max(t, read / (bw * DECODE_EFFICIENCY))
        if tp > 1:
            t += 2 * (end - start) * NVLINK_LATENCY
        stage_times.append(t)
    if pp > 1:
        return micro / max(stage_times) if max(stage_times) > 0 else 0.0
    return batch / stage_times[0] if stage_times[0] > 0 else 0.0


def _tokens_per_s(model: VllmModel, hw: Hardware, rk: list[mem.Rank], rms: list[mem.RankMemory], *, tp: int, pp: int,
                  context: int, kv_per_layer: int) -> float:
    """Decode tokens/s of one sequence: every stage reads its weights (for MoE the routed top-k
    share of the experts) and its KV at ``context`` tokens (a sliding layer's window at most) at
    the GPU's bandwidth, plus two TP
    all-reduces per layer and one hop between stages; stages run one after another for one
    sequence, so their times add."""
    seconds = 0.0
    gpus = {f"node{n}:cuda:{i}": g for n, node in enumerate(hw.cuda_by_node()) for i, g in enumerate(node)}
    expert_share = model.experts_per_tok / model.num_experts if model.num_experts else 1.0
    h_bytes = model.hidden_size * model.dtype_bytes
    links = [n.link_bandwidth for n in hw.nodes] if hw.nodes else [hw.link_bandwidth]
    for stage in range(pp):
        members = [(r, rm) for r, rm in zip(rk, rms, strict=True) if r.stage == stage]
        start, end = mem.stage_layers(model.num_layers, pp)[stage]
        experts = sum(layer.experts for layer in model.layers[start:end]) / tp
        kv_tokens = mem.kv_read_tokens(model, start, end, context)  # sliding layers read their window only
        t = 0.0
        for r, rm in members:
            bw = gpus[r.device].bandwidth or DEFAULT_GPU_BANDWIDTH
            read = rm.weights - experts * (1 - expert_share) + kv_tokens * kv_per_layer
            t = max(t, read / (bw * DECODE_EFFICIENCY))
        if tp > 1:
            g = gpus[members[0][0].device]
            link = links[int(members[0][0].device.split(":", 1)[0][4:])]
            bw_link = link or g.pcie_bandwidth or 25_000_000_000
            lat = NVLINK_LATENCY if link else PCIE_LATENCY
            t += 2 * (end - start) * (lat + 2 * (tp - 1) / tp * h_bytes / bw_link)
        seconds += t
    nodes_used = len({r.device.split(":", 1)[0] for r in rk})
    if pp > 1:
        hops_network = max(0, nodes_used - 1)
        seconds += hops_network * (NETWORK_LATENCY + h_bytes / (hw.network_bandwidth or 50_000_000_000))
        seconds += (pp - 1 - hops_network) * NVLINK_LATENCY
    return 1.0 / seconds if seconds > 0 else 0.0
