"""The GPU calibration script runs end to end in its CPU dry-run mode (no GPU is lent to CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_plans_loads_measures_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_calibration.py"), "--dry-run", "--only", "llama-3.2-1b",
                        "--runtimes", "transformers", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    raw = json.loads((out / "raw.json").read_text())
    (row,) = raw["rows"]
    assert raw["meta"]["dry_run"] is True and row["model"] == "llama-3.2-1b"
    cpu = row["verify"]["devices"]["cpu"]
    assert cpu["measured_peak"] > 0 and cpu["predicted_peak"] > 0
    weights = cpu["components"]["weights"]
    assert abs(weights["measured"] - weights["predicted"]) <= 0.01 * weights["measured"]
    assert "DRY RUN" in (out / "RESULTS.md").read_text()
    assert set(json.loads((out / "constants.json").read_text())) >= {"cuda_context_bytes", "allocator_slack_fraction"}


def test_dry_run_runs_the_other_runtimes_cases_as_children(tmp_path: Path) -> None:
    out = tmp_path / "cal"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_calibration.py"), "--dry-run", "--runtimes",
                        "diffusers,training,vllm", "--budget-s", "300", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ran = json.loads((out / "raw.json").read_text())["meta"]["runtimes"]
    assert ran["diffusers"]["returncode"] == 0 and (out / "diffusers" / "RESULTS.md").exists()
    assert "skipped" in ran["training"] and "skipped" in ran["vllm"]  # GPU-only cases: never faked on the CPU
    assert "diffusers: exit 0" in (out / "RESULTS.md").read_text()
