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
from planner.runtimes.vllm.speed import DECODE_EFFICIENCY, DEFAULT_GPU_BANDWIDTH, serving_tokens_per_s
from planner.runtimes.vllm.speed import tokens_per_s as _tokens_per_s

__all__ = ["DECODE_EFFICIENCY", "DEFAULT_GPU_BANDWIDTH", "Request", "layouts", "plans", "price", "ranks", "serving_tokens_per_s"]

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
    dp: int | None = None  # None: every data-parallel size that fits (1 included)
    ep: bool | None = None  # None: MoE layouts with and without --enable-expert-parallel

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
            dp=c.option("dp"), ep=None if c.option("expert_parallel") is None else bool(c.option("expert_parallel")),
        )



# Data-parallel sizes fitcheck prices (and the one asked): powers of two, as vLLM's examples use
# (docs/serving/data_parallel_deployment.md: DP 4 x TP 2 on 8 GPUs, DP 16 on two nodes).
DP_SIZES = (2, 4, 8, 16, 32, 64, 128)


def layouts(model: VllmModel, hw: Hardware, req: Request) -> list[mem.Layout]:
    """The layouts to price: TP in powers of two up to the largest node (and the one asked), PP up
    to the stages the nodes hold; data parallelism (pp 1) in powers of two up to the TP groups the
    nodes hold.

    Expert parallelism, unless asked for or against (``--expert-parallel``): a MoE model's DP
    layouts use it, as vLLM's guide pairs them (docs/serving/expert_parallel_deployment.md: "EP is
    typically coupled with Data Parallelism"), except where there are fewer experts than GPUs;
    layouts without DP keep vLLM's default, experts tensor-sliced. The two hold the same bytes
    when the experts divide evenly, and fitcheck's speed model prices them alike."""
    nodes = hw.cuda_by_node()
    widest = max((len(n) for n in nodes), default=0)
    tps = {t for t in (1, 2, 4, 8, 16, 32, 64) if t <= widest}
    if req.tp:
        tps = {req.tp}
    out: list[mem.Layout] = []

    def add(tp: int, pp: int, dp: int) -> None:
        if req.ep is not None:
            ep = req.ep
        else:
            ep = bool(model.num_experts) and dp > 1 and tp * dp <= model.num_experts
        out.append(mem.Layout(tp, pp, dp, ep))

    for tp in sorted(tps):
        groups = sum(len(n) // tp for n in nodes)
        if req.dp in (None, 1):
            for pp in [req.pp] if req.pp else list(range(1, min(groups, model.num_layers) + 1)):
                add(tp, pp, 1)
        if req.dp is None and req.pp in (None, 1):
            for dp in (d for d in DP_SIZES if d <= groups):
                add(tp, 1, dp)
        elif req.dp and req.dp > 1:
            add(tp, req.pp or 1, req.dp)
    return out


def ranks(hw: Hardware, tp: int, pp: int, dp: int = 1) -> list[mem.Rank] | None:
    """The GPUs of each rank: ``dp`` replicas of ``pp`` stages of ``tp`` GPUs, the groups filling
    the nodes in order (a TP group never spans nodes); None when they do not fit."""
    out: list[mem.Rank] = []
    group = 0
    for n, gpus in enumerate(hw.cuda_by_node()):
        for s in range(len(gpus) // tp):
            if group == pp * dp:
                break
            replica, stage = divmod(group, pp)
            for local in range(s * tp, (s + 1) * tp):
                g = gpus[local]
                out.append(mem.Rank(device=f"node{n}:cuda:{local}", stage=stage, total=g.total_bytes, free=g.free_bytes,
                                    name=g.name, replica=replica))
            group += 1
    return out if group == pp * dp else None


def plans(model: VllmModel, hw: Hardware, c: Constraints) -> list[Plan]:
    """Every candidate, priced; with ``--users`` the larger layouts than the smallest that serves
    them are turned away (the question is "how few GPUs")."""
    req = Request.of(c)
    out: list[Plan] = []
    if not any(hw.cuda_by_node()):
        return [_no_gpu(model, hw)]
    for lay in layouts(model, hw, req):
        for fp8 in _online_fp8_choices(model, hw, req):
            for kv in req.kv_dtypes:
                out.append(price(model, hw, req, tp=lay.tp, pp=lay.pp, kv_dtype=kv, online_fp8=fp8, dp=lay.dp, ep=lay.ep))
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


def price(model: VllmModel, hw: Hardware, req: Request, *, tp: int, pp: int, kv_dtype: str, online_fp8: bool, dp: int = 1,
          ep: bool = False) -> Plan:
    """One candidate priced on every rank, with its reasons when it does not fit. With ``dp``
    replicas each has its own KV pool (the same size: the smallest rank's sets it) and serves
    its share of the users; ``max_num_seqs`` is per replica (docs/serving/data_parallel_deployment.md)."""
    lay = mem.Layout(tp, pp, dp, ep)
    reasons = list(_shape_reasons(model, hw, tp, pp, dp=dp, ep=ep))
    rk = ranks(hw, tp, pp, dp) or []
    if not rk:
        what = f"tp {tp} x pp {pp}" + (f" x dp {dp}" if dp > 1 else "")
        reasons.append(f"{what} needs {lay.gpus} GPUs in groups of {tp} per node; {hw.name} has "
                       + ", ".join(str(len(n)) for n in hw.cuda_by_node()) + " per node")
    smallest_total = min((r.total for r in rk), default=0)
    batched = req.max_num_batched_tokens or _default_batched(smallest_total, rk)
    users = req.users
    per_replica = -(-users // dp)  # the users one DP replica serves (vLLM balances requests over them)
    mml_cap = model.max_position_embeddings
    max_model_len = req.max_model_len
    seqs = req.max_num_seqs or max(per_replica, 256 if smallest_total < _LARGE_GPU else 1024)
    if req.max_num_seqs and req.max_num_seqs * dp < users:
        reasons.append(f"--max-num-seqs {req.max_num_seqs} schedules fewer sequences than --users {users}"
                       + (f" on {dp} DP replicas" if dp > 1 else ""))
    kv_bytes = 1 if kv_dtype.startswith("fp8") else model.dtype_bytes
    if kv_dtype.startswith("fp8") and any((r_cc := _cc(hw, r)) is not None and r_cc < (8, 0) for r in rk):
        reasons.append("--kv-cache-dtype fp8 needs compute capability 8.0 or newer")
    per_layer = mem.kv_bytes_per_token_layer(model, tp, kv_bytes)
    page = mem.BLOCK_SIZE * per_layer

    rms = [mem.rank_memory(model, r, tp=tp, pp=pp, utilization=req.utilization, batched_tokens=batched, max_num_seqs=seqs,
                           online_fp8=online_fp8, dp=dp, ep=ep) for r in rk]
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
        per_seq = usable // max(1, per_replica)
        if not sliding:
            max_model_len = min(per_seq * mem.BLOCK_SIZE, mml_cap or per_seq * mem.BLOCK_SIZE)
        else:  # a sliding group's blocks stop growing at the window: search the length
            max_model_len = _longest(lambda n: need_of(n) <= per_seq, mml_cap or (1 << 32))
        max_model_len = max(max_model_len, 1)
    if mml_cap is not None and max_model_len > mml_cap:
        reasons.append(f"max_model_len {max_model_len} exceeds the model's max_position_embeddings {mml_cap}")
    need = need_of(max_model_len)
    one_replica = usable // need if need else 0
    concurrent = dp * one_replica  # every DP replica has a pool of its own
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
                           f"cache within {fmt_bytes(rm.budget)} ({req.utilization:g} x {fmt_bytes(r.free)})"
                           + (f"; the MoE activations count all {dp} DP ranks' {batched} tokens (a smaller "
                              "--max-num-batched-tokens shrinks them)" if dp > 1 and model.num_experts and rm.activations > rm.budget // 8
                              else ""))
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
            held = (f"the KV caches of {dp} DP replicas hold {concurrent} sequences ({one_replica} each) of {max_model_len} "
                    f"tokens ({tokens:,} tokens each)" if dp > 1 else
                    f"the KV cache holds {concurrent} sequences of {max_model_len} tokens ({tokens:,} tokens)")
            reasons.append(f"{held}; --users asks for {users}")
    reasons = list(dict.fromkeys(reasons))
    max_layers = max((rm.layers for rm in rms), default=0)
    nodes_used = len({d.split(":", 1)[0] for d in memory})
    per_node = max((sum(1 for d in memory if d.startswith(f"node{n}:")) for n in range(len(hw.cuda_by_node()))), default=0)
    settings = VllmSettings(
        parallel=Parallel(tensor=tp, pipeline=pp, nodes=nodes_used, gpus_per_node=per_node, data=dp, expert=lay.ep_size),
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
    where = (f"tp {tp} x pp {pp}" + (f" x dp {dp}" if dp > 1 else "") + (f", EP {lay.ep_size}" if lay.ep_size > 1 else "")
             + f" ({lay.gpus}x {gpu}" + (f", {nodes_used} nodes)" if nodes_used > 1 else ")"))
    if dp > 1:
        notes = [f"KV cache: {dp} DP replicas of {tokens:,} tokens each, {concurrent} concurrent sequences of {max_model_len} "
                 f"tokens ({one_replica} per replica)"]
    else:
        notes = [f"KV cache: {tokens:,} tokens, {concurrent} concurrent sequences of {max_model_len} tokens"]
    notes += _parallel_notes(model, lay)
    batch = min(one_replica, seqs, per_replica if users > 1 else one_replica)  # per DP replica
    if rk and batch * dp > 1:
        serving = serving_tokens_per_s(model, hw, rk, rms, tp=tp, pp=pp, batch=batch, context=max_model_len // 2,
                                       kv_per_layer=per_layer, dp=dp, ep=ep)
        at = f"{batch * dp} sequences" + (f" ({batch} per DP replica)" if dp > 1 else "")
        notes.append(f"serving estimate: about {serving:,.0f} tokens/s in total at {at} of ~{max_model_len // 2} "
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
        speed=Speed(tokens_per_s=_tokens_per_s(model, hw, rk, rms, tp=tp, pp=pp, context=max_model_len, kv_per_layer=per_layer,
                                               dp=dp, ep=ep) if rk else None),
        quality=quality, fits=not reasons and bool(rk), reasons=tuple(reasons), notes=tuple(notes), on_accelerators=True,
        kv_bytes=sum(m.kv_cache for m in memory.values()),
        kv_bytes_per_token=per_layer * model.num_layers * tp,  # every TP rank of a replica caches its share (MLA: a copy)
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


def _parallel_notes(model: VllmModel, lay: mem.Layout) -> list[str]:
    """What data and expert parallelism do to this model, in a line each."""
    out = []
    if lay.dp > 1:
        out.append(f"data parallel {lay.dp}: {lay.dp} engines of tp {lay.tp}, each with the attention"
                   + (" and dense" if model.num_experts else "") + " weights and a KV cache of its own"
                   + ("; their MoE layers run together on every replica's tokens" if model.num_experts else ""))
    if model.num_experts and lay.ep_size > 1:
        e, n = model.num_experts, lay.ep_size
        more = f" (the first {e % n} hold {e // n + 1})" if e % n else ""
        out.append(f"expert parallel {n}: {e // n} of the {e} experts whole on each GPU{more}")
    elif model.num_experts and lay.moe_ranks > 1:
        out.append(f"each expert is tensor-sliced over {lay.moe_ranks} GPUs (no --enable-expert-parallel)")
    return out


def _shape_reasons(model: VllmModel, hw: Hardware, tp: int, pp: int, *, dp: int = 1, ep: bool = False) -> Iterable[str]:
    lay = mem.Layout(tp, pp, dp, ep)
    # the MoE layers' own tensor parallelism: tp x dp without EP, 1 with it (memory.Layout)
    moe_tp = 1 if lay.ep_size > 1 else lay.moe_ranks
    if ep and not model.num_experts:
        yield "--enable-expert-parallel: the model has no routed experts"
    elif ep and lay.moe_ranks == 1:
        yield "--enable-expert-parallel needs tp x dp > 1 (vLLM uses expert parallelism only then)"
    if ep and model.num_experts and lay.moe_ranks > model.num_experts:
        yield f"expert parallel {lay.moe_ranks} exceeds the {model.num_experts} experts: some GPUs would hold none"
    if dp > 1 and pp > 1:
        yield "fitcheck plans data parallelism at pp 1 only"
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
    def ways(n: int) -> str:
        return f"tp {n}" if n == tp else f"tp {tp} x dp {dp}"

    if model.num_experts and model.expert_intermediate_size % moe_tp:
        yield f"{ways(moe_tp)} does not divide the expert MLP width {model.expert_intermediate_size}"
    if model.quant_method == "fp8":
        widths = [(w, n) for w, n in ((model.intermediate_size, tp), (model.expert_intermediate_size, moe_tp)) if w]
        for w, n in widths:
            if n > 1 and (w // n) % FP8_BLOCK:
                yield f"{ways(n)} splits the MLP width {w} into {w // n}, not a multiple of the FP8 block {FP8_BLOCK}"
                break
    width, n = (model.expert_intermediate_size, moe_tp) if model.num_experts else (model.intermediate_size, tp)
    if model.quant_group and n > 1 and width:
        # Marlin kernels (GPTQ/AWQ): a row-parallel slice must hold whole groups and be a multiple
        # of 128 (quantization/utils/marlin_utils.py:172-204, GPTQ_MARLIN_MIN_THREAD_K = 128 at :28)
        part = width // n
        if part % model.quant_group or part % 128:
            yield (f"{ways(n)} splits the MLP width {width} into {part}, not a multiple of the quantization group "
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
