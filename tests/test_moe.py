"""MoE: every expert resident, active and total parameters reported, and when a plan must offload,
experts go first while attention, norms and routers of every layer stay on the device that runs
the model (one GPU, or the CPU) -- with a flat, disjoint device_map that transformers accepts:
proven by loading a tiny Mixtral with its experts modules on disk through the emitted script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layouts as L
from fakehub import FakeHub
from fixtures_models import sparse_repo_files
from planner import api
from planner.runtimes.transformers import emit
from planner.model.footprint import estimate
from planner.hardware.profiles import load_profile
from planner.core.records import Constraints
from planner.api import read_model
from planner.report.schema import report_dict

BF16 = Constraints(context=2048, dtype="bfloat16", quantization="none")


@pytest.fixture
def mixtral_8x7b(hub: FakeHub, repo_id: str) -> str:
    files = sparse_repo_files(L.mixtral(), shards=19)
    files["config.json"] = json.dumps(L.MIXTRAL_8X7B_CONFIG).encode()
    hub.add_repo(repo_id, files)
    return repo_id


def _flat(device_map: dict) -> None:
    assert "" not in device_map
    keys = list(device_map)
    assert not [(a, b) for a in keys for b in keys if b.startswith(a + ".")], "a parent key beside a child key"


def test_active_and_total_parameters(mixtral_8x7b: str) -> None:
    fp = estimate(read_model(mixtral_8x7b))
    assert fp.parameters == 46_702_792_704  # Mixtral-8x7B
    assert 12.8e9 < fp.active_parameters < 13.0e9  # 2 of 8 experts: "12.9B active"
    doc = report_dict(api.plan(mixtral_8x7b, hardware=load_profile("h200"), constraints=BF16))
    assert doc["model"]["parameters"] == fp.parameters and doc["model"]["active_parameters"] == fp.active_parameters


def test_one_gpu_offloads_experts_before_any_dense_layer(mixtral_8x7b: str) -> None:
    r = api.plan(mixtral_8x7b, hardware=load_profile("rtx-4090"), constraints=BF16)
    p = r.solution.chosen
    assert p.settings.placement.startswith("gpu+cpu"), p.label
    _flat(p.settings.device_map)
    off_experts = [k for k, v in p.settings.device_map.items() if k.endswith(".mlp.experts") and v in ("cpu", "disk")]
    assert off_experts
    # attention, norms and the router of every layer stay on the GPU
    for i in range(32):
        assert p.settings.device_map.get(f"model.layers.{i}", p.settings.device_map.get(f"model.layers.{i}.self_attn")) == 0
    assert p.settings.device_map["model.embed_tokens"] == 0 and p.settings.device_map["lm_head"] == 0
    assert any("experts of" in n and "streamed whole per forward" in n for n in p.notes)
    # every module name is one transformers builds for Mixtral (block_sparse_moe is renamed mlp)
    assert all(k.startswith(("model.layers.", "model.embed_tokens", "model.norm", "lm_head")) for k in p.settings.device_map)
    assert not [k for k in p.settings.device_map if "block_sparse_moe" in k]
    assert {k.rsplit(".", 1)[-1] for k in p.settings.device_map if k.startswith("model.layers.0.")} <= {
        "self_attn", "input_layernorm", "post_attention_layernorm", "gate", "experts"}


def test_several_gpus_keep_whole_layers(mixtral_8x7b: str) -> None:
    r = api.plan(mixtral_8x7b, hardware=load_profile("2x-rtx-3090"), constraints=BF16)
    multi = [p for p in (r.solution.chosen, *r.solution.alternatives) if p.settings.strategy != "single"]
    assert multi
    for p in multi:
        _flat(p.settings.device_map)
        assert not [k for k in p.settings.device_map if k.endswith(".mlp.experts")], p.label


def test_speed_reads_only_the_routed_experts(mixtral_8x7b: str) -> None:
    r = api.plan(mixtral_8x7b, hardware=load_profile("h200"), constraints=BF16)
    p = r.solution.chosen
    assert p.settings.placement == "gpu"
    hw = load_profile("h200")
    from planner.runtimes.transformers.speed import GPU_EFFICIENCY

    all_weights = p.memory["cuda:0"].weights
    dense_speed = hw.gpus[0].bandwidth * GPU_EFFICIENCY["none"] / all_weights
    active_speed = dense_speed * r.footprint.parameters / r.footprint.active_parameters
    assert 0.8 * active_speed < p.speed.tokens_per_s < 1.05 * active_speed


def test_experts_on_disk_load_and_generate_through_the_script(tiny_models, tmp_path: Path) -> None:
    folder = tiny_models.build("mixtral", hidden_size=128, intermediate_size=256, num_hidden_layers=4)
    snap = read_model(str(folder))
    c = Constraints(context=32, new_tokens=4, dtype="bfloat16", quantization="none")
    r = api.plan(str(folder), hardware=L.cpu_hardware(L.ram_forcing_disk(snap, c)), constraints=c, snapshot=snap)
    p = r.solution.chosen
    assert p.settings.placement == "cpu+disk"
    _flat(p.settings.device_map)
    on_disk = [k for k, v in p.settings.device_map.items() if v == "disk"]
    assert on_disk and all(k.endswith(".mlp.experts") for k in on_disk)
    assert all(p.settings.device_map[k] == "cpu" for k in p.settings.device_map if k.endswith((".self_attn", ".mlp.gate")))
    offload = tmp_path / "offload"
    script = tmp_path / "load.py"
    script.write_text(emit.script(r, p, offload_dir=str(offload)))
    run = subprocess.run([sys.executable, str(script), "the model fits"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip()
    # the fused experts are rewritten to the offload folder (transformers fuses w1/w2/w3 at load)
    written = sorted(f.name for f in offload.iterdir())
    assert written and all(".mlp.experts." in n for n in written)
    assert sum(f.stat().st_size for f in offload.iterdir()) >= p.memory["disk"].total
