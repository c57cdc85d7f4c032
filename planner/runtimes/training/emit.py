"""Plan -> the training script (``train.py``), the plan file (``plan.json``) and, for several GPUs,
the accelerate config and DeepSpeed JSON they launch with; on a cluster, one accelerate config
and one launch line per node (``accelerate_config_node<R>.yaml``, machine_rank R).

The script depends on torch, transformers, peft (LoRA, QLoRA) and bitsandbytes (QLoRA, 8-bit
optimizers), never on fitcheck. Every value that came from outside (repo id, revision, module
names) enters it inside one JSON document, written into the script as the ``repr`` of a str --
a Python literal that cannot be anything else -- and parsed with ``json.loads``.
"""

from __future__ import annotations

import json
from typing import Any

from planner import __version__
from planner.core.codegen import refuse_secrets
from planner.core.errors import VerifyError
from planner.core.records import Plan, Report
from planner.model.footprint import Footprint
from planner.runtimes.training import plans
from planner.runtimes.training.settings import (
    METHODS,
    OPTIMIZERS,
    STRATEGIES,
    TrainingSettings,
)

# The learning rates of the emitted recipe: 2e-4 for LoRA and QLoRA (QLoRA paper, Dettmers et al.
# 2023, appendix B: 2e-4 for models up to 13B) and 1e-5 for full fine-tuning (a common choice
# for 7-8B models: Llama-2 paper, Touvron et al. 2023, sec. 3.1 uses 2e-5 for SFT).
LR = {"full": 1e-5, "lora": 2e-4, "qlora": 2e-4}
STEPS = 3  # optimizer steps the script runs unless told otherwise (--steps)
# optimizer steps `fitcheck verify` runs: the first step creates the optimizer state, the second
# runs a forward and backward with it held (the planned peak), so two show every phase's peak
VERIFY_STEPS = 2
# the head node's address in a cluster's accelerate configs: a placeholder the user replaces (as
# the vLLM plans' HEAD_IP); the port is torch.distributed's default MASTER_PORT, 29500 (torchrun's
# --master-port default, torch/distributed/run.py; accelerate falls back to it too,
# accelerate/utils/launch.py prepare_deepspeed_cmd_env)
HEAD = "HEAD_IP"
MAIN_PORT = 29500


def _settings(p: Plan) -> TrainingSettings:
    if not isinstance(p.settings, TrainingSettings):
        raise TypeError(f"not a training plan: {p.runtime}")
    return p.settings


def train_settings(r: Report, p: Plan) -> dict[str, Any]:
    """What the script runs with: plain data (the plan file's ``train`` block)."""
    s = _settings(p)
    return {
        "model": r.snapshot.id, "revision": r.snapshot.revision, "method": s.method, "optimizer": s.optimizer,
        "precision": s.precision, "gradient_checkpointing": s.gradient_checkpointing, "seq": s.seq, "batch": s.batch,
        "grad_accum": s.grad_accum, "lora_r": s.lora_r, "lora_alpha": 2 * s.lora_r, "lora_targets": list(s.lora_targets),
        "lr": LR[s.method], "device": "cpu" if s.gpus == 0 else "cuda", "gpus": s.gpus, "strategy": s.strategy,
        "nodes": s.nodes,
    }


def training_block(p: Plan) -> dict[str, Any]:
    """``plan.training`` of the JSON report (the issue's schema)."""
    s = _settings(p)
    out: dict[str, Any] = {"method": s.method, "optimizer": s.optimizer, "gradient_checkpointing": s.gradient_checkpointing,
                           "precision": s.precision, "seq": s.seq, "batch": s.batch, "grad_accum": s.grad_accum,
                           "trainable_parameters": s.trainable_parameters, "lora_r": s.lora_r,
                           "lora_targets": list(s.lora_targets), "gpus": s.gpus, "strategy": s.strategy,
                           "max_batch": s.max_batch, "max_seq": s.max_seq, "nodes": s.nodes, "world_size": s.world_size}
    if s.zero_stage is not None:
        out["zero_stage"] = s.zero_stage
        out["offload"] = s.offload
    if s.strategy.startswith("fsdp"):
        out["fsdp"] = FSDP_SHARDING[s.strategy]
    return out


# accelerate's fsdp_sharding_strategy names (accelerate/utils/constants.py FSDP_SHARDING_STRATEGY)
FSDP_SHARDING = {"fsdp": "FULL_SHARD", "fsdp-hybrid": "HYBRID_SHARD"}


