"""Tokens never leave the request: a canary token, given through each of the ways fitcheck finds
one, must not appear in stdout, stderr, --json, the plan file, the script, the metadata cache, an
error message about a gated or private repo, or a FITCHECK_DEBUG traceback of an internal error.

Two canaries: one shaped like a Hub token (``hf_`` + letters, hidden even if fitcheck did not
know it was a token) and one that is not, which only knowing the token can hide.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import safetensors_header
from hostile import CONFIG, check_one_line
from planner.core import secrets
from planner.core.errors import FitcheckError, HubError

SHAPED = "hf_CanaryCanaryCanaryCanaryCanary0123"
UNSHAPED = "fitcheck-canary-7f3a9b2c5d1e4a60"
HEADER, SIZE = safetensors_header({"model.embed_tokens.weight": ("BF16", (100, 64)),
                                   "model.layers.0.mlp.down_proj.weight": ("BF16", (64, 128)),
                                   "model.norm.weight": ("BF16", (64,))})

# How a token reaches fitcheck: extra environment, extra arguments, and a login file to write.
SOURCES = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME/token", "--token"]

# Runs an internal error (a bug) inside `fitcheck plan` whose message carries the token, as an
# exception from deep inside a library might.
_CRASH = textwrap.dedent("""
    import os, sys
    import planner.api
    def boom(*a, **k):
        raise RuntimeError("request failed with Authorization: Bearer " + os.environ["CANARY"])
    planner.api.plan = boom
    from planner.cli.main import main
    main(sys.argv[1:])
""")


def _setup(source: str, token: str, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment and arguments that hand ``token`` to fitcheck through ``source``."""
    home = tmp_path / "hf_home"
    home.mkdir(exist_ok=True)
    env = {"HF_HOME": str(home), "HF_TOKEN": "", "FITCHECK_CACHE_DIR": str(tmp_path / "cache")}
    args: list[str] = []
    if source == "HF_TOKEN":
        env["HF_TOKEN"] = token
    elif source == "HUGGING_FACE_HUB_TOKEN":
        env.pop("HF_TOKEN")
        env["HUGGING_FACE_HUB_TOKEN"] = token
    elif source == "HF_TOKEN_PATH":
        env.pop("HF_TOKEN")
        (tmp_path / "login").write_text(token + "\n")
        env["HF_TOKEN_PATH"] = str(tmp_path / "login")
    elif source == "HF_HOME/token":
        env.pop("HF_TOKEN")
        (home / "token").write_text(token)
    else:
        args = ["--token", token]
    return env, args


def _run(args: list[str], env: dict[str, str], script: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")}
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "planner.cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**base, **env}, timeout=60)


def _tree_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()) if folder.exists() else ""


# Every source with the token only knowledge can hide; the hf_-shaped one where it is most common.
CASES = [(source, UNSHAPED) for source in SOURCES] + [("HF_TOKEN", SHAPED), ("--token", SHAPED)]


