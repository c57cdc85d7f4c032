"""diffusers behind the Runtime seam (planner.runtimes.base).

Its model facts are :class:`~planner.runtimes.diffusers.facts.PipelineFacts`; its plans carry
:class:`~planner.runtimes.diffusers.settings.DiffusersSettings`.
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
from planner.runtimes.diffusers import emit, facts, files, plans


class DiffusersRuntime:
    """``DiffusionPipeline.from_pretrained``: dtype, offload modes, VAE slicing/tiling, bnb components."""

    name: ClassVar[str] = "diffusers"
    engines: ClassVar[tuple[str, ...]] = ("diffusers",)
    version: ClassVar[str] = facts.FACTS_VERSION

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        return files.select(f.path for f in listing)

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> facts.PipelineFacts:
        if cached is not None:
            return facts.from_dict(cached)
        return facts.build(snapshot)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        return plans.plans(_facts(model), hardware, request)

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        return plans.reprice(_facts(model), hardware, request, plan)

    def min_bytes(self, model: Any) -> int:
        return plans.smallest(_facts(model))

    def describe_model(self, report: Report) -> dict[str, Any]:
        return emit.model_block(_facts(report.footprint))

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        return {"diffusers": emit.plan_block(_facts(report.footprint), plan)}

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        offload_dir = str(options.get("offload_dir") or emit.DEFAULT_OFFLOAD_DIR)
        fx = _facts(report.footprint)
        return Artifacts(files={"plan.json": emit.plan_file(report, fx, plan, offload_dir=offload_dir),
                                "generate.py": emit.script(report, fx, plan, offload_dir=offload_dir)},
                         packages=emit.packages(plan), main="generate.py")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        emit.check_plan_doc(plan_doc)
        return [sys.executable, "-m", "planner.runtimes.diffusers.verify_child", plan_path, out_path]


def _facts(model: Any) -> facts.PipelineFacts:
    if not isinstance(model, facts.PipelineFacts):
        raise TypeError(f"the diffusers runtime plans PipelineFacts, not {type(model).__name__}")
    return model
