"""Reading diffusers pipelines: the file choice (variants, shards, fallback), a local folder,
the fake Hub (headers only), the HF cache, and the facts built from them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from diffusers_pipelines import cached

from planner import api
from planner.core.errors import BadHeader
from planner.core.records import Constraints
from planner.hardware.profiles import load_profile
from planner.runtimes.diffusers import files


@pytest.fixture(scope="session")
def sd_folder() -> Path:
    return cached("sd", fp16=True)


@pytest.fixture(scope="session")
def flux_folder() -> Path:
    return cached("flux")


def _param_count(folder: Path, component: str) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for f in sorted((folder / component).glob("*.safetensors")):
        if ".fp16." in f.name:
            continue
        with safe_open(str(f), "pt") as fh:
            total += sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    return total


LISTING = [
    "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
    "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
    "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    "vae_decoder/model.onnx", "scheduler/scheduler_config.json",
]


def test_select_prefers_fp16_and_falls_back_per_component() -> None:
    (sel,) = files.select(LISTING)
    assert sel.format == "pipeline" and sel.group == "fp16"
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in sel.files
    assert "unet/diffusion_pytorch_model.safetensors" not in sel.files
    assert "text_encoder/model.safetensors" in sel.files  # no fp16 file: the default one
    assert "transformer/diffusion_pytorch_model.safetensors.index.fp16.json" in sel.files
    assert [f for f in sel.weight_files if f.startswith("transformer/")] == [
        "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"]
    assert not any("onnx" in f for f in sel.files)
    assert files.variants(LISTING) == ("fp16",)


def test_select_ignores_non_pipelines() -> None:
    assert files.select(["config.json", "model.safetensors"]) == ()


def test_download_size_per_variant() -> None:
    sizes = {p: 1000 for p in LISTING}
    sizes["unet/diffusion_pytorch_model.safetensors"] = 4_000_000
    sizes["unet/diffusion_pytorch_model.fp16.safetensors"] = 2_000_000
    full = files.download_bytes(sizes, ["unet", "text_encoder"], "")
    half = files.download_bytes(sizes, ["unet", "text_encoder"], "fp16")
    assert full - half == 2_000_000


def test_local_folder_facts(sd_folder: Path) -> None:
    r = api.plan(str(sd_folder), hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    assert r.runtime == "diffusers"
    fx = r.footprint
    assert fx.pipeline == "StableDiffusionPipeline" and fx.variant == "fp16"
    names = {c.name: c for c in fx.components}
    assert set(names) == {"unet", "vae", "text_encoder"}
    assert names["unet"].role == "denoiser" and names["unet"].dtype == "F16"
    for name in names:
        assert names[name].parameters == _param_count(sd_folder, name)
    assert set(fx.downloads) == {"", "fp16"} and fx.downloads["fp16"] < fx.downloads[""]
    block = api.registry.get("diffusers").describe_model(r)
    assert block["kind"] == "diffusers-pipeline"
    assert block["components"]["unet"]["class"] == "UNet2DConditionModel"


def test_fake_hub_reads_headers_only(sd_folder: Path, hub, repo_id: str) -> None:
    hub.add_local_model(repo_id, sd_folder)
    r = api.plan(repo_id, hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    local = api.plan(str(sd_folder), hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    assert r.snapshot.source == "hub" and r.runtime == "diffusers"
    assert [c.to_dict() for c in r.footprint.components] == [c.to_dict() for c in local.footprint.components]
    weights = [q for q in hub.requests if q.path.endswith(".safetensors")]
    assert weights and all(q.range for q in weights)
    total = sum((sd_folder / p).stat().st_size for p in r.snapshot.weight_files)
    assert sum(q.bytes_sent for q in weights) < total / 2
    # a second plan comes from fitcheck's metadata cache, with no weight reads
    hub.clear_log()
    again = api.plan(repo_id, hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    assert again.runtime == "diffusers" and again.footprint.parameters == r.footprint.parameters
    assert not [q for q in hub.requests if q.path.endswith(".safetensors")]


def test_hf_cache_snapshot(sd_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    commit = "a" * 40
    root = cache / "models--org--tiny-sd"
    shutil.copytree(sd_folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = api.plan("org/tiny-sd", hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    assert r.snapshot.source == "cache" and r.runtime == "diffusers"


def test_index_naming_a_missing_shard_is_refused(flux_folder: Path, tmp_path: Path) -> None:
    import json

    folder = tmp_path / "broken"
    shutil.copytree(flux_folder, folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors"}}))
    with pytest.raises(BadHeader, match="names shard"):
        api.plan(str(folder), hardware=load_profile("rtx-4090"))


def test_sharded_fp16_variant_is_read_from_its_index(flux_folder: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    folder = tmp_path / "sharded"
    shutil.copytree(flux_folder, folder)
    model = FluxTransformer2DModel.from_pretrained(folder / "transformer")
    model.to(torch.float16).save_pretrained(folder / "transformer", variant="fp16", max_shard_size="100KB")
    shards = sorted(p.name for p in (folder / "transformer").glob("*.fp16-*.safetensors"))
    assert len(shards) > 1 and (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.fp16.json").is_file()
    r = api.plan(str(folder), hardware=load_profile("rtx-4090"), constraints=Constraints().with_options(resolution=(32, 32)))
    t = r.footprint.component("transformer")
    assert t.variant == "fp16" and t.dtype == "F16" and t.parameters == sum(p.numel() for p in model.parameters())
    assert {f.rpartition("/")[2] for f in r.snapshot.weight_files if f.startswith("transformer/")} == set(shards)
    assert r.footprint.component("vae").variant == ""  # no fp16 file: the default one, per component
