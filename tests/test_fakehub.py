"""The fake Hub against the real huggingface_hub client and transformers.

Nothing in huggingface_hub is mocked: if these pass, a fitcheck test that runs the client
against the fake Hub exercises the client's real code paths (ranges, typed errors, retries).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)

from fakehub import FakeHub, SparseFile, faults
from fixtures_models import (
    DTYPE_BITS,
    INDEX_FILE,
    TINY_ARCHS,
    decoder_tensors,
    safetensors_header,
    sparse_repo_files,
    tensor_nbytes,
)

CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()
SMALL_TENSORS = {
    "model.embed_tokens.weight": ("BF16", (1000, 64)),
    "model.norm.weight": ("F32", (64,)),
    "lm_head.weight": ("BF16", (1000, 64)),
}
LLAMA_70B = decoder_tensors(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)
LLAMA_70B_PARAMS = 70_553_706_496  # published parameter count of Llama-3-70B


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url)


def single_file_repo(hub: FakeHub, repo_id: str, **kwargs) -> dict:
    files = {"config.json": CONFIG, **sparse_repo_files(SMALL_TENSORS)}
    hub.add_repo(repo_id, files, **kwargs)
    return files


# --------------------------------------------------------------------------------------------
# Model info, revisions, listings
# --------------------------------------------------------------------------------------------


def test_model_info_reports_sizes_lfs_and_safetensors_block(hub, api, repo_id):
    files = single_file_repo(hub, repo_id)
    info = api.model_info(repo_id, files_metadata=True)

    assert hub.requests[0].path == f"/api/models/{repo_id}"
    assert hub.requests[0].query == {"blobs": ["true"]}
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {"config.json": len(CONFIG), "model.safetensors": files["model.safetensors"].size}
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["config.json"] is None
    assert lfs["model.safetensors"].size == files["model.safetensors"].size
    # The ETag of an LFS file is its sha256, as on the Hub; the listing must agree with it.
    etag = get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors", endpoint=hub.url)).etag
    assert lfs["model.safetensors"].sha256 == etag
    assert info.safetensors.parameters == {"BF16": 2 * 64_000, "F32": 64}
    assert info.safetensors.total == 128_064
    assert (info.private, info.gated) == (False, False)
    assert info.config == {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


def test_model_info_without_blobs_lists_names_only_and_expand_filters(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    plain = api.model_info(repo_id)
    assert [(s.rfilename, s.size) for s in plain.siblings] == [("config.json", None), ("model.safetensors", None)]

    expanded = api.model_info(repo_id, expand=["safetensors", "gated"])
    assert hub.requests[-1].query == {"expand": ["safetensors", "gated"]}
    assert expanded.safetensors.total == 128_064
    assert expanded.siblings is None and expanded.sha is None


def test_revisions_resolve_by_branch_and_by_commit(hub, api, repo_id, tmp_path):
    hub.add_repo(repo_id, {"config.json": b'{"v": 1}'})
    hub.add_repo(repo_id, {"config.json": b'{"v": 2}', "extra.txt": b"x"}, revision="v2", commit="ab" * 20)

    main_sha = api.model_info(repo_id).sha
    assert api.model_info(repo_id, revision="v2").sha == "ab" * 20
    assert api.model_info(repo_id, revision=main_sha).sha == main_sha
    assert hub.requests[-1].path == f"/api/models/{repo_id}/revision/{main_sha}"

    def read(revision):
        return Path(hf_hub_download(repo_id, "config.json", revision=revision, endpoint=hub.url,
                                    cache_dir=tmp_path)).read_bytes()

    assert read("main") == read(main_sha) == b'{"v": 1}'
    assert read("v2") == read("ab" * 20) == b'{"v": 2}'
    assert api.file_exists(repo_id, "extra.txt", revision="v2")
    assert not api.file_exists(repo_id, "extra.txt")

    # A ref with slashes travels percent-encoded as one path segment.
    hub.add_repo(repo_id, {"config.json": b'{"v": 3}'}, revision="refs/pr/1")
    assert read("refs/pr/1") == b'{"v": 3}'
    assert hub.requests[-1].path.endswith("/resolve/refs/pr/1/config.json")


def test_list_repo_tree_recursive_folders_and_pagination(hub, api, repo_id):
    hub.add_repo(repo_id, {"config.json": CONFIG, "a/b/c.bin": b"123", "a/d.txt": b"4567", "e.txt": b""})

    top = {(e.path, type(e).__name__) for e in api.list_repo_tree(repo_id)}
    assert top == {("config.json", "RepoFile"), ("a", "RepoFolder"), ("e.txt", "RepoFile")}
    nested = {e.path: getattr(e, "size", None) for e in api.list_repo_tree(repo_id, recursive=True)}
    assert nested == {"config.json": len(CONFIG), "a": None, "a/b": None, "a/b/c.bin": 3, "a/d.txt": 4, "e.txt": 0}
    assert hub.requests[-1].query == {"recursive": ["true"], "expand": ["false"]}
    sub = {e.path for e in api.list_repo_tree(repo_id, path_in_repo="a")}
    assert sub == {"a/b", "a/d.txt"}

    hub.tree_page_size = 2
    hub.clear_log()
    assert sorted(api.list_repo_files(repo_id)) == ["a/b/c.bin", "a/d.txt", "config.json", "e.txt"]
    assert len(hub.requests) == 3  # 6 entries, 2 per page, pages followed through the Link header

    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="missing"))


def test_file_exists(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    assert api.file_exists(repo_id, "config.json")
    assert not api.file_exists(repo_id, "tokenizer.json")
    assert not api.file_exists("nobody/nothing", "config.json")
    assert [r.method for r in hub.requests] == ["HEAD", "HEAD", "HEAD"]


# --------------------------------------------------------------------------------------------
# resolve: headers and byte ranges
# --------------------------------------------------------------------------------------------


def test_head_headers_match_the_hub(hub, repo_id):
    files = single_file_repo(hub, repo_id)
    commit = hub.repo(repo_id).revisions["main"].commit
    with httpx2.Client(base_url=hub.url) as client:
        small = client.head(f"/{repo_id}/resolve/main/config.json")
        large = client.head(f"/{repo_id}/resolve/main/model.safetensors")

    git_sha1 = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert small.status_code == 200
    assert small.headers["ETag"] == f'"{git_sha1}"'  # regular git file: the blob's git sha1
    assert small.headers["Content-Length"] == str(len(CONFIG))
    assert small.headers["X-Repo-Commit"] == commit
    assert large.headers["Content-Length"] == str(files["model.safetensors"].size)
    assert large.headers["Accept-Ranges"] == "bytes"
    assert len(large.headers["ETag"].strip('"')) == 64  # LFS file: a sha256
    assert not [h for h in large.headers if h.lower().startswith(("x-xet", "link"))]
    assert not large.content

    meta = get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors", endpoint=hub.url))
    assert (meta.commit_hash, meta.size, meta.xet_file_data) == (commit, files["model.safetensors"].size, None)


DATA = bytes(range(256)) * 4  # 1024 distinct-enough bytes


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "body"),
    [
        ("bytes=0-9", 206, "bytes 0-9/1024", DATA[:10]),
        ("bytes=1000-", 206, "bytes 1000-1023/1024", DATA[1000:]),
        ("bytes=-4", 206, "bytes 1020-1023/1024", DATA[-4:]),
        ("bytes=1020-5000", 206, "bytes 1020-1023/1024", DATA[1020:]),  # end clamped to the file
        ("bytes=1024-", 416, "bytes */1024", b""),
        ("bytes=9-3", 200, None, DATA),  # invalid: ignored, as RFC 9110 allows
        (None, 200, None, DATA),
    ],
)
def test_range_requests(hub, repo_id, range_header, status, content_range, body):
    hub.add_repo(repo_id, {"data.bin": DATA})
    headers = {"Range": range_header} if range_header else {}
    with httpx2.Client(base_url=hub.url) as client:
        response = client.get(f"/{repo_id}/resolve/main/data.bin", headers=headers)
    assert response.status_code == status
    assert response.headers.get("Content-Range") == content_range
    if status != 416:
        assert response.content == body
    assert hub.requests[-1].bytes_sent == len(response.content)


def test_sparse_file_is_prefix_then_zeros(hub, repo_id):
    hub.add_repo(repo_id, {"big.bin": SparseFile(b"HEADER", 5 * 2**40)})  # 5 TiB, nothing allocated
    with httpx2.Client(base_url=hub.url) as client:
        head = client.get(f"/{repo_id}/resolve/main/big.bin", headers={"Range": "bytes=2-9"})
        tail = client.get(f"/{repo_id}/resolve/main/big.bin", headers={"Range": "bytes=-3"})
    assert head.content == b"ADER\0\0\0\0"
    assert head.headers["Content-Range"] == f"bytes 2-9/{5 * 2**40}"
    assert tail.content == b"\0\0\0"


# --------------------------------------------------------------------------------------------
# safetensors headers through the client
# --------------------------------------------------------------------------------------------


def test_parse_safetensors_file_metadata_single_file(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    meta = api.parse_safetensors_file_metadata(repo_id, "model.safetensors")

    assert meta.tensors["model.norm.weight"].dtype == "F32"
    assert meta.tensors["lm_head.weight"].shape == [1000, 64]
    assert meta.parameter_count == {"BF16": 128_000, "F32": 64}
    assert meta.metadata == {"format": "pt"}
    [request] = hub.requests
    assert (request.method, request.range, request.status) == ("GET", "bytes=0-100000", 206)


# huggingface_hub asks for bytes 0-100000 (100,001 bytes), so a JSON header of up to 99,993 bytes
# comes in one read, and from 99,994 bytes it needs a second read sized from the length prefix.
@pytest.mark.parametrize(
    ("header_size", "reads"),
    [(99_992, 1), (99_993, 1), (99_994, 2), (100_000, 2), (100_008, 2), (250_000, 2)],
)
def test_header_size_boundaries(hub, api, repo_id, header_size, reads):
    tensors = {f"model.layers.{i}.mlp.weight": ("BF16", (8, 8)) for i in range(1000)}
    header, size = safetensors_header(tensors, header_size=header_size)
    hub.add_repo(repo_id, {"model.safetensors": SparseFile(header, size)})

    meta = api.parse_safetensors_file_metadata(repo_id, "model.safetensors")

    assert len(meta.tensors) == 1000
    ranges = [r.range for r in hub.requests]
    assert ranges == ["bytes=0-100000", f"bytes=8-{header_size + 7}"][:reads]
    assert all(r.status == 206 for r in hub.requests)


def test_header_over_100kb_from_many_tensors(hub, api, repo_id):
    tensors = {f"model.layers.{i // 9}.block.{i % 9}.weight": ("BF16", (64, 64)) for i in range(3000)}
    header, size = safetensors_header(tensors)
    assert len(header) > 150_000
    hub.add_repo(repo_id, {"model.safetensors": SparseFile(header, size)})
    meta = api.parse_safetensors_file_metadata(repo_id, "model.safetensors")
    assert meta.parameter_count == {"BF16": 3000 * 64 * 64}
    assert len(hub.requests) == 2


def test_get_safetensors_metadata_on_sparse_70b_transfers_only_headers(hub, api, repo_id):
    files = sparse_repo_files(LLAMA_70B, shards=30)
    hub.add_repo(repo_id, {"config.json": CONFIG, **files})
    shard_names = {name for name in files if name.endswith(".safetensors")}
    repo_bytes = sum(f.size for f in files.values() if isinstance(f, SparseFile))
    assert repo_bytes > 140e9

    meta = api.get_safetensors_metadata(repo_id)

    assert meta.sharded and set(meta.files_metadata) == shard_names
    assert meta.parameter_count == {"BF16": LLAMA_70B_PARAMS}
    assert meta.metadata["total_size"] == 2 * LLAMA_70B_PARAMS
    shard_gets = [r for r in hub.requests if r.path.rsplit("/", 1)[-1] in shard_names]
    assert len(shard_gets) == 30
    assert all(r.method == "GET" and r.range == "bytes=0-100000" and r.bytes_sent == 100_001 for r in shard_gets)
    assert hub.bytes_sent < 4_000_000  # 30 header reads and the index, of a 141 GB repo


def test_sharded_metadata_endpoint_is_one_request_and_matches_per_shard_parsing(hub, api, repo_id):
    hub.add_repo(repo_id, sparse_repo_files(LLAMA_70B, shards=30))
    one_shot = api.get_sharded_safetensors_metadata(repo_id)
    [request] = hub.requests
    assert request.path == f"/api/models/{repo_id}/safetensors-metadata/{INDEX_FILE}"

    per_shard = api.get_safetensors_metadata(repo_id)
    assert one_shot.files_metadata == per_shard.files_metadata
    assert one_shot.weight_map == per_shard.weight_map
    assert one_shot.metadata == per_shard.metadata


def test_sharded_metadata_endpoint_switched_off_is_a_plain_404(hub, api, repo_id):
    hub.add_repo(repo_id, sparse_repo_files(SMALL_TENSORS, shards=2))
    hub.sharded_metadata_endpoint = False
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.get_sharded_safetensors_metadata(repo_id)
    assert excinfo.value.response.status_code == 404
    assert not isinstance(excinfo.value, (RepositoryNotFoundError, EntryNotFoundError))


def test_sharded_metadata_endpoint_serves_main_only(hub, api, repo_id):
    hub.add_repo(repo_id, {"config.json": CONFIG})
    hub.add_repo(repo_id, sparse_repo_files(SMALL_TENSORS, shards=2), revision="dev")
    with pytest.raises(EntryNotFoundError):
        api.get_sharded_safetensors_metadata(repo_id)


@pytest.mark.parametrize("dtype", sorted(DTYPE_BITS))
def test_header_builder_agrees_with_the_safetensors_library(tmp_path, dtype):
    safetensors = pytest.importorskip("safetensors")
    header, size = safetensors_header({"a": (dtype, (4, 6)), "b": ("BF16", (3,)), "c": (dtype, (2, 8))})
    path = tmp_path / "x.safetensors"
    path.write_bytes(header + bytes(size - len(header)))
    assert size == len(header) + tensor_nbytes(dtype, (4, 6)) + 6 + tensor_nbytes(dtype, (2, 8))
    with safetensors.safe_open(path, "np") as f:  # validates offsets against dtype and shape
        assert f.get_slice("a").get_dtype() == dtype
        assert f.get_slice("c").get_shape() == [2, 8]
        assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize(
    ("naming", "shards", "first", "last"),
    [
        ("standard", 4, "model-00001-of-00004.safetensors", "model-00004-of-00004.safetensors"),
        ("zero-based", 2, "model-00000-of-00002.safetensors", "model-00001-of-00002.safetensors"),
        ("six-digit", 163, "model-00001-of-000163.safetensors", "model-00163-of-000163.safetensors"),
    ],
)
def test_sparse_repo_files_naming_and_index(naming, shards, first, last):
    files = sparse_repo_files(LLAMA_70B, shards=shards, naming=naming)
    index = json.loads(files[INDEX_FILE])
    shard_names = sorted(n for n in files if n != INDEX_FILE)
    assert (len(shard_names), shard_names[0], shard_names[-1]) == (shards, first, last)
    assert set(index["weight_map"]) == set(LLAMA_70B) and set(index["weight_map"].values()) == set(shard_names)
    assert index["metadata"] == {"total_parameters": LLAMA_70B_PARAMS, "total_size": 2 * LLAMA_70B_PARAMS}
    data_bytes = sum(f.size - 8 - int.from_bytes(f.prefix[:8], "little") for n, f in files.items() if n != INDEX_FILE)
    assert data_bytes == 2 * LLAMA_70B_PARAMS


# --------------------------------------------------------------------------------------------
# Downloads and typed errors
# --------------------------------------------------------------------------------------------


def test_hf_hub_download_config(hub, repo_id, tmp_path):
    single_file_repo(hub, repo_id)
    path = Path(hf_hub_download(repo_id, "config.json", endpoint=hub.url, cache_dir=tmp_path))
    assert path.read_bytes() == CONFIG
    assert path.parent.name == hub.repo(repo_id).revisions["main"].commit  # snapshot named by X-Repo-Commit
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 200), ("GET", 200)]


TOKEN = "hf_allowed_token"
OTHER = "hf_valid_but_not_allowed"


def _errors_setup(hub: FakeHub, repo_id: str) -> None:
    hub.add_repo(repo_id, {"config.json": CONFIG})
    hub.add_repo(repo_id + "-gated", {"config.json": CONFIG}, gated="manual", tokens=[TOKEN])
    hub.add_repo(repo_id + "-private", {"config.json": CONFIG}, private=True, tokens=[TOKEN])
    hub.add_token(OTHER)


@pytest.mark.parametrize(
    ("call", "suffix", "kwargs", "error", "status"),
    [
        ("info", "-missing", {}, RepositoryNotFoundError, 401),
        ("info", "-missing", {"token": OTHER}, RepositoryNotFoundError, 404),
        ("info", "-private", {}, RepositoryNotFoundError, 401),
        ("info", "-private", {"token": OTHER}, RepositoryNotFoundError, 404),
        ("info", "", {"revision": "nope"}, RevisionNotFoundError, 404),
        ("download", "", {"revision": "nope"}, RevisionNotFoundError, 404),
        ("download", "", {"filename": "missing.json"}, EntryNotFoundError, 404),
        ("download", "-missing", {}, RepositoryNotFoundError, 401),
        ("download", "-gated", {}, GatedRepoError, 401),
        ("download", "-gated", {"token": OTHER}, GatedRepoError, 403),
        ("parse", "-gated", {}, GatedRepoError, 401),
        ("info", "", {"token": "hf_never_issued"}, HfHubHTTPError, 401),
    ],
    ids=["unknown-repo", "unknown-repo-with-token", "private-no-token", "private-other-token", "info-bad-revision",
         "download-bad-revision", "missing-file", "download-unknown-repo", "gated-no-token", "gated-other-token",
         "gated-header-read", "invalid-token"],
)
def test_typed_errors(hub, api, repo_id, tmp_path, call, suffix, kwargs, error, status):
    _errors_setup(hub, repo_id)
    target = repo_id + suffix
    with pytest.raises(error) as excinfo:
        if call == "info":
            api.model_info(target, **kwargs)
        elif call == "download":
            hf_hub_download(target, kwargs.pop("filename", "config.json"), endpoint=hub.url,
                            cache_dir=tmp_path, **kwargs)
        else:
            api.parse_safetensors_file_metadata(target, "config.json", **kwargs)
    assert type(excinfo.value) is error or error is EntryNotFoundError  # Gated subclasses NotFound
    assert excinfo.value.response.status_code == status
    if error is GatedRepoError and status == 401:
        assert f"Access to model {target} is restricted" in str(excinfo.value)


def test_gated_and_private_repos_open_to_their_token(hub, api, repo_id, tmp_path):
    _errors_setup(hub, repo_id)
    gated = api.model_info(repo_id + "-gated")  # the card of a gated repo is public
    assert gated.gated == "manual"
    for suffix in ("-gated", "-private"):
        path = hf_hub_download(repo_id + suffix, "config.json", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path)
        assert Path(path).read_bytes() == CONFIG
    assert api.model_info(repo_id + "-private", token=TOKEN).private is True


def test_request_log_records_auth_presence_but_never_the_token(hub, api, repo_id):
    _errors_setup(hub, repo_id)
    api.model_info(repo_id + "-private", token=TOKEN)
    api.model_info(repo_id)
    assert [r.has_auth for r in hub.requests] == [True, False]
    assert TOKEN not in repr(hub.requests)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_fault_status_applies_once_then_clears(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.status(503))
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    assert excinfo.value.response.status_code == 503
    assert api.model_info(repo_id).id == repo_id
    assert [(r.status, r.fault) for r in hub.requests] == [(503, "status"), (200, None)]


def test_hf_hub_download_retries_a_failed_head_when_nothing_is_cached(hub, repo_id, tmp_path):
    single_file_repo(hub, repo_id)
    hub.inject(faults.status(502), method="HEAD")
    path = hf_hub_download(repo_id, "config.json", endpoint=hub.url, cache_dir=tmp_path)  # backs off 1 s
    assert Path(path).read_bytes() == CONFIG
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 502), ("HEAD", 200), ("GET", 200)]


def test_fault_rate_limited(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.rate_limited(7))
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    response = excinfo.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert "rate limit" in str(excinfo.value)


def test_fault_reset_raises_a_transport_error_and_the_server_survives(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.reset)
    with pytest.raises(httpx2.TransportError):
        api.parse_safetensors_file_metadata(repo_id, "model.safetensors")
    assert hub.requests[0].status == 0
    assert api.parse_safetensors_file_metadata(repo_id, "model.safetensors").tensors


def test_fault_hang_triggers_a_client_timeout(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.hang(1.0))
    started = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout):
        api.parse_safetensors_file_metadata(repo_id, "model.safetensors", timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert hub.wait_idle()
    assert api.parse_safetensors_file_metadata(repo_id, "model.safetensors", timeout=2).tensors


def test_fault_truncated_body_is_resumed_by_hf_hub_download(hub, repo_id, tmp_path):
    small = bytes(range(256)) * 400
    big = SparseFile(os.urandom(4096), 24 * 2**20)
    hub.add_repo(repo_id, {"small.bin": small, "big.bin": big})
    with httpx2.Client(base_url=hub.url) as client:
        hub.inject(faults.truncated)
        with pytest.raises(httpx2.RemoteProtocolError):
            client.get(f"/{repo_id}/resolve/main/small.bin")
    assert hub.requests[0].bytes_sent == len(small) // 2
    hub.clear_log()

    # The client keeps what it had written (whole 10 MiB chunks) and resumes with a Range.
    hub.inject(faults.truncated, path_contains="big.bin", method="GET")
    path = Path(hf_hub_download(repo_id, "big.bin", endpoint=hub.url, cache_dir=tmp_path))

    first, second = hub.find("GET")
    assert (first.status, first.range, first.bytes_sent) == (200, None, 12 * 2**20)
    resumed_from = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_from <= 12 * 2**20
    assert (second.status, second.bytes_sent) == (206, 24 * 2**20 - resumed_from)
    assert path.read_bytes() == big.prefix + bytes(big.size - len(big.prefix))


def test_fault_ignore_range_and_wrong_content_range(hub, repo_id):
    hub.add_repo(repo_id, {"data.bin": DATA})
    url = f"/{repo_id}/resolve/main/data.bin"
    with httpx2.Client(base_url=hub.url) as client:
        hub.inject(faults.ignore_range)
        whole = client.get(url, headers={"Range": "bytes=0-9"})
        hub.inject(faults.wrong_content_range())
        shifted = client.get(url, headers={"Range": "bytes=0-9"})
    assert (whole.status_code, whole.content) == (200, DATA)
    assert (shifted.status_code, shifted.headers["Content-Range"], shifted.content) == (
        206, "bytes 1-10/1024", DATA[1:11])


def test_fault_body_serves_hostile_content(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.body(b"\xff" * 8 + b"not json"))
    with pytest.raises(SafetensorsParsingError, match="too big"):
        api.parse_safetensors_file_metadata(repo_id, "model.safetensors")
    hub.inject(faults.body(b"[1, 2]"), path_contains="/api/")
    with httpx2.Client(base_url=hub.url) as client:
        assert client.get(f"/api/models/{repo_id}").json() == [1, 2]


def test_faults_match_path_and_count(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.inject(faults.status(500), path_contains="config.json", times=2)
    assert api.file_exists(repo_id, "model.safetensors")
    with httpx2.Client(base_url=hub.url) as client:
        statuses = [client.get(f"/{repo_id}/resolve/main/config.json").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert hub.pending_faults == []


def test_latency_delays_every_answer(hub, api, repo_id):
    single_file_repo(hub, repo_id)
    hub.latency = 0.15
    started = time.monotonic()
    api.model_info(repo_id)
    api.file_exists(repo_id, "config.json")
    assert time.monotonic() - started >= 0.3


def test_client_hanging_up_mid_body_leaves_the_server_healthy(hub, repo_id):
    hub.add_repo(repo_id, {"big.bin": SparseFile(b"", 64 * 2**20)})
    with httpx2.Client(base_url=hub.url) as client:
        with client.stream("GET", f"/{repo_id}/resolve/main/big.bin") as response:
            next(response.iter_bytes())
    with httpx2.Client(base_url=hub.url) as client:
        assert client.head(f"/{repo_id}/resolve/main/big.bin").status_code == 200
    assert hub.wait_idle()
    assert hub.requests[0].bytes_sent < 64 * 2**20
    assert hub.server_errors == []


# --------------------------------------------------------------------------------------------
# The real Hub's redirect for LFS files
# --------------------------------------------------------------------------------------------


def test_lfs_redirect_behaves_like_the_real_hub(hub, api, repo_id, tmp_path):
    files = single_file_repo(hub, repo_id, tokens=[TOKEN])
    hub.lfs_redirect = True
    size = files["model.safetensors"].size

    meta = get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors", endpoint=hub.url), token=TOKEN)
    assert meta.size == size  # from X-Linked-Size: the HEAD stops at the cross-origin 302
    assert meta.location.startswith(f"http://localhost:{hub.port}/__cdn/")
    assert [(r.method, r.status) for r in hub.requests] == [("HEAD", 302)]

    assert api.parse_safetensors_file_metadata(repo_id, "model.safetensors", token=TOKEN).tensors
    cdn = hub.find(path_contains="/__cdn/")
    assert [(r.method, r.status, r.has_auth) for r in cdn] == [("GET", 206, False)]  # token stays on the Hub

    path = hf_hub_download(repo_id, "model.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(path).stat().st_size == size


# --------------------------------------------------------------------------------------------
# Session wiring, tiny models and transformers end to end
# --------------------------------------------------------------------------------------------


def test_session_points_huggingface_hub_at_the_fake_hub(fake_hub):
    assert constants.ENDPOINT == fake_hub.url
    assert get_token() is None
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])
    assert constants.HF_HUB_DISABLE_XET


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_tiny_models_load_and_generate(tiny_models, arch):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_models[arch]
    config = json.loads((folder / "config.json").read_text())
    with safe_open(folder / "model.safetensors", "pt") as f:
        names = list(f.keys())
        dtypes = {f.get_slice(n).get_dtype() for n in names}
    assert config["model_type"] == arch and dtypes == {"BF16"}
    assert ("lm_head.weight" in names) != config.get("tie_word_embeddings", False)
    if "sliding_window" in TINY_ARCHS[arch]:
        assert config["sliding_window"] == 64
    if arch in ("mixtral", "qwen2_moe", "qwen3_moe"):
        assert any("experts" in n for n in names)

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer("the model fits on gpu", return_tensors="pt")
    assert inputs["input_ids"].shape[1] > 0
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


_E2E_SCRIPT = textwrap.dedent("""
    import json, sys
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    inputs = tokenizer("the model fits on gpu", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    print(json.dumps(out[0].tolist()))
""")


def test_transformers_downloads_and_runs_a_model_from_the_fake_hub(hub, tiny_models, repo_id, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_models.build("llama", max_shard_size="150KB")
    hub.add_local_model(repo_id, folder)
    commit = hub.repo(repo_id).revisions["main"].commit
    # A fresh process: huggingface_hub reads HF_ENDPOINT (already the fake Hub) at import.
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", _E2E_SCRIPT, repo_id], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = AutoTokenizer.from_pretrained(folder)("the model fits on gpu", return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0].tolist()
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected  # same weights, same tokens

    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    downloaded = {r.path.rsplit("/", 1)[-1] for r in hub.find("GET", f"/resolve/{commit}/")}
    assert {"config.json", INDEX_FILE, "tokenizer.json", *shards} <= downloaded
    assert hub.find("GET", f"/api/models/{repo_id}")  # transformers pins the commit first
    assert not [r for r in hub.requests if r.status >= 500]