def plan_file(r: Report, p: Plan) -> str:
    s = _settings(p)
    doc = {
        "fitcheck_version": __version__,
        "runtime": "training",
        "model": {"id": r.snapshot.id, "revision": r.snapshot.revision, "commit": r.snapshot.commit, "source": r.snapshot.source},
        "label": p.label,
        "train": train_settings(r, p),
        "training": training_block(p),
        # what `fitcheck verify` reads (planner.report.verify): the load and the steps it runs
        "load": {"model": r.snapshot.id, "revision": r.snapshot.revision, "method": s.method, "precision": s.precision},
        "generate": {"steps": VERIFY_STEPS, "seq": s.seq, "batch": s.batch, "grad_accum": s.grad_accum},
        "predicted": {d: m.to_dict() for d, m in p.memory.items()},
        "predicted_phases": _phases(r, p),
        "margin": {"fraction": r.constraints.margin_fraction, "floor_bytes": r.constraints.margin_floor},
    }
    return refuse_secrets(json.dumps(doc, indent=2) + "\n")


def _phases(r: Report, p: Plan) -> dict[str, dict[str, int]]:
    """The predicted peak of each phase of a step, per device (CPU runs; GPU runs have none yet)."""
    s = _settings(p)
    if s.gpus or not isinstance(r.footprint, Footprint):
        return {}
    ph = plans.cpu_phases(r.footprint, s)
    return {"cpu": {k: ph[k] for k in ("forward", "backward", "step")}}


def check_plan_doc(doc: Any) -> None:
    """Refuse a plan file whose settings fitcheck could not have written.

    Raises:
        VerifyError: a setting outside what the script knows.
    """
    t = doc.get("train") if isinstance(doc, dict) else None
    if not isinstance(t, dict):
        raise VerifyError("the plan file has no train block")
    if t.get("method") not in METHODS or t.get("optimizer") not in OPTIMIZERS or t.get("strategy") not in STRATEGIES:
        raise VerifyError("the plan file's train block names a method, optimizer or strategy fitcheck does not write")
    for key in ("seq", "batch", "grad_accum", "lora_r"):
        if not isinstance(t.get(key), int) or isinstance(t.get(key), bool) or t[key] < 0:
            raise VerifyError(f"the plan file's train.{key} is not a count")
    nodes = t.get("nodes", 1)  # plan files of fitcheck before --nodes trained have none
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise VerifyError("the plan file's train.nodes is not a count of machines")


def script(r: Report, p: Plan) -> str:
    return script_from_settings(train_settings(r, p), label=p.label)


def script_from_settings(t: dict[str, Any], *, label: str) -> str:
    text = json.dumps(t, sort_keys=True)
    safe_label = "".join(ch for ch in label if ch.isalnum() or ch in " ,+()._-:")
    return refuse_secrets(_TEMPLATE.replace("@LABEL@", safe_label).replace("@VERSION@", __version__).replace("@PLAN@", repr(text)))


def ds_config(p: Plan) -> str | None:
    """The DeepSpeed JSON of a ZeRO plan (None for the others)."""
    s = _settings(p)
    if s.zero_stage is None:
        return None
    zero: dict[str, Any] = {"stage": s.zero_stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000}
    doc: dict[str, Any] = {}
    if s.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if s.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        # DeepSpeed builds its own CPU Adam for an offloaded optimizer (the script passes accelerate's
        # DummyOptim); a torch optimizer there is refused (zero_force_ds_cpu_optimizer)
        doc["optimizer"] = {"type": "AdamW", "params": {"lr": LR[s.method], "weight_decay": 0.0}}
    doc = {**doc, "train_micro_batch_size_per_gpu": s.batch, "gradient_accumulation_steps": s.grad_accum,
           "gradient_clipping": 1.0, "zero_optimization": zero,
           "bf16": {"enabled": s.precision.startswith("bf16")}, "fp16": {"enabled": s.precision == "fp16-mixed"}}
    return json.dumps(doc, indent=2) + "\n"


