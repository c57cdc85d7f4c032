"""`fitcheck plan --runtime sglang` end to end: the fake Hub serves a full-size checkpoint's headers
(sparse files), the CLI plans it and prints the JSON; which options imply or refuse SGLang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import vllm_models as vm
from fakehub import FakeHub
from fixtures_models import sparse_repo_files

from planner.cli import options as runtime_options
from planner.core.errors import UsageError

FITCHECK = [sys.executable, "-m", "planner.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False)


def test_plan_json_and_plan_file(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    cfg, spec = vm.config_and_spec("meta-llama/Llama-3.1-405B")
    hub.add_repo(repo_id, {"config.json": json.dumps(cfg).encode(), **sparse_repo_files(spec, shards=4)})
    out = tmp_path / "plan.json"
    r = run("plan", repo_id, "--runtime", "sglang", "--hardware", "8x-h100-sxm-80gb", "--nodes", "2", "--context", "8192",
            "--kv-cache-dtype", "auto", "--no-online-fp8", "--json", "--config", str(out))
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["runtime"] == "sglang" and plan["layout"] == {"tensor": 16, "nodes": 2, "gpus_per_node": 8}
    assert plan["kv_cache"]["bytes_per_token_per_gpu"] == 1 * 256 * 126 * 2  # 8 KV heads over 16 ranks: one each
    argv = plan["commands"]["sglang_serve_node1"]
    assert argv[:5] == ["python", "-m", "sglang.launch_server", "--model-path", repo_id] and "--node-rank" in argv
    assert len(plan["memory"]) == 16
    doc = json.loads(out.read_text())
    assert doc["runtime"] == "sglang" and doc["load"]["command"] == plan["commands"]["sglang_serve"]


def _collect(**given):
    o = {"runtime": None, **given}
    return runtime_options.collect(o)


def test_which_options_imply_sglang() -> None:
    assert _collect(mem_fraction_static=0.8)[1] == "sglang"
    assert _collect(tp=4)[1] == "vllm"  # shared options go to vLLM unless --runtime sglang
    options, implied = _collect(tp=4, runtime="sglang")
    assert implied == "sglang" and options["tp"] == 4
    assert _collect(tp=4, max_running_requests=8)[1] == "sglang"
    try:
        _collect(pp=2, mem_fraction_static=0.8)
    except UsageError as e:
        assert "cannot be combined" in e.message
    else:
        raise AssertionError("--pp with --mem-fraction-static was accepted")


def test_cli_refuses_vllm_only_options_with_sglang() -> None:
    r = run("plan", "meta-llama/Llama-3.1-8B", "--runtime", "sglang", "--pp", "2", "--hardware", "h100-sxm-80gb")
    assert r.returncode == 2 and "does not take the options of the vllm runtime" in r.stderr
    r = run("plan", "meta-llama/Llama-3.1-8B", "--mem-fraction-static", "1.5", "--hardware", "h100-sxm-80gb")
    assert r.returncode == 2 and "--mem-fraction-static" in r.stderr
