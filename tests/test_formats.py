"""Real loads on CPU of the pre-quantized formats transformers can load here, through the script
fitcheck emits: a bitsandbytes-serialized 4-bit model (as stored), an FP8 block-scaled checkpoint
(dequantized to bf16, as transformers does without a GPU), and a gpt-oss in MXFP4 (dequantized,
its experts offloaded to disk first). Each proves one row of planner.runtimes.transformers.quantizers.RULES; one more
proves a refusal: FP8 weights whose sides are not multiples of the block cannot be dequantized.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layouts as L
from planner import api
from planner.runtimes.transformers import emit
from planner.runtimes.transformers import quantizers as formats
from planner.model.footprint import estimate
from planner.core.records import Hardware
from planner.core.records import Constraints
from planner.api import read_model

SMALL = dict(hidden_size=256, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2)
C = Constraints(context=32, new_tokens=4)


def _cpu(ram: int = 8 << 30) -> Hardware:
    return L.cpu_hardware(ram)


class _Load:
    """The emitted script of a plan, started in a child process at once (the loads run side by side)."""

    def __init__(self, r: api.Report, folder: Path, **kw) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.report, self.folder = r, folder
        self.script = folder / "load.py"
        self.script.write_text(emit.script(r, r.solution.chosen, **kw))
        self.proc = subprocess.Popen([sys.executable, str(self.script), "the model fits"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=folder, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def result(self) -> str:
        out, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err[-3000:]
        assert out.strip()
        return self.script.read_text()


@pytest.fixture(scope="module")
def loads(tiny_models, tmp_path_factory):
    """Three pre-quantized checkpoints built for real, planned on a CPU machine, their scripts started."""
    root = tmp_path_factory.mktemp("formats")
    source = tiny_models.build("llama", **SMALL)
    out = {"source": source}
    folder = L.make_bnb_checkpoint(root / "nf4", source)
    out["bnb"] = _Load(api.plan(str(folder), hardware=_cpu(), constraints=C), root / "run-bnb")
    folder = L.make_fp8_checkpoint(root / "fp8", source)
    out["fp8"] = _Load(api.plan(str(folder), hardware=_cpu(), constraints=C), root / "run-fp8")
    folder = L.make_mxfp4_gpt_oss(root / "gpt-oss-mxfp4")
    snap = read_model(str(folder))
    r = api.plan(str(folder), hardware=_cpu(L.ram_forcing_disk(snap, C)), constraints=C, snapshot=snap)
    out["mxfp4"] = _Load(r, root / "run-mxfp4", offload_dir=str(root / "offload"))
    out["offload"] = root / "offload"
    yield out
    for load in out.values():
        if isinstance(load, _Load):
            if load.proc.poll() is None:
                load.proc.kill()
            load.proc.communicate()  # closes the pipes of a run no test waited for


def _params(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        return sum(f.get_slice(k).get_shape() and _numel(f.get_slice(k).get_shape()) for k in f.keys())


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_bnb_serialized_4bit_loads_as_stored(loads) -> None:
    r = loads["bnb"].report
    fp = r.footprint
    assert fp.prequant.method == "bitsandbytes" and fp.parameters == _params(loads["source"])
    p = r.solution.chosen
    assert p.settings.scheme.quantization == "prequantized" and p.settings.placement == "cpu"
    load = emit.load_settings(r, p)
    assert load["bitsandbytes"] is None and "bitsandbytes" in load["packages"]
    assert load["prequantized"] == {"method": "bitsandbytes", "action": "as stored", "reason": load["prequantized"]["reason"],
                                    "config": None, "requires": [["bitsandbytes", "bitsandbytes"]]}
    text = loads["bnb"].result()
    assert "BitsAndBytesConfig" not in text and "Needs: torch, transformers, accelerate, bitsandbytes" in text


def test_fp8_block_scaled_is_dequantized_on_cpu_as_planned(loads) -> None:
    r = loads["fp8"].report
    source = loads["source"]
    assert r.footprint.parameters == _params(source) and not r.footprint.dequantize_blockers
    p = r.solution.chosen
    assert p.settings.scheme.quantization == "none" and p.settings.scheme.dtype == "bfloat16", p.label
    # dequantized, the weights are exactly the bf16 model's
    assert p.memory["cpu"].weights == (source / "model.safetensors").stat().st_size - _header(source / "model.safetensors")
    assert any("quantizer_finegrained_fp8.py:38-44" in n for n in p.notes)
    text = loads["fp8"].result()
    assert "FineGrainedFP8Config(**{'dequantize': True, 'modules_to_not_convert': None})" in text


def test_fp8_with_uneven_blocks_is_refused_and_transformers_indeed_fails(tiny_models, tmp_path: Path) -> None:
    source = tiny_models.build("llama", **{**SMALL, "intermediate_size": 320})  # 320 = 2.5 blocks of 128
    folder = L.make_fp8_checkpoint(tmp_path / "fp8-uneven", source)
    fp = estimate(read_model(str(folder)))
    assert fp.dequantize_blockers and "scale grid does not divide evenly" in fp.dequantize_blockers[0]
    r = api.plan(str(folder), hardware=_cpu(), constraints=C)
    assert not r.fits and all(any("cannot" in x for x in q.reasons) for q in r.rejected)

    from transformers import AutoModelForCausalLM

    with pytest.raises(Exception, match="conversion"):
        AutoModelForCausalLM.from_pretrained(folder, device_map="cpu")


def test_mxfp4_gpt_oss_dequantizes_on_cpu_with_experts_on_disk_first(loads) -> None:
    r = loads["mxfp4"].report
    assert r.footprint.prequant.method == "mxfp4"
    p = r.solution.chosen
    assert p.settings.placement == "cpu+disk" and p.settings.scheme.quantization == "none", p.label
    experts = {k: v for k, v in p.settings.device_map.items() if k.endswith(".mlp.experts")}
    assert "disk" in experts.values()  # experts go first ...
    assert all(v == "cpu" for k, v in p.settings.device_map.items() if ".self_attn" in k or k == "model.embed_tokens")  # ... attention stays
    text = loads["mxfp4"].result()
    assert "Mxfp4Config(**{'dequantize': True})" in text
    written = {f.name: f.stat().st_size for f in loads["offload"].iterdir()}
    # the dequantized experts are rewritten in bf16: exactly what the plan predicted for the disk
    assert sum(written.values()) - 120 * len(written) <= p.memory["disk"].total <= sum(written.values())
    assert all(name.startswith("model.layers.") and ".mlp.experts." in name for name in written)

    # in process: the loaded weights are what the plan said (3x the MXFP4 experts, bf16)
    import torch
    from transformers import AutoModelForCausalLM, Mxfp4Config

    folder = Path(r.snapshot.id)
    model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", quantization_config=Mxfp4Config(dequantize=True))
    loaded = sum(t.numel() * t.element_size() for t in model.parameters())
    assert loaded == api.plan(str(folder), hardware=_cpu(), constraints=C, snapshot=r.snapshot).solution.chosen.memory["cpu"].weights
    assert model.model.layers[0].mlp.experts.gate_up_proj.dtype == torch.bfloat16


def test_every_rule_names_its_packages_and_the_script_checks_them() -> None:
    d = formats.decide("mxfp4", "", ())
    assert d.action == formats.DEQUANTIZE and d.rule.verified
    from planner.core.records import Gpu

    h100 = (Gpu(0, "H100", "cuda", 1, 1, compute_capability=(9, 0)),)
    d = formats.decide("mxfp4", "", h100)
    assert d.action == formats.AS_STORED and [p.module for p in d.rule.packages] == ["triton", "kernels"]
    lines = emit._prequant_lines({"action": d.action, "config": None, "requires": [[p.pip, p.module] for p in d.rule.packages]})
    assert "importlib.util.find_spec" in lines and "kernels>=0.18.2,<0.19" in lines
    with pytest.raises(ValueError):
        emit._prequant_lines({"action": "dequantize", "config": {"class": "os.system", "kwargs": {}}, "requires": []})


def _header(path: Path) -> int:
    import struct

    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_plan_file_records_how_the_checkpoint_loads(loads) -> None:
    r = loads["mxfp4"].report
    doc = json.loads(emit.plan_file(r, r.solution.chosen))
    assert doc["load"]["prequantized"]["config"] == {"class": "Mxfp4Config", "kwargs": {"dequantize": True}}
    # verify renders the same script from the plan file
    text = emit.script_from_settings(doc["load"], doc["generate"], label="x")
    assert "Mxfp4Config(**{'dequantize': True})" in text


def test_checkpoint_strings_reach_the_script_only_as_literals(tmp_path: Path) -> None:
    import ast

    from fixtures_models import sparse_repo_files

    hostile = ['lm_head"\nimport os; os.system("x")  #', "q'''", "\\x1b[2J"]
    dims = dict(layers=1, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1024)
    cfg = L.decoder_config(quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128],
                                                "modules_to_not_convert": hostile}, dtype="bfloat16", **dims)
    files = sparse_repo_files(L.decoder(L.fp8_block(), dtype="BF16", **dims))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for name, content in files.items():
        with open(tmp_path / name, "wb") as f:
            f.write(content.prefix)
            f.truncate(content.size)
    r = api.plan(str(tmp_path), hardware=_cpu(), constraints=C)
    text = emit.script(r, r.solution.chosen)
    tree = ast.parse(text)
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "os.system" not in calls
    (config_call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "FineGrainedFP8Config"]
    assert ast.literal_eval(config_call.keywords[0].value)["modules_to_not_convert"] == hostile
