"""End to end: fitcheck plans a model served by the fake Hub, writes a load script, and the script
(run unmodified, in a fresh process, downloading through HF_ENDPOINT) loads the model and
generates tokens -- for bf16 all in RAM, for bnb nf4, and with a RAM budget that forces disk offload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakehub import FakeHub
from machines import ram_forcing_disk

FITCHECK = [sys.executable, "-m", "planner.cli.main"]
# Big enough that a disk-offload window exists between "all in RAM" and "nothing fits", small
# enough to load in well under a second: ~7M parameters.
MODEL = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=4096)


def _env(hub: FakeHub, tmp: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub")}


def _plan_and_run(hub: FakeHub, tmp: Path, repo: str, *args: str) -> tuple[dict, str]:
    config, script = tmp / "plan.json", tmp / "load.py"
    env = _env(hub, tmp)
    r = subprocess.run([*FITCHECK, "plan", repo, "--config", str(config), "--script", str(script), "--context", "64",
                        "--offload-dir", str(tmp / "offload"), *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([sys.executable, str(script), "the quick brown fox"], capture_output=True, text=True, env=env,
                         cwd=tmp, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Some modules are dispatched on the CPU or the disk" not in run.stderr
    return json.loads(config.read_text()), run.stdout


@pytest.fixture
def served(tiny_models, hub: FakeHub, repo_id: str) -> str:
    hub.add_local_model(repo_id, tiny_models.build("llama", **MODEL))
    return repo_id


def test_bf16_all_in_ram(served: str, hub: FakeHub, tmp_path: Path) -> None:
    plan, out = _plan_and_run(hub, tmp_path, served, "--ram", "8GiB", "--dtype", "bfloat16", "--quantization", "none")
    assert plan["load"]["dtype"] == "bfloat16" and set(plan["load"]["device_map"].values()) == {"cpu"}
    assert out.strip()  # generated text was printed


def test_nf4(served: str, hub: FakeHub, tmp_path: Path) -> None:
    plan, out = _plan_and_run(hub, tmp_path, served, "--ram", "8GiB", "--quantization", "nf4")
    assert plan["load"]["bitsandbytes"]["load_in_4bit"] is True
    assert out.strip()


def test_ram_budget_forces_disk_offload(served: str, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    ram = ram_forcing_disk(served, context=64)
    plan, out = _plan_and_run(hub, tmp_path, served, "--ram", f"{ram}B", "--dtype", "bfloat16", "--quantization", "none")
    placed = set(plan["load"]["device_map"].values())
    assert placed == {"cpu", "disk"}, plan["load"]["device_map"]
    assert plan["load"]["offload_folder"] == str(tmp_path / "offload")
    assert out.strip()
