"""Local inputs: a folder on disk is read header-only; ``org/name`` comes from the Hugging Face cache
when the files are there (and from the cache alone with HF_HUB_OFFLINE=1); ``model.source`` says
which; legacy .bin-only folders are sized without unpickling, and the script warns about them.
"""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path

import pytest

import layouts as L
from fakehub import FakeHub
from fixtures_models import decoder_tensors, safetensors_header, sparse_repo_files
from fakehub import SparseFile
from hostile import run_inprocess
from planner import api
from planner.runtimes.transformers import emit
from planner.sources import local
from planner.model.footprint import estimate
from planner.api import read_model

LAYOUT_70B = dict(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)
CONFIG_70B = json.loads((Path(__file__).parent / "data" / "llama-3.1-70b.config.json").read_text())


def _write(folder: Path, files: dict) -> None:
    """Write a repo's files; sparse ones as their prefix plus a hole (no disk blocks, no data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, SparseFile):
            with open(path, "wb") as f:
                f.write(content.prefix)
                f.truncate(content.size)
        else:
            path.write_bytes(content)


def test_a_local_folder_is_read_header_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    files = sparse_repo_files(decoder_tensors(**LAYOUT_70B), shards=30)
    files["config.json"] = json.dumps(CONFIG_70B).encode()
    folder = tmp_path / "llama-70b"
    _write(folder, files)
    read: dict[str, int] = {}

    class Counting:
        def __init__(self, f, name):
            self._f, self._name = f, name

        def read(self, n=-1):
            data = self._f.read(n)
            read[self._name] = read.get(self._name, 0) + len(data)
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, attr):
            return getattr(self._f, attr)

    def counting_open(path, *args, **kw):
        f = builtins.open(path, *args, **kw)
        return Counting(f, Path(path).name) if str(path).endswith(".safetensors") else f

    monkeypatch.setattr(local, "open", counting_open, raising=False)
    snap = read_model(str(folder))
    assert snap.source == "local" and len(snap.weight_files) == 30
    assert estimate(snap).parameters == 70_553_706_496
    headers = {name: len(content.prefix) for name, content in files.items() if name.endswith(".safetensors")}
    assert read == headers  # exactly the 8-byte length and the JSON of each header, nothing of the 141 GB of data

    run = run_inprocess(capsys, "plan", str(folder), "--hardware", "a100-80gb", "--json")
    doc = json.loads(run.stdout)
    assert doc["model"]["source"] == "local" and doc["plan"]["load"]["model"] == str(folder)
    assert doc["plan"]["load"]["revision"] is None  # a folder has no revision


def _cache_snapshot(cache: Path, repo: str, files: dict, commit: str = "c" * 40, symlinks: bool = True) -> Path:
    """Lay files out as huggingface_hub does: blobs/<etag>, snapshots/<commit>/<path> -> blob, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    for i, (name, content) in enumerate(files.items()):
        blob = root / "blobs" / f"{i:064x}"
        _write(blob.parent, {blob.name: content})
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            blob.rename(target)
    return snapshot


def _tiny_files() -> dict:
    files = sparse_repo_files(L.decoder(L.plain("BF16"), layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1024),
                              shards=2)
    files["config.json"] = json.dumps(L.decoder_config(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1024,
                                                       dtype="bfloat16")).encode()
    return files


def test_a_repo_id_in_the_hf_cache_is_read_from_it(hub: FakeHub, repo_id: str, capsys) -> None:
    from planner.core.paths import hf_cache_dir

    _cache_snapshot(hf_cache_dir(), repo_id, _tiny_files())
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB", "--json")
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["model"]["source"] == "cache" and doc["model"]["commit"] == "c" * 40
    assert any("Hugging Face cache" in n for n in doc["model"]["notes"])
    assert not hub.requests  # nothing was asked of the Hub


def test_offline_works_from_the_cache_alone(hub: FakeHub, repo_id: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from planner.core.paths import hf_cache_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB")
    assert run.code == 2 and "HF_HUB_OFFLINE" in run.stderr  # not cached: a clear miss, no network
    _cache_snapshot(hf_cache_dir(), repo_id, _tiny_files(), symlinks=False)
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["model"]["source"] == "cache"
    assert not hub.requests


def test_an_incomplete_cache_entry_falls_back_to_the_hub(hub: FakeHub, repo_id: str) -> None:
    from planner.core.paths import hf_cache_dir

    files = _tiny_files()
    hub.add_repo(repo_id, files)
    _cache_snapshot(hf_cache_dir(), repo_id, {"config.json": files["config.json"]})  # weights never downloaded
    assert read_model(repo_id).source == "hub"


def test_a_bin_only_folder_is_sized_without_unpickling_and_the_script_warns(tmp_path: Path) -> None:
    cfg = L.decoder_config(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1000, dtype="float16")
    params = 1000 * 256 * 2 + 2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 256 * 512 + 2 * 256) + 256
    folder = tmp_path / "legacy"
    # not a pickle at all: anything that tried to unpickle it would fail
    _write(folder, {"config.json": json.dumps(cfg).encode(), "pytorch_model.bin": SparseFile(b"not a pickle", params * 2)})
    snap = read_model(str(folder))
    assert snap.weight_format == "pytorch" and any("unpickl" in n for n in snap.notes)
    r = api.plan(str(folder), hardware=L.cpu_hardware())
    assert r.footprint.stored_bytes == params * 2 and r.footprint.parameters == params
    text = emit.script(r, r.solution.chosen)
    assert "unpickles files that can run code" in text and "use_safetensors" not in text


def test_safetensors_beside_bin_loads_the_safetensors(tmp_path: Path) -> None:
    files = _tiny_files()
    files["pytorch_model.bin"] = SparseFile(b"x", 10_000_000)
    folder = tmp_path / "mixed"
    _write(folder, files)
    r = api.plan(str(folder), hardware=L.cpu_hardware())
    assert r.snapshot.weight_format == "safetensors"
    assert 'kwargs["use_safetensors"] = True' in emit.script(r, r.solution.chosen)
    assert r.footprint.download_bytes < 10_000_000  # the .bin copy is not what from_pretrained fetches