def accelerate_config(p: Plan, machine_rank: int = 0) -> str | None:
    """``accelerate launch --config_file`` YAML for several GPUs (None for one device): on a
    cluster, node ``machine_rank``'s (every node's differs only there). The keys are accelerate's
    ClusterConfig fields (accelerate/commands/config/config_args.py); ``num_processes`` counts the
    ranks of every node, and accelerate starts num_processes / num_machines on each
    (accelerate/utils/launch.py, ``nproc_per_node``)."""
    s = _settings(p)
    if s.world_size <= 1:
        return None
    if not 0 <= machine_rank < s.nodes:
        raise ValueError(f"machine_rank {machine_rank} of {s.nodes} node(s)")
    mixed = "bf16" if s.precision.startswith("bf16") else "fp16" if s.precision == "fp16-mixed" else "no"
    lines = ["compute_environment: LOCAL_MACHINE", f"num_processes: {s.world_size}", f"num_machines: {s.nodes}",
             f"machine_rank: {machine_rank}", f"mixed_precision: {mixed}"]
    if s.nodes > 1:
        # torchrun's static rendezvous at the head node (rank 0), whose address the user fills in
        lines += [f"main_process_ip: {HEAD}", f"main_process_port: {MAIN_PORT}", "rdzv_backend: static"]
    if s.zero_stage is not None:
        lines += ["distributed_type: DEEPSPEED", "deepspeed_config:", "  deepspeed_config_file: ds_config.json"]
        if s.nodes > 1:
            # "standard": `accelerate launch` on each node runs torchrun there; accelerate's default
            # for several machines, pdsh, runs `deepspeed --hostfile` from one node instead
            # (accelerate/utils/launch.py prepare_deepspeed_cmd_env; DEEPSPEED_MULTINODE_LAUNCHERS[1])
            lines += ["  deepspeed_multinode_launcher: standard"]
    elif s.strategy.startswith("fsdp"):
        lines += ["distributed_type: FSDP", "fsdp_config:", f"  fsdp_sharding_strategy: {FSDP_SHARDING[s.strategy]}",
                  "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP", "  fsdp_state_dict_type: SHARDED_STATE_DICT",
                  f"  fsdp_activation_checkpointing: {str(s.gradient_checkpointing).lower()}",
                  # only local rank 0 of each node loads the weights into host RAM; the others get them
                  # from it (plans.host_at_load prices this)
                  "  fsdp_cpu_ram_efficient_loading: true", "  fsdp_sync_module_states: true"]
    else:
        lines += ["distributed_type: MULTI_GPU"]
    return "\n".join(lines) + "\n"


def config_name(p: Plan, machine_rank: int = 0) -> str:
    """The file name of node ``machine_rank``'s accelerate config."""
    return "accelerate_config.yaml" if _settings(p).nodes <= 1 else f"accelerate_config_node{machine_rank}.yaml"


def launch_commands(p: Plan) -> dict[str, tuple[str, ...]]:
    """The command line that trains: ``train`` on one machine; ``train_node<R>`` on node R of a
    cluster (each with its own config; start them all, rank 0 first, with HEAD_IP replaced)."""
    s = _settings(p)
    if s.world_size <= 1:
        return {"train": ("python", "train.py")}
    if s.nodes <= 1:
        return {"train": ("accelerate", "launch", "--config_file", config_name(p), "train.py")}
    return {f"train_node{r}": ("accelerate", "launch", "--config_file", config_name(p, r), "train.py") for r in range(s.nodes)}



