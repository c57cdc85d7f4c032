"""Candidate training settings, each priced per device; the solver ranks them.

A candidate is (precision, strategy, optimizer, gradient checkpointing) for the method asked
(``--train``). They are returned cheapest first -- the order an expert tries them in: keep
AdamW and skip checkpointing while they fit, then an 8-bit optimizer (costs nothing in speed),
then pure bf16 weights (torchtune's default; less exact updates), then checkpointing (a third
more compute: one more forward per step), then Adafactor (another optimizer), sharding across
GPUs in between by its cost, CPU offload last. On a cluster (``--nodes``, a cluster profile) every
node trains with the same number of GPUs (``gpus`` per node, accelerate starts num_processes /
num_machines on each) and each rank is named ``node<N>:cuda:<i>``, as the vLLM plans name theirs;
each rank is held to its own GPU, so the smallest GPU bounds the equal ZeRO and FSDP shards. Every candidate of a request
has the same ``quality`` and no speed figure, so the generic solver (a stable sort) keeps this
order among those that fit.

The peak of a step is the larger of two phases:

* the start of the backward: weights, optimizer states (from the second step on), every saved
  activation, autocast's cast weights, the loss's transients, and the LM head's gradient (full
  fine-tuning); with gradient accumulation the gradients of earlier micro-batches too;
* the optimizer step: weights, gradients, optimizer states and the step's transient.
"""

from __future__ import annotations

from collections.abc import Iterator

from planner.core.errors import UsageError
from planner.core.records import Constraints, DeviceMemory, Gpu, Hardware, Plan, Speed
from planner.core.units import MiB, fmt_bytes
from planner.model.footprint import Footprint
from planner.runtimes.training import distributed, memory, shapes
from planner.runtimes.training.settings import (
    ALL_TARGETS,
    METHODS,
    OPTIMIZERS,
    TrainingSettings,
)

DEFAULT_LORA_R = 16  # peft's LoraConfig default is 8; 16 is the common choice of Unsloth's and torchtune's recipes
DEFAULT_SEQ = 2048

# --- fixed costs ---------------------------------------------------------------------------------
# CPU (measured, benchmarks/training/RESULTS.md, MALLOC_MMAP_THRESHOLD_=65536): RSS of the
# emitted script's process besides the parts priced. Full fine-tuning of llama-20m: 271 MiB after
# the load besides the weights (torch + transformers imports 220 MiB, the loader, the tokenizer),
# and 100 MiB more that the first forward and backward leave for good (601 MiB from the first step
# on against 348 + 154 MiB of optimizer states, in-process, /proc/self/status): 375 MiB. LoRA also
# imports peft, which imports bitsandbytes: its load phase peaked at 406 MiB against 348 (+58 MiB:
# 433, rounded up to 435). QLoRA's load quantizes through full-precision copies: 459 MiB at the
# load of llama-20m; 470 leaves the QLoRA scenarios 1-3 % over.
CPU_FIXED = {"full": 375 * MiB, "lora": 435 * MiB, "qlora": 470 * MiB}
# importing bitsandbytes for an 8-bit optimizer without peft: the load phase of
# llama-full-8bit-s1024-b1 peaked at 393.2 MiB against 348.6 MiB with AdamW (benchmarks/training)
CPU_BNB_OPTIMIZER = 48 * MiB
# importing transformers.optimization for Adafactor: the load phase of llama-full-adafactor-s512-b1
# peaked at 401.7 MiB against 348.6 MiB with AdamW
CPU_ADAFACTOR_IMPORT = 54 * MiB
# GPU (leads from peers until benchmarks/gpu_calibration.py measures training): CUDA context and
# cuBLAS handles of a torch process, 400-600 MiB on Ampere/Hopper (Ollama: 457 MiB; gpu_poor:
# 650 MB); the caching allocator's slack, 2 MiB segment rounding and fragmentation over the
# step (PyTorch CUDA caching allocator notes; peers add 15-20 % of the transient memory).
CUDA_CONTEXT = 600 * MiB
GPU_SLACK_TRANSIENT = 0.15
# DeepSpeed and NCCL buffers on each GPU for multi-GPU strategies: DeepSpeed's defaults
# reduce_bucket_size = allgather_bucket_size = 5e8 elements (deepspeed/runtime/zero/config.py) are
# what the emitted JSON sets lower, to 2e8 (16-bit: 400 MB each; we count one of them).
DS_BUCKET_BYTES = 2 * 200_000_000
# relative extra cost of each choice, for the order of the candidates (see the module docstring);
# HYBRID_SHARD before FULL_SHARD on a cluster: its all-gathers and reduce-scatters stay inside a
# node (torch/distributed/fsdp/api.py, ShardingStrategy), only the gradients' all-reduce crosses
# the slower link between nodes
# (checkpointing and the 8-bit optimizer leave the training as it is, up to rounding; pure bf16
# weights round small updates away; Adafactor and SGD are other optimizers, tried last)
_COST = {"checkpointing": 0.33, "adamw-8bit": 0.02, "paged-adamw-8bit": 0.03, "adafactor": 0.8, "sgd": 0.8,
         "bf16": 0.1, "ddp": 0.0, "single": 0.0, "zero2": 0.05, "fsdp-hybrid": 0.1, "fsdp": 0.15, "zero3": 0.2, "zero2-offload": 0.6,
         "zero3-offload": 1.0}


