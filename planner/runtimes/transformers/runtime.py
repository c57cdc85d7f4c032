"""transformers + accelerate + bitsandbytes behind the Runtime seam (planner.runtimes.base).

Its model facts are the :class:`planner.model.footprint.Footprint`; its plans carry
:class:`~planner.runtimes.transformers.settings.TransformersSettings`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from planner.core.records import Constraints, FileSelection, Hardware, Plan, RepoFile, Report, Snapshot
from planner.model.footprint import ESTIMATOR_VERSION, Footprint, estimate
from planner.runtimes.base import Artifacts
from planner.runtimes.transformers import emit, files, plans


class TransformersRuntime:
    """``from_pretrained`` with a device_map: dtype, bnb quantization, CPU and disk offload."""

    name: ClassVar[str] = "transformers"
    engines: ClassVar[tuple[str, ...]] = ("transformers",)
    #: the version of its model facts: facts cached under another version are not reused
    version: ClassVar[str] = ESTIMATOR_VERSION

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        return files.select((f.path for f in listing), config)

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> Footprint:
        return estimate(snapshot, cached)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        return plans.plans(_footprint(model), hardware, request)

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        return plans.reprice(_footprint(model), hardware, request, plan)

    def min_bytes(self, model: Any) -> int:
        return plans.smallest_weights(_footprint(model))

    def describe_model(self, report: Report) -> dict[str, Any]:
        return emit.model_block(report)

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        return {"load": emit.load_settings(report, plan)}

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        kw = {"offload_dir": options.get("offload_dir", emit.DEFAULT_OFFLOAD_DIR),
              "trust_remote_code": bool(options.get("trust_remote_code", False))}
        settings = emit.load_settings(report, plan, **kw)
        return Artifacts(files={"plan.json": emit.plan_file(report, plan, **kw), "load.py": emit.script(report, plan, **kw)},
                         packages=tuple(settings["packages"]), main="load.py")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        emit.check_plan_doc(plan_doc)
        return [sys.executable, "-m", "planner.runtimes.transformers.verify_child", plan_path, out_path]


def _footprint(model: Any) -> Footprint:
    if not isinstance(model, Footprint):
        raise TypeError(f"the transformers runtime plans a Footprint, not {type(model).__name__}")
    return model

