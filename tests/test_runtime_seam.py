"""The Runtime seam: the registry, the protocol, a generic solver, and runtime-named plans."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from machines import cpu_only
from planner import api
from planner.core.errors import NoFeasiblePlan, NoWeights, UsageError, VerifyError
from planner.core.records import Constraints, DeviceMemory, Plan, RepoFile, Settings, Speed
from planner.report.schema import report_dict
from planner.runtimes import registry
from planner.runtimes.base import Runtime
from planner.solve.solver import solve

HW = cpu_only(8 << 30)


def test_every_registered_runtime_implements_the_protocol() -> None:
    for name in registry.names():
        rt = registry.get(name)
        assert isinstance(rt, Runtime) and rt.name == name and rt.engines and rt.version


def test_an_unknown_runtime_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not one of auto, transformers"):
        registry.get("nope")


def test_auto_names_what_the_repo_holds_when_no_runtime_runs_it() -> None:
    listing = [RepoFile("consolidated.pth", 10), RepoFile("README.md", 1)]
    assert registry.get("transformers").select(listing, None) == ()
    with pytest.raises(NoWeights, match="consolidated.pth"):
        registry.select(listing, None, where="org/x")


def test_plans_carry_their_runtime_and_the_json_keeps_the_transformers_block(tiny_models) -> None:
    r = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64), runtime="transformers")
    assert r.runtime == "transformers" and r.solution is not None
    doc = report_dict(r)
    plan = doc["plan"]
    assert plan["runtime"] == "transformers"
    assert {"label", "dtype", "quantization", "placement", "strategy", "device_map", "memory", "tokens_per_s",
            "quality_bits", "offloaded_bytes", "disk_bytes", "notes", "load"} <= set(plan)
    assert "speed" not in plan  # transformers estimates tokens/s only
    # the optional memory parts of other runtimes are absent while 0
    assert not {"compute", "gradients", "optimizer"} & set(plan["memory"]["cpu"])
    json.dumps(doc)
    # auto picks the same runtime for a safetensors repo, with the same plan
    auto = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64))
    assert report_dict(auto)["plan"] == plan


@dataclass(frozen=True, slots=True)
class _Toy(Settings):
    n: int


def _plan(n: int, *, fits: bool = True, acc: bool = False, quality: int = 16, tps: float | None = 1.0,
          image_s: float | None = None, weights: int = 1) -> Plan:
    mem = {"cpu": DeviceMemory("cpu", weights, 0, 0, 0, weights, 10, 10, 0)}
    return Plan(runtime="toy", label=f"toy {n}", settings=_Toy(n), memory=mem, speed=Speed(tokens_per_s=tps, image_s=image_s),
                quality=quality, fits=fits, on_accelerators=acc)


def test_the_solver_ranks_plans_of_any_runtime_by_generic_fields() -> None:
    plans = [_plan(1, tps=5.0), _plan(2, acc=True, quality=4, tps=1.0), _plan(3, fits=False), _plan(4, quality=32, tps=2.0)]
    assert solve(plans, "speed", where="m").chosen.settings == _Toy(2)
    assert solve(plans, "quality", where="m").chosen.settings == _Toy(4)
    assert [p.settings for p in solve(plans, "speed", where="m").rejected] == [_Toy(3)]
    # seconds per image rank as a speed too: fewer seconds first
    images = [_plan(5, tps=None, image_s=4.0), _plan(6, tps=None, image_s=2.0)]
    assert solve(images, "memory", where="m").chosen.settings == _Toy(6)
    with pytest.raises(NoFeasiblePlan):
        solve([_plan(7, fits=False)], "speed", where="m")


def test_a_plan_file_names_its_runtime_and_verify_refuses_an_unknown_one(tiny_models, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], folder)
    r = api.plan(str(folder), hardware=HW, constraints=Constraints(context=64))
    doc = json.loads(api.emit(r).files["plan.json"])
    assert doc["runtime"] == "transformers"

    with pytest.raises(VerifyError, match="unknown runtime"):
        api.verify_plan_text(json.dumps({**doc, "runtime": "nope"}))
    assert replace(r.solution.chosen, label="x").label == "x"


def test_constraints_carry_runtime_options_that_each_runtime_reads_by_name():
    from planner.core.records import Constraints

    c = Constraints().with_options(quant="Q4_K_M", resolution=(512, 512))
    assert c.option("quant") == "Q4_K_M" and c.option("resolution") == (512, 512)
    assert c.option("train") is None and c.option("train", "none") == "none"
    assert c.options == (("quant", "Q4_K_M"), ("resolution", (512, 512)))  # sorted: equal requests compare equal
    assert c.with_options(quant="Q8_0").option("quant") == "Q8_0"
    hash(c)  # still a frozen, hashable record


def test_runtime_option_groups_refuse_options_of_two_runtimes(monkeypatch):
    import sys
    import types

    from planner.cli import options
    from planner.core.errors import UsageError

    for name, runtime in (("fake_a", "a"), ("fake_b", "b")):
        mod = types.ModuleType(f"tests_{name}")
        mod.OPTIONS = []
        mod.collect = (lambda rt: (lambda o: {"runtime": rt, rt: o.get(rt)} if o.get(rt) else {}))(runtime)
        monkeypatch.setitem(sys.modules, f"tests_{name}", mod)
    monkeypatch.setattr(options, "GROUPS", ("tests_fake_a", "tests_fake_b"))
    assert options.collect({"a": 1}) == ({"a": 1}, "a")
    assert options.collect({}) == ({}, None)
    with pytest.raises(UsageError):
        options.collect({"a": 1, "b": 2})
