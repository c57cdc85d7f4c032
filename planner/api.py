"""The library API the CLI is a thin layer over: read -> estimate -> solve, as one call.

>>> from planner import api
>>> report = api.plan("meta-llama/Llama-3.1-8B", hardware="rtx-4090")   # doctest: +SKIP
>>> report.solution.chosen.label                                          # doctest: +SKIP
'bf16 on gpu'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from planner import __version__
from planner.core.errors import NoFeasiblePlan
from planner.model.footprint import Footprint, estimate
from planner.core.records import Hardware, Plan, Snapshot
from planner.solve.solver import Constraints, Solution, solve
from planner.core.units import fmt_bytes


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a plan command shows: the model read, the machine, the constraints, the plans."""

    snapshot: Snapshot
    footprint: Footprint
    hardware: Hardware
    constraints: Constraints
    solution: Solution | None
    rejected: tuple[Plan, ...] = ()
    suggestion: str | None = None

    @property
    def fits(self) -> bool:
        return self.solution is not None

    @property
    def download_fits(self) -> bool:
        """Whether the download fits on the disk that holds the HF cache (local models: nothing to download)."""
        if self.snapshot.source == "local":
            return True
        return self.footprint.download_bytes <= self.hardware.cache_disk_free

    def to_dict(self) -> dict[str, Any]:
        from planner.report.schema import report_dict

        return report_dict(self)


def resolve_hardware(*, hardware: str | None = None, gpus: tuple[int, ...] | None = None, ram: int | None = None,
                     disk: int | None = None, offload_dir: str | None = None) -> Hardware:
    """This machine (probed) or a named profile, with overrides applied."""
    from planner.hardware.probe import apply_overrides, probe
    from planner.hardware.profiles import load_profile

    hw = load_profile(hardware) if hardware else probe(offload_dir=offload_dir)
    if gpus is not None or ram is not None or disk is not None:
        hw = apply_overrides(hw, gpus=gpus, ram=ram, disk=disk)
    return hw


def plan(model: str, *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
         revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None, timeout: float = 30.0,
         snapshot: Snapshot | None = None) -> Report:
    """Read ``model``, estimate it and solve for ``hardware``.

    ``hardware`` may be a callable (e.g. the probe): it then runs while the Hub is read.
    A model that fits nowhere still returns a Report (``fits`` is False, ``rejected`` says why and
    ``suggestion`` names the smallest profile that would fit); errors reading it raise.
    """
    from planner.sources.resolve import read_model

    if callable(hardware):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            probing = pool.submit(hardware)
            snap = snapshot or read_model(model, revision=revision, token=token, endpoint=endpoint, timeout=timeout)
            hardware = probing.result()
    else:
        snap = snapshot or read_model(model, revision=revision, token=token, endpoint=endpoint, timeout=timeout)
    fp = estimate(snap)
    if snapshot is None:
        from planner.sources.resolve import remember_estimate

        remember_estimate(endpoint, snap, fp)
    try:
        solution = solve(fp, hardware, constraints)
    except NoFeasiblePlan as e:
        return Report(snap, fp, hardware, constraints, None, rejected=tuple(e.rejections), suggestion=smallest_fit(fp, constraints))
    return Report(snap, fp, hardware, constraints, solution, rejected=solution.rejected)


def smallest_fit(fp: Footprint, constraints: Constraints) -> str | None:
    """The smallest bundled hardware profile on which some plan fits, in words."""
    from planner.hardware.profiles import list_profiles

    def size(hw: Hardware) -> tuple[int, int]:
        return (sum(g.total_bytes for g in hw.gpus), hw.ram_total)

    floor = _smallest_weights(fp)
    for hw in sorted(list_profiles(), key=size):
        room = sum(g.free_bytes for g in hw.gpus if not g.unified) + hw.ram_free + (hw.disk_free if constraints.offload else 0)
        if room < floor:
            continue  # not even the smallest weights fit: skip solving it
        try:
            sol = solve(fp, hw, constraints)
        except NoFeasiblePlan:
            continue
        gpu = f"{len(hw.gpus)}x {fmt_bytes(hw.gpus[0].total_bytes)} GPU" if hw.gpus else "no GPU"
        return f"{hw.name} ({gpu}, {fmt_bytes(hw.ram_total)} RAM): {sol.chosen.label}"
    return None


def _smallest_weights(fp: Footprint) -> int:
    """A lower bound of any plan's weights: every unit in its smallest form (nf4, or as stored)."""
    from planner.runtimes.transformers.memory.weights import unit_bytes
    from planner.core.records import Scheme

    scheme = Scheme("bfloat16", "prequantized" if fp.prequant else "nf4")
    return sum(min(unit_bytes(u, scheme, offloaded=False, prequant=fp.prequant), u.stored_bytes) for u in fp.units)


def with_constraints(report: Report, **changes: Any) -> Report:
    """Re-solve a report's model under changed constraints (no new reads)."""
    return plan(report.snapshot.id, hardware=report.hardware, constraints=replace(report.constraints, **changes), snapshot=report.snapshot)





def plan_many(models: list[str], *, hardware: Hardware | Callable[[], Hardware], constraints: Constraints = Constraints(),
              revision: str | None = None, token: str | bool | None = None, endpoint: str | None = None,
              timeout: float = 30.0) -> list[Report]:
    """Plan several models concurrently on the same hardware (one thread per model, one HTTP pool)."""
    from concurrent.futures import ThreadPoolExecutor

    if callable(hardware):
        hardware = hardware()

    def one(m: str) -> Report:
        return plan(m, hardware=hardware, constraints=constraints, revision=revision, token=token, endpoint=endpoint, timeout=timeout)

    with ThreadPoolExecutor(max_workers=min(16, len(models))) as pool:
        return list(pool.map(one, models))
