"""Multimodal (image-text-to-text) and encoder-decoder models: weights per component, the KV cache
of the text decoder, module names as transformers 5 builds them, the right Auto class, real loads
through the emitted script -- and a clear refusal (exit 2) for model types fitcheck cannot size.
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
from fixtures_models import safetensors_header, sparse_repo_files
from fakehub import SparseFile
from hostile import run_inprocess
from planner import api
from planner.runtimes.transformers import emit
from planner.model.footprint import estimate
from planner.hardware.profiles import load_profile
from planner.core.records import Snapshot, Tensor
from planner.core.records import Constraints
from planner.api import read_model
from planner.report.schema import report_dict

C = Constraints(context=32, new_tokens=4, dtype="bfloat16", quantization="none")


def _covered(device_map: dict, names) -> list[str]:
    """State-dict names no device_map key covers (accelerate's check_device_map rule)."""
    return [n for n in names if not any(n == k or n.startswith(k + ".") for k in device_map)]


@pytest.mark.parametrize("model_type", sorted(L.TINY_MULTIMODAL))
def test_module_names_and_device_map_match_transformers(model_type: str, tmp_path: Path) -> None:
    folder, model = L.make_tiny_multimodal(tmp_path / model_type, model_type)
    snap = read_model(str(folder))
    variants = [snap]
    if model_type in ("llava", "gemma3", "paligemma"):  # CLIP/SigLIP towers: the Hub's names carry "vision_model."
        hub = tuple(Tensor("vision_tower.vision_model." + t.name[len("vision_tower."):] if t.name.startswith("vision_tower.") else t.name,
                           t.dtype, t.shape, t.nbytes, t.file) for t in snap.tensors)
        variants.append(Snapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "tensors": hub}))
    state = set(model.state_dict())
    modules = dict(model.named_modules())
    for s in variants:
        fp = estimate(s)
        assert fp.arch.auto_class == "AutoModelForImageTextToText"
        assert fp.parameters == sum(p.numel() for p in model.parameters())
        assert {u.kind for u in fp.units} >= {"vision", "layer", "embed"}
        assert [u.layer for u in fp.units if u.kind == "layer"] == list(range(4))  # the text decoder's layers carry the KV
        r = api.plan(s.id, hardware=L.cpu_hardware(L.ram_forcing_disk(s, C)), constraints=C, snapshot=s)
        dm = r.solution.chosen.settings.device_map
        assert set(dm.values()) == {"cpu", "disk"}
        assert all(k in modules for k in dm), [k for k in dm if k not in modules]
        assert not _covered(dm, state), _covered(dm, state)[:5]
        comps = report_dict(r)["model"]["components"]
        assert set(comps) == {"vision_tower", "projector", "language_model"}
        assert sum(c["parameters"] for c in comps.values()) == fp.parameters


def test_llava_components_and_kv_from_text_config(hub: FakeHub, repo_id: str) -> None:
    tensors = L.llava_1_5()
    files = sparse_repo_files(tensors, shards=3)
    files["config.json"] = json.dumps(L.LLAVA_1_5_CONFIG).encode()
    hub.add_repo(repo_id, files)
    r = api.plan(repo_id, hardware=load_profile("rtx-4090"), constraints=Constraints(context=4096))
    doc = report_dict(r)
    comps = doc["model"]["components"]
    vision = sum(L.numel(s) for n, (_, s) in tensors.items() if n.startswith("vision_tower."))
    projector = sum(L.numel(s) for n, (_, s) in tensors.items() if n.startswith("multi_modal_projector."))
    assert comps["vision_tower"] == {"parameters": vision, "bytes": 2 * vision}  # CLIP ViT-L/14-336: 0.3B
    assert comps["projector"]["parameters"] == projector == 4096 * 1024 + 4096 + 4096 * 4096 + 4096
    assert comps["language_model"]["parameters"] == 6_738_415_616 + 64 * 4096 * 2  # Llama-2-7B (vocab 32000) + 64 rows
    assert doc["model"]["kv_bytes_per_token"] == 2 * 32 * 32 * 128 * 2  # Llama-2-7B's, from text_config
    assert doc["model"]["auto_class"] == "AutoModelForImageTextToText"
    p = r.solution.chosen
    assert "model.vision_tower" in p.settings.device_map and "model.language_model.layers.31" in p.settings.device_map
    assert "AutoModelForImageTextToText.from_pretrained" in emit.script(r, p)