def request_settings(fp: Footprint, hw: Hardware, request: Constraints) -> dict[str, object]:
    """The user's training requests, validated, with their defaults."""
    method = request.option("train", "lora")
    if method not in METHODS:
        raise UsageError(f"--train {method!r} is not one of {', '.join(METHODS)}")
    optimizer = request.option("optimizer")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer {optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    ckpt = request.option("gradient_checkpointing", "auto")
    if ckpt not in ("auto", "on", "off"):
        raise UsageError(f"--gradient-checkpointing {ckpt!r} is not one of auto, on, off")
    per_node = [len(n) for n in hw.cuda_by_node()]
    gpus_available = min(per_node)
    gpus = request.option("gpus")
    if gpus is None:
        gpus = gpus_available
    if len(per_node) > 1 and gpus_available == 0:
        raise UsageError(f"{hw.name}: node {per_node.index(0)} has no CUDA GPU; training across nodes runs on every node's GPUs",
                         hint="plan the GPU nodes only (a cluster profile without that node)")
    if len(per_node) > 1 and gpus == 0:
        raise UsageError(f"--gpus 0 on {hw.name}, a cluster of {len(per_node)} nodes: CPU training is planned on one machine",
                         hint="plan one node (leave out --nodes) or train on the GPUs")
    if gpus > gpus_available:
        where = f"{hw.name} has {gpus_available} CUDA GPU(s)" if len(per_node) == 1 else \
            f"{hw.name}'s smallest node has {gpus_available} CUDA GPU(s) (every node trains with as many)"
        raise UsageError(f"--gpus {gpus}: {where}",
                         hint="plan for a profile with more GPUs (--hardware 8x-a100-80gb) or lower --gpus")
    targets = tuple(request.option("lora_targets") or ALL_TARGETS)
    return {"method": method, "optimizer": optimizer, "ckpt": ckpt, "gpus": gpus, "nodes": len(per_node),
            "seq": int(request.option("seq") or request.context or DEFAULT_SEQ), "batch": request.batch,
            "grad_accum": int(request.option("grad_accum", 1)), "lora_r": int(request.option("lora_r", DEFAULT_LORA_R)),
            "targets": targets}


def _cuda(hw: Hardware) -> tuple[Gpu, ...]:
    return tuple(g for g in hw.gpus if g.backend == "cuda")



def free_bytes(hw: Hardware, s: TrainingSettings) -> dict[str, int]:
    """Every device a plan of ``s`` may use -> its free bytes: its GPUs' ranks and the host RAM
    (``cpu``; ``node<N>:cpu`` and ``node<N>:cuda:<i>`` on a cluster, each node's own)."""
    if not hw.nodes:
        return {**{f"cuda:{i}": g.free_bytes for i, g in enumerate(_cuda(hw)[:s.gpus])}, "cpu": hw.ram_free}
    out = {}
    for n, (node, gpus) in enumerate(zip(hw.nodes[:s.nodes], hw.cuda_by_node(), strict=False)):
        out.update({f"node{n}:cuda:{i}": g.free_bytes for i, g in enumerate(gpus[:s.gpus])})
        out[f"node{n}:cpu"] = node.ram_free
    return out


def candidates(fp: Footprint, hw: Hardware, request: Constraints) -> Iterator[TrainingSettings]:
    """Every setting to price, in the order of preference."""
    r = request_settings(fp, hw, request)
    method, gpus, nodes = str(r["method"]), int(r["gpus"]), int(r["nodes"])  # type: ignore[call-overload]
    gpu_list = [g for node in hw.cuda_by_node() for g in node[:gpus]]
    if gpus == 0:
        precisions = ["fp32"]
    elif all(g.bf16 for g in gpu_list):
        precisions = ["bf16-mixed", "bf16"] if method == "full" else ["bf16-mixed"]
    else:
        precisions = ["fp16-mixed"]
    # HYBRID_SHARD only where there are nodes to replicate across; with one GPU per node it is DDP
    hybrid = ["fsdp-hybrid"] if nodes > 1 and gpus > 1 else []
    if gpus * nodes <= 1:
        strategies = ["single"]
    elif method == "full":
        strategies = ["ddp", "zero2", *hybrid, "fsdp", "zero3", "zero2-offload", "zero3-offload"]
    elif method == "lora":
        # sharding the frozen bf16 base is what makes a 70B LoRA fit on 80 GB GPUs (peft's guide
        # docs/source/accelerate/deepspeed.md: LoRA under ZeRO-3); ZeRO-2 would shard only the
        # adapters' states. Not FSDP: it flattens each wrapped decoder layer into one FlatParameter
        # of one dtype and (without use_orig_params) one requires_grad (torch 2.13
        # torch/distributed/fsdp/_flat_param.py lines 806-832), and peft's adapters are fp32 in a
        # bf16 base: that needs peft's own wrap policy, which the script does not set up
        strategies = ["ddp", "zero3"]
    else:
        strategies = ["ddp"]  # QLoRA's nf4 base is not sharded (bnb_4bit_quant_storage is not planned)
    optimizers = [r["optimizer"]] if r["optimizer"] else (["adamw", "adamw-8bit", "adafactor"] if method == "full" else ["adamw", "adamw-8bit"])
    ckpts = {"auto": [False, True], "on": [True], "off": [False]}[str(r["ckpt"])]
    targets: tuple[str, ...] = r["targets"] if method != "full" else ()  # type: ignore[assignment]
    rank = int(r["lora_r"]) if method != "full" else 0  # type: ignore[call-overload]
    trainable = fp.parameters if method == "full" else shapes.lora_parameters(fp.arch, rank, targets)[0]
    out = []
    for precision in precisions:
        for strategy in strategies:
            for opt in optimizers:
                if ("8bit" in str(opt) or precision == "bf16") and strategy not in ("single", "ddp"):
                    # bitsandbytes' optimizers step whole tensors, not ZeRO's or FSDP's flat shards;
                    # DeepSpeed's bf16 keeps fp32 master weights anyway (its BF16_Optimizer)
                    continue
                if strategy.endswith("-offload") and opt != "adamw":
                    continue  # an offloaded optimizer is DeepSpeed's own CPU Adam (emit.ds_config)
                for ckpt in ckpts:
                    s = TrainingSettings(method=method, optimizer=str(opt), gradient_checkpointing=ckpt, precision=precision,
                                         seq=int(r["seq"]), batch=int(r["batch"]), grad_accum=int(r["grad_accum"]),  # type: ignore[call-overload]
                                         lora_r=rank, lora_targets=targets, gpus=gpus, strategy=strategy,
                                         trainable_parameters=trainable, nodes=nodes)
                    out.append(s)
    out.sort(key=_cost)  # stable: the nesting above breaks ties
    yield from out


def _cost(s: TrainingSettings) -> float:
    c = _COST.get(s.optimizer, 0.0) + _COST[s.strategy] + (_COST["checkpointing"] if s.gradient_checkpointing else 0.0)
    return c + (_COST["bf16"] if s.precision == "bf16" else 0.0)


def plans(fp: Footprint, hw: Hardware, request: Constraints) -> list[Plan]:
    """Every candidate of the request, priced."""
    return [price(fp, hw, request, s) for s in candidates(fp, hw, request)]


def cpu_phases(fp: Footprint, s: TrainingSettings, p: memory.Parts | None = None, *, head_grad: int | None = None,
               accumulated: int | None = None) -> dict[str, int]:
    """A CPU run's predicted peak RSS per phase of a step (forward, backward, optimizer step), and
    its fixed ``overhead`` (the process with torch and transformers, in each phase's figure).

    The forward ends holding the saved activations; the backward adds the largest gradient that
    is alive with them (the head's, or the accumulated ones); the step holds weights, gradients,
    optimizer state and the step's transient. ``fitcheck verify`` measures each (verify_child.py).
    """
    p = p or memory.parts(fp, s, cpu=True, foreach=False)
    if head_grad is None:
        head_grad = shapes.largest_tensor(fp) * (4 if s.precision in ("fp32", "bf16-mixed", "fp16-mixed") else 2) if s.method == "full" else 0
    if accumulated is None:
        accumulated = p.gradients if s.grad_accum > 1 else 0
    fixed = (CPU_FIXED[s.method] + (CPU_BNB_OPTIMIZER if s.method == "full" and "8bit" in s.optimizer else 0)
             + (CPU_ADAFACTOR_IMPORT if s.optimizer == "adafactor" else 0))
    forward = p.weights + p.optimizer + p.activations + p.cache
    return {"forward": forward + fixed, "backward": forward + max(head_grad, accumulated) + fixed,
            "step": p.weights + p.gradients + p.optimizer + p.step + fixed, "overhead": fixed}


def peaks(fp: Footprint, hw: Hardware, s: TrainingSettings, *, seq: int | None = None, batch: int | None = None) -> dict[str, dict[str, int]]:
    """Device -> its parts and ``total`` (the predicted peak) under ``s``."""
    cpu_run = s.gpus == 0
    p = memory.parts(fp, s, cpu=cpu_run, foreach=not cpu_run, seq=seq, batch=batch)
    head_grad = shapes.largest_tensor(fp) * (4 if s.precision in ("fp32", "bf16-mixed", "fp16-mixed") else 2) if s.method == "full" else 0
    accumulated = p.gradients if s.grad_accum > 1 else 0
    if cpu_run:
        ph = cpu_phases(fp, s, p, head_grad=head_grad, accumulated=accumulated)
        return {"cpu": {"weights": p.weights, "gradients": p.gradients, "optimizer": p.optimizer, "activations": p.activations + p.cache,
                        "compute": p.step, "overhead": ph["overhead"], "total": max(ph["backward"], ph["step"])}}
    trainable_master = s.trainable_parameters * (4 if s.method != "full" or s.precision != "bf16" else 2)
    frozen = p.weights - trainable_master
    largest_layer = max((u.params for u in fp.units if u.kind == "layer"), default=0)
    sh = distributed.shard(p, s.strategy, gpus=s.world_size, gpus_per_node=s.gpus, trainable=trainable_master, frozen=frozen,
                           largest_layer=largest_layer, largest_module=shapes.largest_tensor(fp), layer_width=s.compute_bytes)
    grads_live = sh.gradients if s.grad_accum > 1 else min(sh.gradients, head_grad)
    backward = sh.weights + sh.optimizer + p.activations + p.cache + grads_live
    step = sh.weights + sh.gradients + sh.optimizer + sh.step
    transient = max(p.activations + p.cache + grads_live, sh.gradients + sh.step)
    fixed = CUDA_CONTEXT + int(transient * GPU_SLACK_TRANSIENT) + (DS_BUCKET_BYTES if s.strategy.startswith("zero") else 0)
    out = {}
    # every rank holds the same shard (ZeRO and FSDP partition equally), on each node the host its
    # ranks' offloaded share
    load = host_at_load(p, s)
    for device in free_bytes(hw, s):
        if device.endswith("cpu"):
            if sh.cpu or load:
                # each rank is a process with its own imports; the load's copies are freed (to the
                # GPU) before DeepSpeed allocates the offloaded states
                host_fixed = s.gpus * CPU_FIXED[s.method]
                out[device] = {"weights": load, "gradients": 0, "optimizer": sh.cpu, "activations": 0, "compute": 0,
                               "overhead": host_fixed, "total": max(load, sh.cpu) + host_fixed}
            continue
        out[device] = {"weights": sh.weights, "gradients": sh.gradients, "optimizer": sh.optimizer,
                       "activations": p.activations + p.cache, "compute": sh.step, "overhead": fixed,
                       "total": max(backward, step) + fixed}
    return out


def host_at_load(p: memory.Parts, s: TrainingSettings) -> int:
    """Host RAM per node while the ranks of a multi-GPU plan load the model.

    The emitted script loads with ``from_pretrained`` and no ``device_map`` on several GPUs, so the
    weights land in host RAM before ``accelerator.prepare`` moves them (transformers 5.24
    modeling_utils.py), all ranks of a node at once:
    * DDP and ZeRO-2: every rank a whole copy, in the dtype it loads (``p.weights``);
    * FSDP: only each node's local rank 0: accelerate launch's ``--fsdp_cpu_ram_efficient_loading``
      (default true, accelerate 1.16 commands/launch.py line 589; the emitted config sets it) makes
      the other ranks build on the meta device (transformers distributed/fsdp.py is_fsdp_enabled,
      modeling_utils.py line 4862) and receive rank 0's weights (``sync_module_states``);
    * ZeRO-3: ``deepspeed.zero.Init`` (accelerate's ``zero3_init_flag`` defaults to the config's
      stage being 3, accelerate 1.16 utils/dataclasses.py line 1226): each rank only its partition;
    * QLoRA: bitsandbytes quantizes on the GPU it loads to, so no host copy is kept.
    """
    if s.world_size <= 1 or s.method == "qlora":
        return 0
    if s.strategy.startswith("fsdp"):
        return p.weights
    if s.strategy.startswith("zero3"):
        return p.weights * s.gpus // s.world_size
    return s.gpus * p.weights


def fits(fp: Footprint, hw: Hardware, request: Constraints, s: TrainingSettings, **kw: int) -> bool:
    free = free_bytes(hw, s)
    return all(m["total"] <= free[d] - request.margin(free[d]) for d, m in peaks(fp, hw, s, **kw).items())


def price(fp: Footprint, hw: Hardware, request: Constraints, s: TrainingSettings) -> Plan:
    """One candidate as a Plan: its memory per device, whether it fits and why not."""
    reasons: list[str] = []
    notes: list[str] = []
    if s.method == "qlora" and s.gpus == 0 and not fp.nf4_cpu_ok:
        reasons.append("bitsandbytes' CPU 4-bit kernel needs every linear's out_features divisible by 32")
    missing = shapes.untargeted(fp.arch, s.lora_targets)
    if missing:
        notes.append(f"LoRA cannot target {', '.join(missing)} (fused MoE experts are not nn.Linear); adapted: the rest")
    memory_: dict[str, DeviceMemory] = {}
    frees = free_bytes(hw, s)
    for device, m in peaks(fp, hw, s).items():
        free = frees[device]
        margin = request.margin(free)
        capacity = max(0, free - margin)
        memory_[device] = DeviceMemory(device=device, weights=m["weights"], kv_cache=0, activations=m["activations"],
                                       overhead=m["overhead"], total=m["total"], capacity=capacity, free=free, margin=margin,
                                       required=m["total"], compute=m["compute"], gradients=m["gradients"], optimizer=m["optimizer"])
        if m["total"] > capacity:
            reasons.append(f"{label(s)} needs {fmt_bytes(m['total'])} on {device}; {fmt_bytes(capacity)} usable")
    ok = not reasons
    if ok:
        s = _with_limits(fp, hw, request, s)
        notes.append(f"largest that fits with these settings: batch {s.max_batch} at seq {s.seq}; seq {s.max_seq} at batch {s.batch}")
    return Plan(runtime="training", label=label(s), settings=s, memory=memory_, speed=Speed(), quality=_quality(s), fits=ok,
                reasons=tuple(reasons), notes=tuple(notes), on_accelerators=s.gpus > 0)


def _quality(s: TrainingSettings) -> int:
    # the precision of the weights being trained (one value per request: see the module docstring)
    return {"full": 16, "lora": 16, "qlora": 4}[s.method] if s.gpus else {"full": 32, "lora": 32, "qlora": 4}[s.method]


def label(s: TrainingSettings) -> str:
    what = s.method if s.method == "full" else f"{s.method} r{s.lora_r}"
    parts = [what, s.optimizer, s.precision]
    if s.gradient_checkpointing:
        parts.append("checkpointing")
    if s.strategy not in ("single",):
        parts.append(s.strategy)
    where = "cpu" if s.gpus == 0 else "cuda:0" if s.world_size == 1 else f"{s.gpus} GPUs" if s.nodes == 1 else \
        f"{s.nodes} nodes x {s.gpus} GPUs"
    return f"{', '.join(parts)} on {where}"


def _largest(lo: int, hi: int, ok: object) -> int:
    """The largest n in [lo, hi] with ok(n) (ok is monotone and ok(lo) holds)."""
    assert callable(ok)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# search ceilings: no single-device step takes more sequences than this, or longer sequences
MAX_BATCH_SEARCH = 4096
MAX_SEQ_SEARCH = 1 << 20


def _with_limits(fp: Footprint, hw: Hardware, request: Constraints, s: TrainingSettings) -> TrainingSettings:
    from dataclasses import replace

    max_batch = _largest(s.batch, MAX_BATCH_SEARCH, lambda b: fits(fp, hw, request, s, batch=b))
    ceiling = min(MAX_SEQ_SEARCH, max(s.seq, fp.arch.max_position_embeddings or MAX_SEQ_SEARCH))
    max_seq = _largest(s.seq, ceiling, lambda n: fits(fp, hw, request, s, seq=n))
    return replace(s, max_batch=max_batch, max_seq=max_seq)


def reprice(fp: Footprint, hw: Hardware, request: Constraints, plan: Plan) -> Plan:
    """``plan``'s settings priced at the request's context as the sequence length."""
    from dataclasses import replace

    s = plan.settings
    if not isinstance(s, TrainingSettings):
        raise TypeError(f"not a training plan: {plan.runtime}")
    return price(fp, hw, request, replace(s, seq=request.context))


def smallest(fp: Footprint) -> int:
    """A lower bound of any plan: the QLoRA base model."""
    probe = TrainingSettings(method="qlora", optimizer="adamw-8bit", gradient_checkpointing=True, precision="bf16-mixed", seq=1,
                             batch=1, grad_accum=1, lora_r=0, lora_targets=(), gpus=1, strategy="single", trainable_parameters=0)
    return memory.base_weights(fp, probe, cpu=False)