_TEMPLATE = r'''#!/usr/bin/env python3
"""Fine-tune as fitcheck planned it (@LABEL@). Written by fitcheck @VERSION@.

Runs a few optimizer steps on a tiny built-in text (or --data FILE), with exactly the planned
method, optimizer, precision, gradient checkpointing, sequence length and batch.
  python train.py [--steps N] [--data FILE] [--report OUT.json]
--report writes the peak memory of each phase (load, forward, backward, step) as JSON.
"""
import contextlib
import json
import sys

import torch

PLAN = json.loads(@PLAN@)
TEXT = ("Memory is what decides whether a model trains. Weights, gradients, optimizer states and "
        "activations share one device, and the largest of the phases of a step sets the peak. ") * 8


def cpu_peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    if PLAN["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs)
        except OSError:
            pass


def peak():
    if PLAN["device"] == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return cpu_peak()


def dtypes():
    p = PLAN["precision"]
    compute = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}[p]
    if PLAN["method"] == "full":
        load = torch.bfloat16 if p == "bf16" else torch.float32
    else:
        load = compute
    autocast = p.endswith("-mixed")
    return load, compute, autocast


def load_model():
    from transformers import AutoModelForCausalLM

    load, compute, _ = dtypes()
    kw = {"dtype": load, "revision": PLAN["revision"], "attn_implementation": "sdpa"}
    if PLAN["method"] == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    if PLAN["gpus"] * PLAN.get("nodes", 1) <= 1:
        kw["device_map"] = PLAN["device"] if PLAN["device"] == "cpu" else {"": 0}
    model = AutoModelForCausalLM.from_pretrained(PLAN["model"], **kw)
    model.config.use_cache = False
    if PLAN["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if PLAN["method"] != "full":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=PLAN["lora_r"], lora_alpha=PLAN["lora_alpha"], lora_dropout=0.0,
                            target_modules=PLAN["lora_targets"], task_type="CAUSAL_LM")
        model = get_peft_model(model, config)  # adapters in fp32 (peft's autocast_adapter_dtype)
    model.train()
    return model


def make_optimizer(model):
    params = [p for p in model.parameters() if p.requires_grad]
    name, lr = PLAN["optimizer"], PLAN["lr"]
    if PLAN["strategy"].endswith("-offload"):
        from accelerate.utils import DummyOptim

        return DummyOptim(params, lr=lr)  # DeepSpeed's CPU Adam, from ds_config.json
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name in ("adamw-8bit", "paged-adamw-8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if name == "paged-adamw-8bit" else bnb.optim.AdamW8bit
        return cls(params, lr=lr, weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    raise SystemExit(f"unknown optimizer {name}")


def batches(path=None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(PLAN["model"], revision=PLAN["revision"])
    text = open(path, encoding="utf-8").read() if path else TEXT
    ids = tok(text)["input_ids"]
    need = PLAN["seq"] * PLAN["batch"]
    while len(ids) < need:
        ids = ids + ids
    step = 0
    while True:  # packed sequences of exactly seq tokens, batch of them
        start = (step * need) % max(1, len(ids) - need + 1)
        chunk = torch.tensor(ids[start:start + need]).view(PLAN["batch"], PLAN["seq"])
        yield chunk
        step += 1


def main(argv):
    steps, data, report = 3, None, None
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--steps":
            steps = int(args.pop(0))
        elif flag == "--data":
            data = args.pop(0)
        elif flag == "--report":
            report = args.pop(0)
        else:
            raise SystemExit(f"unknown argument {flag}")
    phases = {"imports": peak()}
    reset_peak()
    accelerator = None
    if PLAN["gpus"] * PLAN.get("nodes", 1) > 1:  # launched by `accelerate launch --config_file accelerate_config.yaml train.py`
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # mixed precision, DDP, DeepSpeed or FSDP from the launch config; made before the load so
        # that ZeRO-3 partitions the weights as they load (transformers' zero.Init). DDP's
        # gradients are views into its buckets: no second copy of them (as planned).
        accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    model = load_model()
    optimizer = make_optimizer(model)
    phases["load"] = peak()
    _, compute, autocast = dtypes()
    scaler = torch.amp.GradScaler(PLAN["device"]) if PLAN["precision"] == "fp16-mixed" else None
    device = "cpu" if PLAN["device"] == "cpu" else "cuda:0"
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device, autocast, scaler = accelerator.device, False, None
    data_iter = batches(data)
    losses = []
    for name in ("forward", "backward", "step"):
        phases[name] = 0
    for _ in range(steps):
        for _micro in range(PLAN["grad_accum"]):
            x = next(data_iter).to(device)
            reset_peak()
            ctx = torch.autocast(device_type=PLAN["device"], dtype=compute) if autocast else contextlib.nullcontext()
            with ctx:
                loss = model(input_ids=x, labels=x).loss / PLAN["grad_accum"]
            phases["forward"] = max(phases["forward"], peak())
            reset_peak()
            if accelerator is not None:
                accelerator.backward(loss)
            else:
                (scaler.scale(loss) if scaler else loss).backward()
            phases["backward"] = max(phases["backward"], peak())
            losses.append(float(loss) * PLAN["grad_accum"])
        reset_peak()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phases["step"] = max(phases["step"], peak())
    result = {"losses": losses, "peak": max(phases.values()), "phases": phases,
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "weights_bytes": sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))}
    print(json.dumps({"losses": [round(v, 4) for v in losses], "peak_bytes": result["peak"]}))
    if report:
        with open(report, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
'''
