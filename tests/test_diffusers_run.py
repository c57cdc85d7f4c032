"""The emitted scripts run, unmodified, on tiny random-weight pipelines (a UNet one and a
Flux-style DiT one) on the CPU, from a local folder and from the fake Hub; their peak RSS is
within the plan's CPU prediction (MALLOC_MMAP_THRESHOLD_=65536, a fresh process each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers_pipelines import cached

from planner import api
from planner.core.records import Constraints
from planner.report.verify import render_verification
from planner.core.units import MiB
from planner.hardware.profiles import load_profile

# Tiny pipelines leave out the fixed working memory of real-sized forwards (memory.py's *_FIXED,
# fitted on real shapes, 80-160 MiB): the prediction may exceed a tiny run by that much.
TINY_OVER = 256 * MiB
_MEASURE = ("import json, resource, runpy, sys; runpy.run_path('generate.py', run_name='__main__'); "
            "print(json.dumps({'peak': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))")


@pytest.fixture(scope="module")
def pipes() -> dict[str, Path]:
    return {"sd": cached("sd", fp16=True), "flux": cached("flux")}


def _run(folder: Path, out: Path, model: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    r = api.plan(model, hardware=load_profile("cpu-laptop-16gb"),
                 constraints=Constraints().with_options(resolution=(32, 32), steps=1), runtime="diffusers")
    art = api.emit(r)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in art.files.items():
        (out / name).write_text(text)
    full = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _MEASURE], cwd=out, env=full, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "fitcheck-0.png").is_file()
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak"]
    return peak, json.loads(art.files["plan.json"])


@pytest.mark.parametrize("kind", ["flux"])  # the SD script runs under verify below (the same rendering)
def test_emitted_script_runs_within_the_prediction(pipes: dict[str, Path], tmp_path: Path, kind: str) -> None:
    peak, doc = _run(pipes[kind], tmp_path / "out", str(pipes[kind]))
    predicted = doc["predicted"]["cpu"]["total"]
    assert doc["pipeline"]["device"] == "cpu" and doc["pipeline"]["steps"] == 1
    assert doc["model"]["source"] == "local"
    assert peak <= predicted, (peak / MiB, predicted / MiB)
    assert predicted - peak <= TINY_OVER, (peak / MiB, predicted / MiB)


def test_verify_measures_each_phase(pipes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    r = api.plan(str(pipes["sd"]), hardware=load_profile("cpu-laptop-16gb"),
                 constraints=Constraints().with_options(resolution=(32, 32), steps=2), runtime="diffusers")
    path = tmp_path / "plan.json"
    path.write_text(api.emit(r).files["plan.json"])
    v = api.verify(path, timeout=600)
    assert v.ok
    cpu = v.devices["cpu"]
    assert cpu.measured_peak <= cpu.predicted_peak
    assert set(v.raw["diffusers_phases"]) == {"text encoding", "denoising", "VAE decode"}
    weights = {c.name: c for c in cpu.components}["weights"]
    assert weights.measured == weights.predicted  # fp32 parameters, counted exactly
    n = v.raw["images"]
    assert n >= 1 and f"({n} image{'s' if n != 1 else ''} generated," in render_verification(v).splitlines()[0]
