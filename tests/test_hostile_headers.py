"""Hostile safetensors headers, end to end: the parser, a local folder, the fake Hub (one file,
and a shard of a sharded repo with the all-headers shortcut failing over) and the CLI.

Every case of ``hostile.HEADERS`` either parses exactly or fails with one line that names the
repo, the file and the field, within bounded time and bytes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import safetensors_header
from hostile import CONFIG, HEADERS, HeaderCase, check_one_line, run_cli
from planner.core.errors import BadHeader, FitcheckError, UnsupportedModel
from planner.model.footprint import estimate
from planner.sources.formats.safetensors import header_length, parse_header
from planner.sources.hub import FIRST_READ
from planner.api import read_model

_SECONDS = 10.0  # generous: a loaded 2-core CI machine; unbounded work would take minutes
# A one-line message quotes at most 40-80 characters of any hostile value.
_MAX_MESSAGE = 600


def _file(case: HeaderCase) -> bytes:
    return case.prefix[: case.size] + bytes(max(0, case.size - len(case.prefix)))


def _check_error(err: FitcheckError, case: HeaderCase, *names: str) -> None:
    assert isinstance(err, case.error), f"{type(err).__name__}: {err.message}"
    msg = err.message
    assert case.needle in msg, msg
    for name in names:
        assert name in msg, f"{name!r} not in {msg!r}"
    assert "\n" not in msg and msg.isprintable() and len(msg) < _MAX_MESSAGE, msg


def _read_and_estimate(ref: str, **kw):
    snap = read_model(ref, **kw)
    return snap, estimate(snap)


@pytest.mark.parametrize("case_id", sorted(HEADERS))
def test_parser(case_id: str) -> None:
    case = HEADERS[case_id]
    data = _file(case)
    where = "model.safetensors of evil/repo"
    started = time.monotonic()
    try:
        n = header_length(data[:8], where=where, file_size=case.size)
        tensors, _ = parse_header(data[8 : 8 + n], file="model.safetensors", where=where, file_size=case.size)
    except BadHeader as e:
        assert case.error is BadHeader, f"unexpected: {e.message}"
        _check_error(e, case, where)
    else:
        assert case.error in (None, UnsupportedModel), f"{case_id} parsed, expected {case.error.__name__}"
        assert len(tensors) == (case.tensors or 0)
        # The tensors tile the data region exactly, in offset order.
        end = 0
        for t in tensors:
            assert t.offset == end and t.file == "model.safetensors"
            end += t.nbytes
        assert end == case.size - 8 - n
    assert time.monotonic() - started < _SECONDS


@pytest.mark.parametrize("case_id", sorted(HEADERS))
def test_local_folder(case_id: str, tmp_path: Path) -> None:
    case = HEADERS[case_id]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "model.safetensors").write_bytes(_file(case))
    started = time.monotonic()
    if case.error is None:
        snap, fp = _read_and_estimate(str(folder))
        assert len(snap.tensors) == case.tensors
        assert sum(t.nbytes for t in snap.tensors) == case.size - 8 - int.from_bytes(case.prefix[:8], "little")
    else:
        with pytest.raises(FitcheckError) as e:
            _read_and_estimate(str(folder))
        _check_error(e.value, case, str(folder), *(() if case.error is UnsupportedModel else ("model.safetensors",)))
    assert time.monotonic() - started < _SECONDS


HUB_CASES = sorted(k for k, c in HEADERS.items() if c.hub)


@pytest.mark.parametrize("case_id", HUB_CASES)
def test_single_file_from_the_hub(case_id: str, hub: FakeHub, repo_id: str) -> None:
    case = HEADERS[case_id]
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(case.prefix[: case.size], case.size)})
    started = time.monotonic()
    if case.error is None:
        snap, _ = _read_and_estimate(repo_id)
        assert len(snap.tensors) == case.tensors
    else:
        with pytest.raises(FitcheckError) as e:
            _read_and_estimate(repo_id)
        _check_error(e.value, case, repo_id, *(() if case.error is UnsupportedModel else ("model.safetensors",)))
    assert time.monotonic() - started < _SECONDS
    # Bounded bytes: the header (at most what the file holds) and the first speculative read,
    # never the absurd length a prefix claims.
    assert hub.bytes_sent <= min(case.size, len(case.prefix)) + FIRST_READ + 10_000
    assert not [r for r in hub.requests if r.status >= 500]


SHARD = "model-00002-of-00002.safetensors"
ERROR_CASES = sorted(k for k, c in HEADERS.items() if c.hub and c.error is BadHeader)
# What the all-headers endpoint's decoded JSON cannot show (see hub._optional_all_headers): keys
# the JSON decoder merged, a header's exact byte length (so data a few bytes past the end, or
# undescribed bytes after it), and encodings the Hub's own parser accepts (a BOM, UTF-16). On
# that path fitcheck relies on the Hub's parse of the file; a range read checks them all.
ENDPOINT_BLIND = {"duplicate-keys", "data-past-file-end", "trailing-data", "len-one-past-file-end", "utf8-bom", "utf16"}


def _sharded(hub: FakeHub, repo_id: str, case: HeaderCase) -> None:
    good, good_size = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64))})
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", "w": SHARD}}
    hub.add_repo(repo_id, {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": SparseFile(good, good_size),
        SHARD: SparseFile(case.prefix[: case.size], case.size),
    })


@pytest.mark.parametrize("endpoint", [False, True], ids=["range-reads", "all-headers-endpoint"])
@pytest.mark.parametrize("case_id", ERROR_CASES)
def test_hostile_shard_of_a_sharded_repo(case_id: str, endpoint: bool, hub: FakeHub, repo_id: str) -> None:
    """Read by range, the shard's header fails with its name; through the all-headers shortcut,
    whatever the decoded JSON shows fails the same way (the shortcut falls back to the shard)."""
    case = HEADERS[case_id]
    hub.sharded_metadata_endpoint = endpoint
    _sharded(hub, repo_id, case)
    started = time.monotonic()
    if endpoint and case_id in ENDPOINT_BLIND:
        snap = read_model(repo_id)  # the Hub's own parse of the file is taken as it is
        assert {t.file for t in snap.tensors} <= {"model-00001-of-00002.safetensors", SHARD}
        return
    with pytest.raises(FitcheckError) as e:
        _read_and_estimate(repo_id)
    _check_error(e.value, case, repo_id, SHARD)
    assert time.monotonic() - started < _SECONDS
    assert not [r for r in hub.requests if r.status >= 500]


# A representative subset through the real command: exit 2, one line, repo, file and field named.
CLI_CASES = ["len-2^63", "len-past-file-end", "not-json", "dtype-unknown", "shape-2^64", "offsets-too-short", "overlap-same",
             "data-past-file-end", "metadata-int-value", "dtype-terminal-escape"]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_one_line(case_id: str, hub: FakeHub, repo_id: str) -> None:
    case = HEADERS[case_id]
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(case.prefix[: case.size], case.size)})
    r = run_cli("plan", repo_id, "--hardware", "rtx-4090", "--timeout", "10")  # text mode: the error on stderr (--json errors: test_advice_inputs)
    check_one_line(r.code, r.stderr, repo_id, "model.safetensors", case.needle)
    assert r.stdout == "" and r.seconds < 30


def test_cli_debug_shows_the_traceback_of_a_bad_header(hub: FakeHub, repo_id: str) -> None:
    case = HEADERS["dtype-unknown"]
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(case.prefix, case.size)})
    r = run_cli("plan", repo_id, "--hardware", "rtx-4090", env={"FITCHECK_DEBUG": "1"})
    assert r.code == 2 and "Traceback" in r.stderr and "BadHeader" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("fitcheck: error: ")
