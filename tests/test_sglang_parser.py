"""The emitted ``python -m sglang.launch_server`` flags against SGLang 0.5.23 itself.

Always: every flag the runtime emits is in the recorded ``--help`` of SGLang 0.5.23's server parser
(tests/data/sglang-0.5.23-launch-server-help.txt), with the values it emits among the choices.

Optional (a light SGLang install, docs/sglang.md "The flags checked against SGLang"): the emitted
argv of real plans goes through SGLang's own parser and ``ServerArgs.from_cli_args`` (in
tests/sglang_parser_child.py), and the values SGLang reads back are the plan's. It runs when
``FITCHECK_SGLANG_PYTHON`` names that Python, or ``.work/sglang-venv`` exists.
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

HERE = Path(__file__).parent
HELP = (HERE / "data" / "sglang-0.5.23-launch-server-help.txt").read_text()
SGLANG_PYTHON = os.environ.get("FITCHECK_SGLANG_PYTHON") or str(HERE.parent / ".work" / "sglang-venv" / "bin" / "python")

CASES = [  # (model, hardware, nodes, options)
    ("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", None, {}),  # online fp8, fp8 KV (speed)
    ("meta-llama/Llama-3.1-70B-Instruct", "8x-h100-sxm-80gb", None, {"users": 16, "context": 32768, "kv_cache_dtype": "auto"}),
    ("meta-llama/Llama-3.1-405B", "8x-h100-sxm-80gb", 2, {"online_fp8": False}),  # tp 16 over two nodes
    ("deepseek-ai/DeepSeek-V3", "8x-h200", None, {"kv_cache_dtype": "auto"}),
    ("meta-llama/Llama-3.1-8B", "h100-sxm-80gb", None, {"mem_fraction_static": 0.9, "max_running_requests": 64}),
]


@functools.cache
def _argvs() -> list[tuple[str, list[str], dict]]:
    out = []
    for repo, hardware, nodes, options in CASES:
        options = dict(options)
        context = options.pop("context", 8192)
        snap = vm.snapshot(repo)
        report = api.plan(snap.id, hardware=cluster.load(hardware, nodes=nodes), snapshot=snap, runtime="sglang",
                          constraints=Constraints(context=context).with_options(**options))
        assert report.solution is not None, repo
        settings = report.solution.chosen.settings.to_dict()
        for name, argv in api.emit(report).commands.items():
            out.append((repo, list(argv), {**settings, "command": name}))
    return out


def _flags(argv: list[str]) -> list[tuple[str, str | None]]:
    pairs, i = [], 3
    while i < len(argv):
        flag = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
        pairs.append((flag, value))
        i += 2 if value is not None else 1
    return pairs


def test_emitted_flags_are_in_sglangs_recorded_help() -> None:
    assert HELP.startswith("usage: python -m sglang.launch_server")
    seen = set()
    for _, argv, _ in _argvs():
        assert argv[:3] == ["python", "-m", "sglang.launch_server"]
        for flag, value in _flags(argv):
            line = re.search(rf"^  (?:--[\w-]+ [A-Z_]+, )*{re.escape(flag)}\b(.*)$", HELP, re.MULTILINE)
            assert line, f"{flag} is not a flag of SGLang 0.5.23's server"
            choices = re.match(r"\s*\{([^}]*)\}", line.group(1))
            if value is not None and choices:
                assert value in choices.group(1).split(","), (flag, value)
            seen.add(flag)
    assert {"--model-path", "--revision", "--tp-size", "--context-length", "--mem-fraction-static", "--kv-cache-dtype",
            "--quantization", "--nnodes", "--node-rank", "--dist-init-addr", "--max-running-requests"} <= seen


def test_a_renamed_flag_would_be_caught() -> None:
    assert not re.search(r"^  --tp\b(?!-)", HELP, re.MULTILINE)  # SGLang's flag is --tp-size
    assert not re.search(r"^  --kv-cache-dtype \{[^}]*\bfp8\b,", HELP, re.MULTILINE)  # no bare "fp8" KV dtype


@pytest.mark.skipif(not Path(SGLANG_PYTHON).exists(), reason="no light SGLang install (docs/sglang.md)")
def test_emitted_commands_pass_sglangs_parser(tmp_path: Path) -> None:
    jobs, expected = [], []
    for repo, argv, settings in _argvs():
        folder = tmp_path / repo.replace("/", "__")
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps(vm.config_and_spec(repo)[0]))
        jobs.append([str(folder), argv])
        expected.append(settings)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([SGLANG_PYTHON, str(HERE / "sglang_parser_child.py")], input=json.dumps({"jobs": jobs}),
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    assert "@@RESULT@@" in done.stdout, done.stderr[-2000:]
    results = json.loads(done.stdout.split("@@RESULT@@", 1)[1])
    for (_, argv), res, s in zip(jobs, results, expected, strict=True):
        assert res["ok"], (argv, res["error"])
        assert res["tp_size"] == s["layout"]["tensor"] and res["context_length"] == s["context_length"]
        assert res["mem_fraction_static"] == s["mem_fraction_static"]
        assert res["kv_cache_dtype"] == s["kv_cache"]["dtype"] and res["quantization"] == s["quantization"]
        assert res["max_running_requests"] == s["max_running_requests"]
        nodes = s["layout"]["nodes"]
        assert res["nnodes"] == nodes and (nodes == 1 or res["dist_init_addr"] == "HEAD_IP:25000")
        if s["command"].startswith("sglang_serve_node"):
            assert res["node_rank"] == int(s["command"].removeprefix("sglang_serve_node"))
