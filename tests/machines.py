"""Test machines: a CPU-only machine of a given RAM, and the RAM at which a model needs disk offload."""

from __future__ import annotations

from planner import api
from planner.hardware.probe import apply_overrides
from planner.core.records import Hardware
from planner.core.records import Constraints
from planner.core.units import MiB


def cpu_only(ram: int, disk: int = 10**12) -> Hardware:
    """A machine with no GPU, ``ram`` bytes of free RAM and ``disk`` bytes of free disk."""
    base = Hardware(name="t", source="test", gpus=(), ram_total=1, ram_free=1, disk_free=1, cache_disk_free=1)
    return apply_overrides(base, ram=ram, disk=disk)


def ram_forcing_disk(repo: str, *, context: int) -> int:
    """A RAM size (bytes) at which bf16 fits only with part of the model on disk: binary search
    between "nothing fits" and "everything fits in RAM", then just below the latter."""
    c = Constraints(context=context, dtype="bfloat16", quantization="none")

    def placement(ram: int) -> str | None:
        r = api.plan(repo, hardware=cpu_only(ram), constraints=c)
        return r.solution.chosen.settings.placement if r.solution else None

    lo, hi = 200 * MiB, 4096 * MiB  # nothing fits at lo, everything in RAM at hi
    assert placement(lo) is None and placement(hi) == "cpu"
    while hi - lo > 64 * 1024:
        mid = (lo + hi) // 2
        if placement(mid) == "cpu":
            hi = mid
        else:
            lo = mid
    ram = hi - 4 * MiB  # just below "all in RAM": a few layers go to disk
    assert placement(ram) == "cpu+disk"
    return ram
