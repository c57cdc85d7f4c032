"""The on-disk metadata cache: keyed by endpoint, repo, revision and commit; safe under concurrent
fitcheck processes; a corrupted entry is detected and read again; offline with nothing cached is
a clear error."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import decoder_tensors, safetensors_header, sparse_repo_files
from hostile import CONFIG, check_one_line, run_cli, short_repo_id
from planner.sources import cache
from planner.core.errors import OfflineCacheMiss
from planner.api import read_model
from planner.report.schema import report_dict

HW = ["--hardware", "rtx-4090"]


def _model(hub: FakeHub, repo_id: str, layers: int = 2, shards: int = 1, **kw: Any) -> None:
    tensors = decoder_tensors(layers=layers, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=100)
    files = sparse_repo_files(tensors, shards=shards)
    files["config.json"] = json.dumps({**CONFIG, "num_hidden_layers": layers, "tie_word_embeddings": False}).encode()
    hub.add_repo(repo_id, files, **kw)


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json"))


def _verify(path: Path) -> dict[str, Any]:
    """Check one cache file's checksum line and return its body."""
    digest, _, body = path.read_bytes().partition(b"\n")
    assert hashlib.sha256(body).hexdigest().encode() == digest, f"{path} fails its checksum"
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def _tensors(snap: Any) -> set[tuple[str, str, tuple[int, ...], int, str]]:
    """What a snapshot says about its tensors (the cache keeps all of it but the data offsets,
    which only the header checks use)."""
    return {(t.name, t.dtype, t.shape, t.nbytes, t.file) for t in snap.tensors}


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A plan's JSON without what says how it was read (hub or cache, requests, seconds)."""
    doc = json.loads(json.dumps(doc))
    for key in ("source", "fetch"):
        doc["model"].pop(key, None)
    return doc


# --------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------


def test_concurrent_processes_share_one_cache(hub: FakeHub, tmp_path: Path) -> None:
    """10 `fitcheck plan --json` at once (3 models on main, 3 processes each, and one pinned to a
    commit) into one FITCHECK_CACHE_DIR: every entry intact, every answer what one process alone
    gives, and afterwards everything served from the cache."""
    models = [short_repo_id(f"concurrent-{i}") for i in range(3)]
    for i, m in enumerate(models):
        _model(hub, m, layers=1 + i, shards=1 + i % 2)
    commit = hub.repo(models[0]).revisions["main"].commit
    hub.latency = 0.02  # widen the window in which writers overlap
    shared = tmp_path / "shared-cache"
    jobs = [(m, None) for m in models for _ in range(3)] + [(models[0], commit)]

    def plan(model: str, revision: str | None, cache_dir: Path) -> tuple[int, str, str]:
        args = [sys.executable, "-m", "planner.cli.main", "plan", model, *HW, "--json", *(["--revision", revision] if revision else [])]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "FITCHECK_CACHE_DIR": str(cache_dir)})
        return p.returncode, p.stdout, p.stderr

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda j: plan(*j, shared), jobs))
    assert len(jobs) >= 8
    for (model, _), (code, out, err) in zip(jobs, results):
        assert code == 0, err
        assert json.loads(out)["model"]["id"] == model

    entries = _entries(shared / "entries")
    refs = _entries(shared / "refs")
    assert len(entries) == len(models) and len(refs) == len(models)  # one per commit, one per (repo, main)
    for path in entries + refs:
        _verify(path)
    assert not [p for p in shared.rglob("*") if p.name.startswith(".tmp-")]  # no temporary file left behind

    hub.latency = 0.0
    for i, job in enumerate(sorted(set(jobs), key=str)):  # one process alone, into an empty cache
        code, out, err = plan(*job, tmp_path / f"alone-{i}")
        assert code == 0, err
        expected = _comparable(json.loads(out))
        for other, (_, got, _) in zip(jobs, results):
            if other == job:
                assert _comparable(json.loads(got)) == expected

    hub.clear_log()
    code, out, _ = plan(models[1], None, shared)
    assert code == 0 and json.loads(out)["model"]["source"] == "cache"
    assert hub.requests == []  # within the ref's TTL: no request at all


_HAMMER = textwrap.dedent("""
    import json, sys
    from planner.sources import cache
    from planner.core.records import Snapshot, Tensor, RepoFile
    seed = int(sys.argv[1])
    tensors = tuple(Tensor(f"model.layers.{i}.w", "BF16", (64, 64), 8192, "model.safetensors") for i in range(200))
    snap = Snapshot(id="org/m", revision="main", commit="a" * 40, source="hub", config={"seed": 0}, files=(RepoFile("model.safetensors", 1),),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)
    stored = torn = 0
    for i in range(80):
        if (i + seed) % 2 == 0:
            cache.store("http://x", snap)
            cache.store_ref("http://x", "org/m", "main", "a" * 40)
            stored += 1
        got = cache.load("http://x", "org/m", "a" * 40)
        if stored and (got is None or got.tensors != tensors):
            torn += 1
        ref = cache.lookup_ref("http://x", "org/m", "main")
        if stored and (ref is None or ref[0] != "a" * 40):
            torn += 1
    print(json.dumps({"torn": torn}))
""")


