"""SGLang behind the Runtime seam (planner.runtimes.base): ``python -m sglang.launch_server`` plans.

Its model facts are the shared serving facts (:class:`planner.model.serving.ServingModel`, read by
:mod:`planner.runtimes.sglang.facts`); its plans carry
:class:`~planner.runtimes.sglang.settings.SglangSettings`. Like vLLM it plans only when asked
(planner.runtimes.registry.ASKED_ONLY), on one machine or a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from planner.core.errors import NoWeights
from planner.core.records import Constraints, FileSelection, Hardware, Plan, RepoFile, Report, Snapshot
from planner.model.serving import ServingModel
from planner.runtimes.base import Artifacts
from planner.runtimes.sglang import emit, memory, plans
from planner.runtimes.sglang.facts import FACTS_VERSION, facts
from planner.sources.formats.safetensors import SAFE_INDEX, SAFE_SINGLE, is_safe_shard


class SglangRuntime:
    """SGLang's server with tensor parallelism on one machine or across nodes (``--nnodes``)."""

    name: ClassVar[str] = "sglang"
    engines: ClassVar[tuple[str, ...]] = ("sglang",)
    version: ClassVar[str] = FACTS_VERSION
    #: plans clusters (Hardware.nodes)
    multi_node: ClassVar[bool] = True

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        # SGLang's default loader reads the root's *.safetensors (srt/model_loader/loader.py:500,
        # allow_patterns ["*.safetensors", "*.bin"], safetensors first); fitcheck sizes safetensors.
        root = {f.path for f in listing if "/" not in f.path}
        if SAFE_SINGLE in root:
            return (FileSelection("safetensors", (SAFE_SINGLE,)),)
        if SAFE_INDEX in root:
            return (FileSelection("safetensors", (SAFE_INDEX,)),)
        if any(is_safe_shard(p) for p in root):
            raise NoWeights(f"has sharded safetensors but no {SAFE_INDEX}; fitcheck cannot tell which shards SGLang loads")
        return ()

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> ServingModel:
        return facts(snapshot, cached)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        return plans.plans(_model(model), hardware, request)

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        s = emit.settings_of(plan)
        req = replace(plans.Request.of(request), tp=s.layout.tensor, kv_dtypes=(s.kv_cache.dtype,),
                      mem_fraction=None if s.mem_fraction_default else s.mem_fraction_static, online_fp8=s.quantization == "fp8")
        return plans.price(_model(model), hardware, req, tp=s.layout.tensor, kv_dtype=s.kv_cache.dtype,
                           online_fp8=s.quantization == "fp8")

    def min_bytes(self, model: Any) -> int:
        return _model(model).weight_bytes

    def describe_model(self, report: Report) -> dict[str, Any]:
        m = _model(report.footprint)
        return {"parameters": m.parameters, "active_parameters": m.active_parameters, "weights_bytes": m.weight_bytes,
                "download_bytes": m.download_bytes, "stored_dtype": m.quant_detail or m.torch_dtype,
                "architectures": list(m.architectures), "model_type": m.model_type, "layers": m.num_layers,
                "attention_heads": m.num_heads, "kv_heads": m.num_kv_heads, "mla": m.mla, "experts": m.num_experts,
                "max_position_embeddings": m.max_position_embeddings, "quantization": m.quant_detail or None,
                "kv_bytes_per_token": memory.cell_size(m, 1, "auto")}

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        return emit.describe(report, plan)

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        return Artifacts(files={"plan.json": emit.plan_file(report, plan), "README.md": emit.readme(report, plan)},
                         commands=emit.commands(report, plan), packages=("sglang",), main="")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        return None  # a serving plan is checked against SGLang's own flags (tests/test_sglang_parser.py), not run here


def _model(model: Any) -> ServingModel:
    if not isinstance(model, ServingModel):
        raise TypeError(f"the sglang runtime plans a ServingModel, not {type(model).__name__}")
    return model