@pytest.mark.parametrize(("source", "token"), CASES, ids=[f"{s}-{'shaped' if t == SHAPED else 'unshaped'}" for s, t in CASES])
def test_canary_token_never_leaks(source: str, token: str, hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    files = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(HEADER, SIZE)}
    hub.add_repo(repo_id, files, private=True, tokens=[token])
    hub.add_repo(repo_id + "-gated", files, gated="manual", tokens=["hf_someone_else_entirely_000000"])
    hub.add_repo(repo_id + "-private", files, private=True, tokens=["hf_someone_else_entirely_000000"])
    env, targs = _setup(source, token, tmp_path)
    plan_file, script_file = tmp_path / "plan.json", tmp_path / "load.py"
    hw = ["--hardware", "rtx-4090"]
    runs = {
        # --json, a plan file, a script; and, once, the text report with huggingface_hub logging its requests (HF_DEBUG)
        "plan": (["plan", repo_id, *hw, "--json", "--config", str(plan_file), "--script", str(script_file), *targs], env, None),
        "gated": (["check", repo_id + "-gated", *hw, *targs], {**env, "FITCHECK_DEBUG": "1"}, None),
        "private": (["plan", repo_id + "-private", *hw, *targs], env, None),  # text mode: the error on stderr
        "crash": (["plan", repo_id, *hw, *targs], {**env, "FITCHECK_DEBUG": "1", "CANARY": token}, _CRASH),
    }
    if source == "HF_TOKEN_PATH":
        runs["plan-text"] = (["plan", repo_id, *hw, *targs], {**env, "HF_DEBUG": "1", "FITCHECK_CACHE_DIR": str(tmp_path / "cache-2")}, None)
    results = {name: _run(*run) for name, run in runs.items()}

    for name, r in results.items():
        assert token not in r.stdout and token not in r.stderr, f"{name} leaked the token:\n{r.stdout}\n{r.stderr}"
    ok = results["plan"]
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model"]["id"] == repo_id  # the private repo opened: the token was sent
    assert all(r.has_auth for r in hub.find(path_contains=repo_id + "/") if "-gated" not in r.path)
    if "plan-text" in results:
        assert results["plan-text"].returncode == 0 and "Fits" in results["plan-text"].stdout
        assert "authorization: <TOKEN>" in results["plan-text"].stderr  # huggingface_hub did log, and hid it
    for written in (plan_file, script_file):
        assert token not in written.read_text()
    assert token not in _tree_text(tmp_path / "cache") + _tree_text(tmp_path / "cache-2")
    # Nothing under HF_HOME holds the token but the login file the user put it in.
    assert not [p for p in (tmp_path / "hf_home").rglob("*") if p.is_file() and p.name != "token" and token in p.read_text(errors="replace")]

    gated = results["gated"]
    assert "Traceback" in gated.stderr  # FITCHECK_DEBUG=1 shows it (redacted), then the usual line
    check_one_line(gated.returncode, "\n".join(line for line in gated.stderr.splitlines() if line.startswith("fitcheck: ")), "gated")

    check_one_line(results["private"].returncode, results["private"].stderr, repo_id + "-private", "not found")

    crash = results["crash"]
    assert crash.returncode == 2 and "Traceback" in crash.stderr and "RuntimeError" in crash.stderr
    assert "fitcheck: internal error: RuntimeError: request failed with Authorization: Bearer hf_***" in crash.stderr


def test_scripts_rely_on_the_login_never_on_a_token_argument(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    hub.add_repo(repo_id, {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": SparseFile(HEADER, SIZE)},
                 private=True, tokens=[UNSHAPED])
    script = tmp_path / "load.py"
    r = _run(["plan", repo_id, "--hardware", "rtx-4090", "--token", UNSHAPED, "--script", str(script)], {"HF_TOKEN": ""})
    assert r.returncode == 0, r.stderr
    tree = ast.parse(script.read_text())
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords}
    assert not keywords & {"token", "use_auth_token"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and UNSHAPED in n.value]
    assert "HF_TOKEN" in script.read_text()  # it tells the user how a gated repo gets its token


# --------------------------------------------------------------------------------------------
# The redaction layer itself
# --------------------------------------------------------------------------------------------


def test_every_error_message_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets.register("my-registered-secret-value")
    monkeypatch.setenv("HF_TOKEN", "env-token-value-123")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "legacy-token-value-456")
    for secret in ("my-registered-secret-value", "env-token-value-123", "legacy-token-value-456", SHAPED):
        e = HubError(f"failed with {secret} inside", hint=f"not {secret} either")
        assert secret not in e.message and secret not in (e.hint or "") and secret not in json.dumps(e.to_dict())


def test_the_login_file_token_is_known_before_any_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(UNSHAPED + "\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    assert secrets.redact(f"x {UNSHAPED} y") == "x hf_*** y"
    (tmp_path / "token").write_text("a-rotated-token-value")  # a new login is seen at once
    assert "a-rotated-token-value" not in secrets.redact("a-rotated-token-value")
    monkeypatch.delenv("HF_TOKEN_PATH")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert "a-rotated-token-value" not in FitcheckError("a-rotated-token-value").message


def test_the_token_a_session_sends_is_registered(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.sources.http import Session

    token = "session-token-value-42"
    Session(hub.url, token, 5)
    monkeypatch.setenv("HF_TOKEN", "")
    assert token not in secrets.redact(f"{token}")
