"""The library API the CLI is a thin layer over: read -> model -> plans -> solve, as one call.

>>> from planner import api
>>> report = api.plan("meta-llama/Llama-3.1-8B", hardware="rtx-4090")   # doctest: +SKIP
>>> report.solution.chosen.label                                          # doctest: +SKIP
'bf16 on gpu'

Which runtime plans is chosen by ``runtime``: a registry name, or "auto" for every runtime whose
``select()`` finds files it runs in the repo (planner.runtimes.registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from planner.core.errors import NoFeasiblePlan, UsageError
from planner.core.records import Constraints, FileSelection, Hardware, ModelFacts, Plan, RepoFile, Report, Snapshot
from planner.core.units import fmt_bytes
from planner.hardware.probe import apply_overrides, probe
from planner.hardware.profiles import list_profiles, load_profile
from planner.report.verify import Verification, verify_plan_file, verify_plan_text
from planner.runtimes import registry
from planner.runtimes.base import Artifacts, Runtime
from planner.solve import context
from planner.solve.solver import solve
from planner.sources import resolve

__all__ = ["Constraints", "Report", "emit", "max_context", "plan", "plan_many", "read_model", "resolve_hardware", "verify",
           "verify_plan_text"]


def resolve_hardware(*, hardware: str | None = None, gpus: tuple[int, ...] | None = None, ram: int | None = None,
                     disk: int | None = None, offload_dir: str | None = None) -> Hardware:
    """This machine (probed) or a named profile, with overrides applied."""
    hw = load_profile(hardware) if hardware else probe(offload_dir=offload_dir)
    if gpus is not None or ram is not None or disk is not None:
        hw = apply_overrides(hw, gpus=gpus, ram=ram, disk=disk)
    return hw


class _Selector:
    """The sources layer's ``select``: the first file set a chosen runtime finds; remembers whose."""

    def __init__(self, runtime: str, where: str) -> None:
        self.runtime_name, self.where = runtime, where
        self.runtime: Runtime | None = None

    def __call__(self, listing: Sequence[RepoFile], config: Mapping[str, Any] | None) -> FileSelection:
        runtime, selection = registry.select(listing, config, name=self.runtime_name, where=self.where)[0]
        self.runtime = runtime
        return selection


def read_model(model: str, *, runtime: str = registry.AUTO, **kw: Any) -> Snapshot:
    """Read ``model`` (repo id or local folder) with the files ``runtime`` selects, tensors included."""
    return resolve.read_model(model, select=_Selector(runtime, model), **kw)


def _read(model: str, runtime: str, kw: dict[str, Any]) -> tuple[Snapshot, Runtime, Mapping[str, Any] | None]:
    select = _Selector(runtime, model)
    # the cache holds what an earlier read selected: its facts are reused only for one runtime
    named = registry.get(runtime) if runtime != registry.AUTO else registry.chosen()[0]
    snap, cached = resolve.read(model, select=select, version=named.version, **kw)
    if select.runtime is None and runtime == registry.AUTO:
        select(snap.files, snap.config)  # read from a cache or the catalog: whose files are these?
    return snap, select.runtime or named, cached


def plan(model: str, *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
         revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None, timeout: float = 30.0,
         snapshot: Snapshot | None = None, runtime: str = registry.AUTO) -> Report:
    """Read ``model``, let the runtime price every candidate on ``hardware``, and rank them.

    ``hardware`` may be a callable (e.g. the probe): it then runs while the Hub is read.
    A model that fits nowhere still returns a Report (``fits`` is False, ``rejected`` says why and
    ``suggestion`` names the smallest profile that would fit); errors reading it raise.
    """
    kw: dict[str, Any] = {"revision": revision, "token": token, "endpoint": endpoint, "timeout": timeout}
    cached: Mapping[str, Any] | None = None
    if snapshot is not None:
        rt = registry.get(runtime) if runtime != registry.AUTO else registry.chosen()[0]
        snap = snapshot
    elif callable(hardware):
        with ThreadPoolExecutor(max_workers=1) as pool:
            probing = pool.submit(hardware)
            snap, rt, cached = _read(model, runtime, kw)
            hardware = probing.result()
    else:
        snap, rt, cached = _read(model, runtime, kw)
    facts = rt.model(snap, cached)
    if snapshot is None and cached is None:
        resolve.remember(endpoint, snap, facts.to_dict(), rt.version)
    return _solved(snap, facts, rt, hardware, constraints)


def _solved(snap: Snapshot, facts: ModelFacts, rt: Runtime, hw: Hardware, c: Constraints) -> Report:
    try:
        solution = solve(rt.plans(facts, hw, c), c.prefer, where=hw.name)
    except NoFeasiblePlan as e:
        return Report(snap, facts, hw, c, None, rejected=tuple(e.rejections), suggestion=smallest_fit(facts, rt, c),
                      runtime=rt.name)
    return Report(snap, facts, hw, c, solution, rejected=solution.rejected, runtime=rt.name)


def smallest_fit(facts: ModelFacts, rt: Runtime, c: Constraints) -> str | None:
    """The smallest bundled hardware profile on which some plan fits, in words."""

    def size(hw: Hardware) -> tuple[int, int]:
        return (sum(g.total_bytes for g in hw.gpus), hw.ram_total)

    floor = rt.min_bytes(facts)
    for hw in sorted(list_profiles(), key=size):
        room = sum(g.free_bytes for g in hw.gpus if not g.unified) + hw.ram_free + (hw.disk_free if c.offload else 0)
        if room < floor:
            continue  # not even the smallest weights fit: skip solving it
        try:
            sol = solve(rt.plans(facts, hw, c), c.prefer, where=hw.name)
        except NoFeasiblePlan:
            continue
        gpu = f"{len(hw.gpus)}x {fmt_bytes(hw.gpus[0].total_bytes)} GPU" if hw.gpus else "no GPU"
        return f"{hw.name} ({gpu}, {fmt_bytes(hw.ram_total)} RAM): {sol.chosen.label}"
    return None


def plan_many(models: list[str], *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
              revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None,
              timeout: float = 30.0, runtime: str = registry.AUTO) -> list[Report]:
    """Plan several models concurrently on the same hardware (one thread per model, one HTTP pool)."""
    if callable(hardware):
        hardware = hardware()
    hw = hardware

    def one(m: str) -> Report:
        return plan(m, hardware=hw, constraints=constraints, revision=revision, token=token, endpoint=endpoint, timeout=timeout,
                    runtime=runtime)

    with ThreadPoolExecutor(max_workers=min(16, len(models))) as pool:
        return list(pool.map(one, models))


def emit(report: Report, plan: Plan | None = None, **options: Any) -> Artifacts:
    """What runs ``plan`` (default: the chosen one): files and command lines, from its runtime."""
    chosen = plan or (report.solution.chosen if report.solution else None)
    if chosen is None:
        raise UsageError("nothing fits, so there is nothing to emit")
    return registry.get(report.runtime).emit(report, chosen, options)


def max_context(report: Report) -> context.MaxContext:
    """The largest context that still fits ``report``'s chosen plan (its runtime prices each step)."""
    rt = registry.get(report.runtime)
    return context.max_context(report, lambda c, p: rt.reprice(report.footprint, report.hardware, c, p))


def verify(path: Path, **kw: Any) -> Verification:
    """Verify the plan file at ``path`` (planner.report.verify)."""
    return verify_plan_file(path, **kw)

