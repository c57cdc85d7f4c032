"""Gated and private repos through the command: with a token the plan works; without one the error
says what to do and the exit code is 2; the token never reaches stdout, stderr, the plan file or
the script, whether it came from --token or HF_TOKEN.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import layouts as L
from fakehub import FakeHub
from fixtures_models import sparse_repo_files
from hostile import run_inprocess

TOKEN = "hf_" + "GatedTokenCanary" * 2 + "xy"


def _files() -> dict:
    dims = dict(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1024)
    files = sparse_repo_files(L.decoder(L.plain("BF16"), **dims))
    files["config.json"] = json.dumps(L.decoder_config(dtype="bfloat16", **dims)).encode()
    return files


def _no_token_anywhere(run, *paths: Path) -> None:
    assert TOKEN not in run.stdout and TOKEN not in run.stderr
    for p in paths:
        if p.exists():
            assert TOKEN not in p.read_text()


@pytest.mark.parametrize("gated", ["auto", "manual"])
def test_gated_without_a_token_says_how_to_get_access(hub: FakeHub, repo_id: str, gated: str, capsys) -> None:
    hub.add_repo(repo_id, _files(), gated=gated, tokens=[TOKEN])
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB")
    assert run.code == 2
    err = run.stderr.strip().splitlines()
    assert len(err) == 2 and "gated" in err[0] and "Traceback" not in run.stderr
    assert "accept the licence" in err[1] and "hf auth login" in err[1] and "HF_TOKEN" in err[1]


def test_gated_with_a_token_plans_and_never_writes_it(hub: FakeHub, repo_id: str, tmp_path: Path, capsys) -> None:
    hub.add_repo(repo_id, _files(), gated="manual", tokens=[TOKEN])
    config, script = tmp_path / "plan.json", tmp_path / "load.py"
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB", "--token", TOKEN, "--config", str(config),
                        "--script", str(script), "--json")
    assert run.code == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["fits"] and doc["model"]["source"] == "hub"
    _no_token_anywhere(run, config, script)
    assert "HF_TOKEN" in script.read_text()  # the script relies on the user's login, never a literal
    assert any(r.has_auth for r in hub.requests)  # the token was sent to the Hub, only there


def test_token_from_the_environment_works_and_is_not_echoed(hub: FakeHub, repo_id: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    hub.add_repo(repo_id, _files(), private=True, tokens=[TOKEN])
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB")
    assert run.code == 2 and "not found (or private" in run.stderr and "hf auth login" in run.stderr
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    script = tmp_path / "load.py"
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB", "--script", str(script))
    assert run.code == 0, run.stderr
    _no_token_anywhere(run, script)


def test_a_wrong_token_is_an_error_that_does_not_print_it(hub: FakeHub, repo_id: str, capsys) -> None:
    hub.add_repo(repo_id, _files(), gated="manual", tokens=["hf_" + "o" * 34])
    run = run_inprocess(capsys, "plan", repo_id, "--ram", "8GiB", "--token", TOKEN)
    assert run.code == 2
    _no_token_anywhere(run)