def test_llava_with_hub_names_and_t5_load_and_generate_through_the_script(tmp_path: Path) -> None:
    """Both plans put part of the model on disk, so transformers checks that the map covers every
    parameter (accelerate's check_device_map) and places tied weights where their source is."""
    runs = []
    for name, make in (("llava", lambda d: L.make_tiny_multimodal(d, "llava", hub_names=True)), ("t5", L.make_tiny_t5)):
        folder, _ = make(tmp_path / name)
        snap = read_model(str(folder))
        r = api.plan(str(folder), hardware=L.cpu_hardware(L.ram_forcing_disk(snap, C)), constraints=C, snapshot=snap)
        p = r.solution.chosen
        assert p.settings.placement == "cpu+disk"
        script = tmp_path / f"load_{name}.py"
        script.write_text(emit.script(r, p, offload_dir=str(tmp_path / f"offload-{name}")))
        runs.append((name, r, subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})))
    for name, r, proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err[-3000:])
    t5 = runs[1][1]
    assert t5.footprint.arch.auto_class == "AutoModelForSeq2SeqLM"
    assert set(report_dict(t5)["model"]["components"]) == {"encoder", "decoder", "shared"}
    dm = t5.solution.chosen.settings.device_map
    assert dm["encoder.embed_tokens"] == dm["decoder.embed_tokens"] == dm["shared"] == dm["lm_head"]  # tied: one device


def _config(**fields) -> dict:
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 100, "intermediate_size": 128}
    return {**base, **fields}


@pytest.mark.parametrize("config, message", [
    (_config(model_type="foo_vl", architectures=["FooVLForConditionalGeneration"], vision_config={"hidden_size": 32}),
     "multimodal or encoder-decoder model fitcheck does not know"),
    (_config(model_type="foo_seq2seq", architectures=["FooForConditionalGeneration"], is_encoder_decoder=True),
     "multimodal or encoder-decoder model fitcheck does not know"),
    (_config(model_type="foo_bert", architectures=["FooForSequenceClassification"]), "not a text-generation model"),
    (_config(model_type="foo"), "not a text-generation model"),
    (_config(model_type="foo_mla", architectures=["FooForCausalLM"], kv_lora_rank=512), "'kv_lora_rank'"),
    (_config(model_type="foo_hybrid", architectures=["FooForCausalLM"], layers_block_type=["mamba"]), "'layers_block_type'"),
    (_config(model_type="whisper", architectures=["WhisperForConditionalGeneration"], is_encoder_decoder=True), "'whisper'"),
])
def test_model_types_fitcheck_cannot_size_are_refused_with_exit_2(config: dict, message: str, tmp_path: Path, capsys) -> None:
    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64))})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(header + b"\0" * (size - len(header)))
    run = run_inprocess(capsys, "plan", str(tmp_path), "--ram", "8GiB")
    assert run.code == 2, run.stderr
    assert message in run.stderr and "fitcheck: hint: supported:" in run.stderr


def test_an_unknown_standard_causal_lm_is_sized_from_its_headers(tmp_path: Path, capsys) -> None:
    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)), "model.layers.0.mlp.up_proj.weight": ("BF16", (128, 64))})
    (tmp_path / "config.json").write_text(json.dumps(_config(model_type="newdecoder", architectures=["NewDecoderForCausalLM"])))
    (tmp_path / "model.safetensors").write_bytes(header + b"\0" * (size - len(header)))
    run = run_inprocess(capsys, "plan", str(tmp_path), "--ram", "8GiB", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["model"]["parameters"] == 100 * 64 + 128 * 64
