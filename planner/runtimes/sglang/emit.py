"""What runs an SGLang plan: the ``python -m sglang.launch_server`` argv (one per node for a
cluster), a short launch README and the plan file. Every argv is a list built from data; the
README quotes them with :func:`shlex.join`.

Flags (sglang 0.5.23 turns its config fields into flags, srt/arg_groups/arg_utils.py): ``--model-path``,
``--revision``, ``--context-length``, ``--quantization``, ``--kv-cache-dtype`` (fields/model.py:51-220),
``--tp-size``, ``--nnodes``, ``--node-rank``, ``--dist-init-addr`` (fields/parallel.py:32-52),
``--mem-fraction-static``, ``--max-running-requests`` (fields/schedule.py:27-34). They are checked
against the recorded ``--help`` of 0.5.23 (tests/test_sglang_parser.py).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from planner.core.records import Plan, Report
from planner.runtimes.sglang.settings import SglangSettings

PLAN_FORMAT = 1
HEAD = "HEAD_IP"  # placeholder the user replaces with node 0's address
# The port of --dist-init-addr; SGLang has no default (the help's example is 192.168.0.2:25000,
# fields/parallel.py:32-38), so the example's port is used.
DIST_INIT_PORT = 25000


def settings_of(plan: Plan) -> SglangSettings:
    s = plan.settings
    if not isinstance(s, SglangSettings):
        raise TypeError(f"the sglang runtime emits SglangSettings, not {type(s).__name__}")
    return s


def launch_server(report: Report, plan: Plan, node_rank: int | None = None) -> list[str]:
    """The server argv of the plan; for a plan over several nodes, the one of ``node_rank``."""
    s = settings_of(plan)
    snap = report.snapshot
    argv = ["python", "-m", "sglang.launch_server", "--model-path", snap.id]
    if snap.source != "local" and snap.commit:
        argv += ["--revision", snap.commit]
    argv += ["--tp-size", str(s.layout.tensor), "--context-length", str(s.context_length),
             "--mem-fraction-static", f"{s.mem_fraction_static:g}"]
    if s.kv_cache.dtype != "auto":
        argv += ["--kv-cache-dtype", s.kv_cache.dtype]
    if s.quantization:
        argv += ["--quantization", s.quantization]
    if s.max_running_requests is not None:
        argv += ["--max-running-requests", str(s.max_running_requests)]
    if s.layout.nodes > 1:
        argv += ["--nnodes", str(s.layout.nodes), "--node-rank", str(node_rank or 0), "--dist-init-addr", f"{HEAD}:{DIST_INIT_PORT}"]
    return argv


def commands(report: Report, plan: Plan) -> dict[str, tuple[str, ...]]:
    """Every command of the plan by name: ``sglang_serve`` (node 0's), and per node for a cluster."""
    s = settings_of(plan)
    out: dict[str, tuple[str, ...]] = {"sglang_serve": tuple(launch_server(report, plan))}
    if s.layout.nodes > 1:
        for r in range(s.layout.nodes):
            out[f"sglang_serve_node{r}"] = tuple(launch_server(report, plan, r))
    return out


def describe(report: Report, plan: Plan) -> dict[str, Any]:
    """The plan's JSON entries besides its settings: the commands."""
    return {"commands": {k: list(v) for k, v in commands(report, plan).items()}}


def readme(report: Report, plan: Plan) -> str:
    """A short launch README for the plan."""
    s = settings_of(plan)
    cmds = commands(report, plan)
    lay = s.layout
    lines = [f"# Serving {report.snapshot.id} with SGLang", "",
             f"Layout: tensor parallel {lay.tensor} on {lay.nodes} node(s), {lay.gpus_per_node} GPUs per node.",
             (f"KV pool (predicted by fitcheck): {s.kv_cache.tokens:,} tokens; {s.kv_cache.max_concurrent_sequences} concurrent"
              f" sequences of context_length {s.context_length}; KV dtype {s.kv_cache.dtype}; mem_fraction_static"
              f" {s.mem_fraction_static:g}."), ""]
    if lay.nodes > 1:
        lines += [f"Every node needs the same SGLang version and the model files (or Hub access). Replace {HEAD} with node 0's"
                  " address.", ""]
        lines += [f"Node {r}:" + "\n\n       " + shlex.join(cmds[f"sglang_serve_node{r}"]) + "\n" for r in range(lay.nodes)]
    else:
        lines += ["## Launch", "", "       " + shlex.join(cmds["sglang_serve"]), ""]
    lines += ["SGLang logs 'KV Cache is allocated. #tokens: N' and 'max_total_num_tokens=N' at start-up: compare them with the",
              "prediction above (`fitcheck plan --runtime sglang --json` shows it).", ""]
    return "\n".join(lines)


def plan_file(report: Report, plan: Plan) -> str:
    """The plan file (``--config``): the layout, the server settings, the commands and what
    fitcheck predicts per rank, with the ``load``/``generate``/``predicted`` blocks every plan file
    has (``fitcheck verify`` recognises it and says SGLang plans are not run here)."""
    s = settings_of(plan)
    doc = {
        "format": PLAN_FORMAT,
        "runtime": "sglang",
        "model": report.snapshot.id,
        "revision": report.snapshot.revision,
        "commit": report.snapshot.commit,
        "hardware": report.hardware.name,
        "label": plan.label,
        **s.to_dict(),
        **describe(report, plan),
        "load": {"command": list(launch_server(report, plan))},
        "generate": {"context_length": s.context_length, "users": s.users},
        "predicted": {"memory": {d: m.to_dict() for d, m in plan.memory.items()}, "kv_cache": s.kv_cache.to_dict(),
                      "tokens_per_s": plan.speed.tokens_per_s},
    }
    return json.dumps(doc, indent=2) + "\n"
