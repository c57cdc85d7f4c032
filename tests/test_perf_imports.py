"""Import discipline: the fast commands never import the heavy libraries.

Each command runs the CLI's ``main`` in a fresh interpreter, which then reports ``sys.modules``.
torch, transformers, accelerate and bitsandbytes cost seconds to import; fitcheck needs none of
them to plan, so ``--help``, ``probe``, ``profiles`` and ``plan`` (cold and warm) must not pull
them in, even indirectly. A warm plan, served from fitcheck's metadata cache, must also stay clear
of ``huggingface_hub.hf_api``, the heavy part of huggingface_hub (~0.3 s to import).

No timings here: they belong to benchmarks/perf/run.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fakehub import FakeHub, SparseFile
from fixtures_models import decoder_tensors, safetensors_header

HEAVY = ("torch", "transformers", "accelerate", "bitsandbytes")
HF_API = "huggingface_hub.hf_api"

# Runs the CLI in-process, then prints the modules it imported after a marker line.
_CHILD = """
import json, sys
from planner.cli.main import main
try:
    main(sys.argv[1:])
    rc = 0
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
print("\\n@@modules@@" + json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""

_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000,
           "max_position_embeddings": 2048, "torch_dtype": "bfloat16", "tie_word_embeddings": False}


def imported_by(*args: str) -> tuple[int, set[str], str]:
    """(exit code, modules imported, output) of `fitcheck ARGS` run in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    out, _, report = proc.stdout.rpartition("@@modules@@")
    assert report, f"the child did not report its modules (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    doc = json.loads(report)
    return doc["rc"], set(doc["modules"]), out + proc.stderr


def heavy(modules: set[str]) -> list[str]:
    """The heavy packages (or any of their submodules) among ``modules``."""
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize("args", [["--help"], ["probe"], ["profiles"], ["plan", "--help"]], ids=" ".join)
def test_light_commands_import_nothing_heavy(args: list[str]) -> None:
    rc, modules, out = imported_by(*args)
    assert rc == 0, out
    assert not heavy(modules), f"fitcheck {' '.join(args)} imported {heavy(modules)[:8]}"


def test_cold_and_warm_plan_import_nothing_heavy(hub: FakeHub, repo_id: str) -> None:
    header, size = safetensors_header(decoder_tensors(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=1000))
    hub.add_repo(repo_id, {"config.json": json.dumps(_CONFIG).encode(), "model.safetensors": SparseFile(header, size)})

    rc, cold, out = imported_by("plan", repo_id)
    assert rc == 0, out
    assert hub.requests, "the cold plan should have read the Hub"
    assert not heavy(cold), f"a cold plan imported {heavy(cold)[:8]}"

    hub.clear_log()
    rc, warm, out = imported_by("plan", repo_id)
    assert rc == 0, out
    assert not hub.requests, f"the warm plan still asked the Hub: {[r.path for r in hub.requests]}"
    assert not heavy(warm), f"a warm plan imported {heavy(warm)[:8]}"
    assert HF_API not in warm, "a warm plan imported huggingface_hub.hf_api"
