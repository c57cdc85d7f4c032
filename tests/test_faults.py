"""Hub faults: what is retryable is retried (with backoff, within one deadline), what is not fails at
once, and a failure names the request and the reason. A half-read header is never a result: a
truncated body, a 200 where a 206 was asked for and a Content-Range for other bytes each end in the
right tensors (after a retry, or by reading the right bytes) or in a clear error.

``FAULTS`` is the table: (where the fault hits, the fault) -> the outcome. Each transient fault
hits one request once; the read must then give exactly the tensors of a fault-free read.
"""

from __future__ import annotations

import json
import time

import pytest

from fakehub import FakeHub, Fault, SparseFile, faults
from fixtures_models import safetensors_header
from hostile import CONFIG, check_one_line, run_cli
from planner.sources import http as hubhttp
from planner.core.errors import GatedRepo, HubError, HubUnavailable, RepoNotFound
from planner.api import read_model

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
TENSORS1 = {"model.embed_tokens.weight": ("BF16", (100, 64)), "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128))}
TENSORS2 = {"model.norm.weight": ("BF16", (64,))}
# Shard 2's header is padded past what the first read (sized from the index) covers, so reading
# it takes two requests: the first bytes, then "the rest of a header".
SHARD2_HEADER_BYTES = 50_000


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff of 10 ms and attempts of 0.2 s, so that a table of faults runs in seconds. The
    constants are read at call time; their real values are exercised by the timing tests below."""
    monkeypatch.setattr(hubhttp, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(hubhttp, "ATTEMPT_TIMEOUT_S", 0.2)


def add_sharded(hub: FakeHub, repo_id: str) -> None:
    h1, s1 = safetensors_header(TENSORS1)
    h2, s2 = safetensors_header(TENSORS2, header_size=SHARD2_HEADER_BYTES)
    index = {"metadata": {}, "weight_map": {**dict.fromkeys(TENSORS1, SHARD1), **dict.fromkeys(TENSORS2, SHARD2)}}
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors.index.json": json.dumps(index).encode(),
                           SHARD1: SparseFile(h1, s1), SHARD2: SparseFile(h2, s2)})


EXPECTED = {name: shape for name, (_, shape) in {**TENSORS1, **TENSORS2}.items()}

# Where a fault hits: a substring of exactly one request's path (the fake Hub matches on it).
TARGETS = {
    "model-info": "/revision/main",
    "config": "/resolve/main/config.json",
    "index": "/resolve/main/model.safetensors.index.json",
    "shard-header": SHARD2,
    "rest-of-header": SHARD2,  # the second read of shard 2 (a no-op fault takes the first)
    "all-headers-endpoint": "/safetensors-metadata/",
}
TRANSIENT: dict[str, Fault] = {
    "500": faults.status(500), "502": faults.status(502), "503": faults.status(503), "504": faults.status(504),
    "408": faults.status(408), "429": faults.rate_limited(0), "reset": faults.reset, "hang": faults.hang(0.4),
    "truncated": faults.truncated, "ignore-range": faults.ignore_range, "wrong-content-range": faults.wrong_content_range(),
    "wrong-content-range-back": faults.wrong_content_range(-1),
}
# Faults that leave the answer usable as it is: no retry is needed.
_NO_RETRY = {"ignore-range", "wrong-content-range", "wrong-content-range-back"}
_RANGED = {"shard-header", "rest-of-header"}

# (target, fault) -> how many requests to the target a correct read makes at least.
FAULTS: dict[tuple[str, str], int] = {}
for _t in TARGETS:
    for _f in TRANSIENT:
        if _t == "all-headers-endpoint":
            FAULTS[(_t, _f)] = 1  # optional: one attempt, then the shards are read instead
        elif _f in _NO_RETRY and (_t not in _RANGED or _f == "ignore-range"):
            FAULTS[(_t, _f)] = 1  # no Range on the request, or a 200 whose bytes are sliced right
        else:
            FAULTS[(_t, _f)] = 2  # the faulty answer was refused and asked again


@pytest.mark.parametrize(("target", "fault"), sorted(FAULTS), ids=[f"{t}-{f}" for t, f in sorted(FAULTS)])
def test_transient_fault_gives_the_right_tensors(target: str, fault: str, hub: FakeHub, repo_id: str, quick: None) -> None:
    add_sharded(hub, repo_id)
    hub.sharded_metadata_endpoint = target == "all-headers-endpoint"
    where = TARGETS[target]
    if target == "rest-of-header":
        hub.inject(faults.hang(0), path_contains=where)
    hub.inject(TRANSIENT[fault], path_contains=where)
    started = time.monotonic()
    snap = read_model(repo_id, timeout=20)
    assert {t.name: t.shape for t in snap.tensors} == EXPECTED
    assert hub.pending_faults == []  # the fault did hit
    hub.wait_idle()  # a hung answer is logged when it is (too late) sent
    hits = [r for r in hub.requests if where in r.path]
    assert len(hits) >= FAULTS[(target, fault)] + (target == "rest-of-header")
    assert time.monotonic() - started < 15
    assert not [r for r in hub.requests if r.status >= 500 and r.fault is None]


# --------------------------------------------------------------------------------------------
# Faults that do not go away: a clear error naming the request, within the deadline
# --------------------------------------------------------------------------------------------

PERMANENT = {
    ("model-info", "503"): ("model info of", "HTTP 503"),
    ("model-info", "reset"): ("model info of", "connection failed"),
    ("model-info", "hang"): ("model info of", "timed out"),
    ("config", "502"): ("config.json of", "HTTP 502"),
    ("config", "truncated"): ("config.json of", ""),
    ("index", "429"): ("model.safetensors.index.json of", "HTTP 429"),
    ("shard-header", "503"): (f"header of {SHARD2} of", "HTTP 503"),
    ("shard-header", "truncated"): (f"header of {SHARD2} of", ""),
    ("shard-header", "wrong-content-range"): (f"header of {SHARD2} of", "Content-Range"),
    ("rest-of-header", "wrong-content-range-back"): (f"header of {SHARD2} of", "Content-Range"),
}
_DEADLINE = 0.4


@pytest.mark.parametrize(("target", "fault"), sorted(PERMANENT), ids=[f"{t}-{f}" for t, f in sorted(PERMANENT)])
def test_permanent_fault_names_the_request_within_the_deadline(target: str, fault: str, hub: FakeHub, repo_id: str, quick: None) -> None:
    add_sharded(hub, repo_id)
    hub.sharded_metadata_endpoint = False
    where = TARGETS[target]
    if target == "rest-of-header":
        hub.inject(faults.hang(0), path_contains=where)
    hub.inject(TRANSIENT[fault], path_contains=where, times=None)
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as e:
        read_model(repo_id, timeout=_DEADLINE)
    elapsed = time.monotonic() - started
    what, why = PERMANENT[(target, fault)]
    msg = e.value.message
    assert what in msg and repo_id in msg and why in msg and "deadline" in msg, msg
    assert elapsed < _DEADLINE + 2, elapsed  # slack for a loaded CI machine; the hang alone is 0.4 s per try
    hub.clear_faults()
    hub.wait_idle()
    assert len([r for r in hub.requests if where in r.path]) >= 2  # it was retried


def test_truncated_bodies_are_never_parsed(hub: FakeHub, repo_id: str, quick: None) -> None:
    """Every answer cut in half, forever: no result is made of half a header."""
    add_sharded(hub, repo_id)
    hub.sharded_metadata_endpoint = False
    hub.inject(faults.truncated, path_contains=".safetensors", times=None)
    with pytest.raises(HubUnavailable, match="truncated|connection failed"):
        read_model(repo_id, timeout=_DEADLINE)


def test_a_server_that_never_honours_range_still_gives_the_right_header(hub: FakeHub, repo_id: str) -> None:
    """RFC 9110 lets a server answer a Range request with the whole file: both the first read and
    the rest of a header then take their bytes from the right offsets (bounded by the limit)."""
    add_sharded(hub, repo_id)
    hub.sharded_metadata_endpoint = False
    hub.inject(faults.ignore_range, times=None)
    snap = read_model(repo_id)
    assert {t.name: t.shape for t in snap.tensors} == EXPECTED
    rest = [r for r in hub.requests if SHARD2 in r.path]
    assert len(rest) == 2 and all(r.status == 200 for r in rest)


def test_a_failing_optional_endpoint_costs_no_retries(hub: FakeHub, repo_id: str) -> None:
    """The all-headers shortcut failing for good must not eat the deadline: the shards are read."""
    add_sharded(hub, repo_id)
    hub.inject(faults.status(503), path_contains="/safetensors-metadata/", times=None)
    started = time.monotonic()
    snap = read_model(repo_id, timeout=10)
    assert {t.name: t.shape for t in snap.tensors} == EXPECTED
    assert time.monotonic() - started < 5  # retries would run to the 10 s deadline
    assert len(hub.find(path_contains="/safetensors-metadata/")) == 1


def test_a_failing_speculative_read_costs_no_retries(hub: FakeHub, repo_id: str) -> None:
    """A single-file repo does not need the index that was asked for on speculation (off main;
    on main the index is not asked for ahead at all, the all-shard-headers answer replaces it)."""
    header, size = safetensors_header(TENSORS1)
    files = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(header, size)}
    hub.add_repo(repo_id, files, revision="v1")
    hub.inject(faults.status(503), path_contains="/resolve/v1/model.safetensors.index.json", times=None)
    started = time.monotonic()
    snap = read_model(repo_id, revision="v1", timeout=10)
    assert {t.name for t in snap.tensors} == set(TENSORS1)
    assert time.monotonic() - started < 5  # retries would run to the 10 s deadline
    assert len(hub.find(path_contains="/resolve/v1/model.safetensors.index.json")) == 1
    hub.add_repo(repo_id, files)
    read_model(repo_id, timeout=10)
    assert not hub.find(path_contains="/resolve/main/model.safetensors.index.json")


def test_an_all_headers_answer_missing_a_shard_is_not_used(hub: FakeHub, repo_id: str) -> None:
    """A shortcut answer that covers part of the model would undercount it: read the shards."""
    add_sharded(hub, repo_id)
    h1, _ = safetensors_header(TENSORS1)
    partial = {"index": {"metadata": {}}, "headers": {SHARD1: json.loads(h1[8:])}}
    hub.inject(faults.body(json.dumps(partial).encode()), path_contains="/safetensors-metadata/")
    snap = read_model(repo_id)
    assert {t.name: t.shape for t in snap.tensors} == EXPECTED
    assert hub.find(path_contains=SHARD2)


# --------------------------------------------------------------------------------------------
# Retry-After, backoff and the deadline, with the real constants
# --------------------------------------------------------------------------------------------


def test_retry_after_is_honoured(hub: FakeHub, repo_id: str) -> None:
    add_sharded(hub, repo_id)
    hub.inject(faults.rate_limited(1), path_contains=TARGETS["model-info"])
    started = time.monotonic()
    read_model(repo_id, timeout=10)
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in hub.find(path_contains=TARGETS["model-info"])] == [429, 200]


def test_retry_after_past_the_deadline_fails_at_once(hub: FakeHub, repo_id: str) -> None:
    add_sharded(hub, repo_id)
    hub.inject(faults.rate_limited(100), path_contains=TARGETS["model-info"])
    started = time.monotonic()
    with pytest.raises(HubUnavailable) as e:
        read_model(repo_id, timeout=3)
    assert time.monotonic() - started < 2.5  # at once, not after 3 s or 100 s
    assert "rate limited" in e.value.message and "100 s" in e.value.message and "3 s deadline" in e.value.message


def test_backoff_spaces_the_retries(hub: FakeHub, repo_id: str) -> None:
    """With the real backoff (0.25 s, then 0.5 s, doubling), 1.2 s of a failing Hub is three
    attempts (at 0, 0.25 and 0.75 s), not a busy loop."""
    add_sharded(hub, repo_id)
    hub.inject(faults.status(503), path_contains=TARGETS["model-info"], times=None)
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match="HTTP 503"):
        read_model(repo_id, timeout=1.2)
    assert 1.1 < time.monotonic() - started < 3
    assert 2 <= len(hub.find(path_contains=TARGETS["model-info"])) <= 4


@pytest.mark.parametrize(("setup", "error"), [("missing", RepoNotFound), ("gated", GatedRepo), ("revision", RepoNotFound)])
def test_answers_that_will_not_change_are_not_retried(setup: str, error: type, hub: FakeHub, repo_id: str) -> None:
    if setup != "missing":
        add_sharded(hub, repo_id)
    if setup == "gated":
        hub.repo(repo_id).gated = "manual"
    started = time.monotonic()
    with pytest.raises(error):
        read_model(repo_id, revision="no-such-branch" if setup == "revision" else None, timeout=10)
    assert time.monotonic() - started < 3  # retries would run to the 10 s deadline
    paths = [r.path for r in hub.requests]
    assert len(paths) == len(set(paths))  # every request made once


def test_garbage_from_the_api_is_a_clear_error_not_a_retry(hub: FakeHub, repo_id: str) -> None:
    add_sharded(hub, repo_id)
    hub.inject(faults.body(b"<html>proxy error</html>"), path_contains=TARGETS["model-info"])
    with pytest.raises(HubError, match="model info of .*not JSON"):
        read_model(repo_id, timeout=5)


def test_cli_total_deadline_holds_when_the_hub_hangs(repo_id: str) -> None:
    """A Hub that never answers: the command ends at its --timeout, not at the 30 s hang. (A hub
    of its own, so that stopping it ends the held requests instead of the next test waiting.)"""
    own = FakeHub().start()
    try:
        add_sharded(own, repo_id)
        own.inject(faults.hang(30), times=None)
        # 3 s, not 1: the interpreter and the first connection are slow under pytest-xdist on a
        # loaded 2-core machine (the deadline starts after huggingface_hub's import: see below).
        r = run_cli("plan", repo_id, "--hardware", "rtx-4090", "--timeout", "3", env={"HF_ENDPOINT": own.url})
        check_one_line(r.code, r.stderr, repo_id, "3 s deadline", "timed out")
        # 3 s of deadline plus the interpreter's start-up on a loaded machine; far below 30 s.
        assert r.seconds < 10, r.seconds
    finally:
        own.stop()


def test_cli_names_the_failing_request(hub: FakeHub, repo_id: str) -> None:
    add_sharded(hub, repo_id)
    hub.sharded_metadata_endpoint = False
    hub.inject(faults.status(503), path_contains=SHARD2, times=None)
    r = run_cli("plan", repo_id, "--hardware", "rtx-4090", "--timeout", "3")  # 3 s: see above
    check_one_line(r.code, r.stderr, f"header of {SHARD2} of {repo_id}", "HTTP 503", "3 s deadline")
    assert r.stdout == ""
    # under --json the same error is one JSON object on stdout, with the same exit code
    r = run_cli("plan", repo_id, "--hardware", "rtx-4090", "--timeout", "3", "--json")
    doc = json.loads(r.stdout)
    assert r.code == 2 == doc["exit_code"] and doc["error"] == "HubUnavailable" and r.stderr == ""
    assert all(s in doc["message"] for s in (f"header of {SHARD2} of {repo_id}", "HTTP 503", "3 s deadline"))


def test_hub_down_falls_back_to_the_catalog_and_says_so(hub: FakeHub, quick: None) -> None:
    hub.inject(faults.status(503), times=None)
    snap = read_model("meta-llama/Llama-3.1-8B", timeout=0.3)
    assert snap.source == "catalog" and any("Hub could not be reached" in n for n in snap.notes)


# A Python whose huggingface_hub takes SLOW_IMPORT_S to import: ``--timeout`` counts requests, not it
SLOW_IMPORT_S = 2.0
_SLOW_HUB = f"""
import importlib.abc, sys, time
class Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "huggingface_hub":
            time.sleep({SLOW_IMPORT_S})
        return None
sys.meta_path.insert(0, Slow())
from planner.cli.main import main
main(sys.argv[1:])
"""


def test_timeout_counts_requests_not_the_hub_clients_import(hub: FakeHub, repo_id: str) -> None:
    """A 1.5 s deadline with a 2 s import of huggingface_hub: the plan is made (the deadline starts
    once the client is loaded; before, "no attempt made" within the deadline)."""
    import subprocess
    import sys

    add_sharded(hub, repo_id)
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _SLOW_HUB, "plan", repo_id, "--hardware", "rtx-4090", "--timeout", "1.5", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout[-500:] + p.stderr[-500:]
    assert json.loads(p.stdout)["model"]["parameters"] > 0
    assert time.monotonic() - started > SLOW_IMPORT_S  # the slow import did run in the child
