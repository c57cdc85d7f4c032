"""`fitcheck plan --runtime vllm` end to end: the fake Hub serves a full-size checkpoint's headers
(sparse files), the CLI plans it on a cluster and prints the JSON of the issue; emitted commands,
README and plan file; cluster profiles and --nodes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import vllm_models as vm
from fakehub import FakeHub
from fixtures_models import sparse_repo_files

from planner import api
from planner.core.errors import UsageError
from planner.core.records import Constraints
from planner.hardware import cluster

FITCHECK = [sys.executable, "-m", "planner.cli.main"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FITCHECK, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
                          check=False)


def serve(hub: FakeHub, repo_id: str, repo: str, shards: int = 4) -> None:
    cfg, spec = vm.config_and_spec(repo)
    hub.add_repo(repo_id, {"config.json": json.dumps(cfg).encode(), **sparse_repo_files(spec, shards=shards)})


def test_plan_json_on_two_nodes(hub: FakeHub, repo_id: str, tmp_path: Path) -> None:
    serve(hub, repo_id, "meta-llama/Llama-3.1-405B")
    out = tmp_path / "plan.json"
    r = run("plan", repo_id, "--runtime", "vllm", "--hardware", "8x-h100-sxm-80gb", "--nodes", "2", "--context", "8192",
            "--kv-cache-dtype", "auto", "--no-online-fp8", "--json", "--config", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["fits"] is True and doc["hardware"]["source"] == "cluster" and len(doc["hardware"]["nodes"]) == 2
    plan = doc["plan"]
    assert plan["runtime"] == "vllm"
    assert plan["parallel"] == {"tensor": 8, "pipeline": 2, "nodes": 2, "gpus_per_node": 8, "data": 1, "expert": 1}
    kv = plan["kv_cache"]
    assert kv["tokens"] > 0 and kv["bytes_per_token_per_gpu"] == 63 * 1 * 256 * 2 and kv["max_concurrent_sequences"] >= 1
    assert plan["max_model_len"] == 8192 and plan["gpu_memory_utilization"] == 0.92
    serve_argv = plan["commands"]["vllm_serve"]
    assert serve_argv[:3] == ["vllm", "serve", repo_id]
    flags = dict(zip(serve_argv[3::2], serve_argv[4::2], strict=False))
    assert flags["--tensor-parallel-size"] == "8" and flags["--pipeline-parallel-size"] == "2"
    assert flags["--distributed-executor-backend"] == "ray" and flags["--max-model-len"] == "8192"
    assert plan["commands"]["ray_head"] == ["ray", "start", "--head", "--port=6379"]
    assert plan["commands"]["ray_worker"] == ["ray", "start", "--address=HEAD_IP:6379", "--block"]
    assert "--headless" in plan["commands"]["vllm_serve_nnodes_rank1"]
    assert "--headless" not in plan["commands"]["vllm_serve_nnodes_rank0"]
    for dev in ("node0:cuda:0", "node1:cuda:7"):
        m = plan["memory"][dev]
        for key in ("weights", "kv_cache", "activations", "overhead", "total", "capacity"):
            assert isinstance(m[key], int)
        assert m["total"] <= m["capacity"]
    written = json.loads(out.read_text())
    assert written["runtime"] == "vllm" and written["parallel"]["pipeline"] == 2
    assert written["commands"]["vllm_serve"] == serve_argv
    assert written["predicted"]["memory"]["node1:cuda:7"] == plan["memory"]["node1:cuda:7"]
    v = run("verify", str(out))
    assert v.returncode == 2 and "plans of the vllm runtime cannot be verified on this machine" in v.stderr
    # only headers were read: every shard request is a Range request, and little was sent
    shard_reads = [q for q in hub.requests if ".safetensors" in q.path and q.method == "GET" and "index" not in q.path]
    assert shard_reads and all(q.range is not None for q in shard_reads)
    assert hub.bytes_sent < 50_000_000


def test_check_and_text_output(hub: FakeHub, repo_id: str) -> None:
    serve(hub, repo_id, "meta-llama/Llama-3.1-70B-Instruct")
    r = run("check", repo_id, "--runtime", "vllm", "--hardware", "8x-h100-sxm-80gb")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("yes:") and "tp 8 x pp 1" in r.stdout
    no = run("check", repo_id, "--hardware", "8x-h100-sxm-80gb", "--tp", "3")  # --tp implies --runtime vllm
    assert no.returncode == 1 and "tp 3 does not divide 64 attention heads" in no.stdout
    text = run("plan", repo_id, "--hardware", "8x-h100-sxm-80gb", "--users", "32", "--context", "32768")
    assert text.returncode == 0, text.stderr
    assert "vllm" in text.stdout.lower() or "tp " in text.stdout


def test_emitted_readme_and_commands_are_shell_safe() -> None:
    snap = vm.snapshot("Qwen/Qwen3-235B-A22B")
    hw = cluster.load("8x-h100-sxm-80gb", nodes=2)
    report = api.plan(snap.id, hardware=hw, snapshot=snap, runtime="vllm",
                      constraints=Constraints(context=16384).with_options(pp=2, kv_cache_dtype="fp8", online_fp8=False))
    art = api.emit(report)
    readme = art.files["README.md"]
    for name in ("ray_head", "ray_worker", "vllm_serve"):
        line = shlex.join(art.commands[name])
        assert line in readme
        assert shlex.split(line) == list(art.commands[name])
    assert "--kv-cache-dtype fp8" in shlex.join(art.commands["vllm_serve"])
    assert "--revision " + "0" * 40 in shlex.join(art.commands["vllm_serve"])
    # SGLang has its own runtime now (--runtime sglang, tests/test_sglang_plans.py): a vLLM plan emits no SGLang command
    assert not any("sglang" in name for name in art.commands)
    assert json.loads(art.files["plan.json"])["kv_cache"]["dtype"] == "fp8"


def test_cluster_profile_format_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "profiles"
    (folder / "clusters").mkdir(parents=True)
    monkeypatch.setenv("FITCHECK_PROFILES_DIR", str(folder))
    (folder / "clusters" / "two.toml").write_text('description = "x"\nnetwork_bandwidth = 25_000_000_000\n'
                                                  '[[nodes]]\nprofile = "8x-a100-80gb"\ncount = 2\n')
    hw = cluster.load("two")
    assert len(hw.nodes) == 2 and len(hw.gpus) == 16 and hw.gpus[15].index == 15 and hw.network_bandwidth == 25_000_000_000
    (folder / "clusters" / "bad.toml").write_text('description = "x"\nnetwork_bandwidth = 1\n[[nodes]]\nprofile = "8x-a100-80gb"\nspeed = 3\n')
    with pytest.raises(UsageError, match="nodes\\[0\\]"):
        cluster.load("bad")
    with pytest.raises(UsageError, match="cannot be combined"):
        cluster.load("two", nodes=3)
    with pytest.raises(UsageError, match="--nodes 0"):
        cluster.replicate(hw.nodes[0], 0)


def test_clusters_are_refused_by_single_machine_runtimes() -> None:
    snap = vm.snapshot("meta-llama/Llama-3.1-8B")
    hw = cluster.load("8x-h100-sxm-80gb", nodes=2)
    with pytest.raises(UsageError, match="cluster of 2 nodes") as e:
        api.plan(snap.id, hardware=hw, snapshot=snap, runtime="transformers")
    # the hint names every runtime that plans across machines
    assert all(f"--runtime {name}" in (e.value.hint or "") for name in ("vllm", "sglang", "gguf")) and "--train" in (e.value.hint or "")


def test_nodes_with_a_cluster_profile_is_refused_through_the_api() -> None:
    with pytest.raises(UsageError, match="already a cluster of 3 nodes"):
        api.resolve_hardware(hardware="mixed-h100-a100", nodes=2)
    assert len(api.resolve_hardware(hardware="8x-h200", nodes=3).nodes) == 3


def test_a_cluster_is_shown_by_node_count_and_grouped_gpus() -> None:
    from planner.cli.render import hardware_line
    from planner.hardware import cluster

    line = hardware_line(cluster.load("8x-h100-sxm-80gb", nodes=2))
    assert "2 nodes, 16x NVIDIA H100" in line and line.count("H100") == 1
