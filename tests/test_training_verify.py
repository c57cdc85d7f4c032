"""`fitcheck verify` of training plans: a full, a LoRA and a QLoRA plan of a tiny random-weight
Llama run two optimizer steps on CPU in a child (train.py --report, MALLOC_MMAP_THRESHOLD_=65536),
and the report sets each phase's measured peak RSS against the plan's prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.api import emit, plan, resolve_hardware
from planner.core.errors import VerifyError
from planner.core.records import Constraints
from planner.report.verify import render_verification, verify_plan_file

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}  # as tests/test_training_emit.py
MiB = 2**20
# the benchmark target of docs/accuracy.md: within 5 % or 64 MiB, whichever is larger
TARGET_PCT, TARGET_BYTES = 5.0, 64 * MiB


def _plan_file(folder: Path, tmp: Path, method: str, optimizer: str, *, hardware: str = "cpu-laptop-16gb",
               extra: tuple = ()) -> Path:
    c = Constraints(batch=2, options=tuple(sorted({"train": method, "optimizer": optimizer, "gradient_checkpointing": "off",
                                                    "seq": 64, "lora_r": 8, **dict(extra)}.items())))
    r = plan(str(folder), hardware=resolve_hardware(hardware=hardware), constraints=c, runtime="training")
    assert r.fits, r.rejected
    path = tmp / f"{method}-{optimizer}.json"
    path.write_text(emit(r).files["plan.json"])
    return path


@pytest.mark.parametrize("method,optimizer", [("full", "adamw"), ("lora", "adamw"), ("qlora", "paged-adamw-8bit")])
def test_verify_measures_each_phase_of_a_training_plan(tiny_models, tmp_path, method, optimizer):
    folder = tiny_models.build("llama", "float32", **TINY)
    path = _plan_file(folder, tmp_path, method, optimizer)
    doc = json.loads(path.read_text())
    v = verify_plan_file(path, timeout=600)
    out = v.to_dict()
    cpu = out["devices"]["cpu"]
    comps = cpu["components"]
    assert set(comps) == {"weights", "forward", "backward", "step", "peak"}
    # real measurements: the child's RSS holds torch (well over 100 MiB), and the run trained
    assert all(comps[k]["measured"] > 100 * MiB for k in ("forward", "backward", "step", "peak"))
    assert comps["peak"]["measured"] == max(comps[k]["measured"] for k in ("forward", "backward", "step")) or \
        comps["peak"]["measured"] >= comps["step"]["measured"]
    assert len(v.raw["losses"]) == 2 and all(x > 0 for x in v.raw["losses"])
    assert v.raw["trainable_parameters"] == doc["training"]["trainable_parameters"]
    assert v.raw["malloc_mmap_threshold"] == 65536
    assert comps["weights"]["measured"] > 0
    # the predictions are the plan file's (not re-derived here)
    for k in ("forward", "backward", "step"):
        assert comps[k]["predicted"] == doc["predicted_phases"]["cpu"][k]
    assert comps["peak"]["predicted"] == doc["predicted"]["cpu"]["total"]
    text = render_verification(v)
    assert "backward" in text and "step" in text
    # the header tells what the run did: training steps and the last loss, not "0 tokens generated"
    assert f"2 training steps, last loss {v.raw['losses'][-1]:.3g}" in text.splitlines()[0] and "tokens" not in text.splitlines()[0]
    for k in ("forward", "backward", "step", "peak"):
        c = comps[k]
        assert abs(c["error_bytes"]) <= max(TARGET_BYTES, TARGET_PCT / 100 * c["measured"]), (method, k, c)
    assert v.ok


def test_verify_refuses_a_gpu_training_plan_before_loading(tiny_models, tmp_path):
    folder = tiny_models.build("llama", "float32", **TINY)
    path = _plan_file(folder, tmp_path, "lora", "adamw", hardware="rtx-4090")
    doc = json.loads(path.read_text())
    assert "cuda:0" in doc["predicted"]
    from planner.core.records import Hardware
    from planner.report import verify as verify_mod

    none = Hardware(name="test", source="probe", gpus=(), ram_total=16 * 2**30, ram_free=8 * 2**30, disk_free=2**40,
                    cache_disk_free=2**40)
    with pytest.raises(VerifyError, match="CPU only so far; this one trains on 1 GPU"):
        verify_mod.verify_plan_text(path.read_text(), hardware=none)


def test_a_tampered_train_block_is_refused_before_running(tiny_models, tmp_path):
    folder = tiny_models.build("llama", "float32", **TINY)
    path = _plan_file(folder, tmp_path, "full", "adamw")
    doc = json.loads(path.read_text())
    doc["train"]["optimizer"] = "__import__('os')"
    path.write_text(json.dumps(doc))
    with pytest.raises(VerifyError, match="fitcheck does not write"):
        verify_plan_file(path)
