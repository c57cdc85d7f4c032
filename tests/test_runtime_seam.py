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
    # a CPU plan also estimates its load and first token (benchmarks/speed, issue 13 item 3)
    assert set(plan["speed"]) >= {"load_s", "first_token_s"} and plan["speed"]["load_s"] > 0
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
    # "speed" is the fastest estimate, on accelerators or not (issue 13 item 2)
    assert solve(plans, "speed", where="m").chosen.settings == _Toy(1)
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


@dataclass(frozen=True, slots=True)
class _ToyFacts:
    parameters: int
    download_bytes: int

    def to_dict(self) -> dict:
        return {"parameters": self.parameters, "download_bytes": self.download_bytes}


class ToyRuntime:
    """A second runtime for the seam tests: it runs any safetensors repo, at 1e9 tokens/s."""

    name = "toy"
    engines = ("toy-engine",)
    version = "toy-1"

    def select(self, listing, config):
        from planner.core.records import FileSelection

        files = tuple(f.path for f in listing if f.path.endswith(".safetensors"))
        return (FileSelection("safetensors", files, files),) if files else ()

    def model(self, snapshot, cached=None):
        return _ToyFacts(sum(t.nbytes for t in snapshot.tensors), 1)

    def plans(self, model, hardware, request):
        return [replace(_plan(1, tps=1e9), runtime="toy-engine", label="toy plan")]

    def reprice(self, model, hardware, request, plan):
        return plan

    def min_bytes(self, model):
        return 0

    def describe_model(self, report):
        return {"toy_parameters": report.footprint.parameters}

    def describe_plan(self, report, plan):
        return {"toy": {"parameters": report.footprint.parameters}}

    def emit(self, report, plan, options):
        from planner.runtimes.base import Artifacts

        return Artifacts(files={"run.txt": f"toy run of {report.snapshot.id}"}, main="run.txt")

    def verify_argv(self, plan_doc, plan_path, out_path):
        return None


@pytest.fixture
def with_toy_runtime(monkeypatch):
    monkeypatch.setitem(registry.RUNTIMES, "toy", f"{__name__}:ToyRuntime")
    registry.get.cache_clear()
    yield
    registry.get.cache_clear()


def test_auto_ranks_the_plans_of_every_runtime_that_runs_the_repo_in_one_table(tiny_models, with_toy_runtime) -> None:
    r = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64))
    assert r.solution is not None and r.solution.chosen.runtime == "toy-engine"  # 1e9 tok/s beats any CPU plan
    assert r.runtime == "toy" and [o.runtime for o in r.others] == ["transformers"]
    assert any(p.runtime == "transformers" for p in r.solution.alternatives)
    doc = report_dict(r)
    assert doc["plan"]["toy"]["parameters"] == r.footprint.parameters > 0
    # every plan is described by its own runtime, from that runtime's facts
    transformers_plans = [a for a in doc["alternatives"] if a["runtime"] == "transformers"]
    assert transformers_plans and all("device_map" in a and "toy" not in a for a in transformers_plans)
    assert [o["runtime"] for o in doc["model"]["also_planned_by"]] == ["transformers"]
    # emit goes to the chosen plan's runtime, and to another plan's runtime when asked for that plan
    assert api.emit(r).main == "run.txt"
    other = next(p for p in r.solution.alternatives if p.runtime == "transformers")
    assert "plan.json" in api.emit(r, other).files
    # naming one runtime plans with that one only
    only = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64), runtime="transformers")
    assert only.others == () and {p.runtime for p in (only.solution.chosen, *only.solution.alternatives)} == {"transformers"}


def test_runtimes_that_plan_only_when_asked_stay_out_of_auto(tiny_models, with_toy_runtime, monkeypatch) -> None:
    monkeypatch.setattr(registry, "ASKED_ONLY", registry.ASKED_ONLY | {"toy"})
    r = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64))
    assert r.runtime == "transformers" and r.others == ()
    asked = api.plan(str(tiny_models["llama"]), hardware=HW, constraints=Constraints(context=64), runtime="toy")
    assert asked.runtime == "toy" and asked.solution.chosen.label == "toy plan"
