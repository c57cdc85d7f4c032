"""The emitted `vllm serve` flags against vLLM 0.34.0 itself.

Always: every flag the runtime emits is in the recorded ``vllm serve --help=all`` of vLLM 0.34.0
(tests/data/vllm-0.34.0-serve-help.txt), with the values it emits among the choices.

Optional (a light vLLM install, see docs/vllm.md "The parser check"): the emitted argv of real
plans goes through vLLM's own parser and ``EngineArgs.create_engine_config()`` (in
tests/vllm_parser_child.py), and a layout fitcheck rejects for its head count is rejected by vLLM
too. It runs when ``FITCHECK_VLLM_PYTHON`` names that Python, or ``.work/vllm-venv`` exists.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import vllm_models as vm

from planner import api
from planner.core.records import Constraints
from planner.hardware import cluster
from planner.runtimes import registry

HERE = Path(__file__).parent
HELP = (HERE / "data" / "vllm-0.34.0-serve-help.txt").read_text()
VLLM_PYTHON = os.environ.get("FITCHECK_VLLM_PYTHON") or str(HERE.parent / ".work" / "vllm-venv" / "bin" / "python")

CASES = [  # (model, hardware, nodes, options)
    ("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", None, {}),
    ("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", None, {"users": 64, "context": 32768}),
    ("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", 2, {"kv_cache_dtype": "fp8"}),
    ("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", None, {}),  # online fp8
    ("Qwen/Qwen3-235B-A22B", "8x-h200", None, {"tp": 4, "pp": 2}),
    ("mistralai/Mixtral-8x22B-v0.1", "8x-h100-sxm-80gb", 2, {"pp": 2, "max_model_len": "auto"}),
    ("deepseek-ai/DeepSeek-V3", "8x-h200", None, {"tp": 1, "dp": 8}),  # DP + EP on one node
    ("Qwen/Qwen3-235B-A22B", "8x-h100-sxm-80gb", 2, {"tp": 4, "dp": 4}),  # one command per node
]


def _report(repo: str, hardware: str, nodes: int | None, options: dict):
    options = dict(options)
    context = options.pop("context", 8192)
    snap = vm.snapshot(repo)
    # "quality" keeps the checkpoint's precision where it fits, so the 2-node cases span both nodes
    return api.plan(snap.id, hardware=cluster.load(hardware, nodes=nodes), snapshot=snap, runtime="vllm",
                    constraints=Constraints(context=context, prefer="quality").with_options(**options))


@functools.cache
def _argvs() -> list[tuple[str, list[str]]]:
    out = []
    for case in CASES:
        r = _report(*case)
        assert r.solution is not None, case
        for name, argv in api.emit(r).commands.items():
            if name.startswith("vllm_serve"):
                out.append((case[0], list(argv)))
    return out


def _snapshot_of(cfg: dict):
    from planner.core.records import Snapshot, Tensor

    spec = vm.llama_spec(cfg)
    tensors = tuple(Tensor(n, d, sh, vm.layouts.tensor_bytes(d, sh), "model.safetensors") for n, (d, sh) in spec.items())
    return Snapshot(id="Qwen/Qwen2.5-7B-Instruct", revision="main", commit=None, source="hub", config=cfg, files=(),
                    weight_format="safetensors", weight_files=("model.safetensors",), tensors=tensors)


def _flags(argv: list[str]) -> list[tuple[str, str | None]]:
    pairs, i = [], 3
    while i < len(argv):
        flag = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        pairs.append((flag, value))
        i += 2 if value is not None else 1
    return pairs


def test_emitted_flags_are_in_vllms_recorded_help() -> None:
    assert HELP.startswith("usage: vllm serve")
    seen = set()
    for _, argv in _argvs():
        assert argv[:2] == ["vllm", "serve"]
        for flag, value in _flags(argv):
            line = re.search(rf"^  {re.escape(flag)}\b(.*)$", HELP, re.MULTILINE)
            assert line, f"{flag} is not a vllm serve flag in 0.34.0"
            choices = re.match(r"\s*\[([^\]]*)\]", line.group(1)) or re.match(r"\s*\{([^}]*)\}", line.group(1))
            if value is not None and choices:
                assert f"'{value}'" in choices.group(1) or value in choices.group(1).split(","), (flag, value)
            seen.add(flag)
    assert {"--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len", "--gpu-memory-utilization",
            "--kv-cache-dtype", "--quantization", "--distributed-executor-backend", "--nnodes", "--node-rank",
            "--master-addr", "--headless", "--data-parallel-size", "--data-parallel-size-local", "--data-parallel-start-rank",
            "--data-parallel-address", "--data-parallel-rpc-port", "--enable-expert-parallel"} <= seen


def test_a_renamed_flag_would_be_caught() -> None:
    assert not re.search(r"^  --kv-cache-type\b", HELP, re.MULTILINE)
    assert not re.search(r"^  --expert-parallel\b", HELP, re.MULTILINE)  # fitcheck's option; vLLM's is --enable-expert-parallel
    assert not re.search(r"^  --tensor-parallel\b(?!-)", HELP, re.MULTILINE)


@pytest.mark.skipif(not Path(VLLM_PYTHON).exists(), reason="no light vLLM install (docs/vllm.md, 'The parser check')")
def test_emitted_commands_pass_vllms_parser_and_config_validation(tmp_path: Path) -> None:
    argvs = _argvs()
    # a layout fitcheck rejects for its head count: vLLM must reject it too
    rejected = registry.get("vllm").plans(registry.get("vllm").model(vm.snapshot("meta-llama/Llama-3.1-70B-Instruct")),
                                          cluster.load("8x-h100-sxm-80gb"), Constraints(context=8192).with_options(tp=3, pp=1))
    assert "tp 3 does not divide 64 attention heads" in rejected[0].reasons
    bad = ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct", "--tensor-parallel-size", "3", "--max-model-len", "8192"]
    # the head-count rule over tp 1-8 on a model with 28 heads (Qwen2.5-7B shapes, via its catalog config)
    sweep_dir = tmp_path / "qwen2.5-7b"
    sweep_dir.mkdir()
    qwen = vm.catalog("Qwen__Qwen2.5-7B-Instruct")
    (sweep_dir / "config.json").write_text(json.dumps(qwen))
    sweep = {tp: ["vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--tensor-parallel-size", str(tp), "--max-model-len", "4096"]
             for tp in range(1, 9)}
    jobs = [[str(sweep_dir), argv] for argv in sweep.values()]
    for repo, argv in [*argvs, ("meta-llama/Llama-3.1-70B-Instruct", bad)]:
        folder = tmp_path / repo.replace("/", "__")
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps(vm.config_and_spec(repo)[0]))
        jobs.append([str(folder), argv])
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    done = subprocess.run([VLLM_PYTHON, str(HERE / "vllm_parser_child.py")], input=json.dumps({"jobs": jobs}),
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    assert "@@RESULT@@" in done.stdout, done.stderr[-2000:]
    results = list(zip([argv for _, argv in jobs], json.loads(done.stdout.split("@@RESULT@@", 1)[1]), strict=True))
    from planner.runtimes.vllm.plans import _shape_reasons

    qwen_model = registry.get("vllm").model(_snapshot_of(qwen))
    for tp, argv in sweep.items():
        res = next(r for a, r in results if a is argv)
        ours = any("attention heads" in why for why in _shape_reasons(qwen_model, cluster.load("8x-h100-sxm-80gb"), tp, 1))
        theirs = "must be divisible by tensor parallel size" in res["error"]
        assert ours == theirs, (tp, res["error"])
    for argv, res in results:
        if any(argv is a for a in sweep.values()):
            continue
        if argv is bad:
            assert not res["ok"] and "must be divisible by tensor parallel size (3)" in res["error"]
            continue
        assert res["ok"], (argv, res["error"])
        flags = dict(_flags(argv))
        assert res["tp"] == int(flags["--tensor-parallel-size"]) and res["pp"] == int(flags["--pipeline-parallel-size"])
        assert res["config_max_model_len"] == int(flags["--max-model-len"])
        assert res["world"] == res["tp"] * res["pp"]  # vLLM's world size per DP replica
        assert res["dp"] == int(flags.get("--data-parallel-size") or 1)
        assert res["ep"] == ("--enable-expert-parallel" in flags)
