"""The bundled catalog: every entry reproduces its published size, and planning falls back to it offline.

Entries are written by ``benchmarks/build_catalog.py`` (transformers on the meta device); these
tests read only the JSON, so they stay fast and need neither torch nor the network.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from planner.sources import catalog
from planner.core.errors import OfflineCacheMiss
from planner.model.footprint import estimate
from planner.api import read_model

# The models the catalog must hold: every language model of the configs folder (its copy in
# tests/data/catalog-configs), less those build_catalog.py says it cannot derive honestly.
CONFIGS = Path(__file__).parent / "data" / "catalog-configs"
NOT_BUILT = {"deepseek-ai/DeepSeek-V3"}  # FP8 + MTP layer (benchmarks/build_catalog.py NOT_BUILT)
EXPECTED = {
    cells[1]
    for line in (CONFIGS / "README.md").read_text().splitlines()
    if len(cells := [c.strip() for c in line.strip().strip("|").split("|")]) >= 4 and cells[0].endswith(".config.json")
} - NOT_BUILT
NAMES = catalog.names()


def test_catalog_holds_every_language_model_of_the_configs_folder():
    assert len(EXPECTED) >= 23
    assert EXPECTED <= set(NAMES)
    assert {p.name.removesuffix(".config.json").replace("__", "/") for p in CONFIGS.glob("*.config.json")} - NOT_BUILT <= set(NAMES)


@pytest.mark.parametrize("repo", NAMES)
def test_entry_decodes_to_a_catalog_snapshot(repo):
    snap = catalog.lookup(repo)
    assert snap is not None
    assert (snap.id, snap.revision, snap.source, snap.weight_format) == (repo, "main", "catalog", "safetensors")
    names = [t.name for t in snap.tensors]
    assert len(names) == len(set(names))
    assert {t.file for t in snap.tensors} == set(snap.weight_files)
    listing = {f.path: f.size for f in snap.files}
    assert "config.json" in listing
    assert all(listing.get(w) for w in snap.weight_files)
    if len(snap.weight_files) > 1:
        assert "model.safetensors.index.json" in listing


@pytest.mark.parametrize("repo", NAMES)
def test_estimator_reproduces_the_published_parameter_count(repo):
    prov = catalog.raw(repo)["provenance"]
    snap = catalog.lookup(repo)
    assert estimate(snap).parameters == prov["computed_parameters"] == sum(t.numel for t in snap.tensors)
    if prov["published_parameters"] is not None:  # exact where published ...
        assert prov["computed_parameters"] == prov["published_parameters"]
    else:  # ... else what the nominal size says, to its precision, rounded or cut (Qwen2.5-14B: 14.77B)
        nominal = prov["published_nominal"].removesuffix("B")
        digits = len(nominal.partition(".")[2])
        value = prov["computed_parameters"] / 1e9
        assert float(nominal) in (round(value, digits), int(value * 10**digits) / 10**digits)


@pytest.mark.parametrize("repo", NAMES)
def test_tensor_bytes_match_the_published_bf16_bytes(repo):
    prov = catalog.raw(repo)["provenance"]
    snap = catalog.lookup(repo)
    stored = sum(t.nbytes for t in snap.tensors)
    assert stored == prov["computed_weight_bytes"]
    if prov["published_bf16_bytes"] is not None:
        assert stored == prov["published_bf16_bytes"]
    assert estimate(snap).stored_bytes == stored


@pytest.mark.parametrize("repo", NAMES)
def test_weight_file_sizes_are_prefix_header_and_data(repo):
    snap = catalog.lookup(repo)
    listing = {f.path: f.size for f in snap.files}
    for name in snap.weight_files:
        tensors = [t for t in snap.tensors if t.file == name]
        header = listing[name] - 8 - sum(t.nbytes for t in tensors)
        # safetensors pads the header to 8 bytes; each entry holds at least the name and its fields.
        assert header % 8 == 0
        assert header > sum(len(t.name) + len('"":{"dtype":"BF16","shape":[],"data_offsets":[0,0]},') for t in tensors)


@pytest.mark.parametrize("repo", NAMES)
def test_entry_records_its_provenance(repo):
    prov = catalog.raw(repo)["provenance"]
    snap = catalog.lookup(repo)
    assert prov["config"]["hub_repo"] == repo
    assert prov["config"]["file"] == repo.replace("/", "__") + ".config.json"
    assert prov["versions"]["transformers"]
    assert "meta" in prov["tensors"]
    assert prov["shards"]["count"] == len(snap.weight_files)
    assert prov["shards"]["decided"]
    assert dt.date.fromisoformat(prov["built"])
    assert snap.commit is None  # no commit was read, so none is claimed


def _closed_port() -> int:
    """A local port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_falls_back_to_the_catalog(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    snap = read_model("meta-llama/Llama-3.1-8B", timeout=0.5)
    assert snap.source == "catalog"
    assert snap.gated
    assert any("the Hub could not be reached" in n and "bundled catalog" in n for n in snap.notes)
    assert len(snap.notes) == 1 and "meta device" in snap.notes[0]  # one note: why, and what the entry is
    assert estimate(snap).parameters == 8_030_261_248


def test_offline_mode_uses_the_catalog_without_asking_the_hub(monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = read_model("meta-llama/Llama-3.1-8B")
    assert snap.source == "catalog"
    assert any("HF_HUB_OFFLINE is set" in n and "bundled catalog" in n for n in snap.notes)
    assert hub.requests == []


def test_offline_mode_without_a_catalog_entry_says_so(monkeypatch, hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineCacheMiss, match="bundled catalog"):
        read_model("someone/not-in-the-catalog")
    with pytest.raises(OfflineCacheMiss):
        read_model("meta-llama/Llama-3.1-8B", revision="v1.0")  # the catalog describes main only
    assert hub.requests == []
