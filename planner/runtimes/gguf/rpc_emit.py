"""What runs an RPC plan (planner.runtimes.gguf.rpc): one ``ggml-rpc-server`` command per worker,
the head's ``llama-server --rpc ...``, a plan file and a short README. Argv are lists, built from data.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from planner.core.records import Plan, Report
from planner.core.units import fmt_bytes
from planner.runtimes.gguf import emit
from planner.runtimes.gguf.rpc import PROGRAM, RpcSettings, server_argv


def settings_of(p: Plan) -> RpcSettings:
    s = p.settings
    if not isinstance(s, RpcSettings):
        raise TypeError(f"not an RPC plan: {p.runtime}")
    return s


def servers(p: Plan) -> dict[str, tuple[str, ...]]:
    """Worker address -> its rpc-server argv, in --rpc order."""
    s = settings_of(p)
    return {h: server_argv(s, k) for k, h in enumerate(s.hosts, start=1)}


def commands(r: Report, p: Plan) -> dict[str, tuple[str, ...]]:
    """Every command by name: ``llama_server`` (the head) and ``rpc_server_<host>`` per worker."""
    return {"llama_server": emit.llama_server(r, p), **{f"rpc_server_{h}": argv for h, argv in servers(p).items()}}


def describe(r: Report, p: Plan) -> dict[str, Any]:
    """The plan's JSON entries besides its settings: ``commands.llama_server`` and
    ``commands.rpc_server{<host>: argv}``."""
    return {"commands": {"llama_server": list(emit.llama_server(r, p)),
                         "rpc_server": {h: list(argv) for h, argv in servers(p).items()}}}


def plan_file(r: Report, p: Plan) -> str:
    """The plan file: the settings, the commands and the prediction per host. ``fitcheck verify``
    recognises it and says that it is not run here (it needs the hosts)."""
    s = settings_of(p)
    doc = {"runtime": "gguf", "engine": s.engine, "label": p.label, "hardware": r.hardware.name,
           "load": {**s.to_dict()["gguf"], "source": r.snapshot.source},
           "generate": {"new_tokens": r.constraints.new_tokens, "context": r.constraints.context, "batch": r.constraints.batch},
           "predicted": {d: m.to_dict() for d, m in p.memory.items()}, "tokens_per_s": p.speed.tokens_per_s,
           **describe(r, p)}
    return json.dumps(doc, indent=2) + "\n"


def readme(r: Report, p: Plan) -> str:
    """How to start the plan, host by host."""
    s = settings_of(p)
    lines = [f"# {r.snapshot.id} ({s.quant}) across {len(s.hosts) + 1} hosts with llama.cpp RPC", "",
             f"Plan: {p.label}.", "",
             "Build llama.cpp with `-DGGML_RPC=ON` (and the GPU backend) on every host. Replace the worker names "
             "below with their addresses (or plan with `--rpc-hosts`). The RPC server is insecure: run it only on a "
             "trusted network (tools/rpc/README.md).", ""]
    for k, (h, argv) in enumerate(servers(p).items(), start=1):
        devs = ", ".join(s.servers[k - 1]) if k - 1 < len(s.servers) else ""
        lines += [f"## Worker {h} (node{k}: {devs})", "", "    " + shlex.join(argv), ""]
    lines += [f"Builds from before June 2026 name the program `rpc-server` instead of `{PROGRAM}`.", "",
              "## Head (node0)", "", "    " + shlex.join(emit.llama_server(r, p)), "",
              "## Predicted memory", ""]
    lines += [f"- {d}: {fmt_bytes(m.required)} of {fmt_bytes(m.capacity)} usable" for d, m in p.memory.items()]
    lines += ["", *[f"- {n}" for n in p.notes], ""]
    return "\n".join(lines)
