"""The emitted training script runs: tiny random-weight Llama models on CPU, full, LoRA and QLoRA,
with and without gradient checkpointing, two optimizer steps each; and the CLI's --train."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.api import emit, plan, resolve_hardware
from planner.cli.main import cli
from planner.core.records import Constraints

# every out_features a multiple of 32 (bnb's CPU 4-bit kernel); small enough to run in seconds
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
CASES = [  # (method, optimizer, checkpointing)
    ("full", "adamw", "off"),
    ("full", "sgd", "on"),
    ("lora", "adamw", "off"),
    ("lora", "adamw-8bit", "on"),
    ("qlora", "paged-adamw-8bit", "off"),
    ("qlora", "adafactor", "on"),
]


def _report(folder: Path, method: str, optimizer: str, ckpt: str, *, seq: int = 64, batch: int = 2):
    c = Constraints(batch=batch, options=tuple(sorted({"train": method, "optimizer": optimizer, "gradient_checkpointing": ckpt,
                                                        "seq": seq, "lora_r": 8}.items())))
    return plan(str(folder), hardware=resolve_hardware(hardware="cpu-laptop-16gb"), constraints=c, runtime="training")


@pytest.fixture(scope="module")
def scripts(tiny_models, tmp_path_factory):
    folder = tiny_models.build("llama", "float32", **TINY)
    out = {}
    root = tmp_path_factory.mktemp("train")
    for method, optimizer, ckpt in CASES:
        r = _report(folder, method, optimizer, ckpt)
        assert r.fits, r.rejected
        art = emit(r)
        d = root / f"{method}-{optimizer}-{ckpt}"
        d.mkdir()
        for name, text in art.files.items():
            (d / name).write_text(text)
        out[(method, optimizer, ckpt)] = (d, r)
    return out


def _run(d: Path) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "train.py", "--steps", "2", "--report", "report.json"], cwd=d, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((d / "report.json").read_text())


def test_emitted_scripts_train_on_cpu(scripts):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(scripts, pool.map(_run, [d for d, _ in scripts.values()])))
    for key, res in results.items():
        d, r = scripts[key]
        s = r.solution.chosen.settings
        assert (s.method, s.optimizer, s.gradient_checkpointing) == (key[0], key[1], key[2] == "on")
        assert len(res["losses"]) == 2 and all(math.isfinite(v) and v > 0 for v in res["losses"])
        # the script trains exactly the parameters the plan counted
        assert res["trainable_parameters"] == s.trainable_parameters, key
        assert set(res["phases"]) >= {"load", "forward", "backward", "step"}
        plan_doc = json.loads((d / "plan.json").read_text())
        assert plan_doc["runtime"] == "training" and plan_doc["training"]["method"] == key[0]


def test_script_is_plain_python_with_the_plan_as_one_json_literal(scripts):
    d, _ = scripts[("lora", "adamw", "off")]
    tree = ast.parse((d / "train.py").read_text())
    plan_assign = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PLAN")
    arg = plan_assign.value.args[0]
    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str)
    doc = json.loads(arg.value)
    assert doc["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_cli_train_implies_the_training_runtime(tiny_models, tmp_path):
    folder = tiny_models.build("llama", "float32", **TINY)
    res = CliRunner().invoke(cli, ["plan", str(folder), "--train", "qlora", "--seq", "64", "--batch", "2", "--hardware", "cpu-laptop-16gb",
                                   "--json", "--script", str(tmp_path / "train.py"), "--config", str(tmp_path / "plan.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    p = doc["plan"]
    assert p["runtime"] == "training"
    t = p["training"]
    assert {"method", "optimizer", "gradient_checkpointing", "precision", "seq", "batch", "trainable_parameters"} <= set(t)
    assert (t["method"], t["seq"], t["batch"], t["precision"]) == ("qlora", 64, 2, "fp32")
    cpu = p["memory"]["cpu"]
    assert {"weights", "gradients", "optimizer", "activations", "overhead", "total", "required", "capacity"} <= set(cpu)
    assert (tmp_path / "train.py").exists() and json.loads((tmp_path / "plan.json").read_text())["runtime"] == "training"


def test_cli_runtime_transformers_refuses_training_options(tiny_models):
    folder = tiny_models.build("llama", "float32", **TINY)
    res = CliRunner().invoke(cli, ["plan", str(folder), "--train", "lora", "--runtime", "transformers", "--hardware", "cpu-laptop-16gb"])
    assert res.exit_code != 0
