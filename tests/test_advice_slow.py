"""Issue 13 items 4 and 5: a plan that fits but is too slow to use is marked so, with what would
be faster; a bnb label says what is really quantized (MoE fused experts stay in the load dtype)."""

from __future__ import annotations

import math

import layouts as L

from planner import api
from planner.cli import render
from planner.core.records import Constraints, Snapshot, Tensor
from planner.core.units import tensor_nbytes
from planner.hardware.profiles import load_profile
from planner.report.schema import report_dict
from planner.solve.solver import SLOW_TOKENS_PER_S, is_slow
from planner.sources import catalog


def _mixtral() -> Snapshot:
    tensors = tuple(Tensor(n, d, s, tensor_nbytes(d, math.prod(s)), "model.safetensors") for n, (d, s) in L.mixtral().items())
    return Snapshot(id="synthetic/mixtral-8x7b", revision="main", commit=None, source="local", config=L.MIXTRAL_8X7B_CONFIG,
                    files=(), weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)


def _plan(snap: Snapshot, profile: str, **c) -> api.Report:
    return api.plan(snap.id, hardware=load_profile(profile), constraints=Constraints(**c), snapshot=snap)


def test_llama_8b_via_disk_on_an_8gb_laptop_is_marked_slow_with_faster_options() -> None:
    r = _plan(catalog.lookup("meta-llama/Llama-3.1-8B"), "cpu-laptop-8gb")
    p = r.solution.chosen
    assert p.speed.tokens_per_s < SLOW_TOKENS_PER_S and is_slow(p)
    (note,) = [n for n in p.notes if n.startswith("slow:")]
    assert "more memory" in note and "usable on cpu" in note
    assert "pre-quantized" in note and "GGUF" in note and "smaller model" in note
    assert "Fits, but slow" in render.report(r)
    assert note in report_dict(r)["plan"]["notes"]


def test_mixtral_on_a_3060_is_marked_slow() -> None:
    r = _plan(_mixtral(), "rtx-3060-12gb")
    assert is_slow(r.solution.chosen)
    assert "Fits, but slow" in render.report(r)


def test_a_fast_plan_is_not_marked() -> None:
    r = _plan(catalog.lookup("meta-llama/Llama-3.1-8B"), "rtx-4090")
    assert not is_slow(r.solution.chosen)
    assert not any(n.startswith("slow:") for n in r.solution.chosen.notes)
    assert "but slow" not in render.report(r)


def test_a_bnb_mixtral_label_says_the_experts_stay_16_bit() -> None:
    r = _plan(_mixtral(), "h200", quantization="nf4")
    p = r.solution.chosen
    assert p.label.startswith("nf4 dense, bf16 experts"), p.label
    (note,) = [n for n in p.notes if "fused MoE experts" in n]
    assert "GiB" in note and "bf16" in note


def test_a_dense_bnb_label_is_unchanged() -> None:
    r = _plan(catalog.lookup("meta-llama/Llama-3.1-8B"), "rtx-4090", quantization="nf4")
    assert r.solution.chosen.label == "nf4 + bf16 on gpu"
    assert not any("experts" in n for n in r.solution.chosen.notes)


def test_check_says_a_slow_plan_fits_but_slowly() -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "planner.cli.main", "check", "meta-llama/Llama-3.1-8B", "--hardware", "cpu-laptop-8gb"]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert text.returncode == 0 and "but slowly" in text.stdout and "tokens/s" in text.stdout
    doc = json.loads(subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=120, env=env).stdout)
    assert doc["fits"] is True and doc["slow"] is True
    fast = subprocess.run([*argv[:-1], "rtx-4090", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert json.loads(fast.stdout)["slow"] is False
