"""vLLM behind the Runtime seam (planner.runtimes.base): serving layouts over GPUs and nodes.

Its model facts are :class:`planner.runtimes.vllm.facts.VllmModel` (from the safetensors headers
and config.json); its plans carry :class:`~planner.runtimes.vllm.settings.VllmSettings`. It is
not part of ``--runtime auto`` (planner.runtimes.registry.ASKED_ONLY): a serving plan answers
another question than "how do I load it here".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
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
from planner.runtimes.vllm import emit, plans
from planner.runtimes.vllm.facts import FACTS_VERSION, VllmModel, facts
from planner.sources.formats.safetensors import SAFE_INDEX, SAFE_SINGLE, is_safe_shard


class VllmRuntime:
    """``vllm serve`` with tensor, pipeline, data and expert parallelism (Ray, ``--nnodes`` or one
    ``--data-parallel-size-local`` command per node across nodes)."""

    name: ClassVar[str] = "vllm"
    engines: ClassVar[tuple[str, ...]] = ("vllm",)
    version: ClassVar[str] = FACTS_VERSION
    #: plans clusters (Hardware.nodes); api refuses clusters for runtimes without it
    multi_node: ClassVar[bool] = True

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        # vLLM's default loader reads the root's *.safetensors (model_executor/model_loader/
        # default_loader.py: allow_patterns ["*.safetensors"], filtered by the index when present).
        root = {f.path for f in listing if "/" not in f.path}
        if SAFE_SINGLE in root:
            return (FileSelection("safetensors", (SAFE_SINGLE,)),)
        if SAFE_INDEX in root:
            return (FileSelection("safetensors", (SAFE_INDEX,)),)
        if any(is_safe_shard(p) for p in root):
            from planner.core.errors import NoWeights

            raise NoWeights(f"has sharded safetensors but no {SAFE_INDEX}; fitcheck cannot tell which shards vLLM loads")
        return ()

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> VllmModel:
        return facts(snapshot, cached)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        return plans.plans(_model(model), hardware, request)

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        s = emit.settings_of(plan)
        ep = s.parallel.expert > 1
        req = replace(plans.Request.of(request), tp=s.parallel.tensor, pp=s.parallel.pipeline, kv_dtypes=(s.kv_cache.dtype,),
                      utilization=s.gpu_memory_utilization, online_fp8=s.quantization == "fp8", dp=s.parallel.data, ep=ep)
        return plans.price(_model(model), hardware, req, tp=s.parallel.tensor, pp=s.parallel.pipeline, kv_dtype=s.kv_cache.dtype,
                           online_fp8=s.quantization == "fp8", dp=s.parallel.data, ep=ep)

    def min_bytes(self, model: Any) -> int:
        return _model(model).weight_bytes

    def describe_model(self, report: Report) -> dict[str, Any]:
        m = _model(report.footprint)
        return {"parameters": m.parameters, "active_parameters": m.active_parameters, "weights_bytes": m.weight_bytes, "download_bytes": m.download_bytes,
                "stored_dtype": m.quant_detail or m.torch_dtype, "architectures": list(m.architectures),
                "model_type": m.model_type, "layers": m.num_layers, "attention_heads": m.num_heads, "kv_heads": m.num_kv_heads,
                "mla": m.mla, "experts": m.num_experts, "max_position_embeddings": m.max_position_embeddings,
                "quantization": m.quant_detail or None}

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        return emit.describe(report, plan)

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        return Artifacts(files={"plan.json": emit.plan_file(report, plan), "README.md": emit.readme(report, plan)},
                         commands=emit.commands(report, plan), packages=("vllm",), main="")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        return None  # a serving plan is checked against vLLM's own parser (tests/test_vllm_parser.py), not run here


def _model(model: Any) -> VllmModel:
    if not isinstance(model, VllmModel):
        raise TypeError(f"the vllm runtime plans a VllmModel, not {type(model).__name__}")
    return model