def test_writers_and_readers_never_see_half_an_entry(tmp_path: Path) -> None:
    """8 processes writing and reading the same entry and ref 80 times each: every read after
    a process's own first write finds the whole entry."""
    env = {**os.environ, "FITCHECK_CACHE_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert json.loads(out) == {"torn": 0}
    for path in _entries(tmp_path):
        _verify(path)


# --------------------------------------------------------------------------------------------
# Corruption
# --------------------------------------------------------------------------------------------


def _flip(path: Path, at: float) -> None:
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * at)
    raw[i] ^= 0x01
    path.write_bytes(bytes(raw))


def _rechecksummed(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Tamper with the body and write a matching checksum: only decoding can tell."""
    data = _verify(path)
    change(data)
    body = json.dumps(data).encode()
    path.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated-half": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "truncated-to-checksum": lambda p: p.write_bytes(p.read_bytes().partition(b"\n")[0]),
    "empty": lambda p: p.write_bytes(b""),
    "flipped-body-byte": lambda p: _flip(p, 0.8),
    "flipped-checksum-byte": lambda p: _flip(p, 0.01),
    "garbage-appended": lambda p: p.write_bytes(p.read_bytes() + b"\x00garbage"),
    "not-utf8": lambda p: p.write_bytes(b"\xff\xfe" * 100),
    "checksum-of-other-body": lambda p: p.write_bytes(hashlib.sha256(b"{}").hexdigest().encode() + b"\n" + p.read_bytes().partition(b"\n")[2]),
    # An entry's tensors, or a ref's commit, of the wrong kind.
    "valid-checksum-bad-content": lambda p: _rechecksummed(p, lambda d: d.update(tensors=[["x", "NOPE", [1], [[0]]]], commit=123)),
    "valid-checksum-wrong-format": lambda p: _rechecksummed(p, lambda d: d.update(format=99, time="yesterday")),
    "valid-checksum-array": lambda p: p.write_bytes(hashlib.sha256(b"[]").hexdigest().encode() + b"\n[]"),
    "a-directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@pytest.mark.parametrize("which", ["entry", "ref"])
def test_a_corrupted_file_is_detected_and_read_again(kind: str, which: str, hub: FakeHub, repo_id: str) -> None:
    _model(hub, repo_id, shards=2)
    first = read_model(repo_id)
    assert first.source == "hub"
    root = cache.cache_dir() / ("entries" if which == "entry" else "refs")
    (path,) = _entries(root)
    CORRUPTIONS[kind](path)
    hub.clear_log()

    again = read_model(repo_id)
    assert again.source == "hub" and hub.requests  # detected: read from the Hub again
    assert _tensors(again) == _tensors(first) and again.config == first.config and again.commit == first.commit
    if kind != "a-directory":
        _verify(path)  # and written back whole
        hub.clear_log()
        third = read_model(repo_id)
        assert third.source == "cache" and hub.requests == [] and {t.name for t in third.tensors} == {t.name for t in first.tensors}


def test_offline_with_a_corrupted_entry_is_a_clear_error(hub: FakeHub, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _model(hub, repo_id)
    read_model(repo_id)
    (path,) = _entries(cache.cache_dir() / "entries")
    _flip(path, 0.5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.clear_log()
    with pytest.raises(OfflineCacheMiss, match="HF_HUB_OFFLINE is set"):
        read_model(repo_id)
    assert hub.requests == []


# --------------------------------------------------------------------------------------------
# Keys, offline, round trips
# --------------------------------------------------------------------------------------------


def test_offline_with_an_empty_cache_is_one_clear_line(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    _model(hub, repo_id)
    r = run_cli("plan", repo_id, *HW, env={"HF_HUB_OFFLINE": "1", "FITCHECK_CACHE_DIR": str(tmp_path / "empty")})
    check_one_line(r.code, r.stderr, repo_id, "HF_HUB_OFFLINE is set", "cache")
    assert hub.requests == []


def test_offline_with_a_warm_cache_needs_no_network(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    _model(hub, repo_id)
    env = {"FITCHECK_CACHE_DIR": str(tmp_path / "warm")}
    online = run_cli("plan", repo_id, *HW, "--json", env=env)
    assert online.code == 0, online.stderr
    hub.clear_log()
    offline = run_cli("plan", repo_id, *HW, "--json", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.code == 0, offline.stderr
    assert hub.requests == []
    assert _comparable(json.loads(offline.stdout)) == _comparable(json.loads(online.stdout))


def test_entries_are_keyed_by_commit_and_refs_by_revision(hub: FakeHub, repo_id: str) -> None:
    _model(hub, repo_id, layers=1)
    _model(hub, repo_id, layers=3, revision="v2")
    main, v2 = read_model(repo_id), read_model(repo_id, revision="v2")
    assert main.commit != v2.commit and len(main.tensors) != len(v2.tensors)
    # A pinned commit is its own key, and reports the commit it was asked for.
    pinned = read_model(repo_id, revision=v2.commit)
    assert pinned.revision == v2.commit and _tensors(pinned) == _tensors(v2) and pinned.source == "cache"
    assert len(_entries(cache.cache_dir() / "entries")) == 2 and len(_entries(cache.cache_dir() / "refs")) == 2
    # The same commit on another endpoint is another entry.
    other = FakeHub().start()
    try:
        _model(other, repo_id, layers=1)
        assert read_model(repo_id, endpoint=other.url).source == "hub"
    finally:
        other.stop()


def test_a_moved_branch_is_read_again_after_the_ttl(hub: FakeHub, repo_id: str) -> None:
    _model(hub, repo_id, layers=1)
    before = read_model(repo_id)
    _model(hub, repo_id, layers=2)  # a push to main
    assert read_model(repo_id).commit == before.commit  # within the TTL: the cached commit
    after = read_model(repo_id, ttl=0)  # past it: one HEAD shows the branch moved
    assert after.commit != before.commit and after.source == "hub" and len(after.tensors) > len(before.tensors)


@pytest.mark.parametrize("names", [
    ["model.layers.01.weight", "model.layers.1.weight"],  # a leading zero is part of the name
    ["model.layers." + "9" * 30 + ".weight"],  # past int()'s sweet spot
    ["model.layers." + "1" * 900 + ".weight"],  # a number no int() should be asked to read
    ["a.{}.b", "a.1.b"],  # a template marker in a name
    ["x.0", "x.00", "x.000"],
])
def test_tensor_names_survive_the_cache_exactly(names: list[str], hub: FakeHub, repo_id: str) -> None:
    header, size = safetensors_header({n: ("F32", (2,)) for n in names})
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(header, size)})
    first = read_model(repo_id)
    second = read_model(repo_id)
    assert sorted(t.name for t in second.tensors) == sorted(names) == sorted(t.name for t in first.tensors)
    assert {(t.name, t.shape, t.nbytes) for t in second.tensors} == {(t.name, t.shape, t.nbytes) for t in first.tensors}


def test_warm_plans_reuse_the_cached_estimate_without_reading_tensors(tiny_models, hub: FakeHub) -> None:
    """The cold plan caches its footprint (keyed by commit and estimator version); the warm plan
    loads that small summary, not the tensors, and gets the very same footprint."""
    from planner import api
    from planner.model.footprint import ESTIMATOR_VERSION, estimate
    from planner.hardware.probe import apply_overrides
    from planner.core.records import Hardware
    from planner.runtimes.transformers.files import select
    from planner.sources import resolve

    def selector(listing, config):
        return select((f.path for f in listing), config)[0]

    repo = "tests/warm-summary"
    hub.add_local_model(repo, tiny_models["qwen2"])
    hw = apply_overrides(Hardware(name="t", source="t", gpus=(), ram_total=1, ram_free=1, disk_free=1, cache_disk_free=1),
                         ram=8 << 30, disk=10**12)
    cold = api.plan(repo, hardware=hw)
    warm_snap, facts = resolve.read(repo, select=selector, version=ESTIMATOR_VERSION)
    assert warm_snap.source == "cache" and warm_snap.tensors == () and facts is not None
    assert estimate(warm_snap, facts) == cold.footprint
    # another estimator version does not get them: it reads the tensors of the full entry
    other, none = resolve.read(repo, select=selector, version=ESTIMATOR_VERSION + "-next")
    assert none is None and other.tensors and estimate(other) == cold.footprint
    assert report_dict(api.plan(repo, hardware=hw))["plan"] == report_dict(cold)["plan"]
    # a damaged summary is not trusted: the tensors are read from the full entry instead
    summaries = [p for p in (Path(os.environ["FITCHECK_CACHE_DIR"]) / "summaries").iterdir()]
    assert len(summaries) == 1
    summaries[0].write_bytes(summaries[0].read_bytes()[:-10])
    again, facts = resolve.read(repo, select=selector, version=ESTIMATOR_VERSION)
    assert facts is None and again.tensors and estimate(again) == cold.footprint
