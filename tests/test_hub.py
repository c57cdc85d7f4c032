"""Reading models from the (fake) Hub: only headers and small JSON cross the network, errors are
typed, the endpoint, token and revision are honoured at call time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import decoder_tensors, safetensors_header, sparse_repo_files
from planner.core.errors import GatedRepo, NoWeights, RepoNotFound
from planner.model.footprint import estimate
from planner.api import read_model

DATA = Path(__file__).parent / "data"
CONFIG_70B = json.loads((DATA / "llama-3.1-70b.config.json").read_text())
LAYOUT_70B = dict(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)


def _repo_70b(shards: int = 30, naming: str = "standard") -> dict:
    files = sparse_repo_files(decoder_tensors(**LAYOUT_70B), shards=shards, naming=naming)
    files["config.json"] = json.dumps(CONFIG_70B).encode()
    return files


def _tiny(config: dict | None = None, **tensors) -> dict:
    header, size = safetensors_header(tensors or {"model.embed_tokens.weight": ("BF16", (100, 64)),
                                                  "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128)),
                                                  "model.norm.weight": ("BF16", (64,))})
    cfg = config or {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                     "num_hidden_layers": 1, "vocab_size": 100, "tie_word_embeddings": True}
    return {"config.json": json.dumps(cfg).encode(), "model.safetensors": SparseFile(header, size)}


def test_70b_in_30_shards_moves_under_5_mb_in_one_round(hub: FakeHub, repo_id: str) -> None:
    hub.add_repo(repo_id, _repo_70b())
    snap = read_model(repo_id)
    fp = estimate(snap)
    assert fp.parameters == 70_553_706_496
    assert len(snap.weight_files) == 30 and snap.source == "hub" and snap.commit
    assert hub.bytes_sent < 5_000_000
    # one concurrent round: info, config, index, single-file probe, all-shard headers
    assert snap.fetch.requests <= 5
    assert not [r for r in hub.requests if r.method == "GET" and "model-000" in r.path and r.range is None]


def test_without_the_all_headers_endpoint_headers_are_read_by_range(hub: FakeHub, repo_id: str) -> None:
    hub.sharded_metadata_endpoint = False
    hub.add_repo(repo_id, _repo_70b())
    snap = read_model(repo_id)
    shard_reads = [r for r in hub.requests if "model-000" in r.path]
    assert len(shard_reads) == 30 and all(r.range and r.range.startswith("bytes=0-") for r in shard_reads)
    assert estimate(snap).parameters == 70_553_706_496
    assert hub.bytes_sent < 5_000_000
    # each read is sized from the index: far below the 100 kB huggingface_hub reads per shard
    assert sum(r.bytes_sent for r in shard_reads) < 30 * 20_000


@pytest.mark.parametrize("naming", ["zero-based", "six-digit"])
def test_odd_shard_names(hub: FakeHub, repo_id: str, naming: str) -> None:
    hub.sharded_metadata_endpoint = False
    hub.add_repo(repo_id, _repo_70b(shards=3, naming=naming))
    assert estimate(read_model(repo_id)).parameters == 70_553_706_496


@pytest.mark.parametrize("n", [99_992, 99_993, 99_994, 100_000, 100_008, 250_000])
def test_single_file_headers_at_and_past_the_first_read(hub: FakeHub, repo_id: str, n: int) -> None:
    header, size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64))}, header_size=n)
    files = _tiny()
    files["model.safetensors"] = SparseFile(header, size)
    hub.add_repo(repo_id, files)
    snap = read_model(repo_id)
    assert [t.name for t in snap.tensors] == ["model.embed_tokens.weight"]
    reads = [r for r in hub.requests if r.path.endswith("model.safetensors")]
    assert len(reads) == (1 if 8 + n <= 100_000 else 2)


def test_revision_branch_and_commit(hub: FakeHub, repo_id: str) -> None:
    hub.add_repo(repo_id, _tiny(), revision="main")
    other = _tiny(**{"model.embed_tokens.weight": ("BF16", (200, 64))})
    repo = hub.add_repo(repo_id, other, revision="v2")
    commit = repo.revisions["v2"].commit
    assert read_model(repo_id).tensors[0].shape == (100, 64)
    by_branch = read_model(repo_id, revision="v2")
    assert by_branch.tensors[0].shape == (200, 64) and by_branch.commit == commit
    by_commit = read_model(repo_id, revision=commit)
    assert by_commit.tensors[0].shape == (200, 64)


def test_endpoint_is_read_at_call_time(hub: FakeHub, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    other = FakeHub().start()
    try:
        other.add_repo(repo_id, _tiny())
        monkeypatch.setenv("HF_ENDPOINT", other.url)
        assert read_model(repo_id).source == "hub"
        assert other.requests and not hub.requests
    finally:
        other.stop()


def test_private_repo_needs_a_token_from_env_at_call_time(hub: FakeHub, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "p" * 34
    hub.add_repo(repo_id, _tiny(), private=True, tokens=[token])
    with pytest.raises(RepoNotFound):
        read_model(repo_id)
    monkeypatch.setenv("HF_TOKEN", token)
    assert read_model(repo_id).source == "hub"


def test_gated_repo_error_says_how_to_get_access(hub: FakeHub, repo_id: str) -> None:
    token = "hf_" + "g" * 34
    hub.add_repo(repo_id, _tiny(), gated="manual", tokens=[token])
    with pytest.raises(GatedRepo) as e:
        read_model(repo_id)
    assert "gated" in e.value.message and "licence" in e.value.hint and "log in" in e.value.hint
    assert read_model(repo_id, token=token).source == "hub"


def test_missing_repo_and_revision(hub: FakeHub, repo_id: str) -> None:
    with pytest.raises(RepoNotFound, match="not found"):
        read_model(repo_id)
    hub.add_repo(repo_id, _tiny())
    with pytest.raises(RepoNotFound, match="revision"):
        read_model(repo_id, revision="nope")


def test_bin_only_repo_is_sized_from_the_listing_never_downloaded(hub: FakeHub, repo_id: str) -> None:
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256, "num_attention_heads": 4,
           "num_hidden_layers": 2, "vocab_size": 1000, "intermediate_size": 512, "tie_word_embeddings": False, "torch_dtype": "float16"}
    params = 1000 * 256 * 2 + 2 * (4 * 256 * 256 + 3 * 256 * 512 + 2 * 256) + 256
    hub.add_repo(repo_id, {"config.json": json.dumps(cfg).encode(), "pytorch_model.bin": SparseFile(b"PK", params * 2)})
    snap = read_model(repo_id)
    fp = estimate(snap)
    assert snap.weight_format == "pytorch" and any("unpickl" in n for n in snap.notes)
    assert fp.parameters == params and fp.stored_bytes == params * 2
    assert not [r for r in hub.requests if r.path.endswith(".bin") and r.method == "GET"]


def test_duplicate_weight_sets_count_only_what_transformers_loads(hub: FakeHub, repo_id: str) -> None:
    files = _repo_70b(shards=4)
    files["consolidated.safetensors"] = SparseFile(b"\0" * 8, 141_000_000_000)
    files["original/consolidated.00.pth"] = SparseFile(b"\0" * 8, 141_000_000_000)
    hub.add_repo(repo_id, files)
    snap = read_model(repo_id)
    fp = estimate(snap)
    assert fp.parameters == 70_553_706_496
    assert fp.download_bytes < 142_000_000_000  # the duplicates are not part of a download
    assert not [r for r in hub.requests if "consolidated" in r.path]
    assert any("consolidated.safetensors" in n for n in snap.notes)


def test_gpt2_mask_buffers_are_in_the_file_but_not_loaded(hub: FakeHub, repo_id: str) -> None:
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 1, "n_embd": 64, "n_head": 4, "vocab_size": 100,
           "n_positions": 32}
    tensors = {"wte.weight": ("F32", (100, 64)), "wpe.weight": ("F32", (32, 64)), "h.0.attn.bias": ("F32", (1, 1, 32, 32)),
               "h.0.attn.c_attn.weight": ("F32", (64, 192)), "h.0.attn.c_attn.bias": ("F32", (192,)), "ln_f.weight": ("F32", (64,))}
    hub.add_repo(repo_id, _tiny(cfg, **tensors))
    fp = estimate(read_model(repo_id))
    assert fp.unloaded_tensors == 1 and fp.unloaded_bytes == 32 * 32 * 4
    assert fp.parameters == 100 * 64 + 32 * 64 + 64 * 192 + 192 + 64


def test_tied_embeddings_count_once(hub: FakeHub, repo_id: str) -> None:
    hub.add_repo(repo_id, _tiny())
    fp = estimate(read_model(repo_id))
    assert fp.parameters == 100 * 64 + 64 * 128 + 64
    head = [u for u in fp.units if u.kind == "head"]
    assert len(head) == 1 and head[0].tied_to == "model.embed_tokens" and head[0].stored_bytes == 0


def test_repos_without_loadable_weights(hub: FakeHub, repo_id: str) -> None:
    hub.add_repo(repo_id, {"config.json": b"{}", "consolidated.pth": b"PK"})
    with pytest.raises(NoWeights, match="consolidated.pth"):
        read_model(repo_id)


def test_an_unreachable_hub_is_given_up_quickly_not_after_the_whole_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from planner.core.errors import HubUnavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match="cannot be reached"):
        read_model("tests/not-in-the-catalog", timeout=30)
    assert time.monotonic() - started < 5
    # a catalog model falls back to the catalog, and says so
    snap = read_model("meta-llama/Llama-3.1-8B", timeout=30)
    assert snap.source == "catalog" and any("could not be reached" in n for n in snap.notes)
