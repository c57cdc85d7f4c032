"""What runs a vLLM plan: the ``vllm serve`` argv, Ray start commands per node (or the ``--nnodes``
form), a short launch README and the plan file (SGLang has its own runtime, ``--runtime sglang``).
All argv are lists built from data; the README quotes them with :func:`shlex.join`, so nothing is
ever spliced into a shell line.

Flags (vllm 0.34.0 engine/arg_utils.py): ``--tensor-parallel-size`` :1224, ``--pipeline-parallel-size``,
``--max-model-len`` :998, ``--quantization`` :999, ``--distributed-executor-backend`` :1182,
``--master-addr``/``--master-port``/``--nnodes``/``--node-rank`` :1190-1193, ``--kv-cache-dtype`` :1416,
``--gpu-memory-utilization`` :1406; ``--headless`` entrypoints/common/cli_args.py:446;
``--data-parallel-size`` :1256, ``--data-parallel-start-rank`` :1268, ``--data-parallel-size-local`` :1274,
``--data-parallel-address`` :1280, ``--data-parallel-rpc-port`` :1286, ``--enable-expert-parallel`` :1320.

A data-parallel plan across nodes runs one ``vllm serve`` per node, as vLLM's guide shows
(docs/serving/data_parallel_deployment.md, "Internal Load Balancing"; expert_parallel_deployment.md,
"Multi-Node Deployment"): each node starts its ``--data-parallel-size-local`` replicas, the others
``--headless`` from their ``--data-parallel-start-rank``, all pointed at the head's address and RPC
port. A replica never spans nodes (fitcheck's TP groups stay inside one), so no Ray is needed.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from planner.core.records import Plan, Report
from planner.runtimes.vllm.settings import VllmSettings

PLAN_FORMAT = 1
HEAD = "HEAD_IP"  # placeholder the user replaces with the head node's address
RAY_PORT = 6379  # `ray start --head` default port (Ray docs, "ray start")
MASTER_PORT = 29501  # ParallelConfig.master_port default (vllm config/parallel.py:338)
DP_RPC_PORT = 29550  # ParallelConfig.data_parallel_rpc_port default (vllm 0.34.0 config/parallel.py:169)
# The placement group vLLM 0.34.0 asks Ray for when no placement group is current
# (v1/executor/ray_utils.py:371-378, initialize_ray_cluster): one bundle of {"GPU": 1.0} per rank of
# world_size = tp x pp, strategy "PACK" ("By default, Ray packs resources as much as possible"). Its
# workers take num_cpus=0 (v1/executor/ray_executor_v2.py:386), so the bundles ask for GPUs only.
PG_STRATEGY = "PACK"
PG_BUNDLE = {"GPU": 1.0}


def settings_of(plan: Plan) -> VllmSettings:
    s = plan.settings
    if not isinstance(s, VllmSettings):
        raise TypeError(f"the vllm runtime emits VllmSettings, not {type(s).__name__}")
    return s


def _model_ref(report: Report) -> list[str]:
    snap = report.snapshot
    out = [snap.id]
    if snap.source != "local" and snap.commit:
        out += ["--revision", snap.commit]
    return out


def _engine_argv(report: Report, s: VllmSettings) -> list[str]:
    """``vllm serve MODEL`` and the flags every node of the plan passes alike."""
    argv = ["vllm", "serve", *_model_ref(report),
            "--tensor-parallel-size", str(s.parallel.tensor), "--pipeline-parallel-size", str(s.parallel.pipeline),
            "--max-model-len", str(s.max_model_len), "--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}",
            "--max-num-seqs", str(s.max_num_seqs), "--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if s.kv_cache.dtype != "auto":
        argv += ["--kv-cache-dtype", s.kv_cache.dtype]
    if s.quantization:
        argv += ["--quantization", s.quantization]
    if s.parallel.data > 1:
        argv += ["--data-parallel-size", str(s.parallel.data)]
    if s.parallel.expert > 1:
        argv.append("--enable-expert-parallel")
    return argv


def vllm_serve(report: Report, plan: Plan) -> list[str]:
    """The ``vllm serve`` argv of the plan (run on the head node when it spans nodes)."""
    s = settings_of(plan)
    if s.parallel.nodes > 1 and s.parallel.data > 1:
        return dp_node_serve(report, plan, 0)
    argv = _engine_argv(report, s)
    if s.parallel.nodes > 1:
        argv += ["--distributed-executor-backend", "ray"]
    return argv


def dp_replicas_per_node(plan: Plan) -> list[int]:
    """The DP replicas each node of a data-parallel plan holds (its GPUs over tp), in node order."""
    s = settings_of(plan)
    counts = [sum(1 for d in plan.memory if d.startswith(f"node{n}:")) // s.parallel.tensor for n in range(s.parallel.nodes)]
    return [c for c in counts if c]


def dp_node_serve(report: Report, plan: Plan, node: int) -> list[str]:
    """The ``vllm serve`` argv of ``node`` in a data-parallel plan across nodes (module docstring)."""
    s = settings_of(plan)
    local = dp_replicas_per_node(plan)
    argv = _engine_argv(report, s) + ["--data-parallel-size-local", str(local[node])]
    if node > 0:
        argv += ["--data-parallel-start-rank", str(sum(local[:node]))]
    argv += ["--data-parallel-address", HEAD, "--data-parallel-rpc-port", str(DP_RPC_PORT)]
    if node > 0:
        argv.append("--headless")
    return argv


def nnodes_serve(report: Report, plan: Plan, node_rank: int) -> list[str]:
    """The ``--nnodes`` form (no Ray): the same serve argv on every node with its rank; workers headless."""
    s = settings_of(plan)
    argv = [a for a in vllm_serve(report, plan)]
    if "--distributed-executor-backend" in argv:
        i = argv.index("--distributed-executor-backend")
        del argv[i:i + 2]
    argv += ["--nnodes", str(s.parallel.nodes), "--node-rank", str(node_rank), "--master-addr", HEAD,
             "--master-port", str(MASTER_PORT)]
    if node_rank > 0:
        argv.append("--headless")
    return argv


def placement_group(plan: Plan) -> dict[str, Any] | None:
    """The Ray placement group ``vllm serve --distributed-executor-backend ray`` requests for the plan:
    ``{"bundles": [{"GPU": 1.0}, ...], "strategy": "PACK"}``, one bundle per rank; None for a plan on one
    node, which vLLM serves with its multiprocessing backend and no Ray, and for a data-parallel plan,
    whose nodes each start their own ``vllm serve`` (:func:`dp_node_serve`)."""
    p = settings_of(plan).parallel
    if p.nodes <= 1 or p.data > 1:
        return None
    return {"bundles": [dict(PG_BUNDLE) for _ in range(p.tensor * p.pipeline)], "strategy": PG_STRATEGY}


def commands(report: Report, plan: Plan) -> dict[str, tuple[str, ...]]:
    """Every command of the plan by name."""
    s = settings_of(plan)
    out: dict[str, tuple[str, ...]] = {"vllm_serve": tuple(vllm_serve(report, plan))}
    if s.parallel.nodes > 1 and s.parallel.data > 1:
        for n in range(len(dp_replicas_per_node(plan))):
            out[f"vllm_serve_dp_node{n}"] = tuple(dp_node_serve(report, plan, n))
    elif s.parallel.nodes > 1:
        out["ray_head"] = ("ray", "start", "--head", f"--port={RAY_PORT}")
        out["ray_worker"] = ("ray", "start", f"--address={HEAD}:{RAY_PORT}", "--block")
        for r in range(s.parallel.nodes):
            out[f"vllm_serve_nnodes_rank{r}"] = tuple(nnodes_serve(report, plan, r))
    return out


def describe(report: Report, plan: Plan) -> dict[str, Any]:
    """The plan's JSON entries besides its settings: the commands and the Ray placement group."""
    return {"commands": {k: list(v) for k, v in commands(report, plan).items()}, "placement_group": placement_group(plan)}


