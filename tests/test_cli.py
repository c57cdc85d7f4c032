"""The fitcheck command: JSON schema, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fakehub import FakeHub

FITCHECK = [sys.executable, "-m", "planner.cli.main"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_plan_json_schema(tiny_models, hub: FakeHub, repo_id: str) -> None:
    hub.add_local_model(repo_id, tiny_models["llama"])
    r = run("plan", repo_id, "--ram", "16GiB", "--disk", "100GB", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"]["id"] == repo_id and doc["model"]["source"] == "hub"
    assert isinstance(doc["model"]["parameters"], int) and isinstance(doc["model"]["weights_bytes"], int)
    assert doc["fits"] is True
    plan = doc["plan"]
    assert plan["dtype"] in ("bfloat16", "float32") and plan["quantization"] in ("none", "int8", "nf4")
    assert set(plan["device_map"].values()) == {"cpu"}
    for m in plan["memory"].values():
        for key in ("weights", "kv_cache", "activations", "overhead", "total", "capacity"):
            assert isinstance(m[key], int)
    assert isinstance(doc["alternatives"], list) and doc["alternatives"]


def test_check_exit_codes(tiny_models, hub: FakeHub, repo_id: str) -> None:
    hub.add_local_model(repo_id, tiny_models["llama"])
    assert run("check", repo_id, "--ram", "16GiB", "--disk", "100GB").returncode == 0
    nothing = run("check", repo_id, "--ram", "300MiB", "--disk", "100GB", "--no-offload")
    assert nothing.returncode == 1 and nothing.stdout.startswith("no:")
    no_download_room = run("check", repo_id, "--ram", "16GiB", "--disk", "1KB")
    assert no_download_room.returncode == 1 and "download" in no_download_room.stdout
    missing = run("check", "tests/does-not-exist")
    assert missing.returncode == 2 and missing.stderr.count("\n") <= 2 and "not found" in missing.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["plan", "org/m", "--gpu", "12XB"], "is not a size"),
        (["plan", "org/m", "--gpu", "-4GiB"], "is not a size"),
        (["plan", "org/m", "--ram", "0B"], "larger than zero"),
        (["plan", "org/m", "--ram", "0"], "has no unit"),
        (["plan", "org/m", "--hardware", "rtx-9999"], "rtx-9999"),
        (["plan", "bad repo; rm -rf /"], "not a Hub repo id"),
        (["plan", "org/m", "--revision", "../../etc"], "revision"),
        (["plan", "__import__('os').system('x')"], "not a Hub repo id"),
        (["plan"], "no model given"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    r = run(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback() -> None:
    r = run("plan", "org/m", "--gpu", "12XB", env={"FITCHECK_DEBUG": "1"})
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_probe_and_profiles() -> None:
    probe = run("probe", "--json")
    assert probe.returncode == 0
    hw = json.loads(probe.stdout)
    assert hw["gpus"] == [] and hw["ram_total"] > 0 and hw["source"] == "probe"
    profiles = run("profiles", "--json")
    names = [p["name"] for p in json.loads(profiles.stdout)]
    assert len(names) >= 15 and "rtx-4090" in names
    assert "rtx-4090" in run("profiles").stdout


def test_offline_main_command_uses_the_catalog_and_says_so() -> None:
    r = run("plan", "meta-llama/Llama-3.1-8B", "--hardware", "rtx-4090", env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert "catalog" in r.stdout and "Fits" in r.stdout


def test_writes_plan_and_script_atomically(tiny_models, tmp_path) -> None:
    config, script = tmp_path / "plan.json", tmp_path / "load.py"
    r = run("plan", str(tiny_models["llama"]), "--ram", "16GiB", "--config", str(config), "--script", str(script))
    assert r.returncode == 0, r.stderr
    assert json.loads(config.read_text())["load"]["model"] == str(tiny_models["llama"])
    compile(script.read_text(), str(script), "exec")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_compares_several_models(tiny_models, hub: FakeHub, repo_id: str, tmp_path) -> None:
    hub.add_local_model(repo_id + "a", tiny_models["llama"])
    hub.add_local_model(repo_id + "b", tiny_models["qwen2"])
    listing = tmp_path / "models.txt"
    listing.write_text(f"# candidates\n{repo_id}b\n")
    r = run("plan", repo_id + "a", "--models-file", str(listing), "--ram", "16GiB")
    assert r.returncode == 0, r.stderr
    assert repo_id + "a" in r.stdout and repo_id + "b" in r.stdout and "best plan" in r.stdout
