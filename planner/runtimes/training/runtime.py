"""Fine-tuning behind the Runtime seam (planner.runtimes.base): full, LoRA and QLoRA with
transformers + peft + bitsandbytes, on one device or data-parallel across GPUs.

Its model facts are the model layer's :class:`planner.model.footprint.Footprint` (the same
safetensors headers the transformers runtime reads); its plans carry
:class:`~planner.runtimes.training.settings.TrainingSettings`. It plans only when asked
(``--train`` or ``--runtime training``), never under "auto": a repo that loads for inference
is not a request to train it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from planner.core.errors import VerifyError
from planner.core.records import (
    Constraints,
    FileSelection,
    Hardware,
    Plan,
    RepoFile,
    Report,
    Snapshot,
)
from planner.model.arch import remote_code_note
from planner.model.footprint import ESTIMATOR_VERSION, Footprint, estimate
from planner.runtimes.base import Artifacts
from planner.runtimes.training import emit, plans
from planner.sources.formats.safetensors import SAFE_INDEX, SAFE_SINGLE


class TrainingRuntime:
    """A few optimizer steps of fine-tuning: what fits, with which optimizer and checkpointing."""

    name: ClassVar[str] = "training"
    engines: ClassVar[tuple[str, ...]] = ("training",)
    version: ClassVar[str] = "training-" + ESTIMATOR_VERSION
    #: plans clusters (Hardware.nodes): data parallel over every node's GPUs (plans.py)
    multi_node: ClassVar[bool] = True

    def select(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> Sequence[FileSelection]:
        # transformers loads model.safetensors, else the sharded index (modeling_utils
        # _get_resolved_checkpoint_files); training reads the same headers
        root = {f.path for f in listing if "/" not in f.path}
        chosen = SAFE_SINGLE if SAFE_SINGLE in root else SAFE_INDEX if SAFE_INDEX in root else None
        if chosen is None:
            return ()
        note = remote_code_note(config)
        return (FileSelection("safetensors", (chosen,), notes=(note,) if note else ()),)

    def model(self, snapshot: Snapshot, cached: Mapping[str, Any] | None = None) -> Footprint:
        return estimate(snapshot, cached)

    def plans(self, model: Any, hardware: Hardware, request: Constraints) -> list[Plan]:
        # the candidates come cheapest first, the order an expert tries them in (plans.py): the
        # solver keeps that order among plans of equal speed and precision
        return [replace(p, preference=i) for i, p in enumerate(plans.plans(_footprint(model), hardware, request))]

    def reprice(self, model: Any, hardware: Hardware, request: Constraints, plan: Plan) -> Plan:
        return plans.reprice(_footprint(model), hardware, request, plan)

    def min_bytes(self, model: Any) -> int:
        return plans.smallest(_footprint(model))

    def describe_model(self, report: Report) -> dict[str, Any]:
        fp = _footprint(report.footprint)
        a = fp.arch
        return {"model_type": a.model_type, "architectures": list(a.architectures), "parameters": fp.parameters,
                "weights_bytes": fp.stored_bytes, "download_bytes": fp.download_bytes, "stored_dtype": fp.stored_dtype,
                "layers": a.num_layers, "hidden_size": a.hidden_size, "intermediate_size": a.intermediate_size,
                "vocab_size": a.vocab_size, "max_position_embeddings": a.max_position_embeddings}

    def describe_plan(self, report: Report, plan: Plan) -> dict[str, Any]:
        return {"training": emit.training_block(plan), "commands": {k: list(v) for k, v in emit.launch_commands(plan).items()}}

    def emit(self, report: Report, plan: Plan, options: Mapping[str, Any]) -> Artifacts:
        files = {"plan.json": emit.plan_file(report, plan), "train.py": emit.script(report, plan)}
        ds = emit.ds_config(plan)
        if ds:
            files["ds_config.json"] = ds
        s = plan.settings
        for rank in range(getattr(s, "nodes", 1)):
            acc = emit.accelerate_config(plan, rank)
            if acc:
                files[emit.config_name(plan, rank)] = acc
        packages = ["torch", "transformers", "accelerate"]
        if getattr(s, "method", "full") != "full":
            packages.append("peft")
        if getattr(s, "method", "") == "qlora" or "8bit" in getattr(s, "optimizer", ""):
            packages.append("bitsandbytes")
        if ds:
            packages.append("deepspeed")
        return Artifacts(files=files, commands=emit.launch_commands(plan), packages=tuple(packages), main="train.py")

    def verify_argv(self, plan_doc: Mapping[str, Any], plan_path: str, out_path: str) -> list[str] | None:
        emit.check_plan_doc(plan_doc)
        gpus = plan_doc["train"].get("gpus", 0)
        if gpus:  # before anything loads: the child reads CPU RSS, and a launch of several ranks is accelerate's
            raise VerifyError(f"fitcheck verify runs training plans on the CPU only so far; this one trains on {gpus} GPU(s)",
                              hint="python train.py --report OUT.json (or accelerate launch ...) measures each phase on the GPU")
        # the child runs train.py --report (its measuring code) for a few steps (verify_child.py)
        return [sys.executable, "-m", "planner.runtimes.training.verify_child", plan_path, out_path]


def _footprint(model: Any) -> Footprint:
    if not isinstance(model, Footprint):
        raise TypeError(f"the training runtime plans a Footprint, not {type(model).__name__}")
    return model
