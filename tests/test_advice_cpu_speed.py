"""Issue 13 item 3: the CPU speed model is calibrated from the committed benchmark
(benchmarks/speed/results-fit.json, checked against results-check.json), ranks plans by the time to an answer (the load included), and
the emitted script names the package bitsandbytes' fast CPU path needs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from planner import api
from planner.core.records import Constraints, Hardware
from planner.core.units import GiB
from planner.runtimes.transformers.emit import CPU_NF4_FAST_PATH
from planner.runtimes.transformers.speed import cpu_decode_seconds, cpu_load_seconds
from planner.sources import catalog

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "speed"
# The fit run (the constants come from it: 2 and 16 layers) and the check run (4 and 8 layers,
# out of sample), both on an idle machine.
RUNS = {"fit": SPEED / "results-fit.json", "check": SPEED / "results-check.json"}
# Schemes whose measured speeds differ by less than this are ties: the rounds of one
# configuration spread by 7-19 % on the idle machine (benchmarks/speed/RESULTS.md).
TIE = 0.10


def _bench():
    spec = importlib.util.spec_from_file_location("cpu_speed", SPEED / "cpu_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _measured(run: str) -> dict[tuple[str, str, int], float]:
    """Median decode tokens/s (wall) per (dtype, quantization, layers)."""
    doc = json.loads(RUNS[run].read_text())
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in doc["runs"]:
        if "error" not in r:
            groups.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r["decode_tok_s"])
    return {k: _bench()._median(v) for k, v in groups.items()}


def _predicted(dtype: str, quant: str, layers: int) -> float:
    """Predicted decode tokens/s of the benchmark model on the benchmark's 2-vCPU machine."""
    return 1 / cpu_decode_seconds(params=_bench().param_counts(layers), quantization=quant, dtype=dtype, cpu_count=2,
                                  ram_bandwidth=None)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_decode_predictions_are_within_30_percent_of_the_measurements(run: str) -> None:
    measured = _measured(run)
    assert len(measured) >= 8
    for (dtype, quant, layers), tok_s in measured.items():
        assert abs(_predicted(dtype, quant, layers) - tok_s) <= 0.3 * tok_s, (dtype, quant, layers, tok_s)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_ranking_is_right_for_every_pair_of_schemes_that_is_not_a_tie(run: str) -> None:
    measured = _measured(run)
    pairs = 0
    for a in measured:
        for b in measured:
            if a[2] == b[2] and measured[a] > measured[b] * (1 + TIE):
                pairs += 1
                assert _predicted(*a) > _predicted(*b), (a, b)
    assert pairs >= 4  # nf4 against each other scheme at both depths, at least


def _cpu_box(ram: int = 16) -> Hardware:
    return Hardware(name="cpu box", source="test", gpus=(), ram_total=ram * GiB, ram_free=ram * GiB, disk_free=200 * GiB,
                    cache_disk_free=200 * GiB, cpu_count=2)


def test_a_cpu_machine_does_not_pick_bnb_when_16_bit_fits() -> None:
    snap = catalog.lookup("meta-llama/Llama-3.2-1B")
    r = api.plan(snap.id, hardware=_cpu_box(), constraints=Constraints(context=512), snapshot=snap)
    chosen = r.solution.chosen
    assert chosen.settings.scheme.quantization == "none", chosen.label
    by = {(p.settings.scheme.quantization, p.settings.scheme.dtype): p for p in [chosen, *r.solution.alternatives]}
    bf16, nf4 = by[("none", "bfloat16")], by[("nf4", "bfloat16")]
    # bnb quantizes for tens of seconds at load where bf16 maps the checkpoint (issue: 48 s against 1.3 s)
    assert nf4.speed.load_s > 10 * bf16.speed.load_s
    assert nf4.speed.first_token_s > bf16.speed.first_token_s


def test_load_model_matches_the_issue_measurement_in_kind() -> None:
    counts = _bench().param_counts(16)  # Llama-3.2-1B has 16 layers
    nf4 = cpu_load_seconds(params=counts, quantization="nf4", dtype="bfloat16", stored_dtype="bfloat16")
    bf16 = cpu_load_seconds(params=counts, quantization="none", dtype="bfloat16", stored_dtype="bfloat16")
    assert 30 < nf4 < 80 and bf16 < 5  # issue 13: 48 s and 1.3 s


@pytest.mark.parametrize("quant", ["nf4"])
def test_the_script_names_the_fast_path_package(quant: str) -> None:
    snap = catalog.lookup("meta-llama/Llama-3.2-1B")
    r = api.plan(snap.id, hardware=_cpu_box(), constraints=Constraints(context=512, quantization=quant), snapshot=snap)
    out = api.emit(r)
    assert CPU_NF4_FAST_PATH in out.packages
    assert "kernels" in out.files["load.py"].split('"""')[1]
    assert any("`kernels`" in n for n in r.solution.chosen.notes)
    bf16 = api.plan(snap.id, hardware=_cpu_box(), constraints=Constraints(context=512, quantization="none"), snapshot=snap)
    assert CPU_NF4_FAST_PATH not in api.emit(bf16).packages
