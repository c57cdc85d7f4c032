"""Solver cases kept as data (tests/solver_cases/*.json), run by one parametrised test.

Each case names a model (a catalog entry or a synthetic layout), hardware (a profile, or GPU /
RAM / disk sizes), constraints, and what must come out: the chosen dtype, quantization and
placement, or no fit, and rejections that must be present with their reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures_models import decoder_tensors
from planner.sources import catalog
from planner.api import Report, plan
from planner.hardware.probe import apply_overrides
from planner.hardware.profiles import load_profile
from planner.core.records import Gpu, Hardware, Snapshot, Tensor
from planner.core.records import Constraints
from planner.core.units import parse_size, tensor_nbytes

CASES = Path(__file__).parent / "solver_cases"
DATA = Path(__file__).parent / "data"
SYNTHETIC = {
    "llama-3.1-70b": (DATA / "llama-3.1-70b.config.json",
                      dict(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)),
}


def synthetic_snapshot(name: str) -> Snapshot:
    config_path, layout = SYNTHETIC[name]
    tensors = tuple(Tensor(n, d, s, tensor_nbytes(d, _numel(s)), "model.safetensors") for n, (d, s) in decoder_tensors(**layout).items())
    return Snapshot(id=f"synthetic/{name}", revision="main", commit=None, source="local", config=json.loads(config_path.read_text()),
                    files=(), weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def case_hardware(spec: dict) -> Hardware:
    if "profile" in spec:
        return load_profile(spec["profile"])
    base = Hardware(name="case", source="test", gpus=(), ram_total=1, ram_free=1, disk_free=1, cache_disk_free=1)
    gpus = tuple(parse_size(g) for g in spec.get("gpus", ()))
    hw = apply_overrides(base, gpus=gpus, ram=parse_size(spec["ram"]), disk=parse_size(spec["disk"]))
    # An override GPU is generic (no bandwidth); give it an RTX-class bandwidth so speed ranks are meaningful.
    return Hardware(**{**{f: getattr(hw, f) for f in hw.__dataclass_fields__},
                       "gpus": tuple(Gpu(**{**{f: getattr(g, f) for f in g.__dataclass_fields__}, "bandwidth": 900_000_000_000,
                                            "pcie_bandwidth": 31_500_000_000}) for g in hw.gpus)})


def run_case(case: dict) -> Report:
    model = case["model"]
    snap = catalog.lookup(model["catalog"]) if "catalog" in model else synthetic_snapshot(model["synthetic"])
    assert snap is not None
    return plan(snap.id, hardware=case_hardware(case["hardware"]), constraints=Constraints(**case.get("constraints", {})), snapshot=snap)


@pytest.mark.parametrize("path", sorted(CASES.glob("*.json")), ids=lambda p: p.stem)
def test_solver_case(path: Path) -> None:
    case = json.loads(path.read_text())
    r = run_case(case)
    want = case["expect"]
    assert r.fits == want["fits"], [p.reasons for p in r.rejected][:6]
    if not r.fits:
        if want.get("suggestion"):
            assert r.suggestion, "a no-fit result names the smallest hardware that fits"
        return
    p = r.solution.chosen
    if "dtype" in want:
        assert p.settings.scheme.dtype == want["dtype"], p.label
    if "quantization" in want:
        assert p.settings.scheme.quantization == want["quantization"], p.label
    if "quantization_in" in want:
        assert p.settings.scheme.quantization in want["quantization_in"], p.label
    if "placement" in want:
        assert p.settings.placement == want["placement"], p.label
    if "strategy" in want:
        assert p.settings.strategy == want["strategy"], p.label
    if "placement_in" in want:
        assert p.settings.placement in want["placement_in"], p.label
    if "devices" in want:
        holding = sorted(d for d, m in p.memory.items() if m.weights > 0)
        assert holding == sorted(want["devices"]), p.label
    if want.get("offloads"):
        assert any(v in ("cpu", "disk") for v in p.settings.device_map.values()) and any(isinstance(v, int) for v in p.settings.device_map.values()), p.label
    for rej in want.get("rejected", ()):
        matches = [q for q in r.rejected
                   if all(getattr(q.settings.scheme, k) == v for k, v in rej.items() if k in ("dtype", "quantization"))
                   and rej.get("placement", q.settings.placement) == q.settings.placement]
        assert matches, f"no rejected plan matches {rej}"
        assert any(rej["reason"] in reason for q in matches for reason in q.reasons), [q.reasons for q in matches]
    # every device needs no more than what the plan calls usable
    for m in p.memory.values():
        assert m.required <= m.capacity