def readme(report: Report, plan: Plan) -> str:
    """A short launch README for the plan."""
    s = settings_of(plan)
    cmds = commands(report, plan)
    p = s.parallel
    dp = f" x data parallel {p.data}" if p.data > 1 else ""
    ep = f", expert parallel {p.expert} (whole experts per GPU)" if p.expert > 1 else ""
    lines = [f"# Serving {report.snapshot.id} with vLLM", "",
             (f"Layout: tensor parallel {p.tensor} x pipeline parallel {p.pipeline}{dp} = {p.tensor * p.pipeline * p.data} GPUs"
              f"{ep} on {p.nodes} node(s), {p.gpus_per_node} GPUs per node."),
             (f"KV cache (predicted by fitcheck): {s.kv_cache.tokens:,} tokens" + (" per DP replica" if p.data > 1 else "")
              + f"; {s.kv_cache.max_concurrent_sequences} concurrent"
              f" sequences of max_model_len {s.max_model_len}; KV dtype {s.kv_cache.dtype}."), ""]
    if p.nodes > 1 and p.data > 1:
        lines += ["## Data parallel across nodes", "",
                  ("Every node needs the same vLLM version, the model files (or Hub access), and the network between the nodes"
                   f" open. Replace {HEAD} with the head node's address. Node 0 serves the API; the others run headless."), ""]
        lines += [f"Node {n}:" + "\n\n       " + shlex.join(cmds[f"vllm_serve_dp_node{n}"]) + "\n"
                  for n in range(len(dp_replicas_per_node(plan)))]
    elif p.nodes > 1:
        lines += ["## Multi-node with Ray", "",
                  ("Every node needs the same vLLM version, the model files (or Hub access), and the network between the nodes"
                   f" open. Replace {HEAD} with the head node's address."), "",
                  "1. On the head node:", "", "       " + shlex.join(cmds["ray_head"]), "",
                  f"2. On each of the other {p.nodes - 1} node(s):", "", "       " + shlex.join(cmds["ray_worker"]), "",
                  "3. Check that `ray status` shows all GPUs, then on the head node:", "",
                  "       " + shlex.join(cmds["vllm_serve"]), "",
                  "## Multi-node without Ray (--nnodes)", ""]
        lines += [f"Node {r}:" + "\n\n       " + shlex.join(cmds[f"vllm_serve_nnodes_rank{r}"]) + "\n" for r in range(p.nodes)]
    else:
        lines += ["## Launch", "", "       " + shlex.join(cmds["vllm_serve"]), ""]
    lines += ["vLLM logs 'Available KV cache memory' and 'GPU KV cache size: N tokens' at start-up: compare them with the",
              "prediction above (`fitcheck plan --runtime vllm --json` shows it per GPU).", ""]
    return "\n".join(lines)


def plan_file(report: Report, plan: Plan) -> str:
    """The plan file (``--config``): the layout and engine settings, the commands, and what fitcheck
    predicts per rank. It has the ``load``/``generate``/``predicted`` blocks of every plan file, so
    ``fitcheck verify`` recognises it (and says that vLLM plans are not run here)."""
    s = settings_of(plan)
    doc = {
        "format": PLAN_FORMAT,
        "runtime": "vllm",
        "model": report.snapshot.id,
        "revision": report.snapshot.revision,
        "commit": report.snapshot.commit,
        "hardware": report.hardware.name,
        "label": plan.label,
        **s.to_dict(),
        **describe(report, plan),
        "load": {"command": list(vllm_serve(report, plan))},
        "generate": {"max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs, "users": s.users},
        "predicted": {"memory": {d: m.to_dict() for d, m in plan.memory.items()}, "kv_cache": s.kv_cache.to_dict(),
                      "tokens_per_s": plan.speed.tokens_per_s},
    }
    return json.dumps(doc, indent=2) + "\n"
