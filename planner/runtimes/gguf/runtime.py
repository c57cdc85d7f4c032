"""GGUF files on llama.cpp, llama-cpp-python and Ollama behind the Runtime seam (planner.runtimes.base).

Its model facts are :class:`planner.runtimes.gguf.model.GgufModel`; its plans carry
:class:`planner.runtimes.gguf.plans.GgufSettings`. See docs/gguf.md.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from planner.core.records import (
    Constraints,
    FileSelection,
    Hardware,
    Plan,
    RepoFile,
    Report,
    Snapshot,
)
from planner.runtimes.base import Artifacts
from planner.runtimes.gguf import emit, files, plans, rpc, rpc_emit
from planner.runtimes.gguf.model import FACTS_VERSION, GgufModel, build


class GgufRuntime:
    """A quant file (or split set) of a GGUF repo, partly offloaded to GPUs as llama.cpp does."""

    name: ClassVar[str] = "gguf"
    engines: ClassVar[tuple[str, ...]] = (*plans.ENGINES, rpc.ENGINE)
    version: ClassVar[str] = FACTS_VERSION
    #: the Hub tag of the quantized derivatives it runs: ``--runtime auto`` plans the most
    #: downloaded one beside a safetensors model (planner.api)
    derivative_tag: ClassVar[str] = "gguf"
    #: plans clusters: one model across hosts with llama.cpp's RPC backend (planner.runtimes.gguf.rpc)
    multi_node: ClassVar[bool] = True

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        return files.select(listing)

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> GgufModel:
        return build(snapshot, cached)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        if hardware.nodes:
            return rpc.plans(_model(model), hardware, request)
        return plans.plans(_model(model), hardware, request)

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        if plan.runtime == rpc.ENGINE:
            return rpc.reprice(_model(model), hardware, request, plan)
        return plans.reprice(_model(model), hardware, request, plan)

    def min_bytes(self, model: Any) -> int:
        return plans.min_bytes(_model(model))

    def describe_model(self, report: Report) -> dict[str, Any]:
        m = _model(report.footprint)
        chosen = report.solution.chosen if report.solution else None
        if chosen is not None:  # the chosen file's figures, as the JSON asks
            m = m.scaled(emit.settings_of(chosen).quant)
        return {"format": "gguf", "model_type": m.arch, "architectures": [m.arch], "stored_dtype": m.quant,
                "parameters": m.parameters, "weights_bytes": m.weight_bytes, "download_bytes": m.download_bytes,
                "layers": m.n_layer, "context_length": m.n_ctx_train, "quant_read": _model(report.footprint).quant,
                "quants": [g.to_dict() for g in m.groups],
                **({"experts": m.n_expert, "experts_used": m.n_expert_used, "active_parameters": _active(m)} if m.n_expert else {})}

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        if plan.runtime == rpc.ENGINE:
            return rpc_emit.describe(report, plan)
        _text, run, env = emit.modelfile(report, plan)
        return {"commands": {"llama_server": list(emit.llama_server(report, plan)),
                             "llama_cli": list(emit.llama_server(report, plan, program="llama-cli")),
                             "ollama_run": list(run)},
                "environment": env}

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        if plan.runtime == rpc.ENGINE:
            return Artifacts(files={"plan.json": rpc_emit.plan_file(report, plan), "README.md": rpc_emit.readme(report, plan)},
                             commands=rpc_emit.commands(report, plan), main="")
        text, run, env = emit.modelfile(report, plan)
        return Artifacts(files={"plan.json": emit.plan_file(report, plan), "run_llama.py": emit.script(report, plan), "Modelfile": text},
                         commands={"llama_server": emit.llama_server(report, plan),
                                   "llama_cli": emit.llama_server(report, plan, program="llama-cli"), "ollama_run": run},
                         environment=env, packages=emit.PACKAGES, main="run_llama.py")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        if plan_doc.get("engine") == rpc.ENGINE:
            return None  # it runs on the plan's hosts, not here
        emit.check_plan_doc(plan_doc)
        return [sys.executable, "-m", "planner.runtimes.gguf.verify_child", plan_path, out_path]


def _active(m: GgufModel) -> int:
    """Parameters one token uses: the routed experts count only for the experts it is sent to
    (bytes of expert tensors scaled to elements by the file's bytes per parameter)."""
    experts = sum(la.experts for la in m.layers) * m.params // max(1, m.weight_bytes)
    return m.params - experts + experts * m.n_expert_used // max(1, m.n_expert)


def _model(model: Any) -> GgufModel:
    if not isinstance(model, GgufModel):
        raise TypeError(f"the gguf runtime plans a GgufModel, not {type(model).__name__}")
    return model
