"""Issue 13 item 7: "X needs N on D" is the amount that makes the plan fit. Property: for every
rejection whose reasons are all of that form, the same plan (repriced) with exactly N usable on
each D fits; and N is never shown rounded down."""

from __future__ import annotations

import re
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import api
from planner.core.records import (
    DEFAULT_MARGIN_FLOOR,
    DEFAULT_MARGIN_FRACTION,
    Constraints,
    Gpu,
    Hardware,
)
from planner.core.units import GiB, MiB, fmt_bytes
from planner.runtimes.transformers.plans import reprice
from planner.sources import catalog

NEEDS = re.compile(r"needs (\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB) on (\S+), ")
UNIT = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": GiB, "TiB": 1024 * GiB}
MODELS = {m: catalog.lookup(m) for m in ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B")}


def _gpu(i: int, free: int) -> Gpu:
    return Gpu(index=i, name="GPU (test)", backend="cuda", total_bytes=free, free_bytes=free, bf16=True,
               bandwidth=900_000_000_000, pcie_bandwidth=31_500_000_000)


def _free_for(usable: int) -> int:
    """The smallest free figure whose usable part (free less the default margin) is ``usable``."""
    free = max(usable + DEFAULT_MARGIN_FLOOR, int(usable / (1 - DEFAULT_MARGIN_FRACTION)))
    while free - max(int(free * DEFAULT_MARGIN_FRACTION), DEFAULT_MARGIN_FLOOR) < usable:
        free += 1
    while free > 1 and (free - 1) - max(int((free - 1) * DEFAULT_MARGIN_FRACTION), DEFAULT_MARGIN_FLOOR) >= usable:
        free -= 1
    return free


def _with(hw: Hardware, device: str, usable: int) -> Hardware:
    free = _free_for(usable)
    if device == "cpu":
        return replace(hw, ram_free=free, ram_total=max(hw.ram_total, free))
    if device == "disk":
        return replace(hw, disk_free=free)
    i = int(device.split(":")[1])
    return replace(hw, gpus=tuple(_gpu(g.index, free) if g.index == i else g for g in hw.gpus))


def test_the_shown_figure_is_rounded_up() -> None:
    assert fmt_bytes(int(6.81 * GiB), up=True) == "6.9 GiB"
    assert fmt_bytes(6 * GiB, up=True) == "6.0 GiB"


def _check(snap, hw: Hardware, c: Constraints) -> int:
    r = api.plan(snap.id, hardware=hw, constraints=c, snapshot=snap)
    checked = 0
    for p in r.rejected:
        found = [NEEDS.search(reason) for reason in p.reasons]
        if not p.reasons or not all(found):
            continue  # a reason in other terms (no bf16, fp16 on CPU, ...): no amount fixes it
        bigger = hw
        for m in found:
            bigger = _with(bigger, m.group(3), int(float(m.group(1)) * UNIT[m.group(2)]))
        again = reprice(r.footprint, bigger, r.constraints, p)
        assert again.fits, (p.label, p.reasons, again.reasons)
        checked += 1
    return checked


def test_the_issue_case_4_gib_free() -> None:
    """With 4 GiB free the nf4 CPU plan said "needs 6.8 GiB" and fitted only from 9.5 GiB."""
    hw = Hardware(name="box", source="test", gpus=(), ram_total=8 * GiB, ram_free=4 * GiB, disk_free=500 * GiB,
                  cache_disk_free=500 * GiB)
    assert _check(MODELS["meta-llama/Llama-3.1-8B"], hw, Constraints(context=4096)) >= 5


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(model=st.sampled_from(sorted(MODELS)), ram=st.integers(1, 40), gpus=st.lists(st.integers(2, 24), max_size=2),
       disk=st.sampled_from([1, 8, 500]), context=st.sampled_from([512, 4096, 16384]))
def test_every_needs_figure_makes_the_plan_fit(model: str, ram: int, gpus: list[int], disk: int, context: int) -> None:
    hw = Hardware(name="box", source="test", gpus=tuple(_gpu(i, g * GiB) for i, g in enumerate(gpus)), ram_total=ram * GiB,
                  ram_free=ram * GiB, disk_free=disk * GiB, cache_disk_free=disk * GiB)
    _check(MODELS[model], hw, Constraints(context=context))
