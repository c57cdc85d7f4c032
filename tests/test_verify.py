"""``fitcheck verify`` end to end on CPU: plan a small model served by the fake Hub, run the plan's
load and generate in verify's child process, and hold the prediction to the accuracy target
(within 5 % or 64 MiB of the measured peak, whichever is larger; benchmarks/accuracy).

The models are small (~7M parameters), so the peak is mostly the fixed cost of a torch process,
which is exactly what must be right for every model. Each verify run takes a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakehub import FakeHub
from machines import ram_forcing_disk
from planner.core.units import MiB

FITCHECK = [sys.executable, "-m", "planner.cli.main"]
# The e2e tests' model: big enough for a disk-offload window, small enough to load in a second.
MODEL = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=4096)
TOL_FRACTION, TOL_FLOOR = 0.05, 64 * MiB


def _run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub")}
    return subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)


def _assert_within_target(doc: dict) -> None:
    for name, d in doc["devices"].items():
        assert isinstance(d["predicted_peak"], int) and isinstance(d["measured_peak"], int), name
        if name == "disk":
            assert d["predicted_peak"] == d["measured_peak"]
            continue
        tol = max(TOL_FRACTION * d["measured_peak"], TOL_FLOOR)
        err = d["predicted_peak"] - d["measured_peak"]
        assert abs(err) <= tol, f"{name}: predicted {d['predicted_peak'] / MiB:.0f} MiB, measured {d['measured_peak'] / MiB:.0f} MiB"
        assert d["components"]["weights"]["measured"] > 0


@pytest.fixture
def served(tiny_models, hub: FakeHub, repo_id: str) -> str:
    hub.add_local_model(repo_id, tiny_models.build("llama", **MODEL))
    return repo_id


def test_plan_verify_bf16(served: str, tmp_path: Path) -> None:
    r = _run("plan", served, "--ram", "8GiB", "--dtype", "bfloat16", "--quantization", "none", "--context", "256",
             "--verify", "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)["verify"]
    assert doc["ok"] is True and set(doc["devices"]) == {"cpu"}
    assert doc["generated_tokens"] == 32
    _assert_within_target(doc)


def test_verify_plan_file_nf4(served: str, tmp_path: Path) -> None:
    config = tmp_path / "plan.json"
    r = _run("plan", served, "--ram", "8GiB", "--quantization", "nf4", "--context", "256", "--config", str(config), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(config.read_text())["load"]["bitsandbytes"]["load_in_4bit"] is True
    r = _run("verify", str(config), "--json", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True
    _assert_within_target(doc)


def test_plan_verify_disk_offload(served: str, tmp_path: Path, hub: FakeHub) -> None:
    ram = ram_forcing_disk(served, context=256)
    r = _run("plan", served, "--ram", f"{ram}B", "--dtype", "bfloat16", "--quantization", "none", "--context", "256",
             "--offload-dir", str(tmp_path / "offload"), "--verify", "--json", tmp=tmp_path)
    doc = json.loads(r.stdout)
    assert set(doc["plan"]["device_map"].values()) == {"cpu", "disk"}
    verify = doc["verify"]
    assert set(verify["devices"]) == {"cpu", "disk"}
    _assert_within_target(verify)
    assert r.returncode == (0 if verify["ok"] else 1)


def test_verify_fails_when_the_peak_passes_the_capacity(served: str, tmp_path: Path) -> None:
    config = tmp_path / "plan.json"
    r = _run("plan", served, "--ram", "8GiB", "--dtype", "bfloat16", "--quantization", "none", "--context", "64",
             "--config", str(config), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(config.read_text())
    plan["predicted"]["cpu"]["capacity"] = 100 * MiB  # a torch process alone needs more than this
    config.write_text(json.dumps(plan))
    r = _run("verify", str(config), "--json", tmp=tmp_path)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["devices"]["cpu"]["over_capacity"] is True
    assert doc["devices"]["cpu"]["measured_peak"] > 100 * MiB
    text = _run("verify", str(config), tmp=tmp_path)
    assert text.returncode == 1 and "OVER CAPACITY" in text.stdout and text.stdout.rstrip().endswith("plan assumed.")
