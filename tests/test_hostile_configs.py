"""Hostile config.json files, end to end: the config reader, a local folder, the fake Hub and the
CLI. Each case of ``hostile.CONFIGS`` fails with one line naming the repo, config.json and the
field, or estimates and plans when it is odd but valid."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import safetensors_header
from hostile import CONFIGS, CONFIGS_NOT_ON_HUB, MISSING, check_one_line, run_cli
from planner import api
from planner.model import prequant
from planner.model.arch import read_arch
from planner.core.errors import FitcheckError
from planner.hardware.profiles import load_profile
from planner.core.records import Constraints

_SECONDS = 10.0  # generous: a loaded 2-core CI machine; unbounded work would take minutes
HEADER, SIZE = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)),
                                   "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128)),
                                   "model.norm.weight": ("BF16", (64,))})


def _bytes(value: Any) -> bytes | None:
    if value is MISSING:
        return None
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _plan(ref: str):
    return api.plan(ref, hardware=load_profile("rtx-4090"), constraints=Constraints(context=64))


def _check(err: FitcheckError, case_id: str, ref: str) -> None:
    _, error, needle = CONFIGS[case_id]
    assert error is not None, f"{case_id}: unexpected {type(err).__name__}: {err.message}"
    assert isinstance(err, error), f"{type(err).__name__}: {err.message}"
    msg = err.message
    for part in (needle.format(repo=ref), ref, "config.json"):
        assert part in msg, f"{part!r} not in {msg!r}"
    assert "\n" not in msg and msg.isprintable() and len(msg) < 600, msg


@pytest.mark.parametrize("case_id", sorted(k for k, v in CONFIGS.items() if isinstance(v[0], dict)))
def test_config_reader(case_id: str) -> None:
    config, error, needle = CONFIGS[case_id]
    where = "config.json of evil/repo"

    def read() -> Any:
        arch = read_arch(config, where=where)
        prequant.detect(arch.quantization_config, where=where)  # the rest of the config's checks
        return arch

    if error is None:
        arch = read()
        assert arch.num_layers >= 1 and arch.num_heads >= 1 and arch.head_dim >= 1
        return
    with pytest.raises(error) as e:
        read()
    assert needle.format(repo="evil/repo") in e.value.message and where in e.value.message


@pytest.mark.parametrize("case_id", sorted(CONFIGS))
def test_local_folder(case_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    raw = _bytes(CONFIGS[case_id][0])
    if raw is not None:
        (folder / "config.json").write_bytes(raw)
    (folder / "model.safetensors").write_bytes(HEADER + bytes(SIZE - len(HEADER)))
    started = time.monotonic()
    try:
        report = _plan(str(folder))
    except FitcheckError as e:
        _check(e, case_id, str(folder))
    else:
        assert CONFIGS[case_id][1] is None, f"{case_id} planned, expected {CONFIGS[case_id][1].__name__}"
        assert report.fits and report.footprint.parameters == 100 * 64 + 64 * 128 + 64
    assert time.monotonic() - started < _SECONDS


def _serve(hub: FakeHub, repo_id: str, case_id: str) -> None:
    """A repo with a valid weight file and the case's config.json (none for "missing")."""
    files: dict[str, Any] = {"model.safetensors": SparseFile(HEADER, SIZE)}
    raw = _bytes(CONFIGS[case_id][0])
    if raw is not None:
        files["config.json"] = raw
    hub.add_repo(repo_id, files)


@pytest.mark.parametrize("case_id", sorted(set(CONFIGS) - CONFIGS_NOT_ON_HUB))
def test_from_the_hub(case_id: str, hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, case_id)
    started = time.monotonic()
    try:
        report = _plan(repo_id)
    except FitcheckError as e:
        _check(e, case_id, repo_id)
    else:
        assert CONFIGS[case_id][1] is None, f"{case_id} planned, expected {CONFIGS[case_id][1].__name__}"
        assert report.fits and report.snapshot.source == "hub"
    assert time.monotonic() - started < _SECONDS
    assert not [r for r in hub.requests if r.status >= 500]
    assert not [r for r in hub.requests if r.path.endswith(".py")]  # remote code is never fetched


CLI_CASES = ["missing", "not-json", "layers-zero", "heads-10^12", "model-type-escape", "architectures-code", "recurrent-mamba"]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_one_line(case_id: str, hub: FakeHub, repo_id: str) -> None:
    _serve(hub, repo_id, case_id)
    r = run_cli("check", repo_id, "--hardware", "rtx-4090", "--timeout", "10")
    check_one_line(r.code, r.stderr, repo_id, "config.json", CONFIGS[case_id][2].format(repo=repo_id))
    assert r.stdout == "" and r.seconds < 30
