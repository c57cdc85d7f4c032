"""llama-cpp-python's Llama() runs one sequence (n_seq_max 1) whatever the request's batch: the
plan for it carries one sequence, and llama.cpp's logged cache sizes agree, for the caches that
grow with the number of sequences (a sliding-window cache, a recurrent state)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (docs/gguf.md: building it)", allow_module_level=True)

from gguf_cache_models import write_mamba
from gguf_models import write_gemma2

from planner import api
from planner.core.records import Constraints, Hardware

GiB = 1024**3
LOG_ROUNDING = 1024**2 // 200 + 1  # llama.cpp logs MiB with two decimals
HW = Hardware(name="test-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
              cache_disk_free=100 * GiB)
LOGGED = re.compile(r"(\w+) +(KV|RS|output) buffer size =\s+([0-9.]+) MiB")


def _logged(script: str, tmp: Path) -> tuple[str, dict[str, int]]:
    path = tmp / "run_llama.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sizes: dict[str, int] = {}
    for _dev, kind, mib in LOGGED.findall(proc.stderr):
        sizes[kind] = sizes.get(kind, 0) + int(float(mib) * 1024 * 1024)
    return proc.stderr, sizes


@pytest.mark.parametrize("arch", ["gemma2", "mamba"])
def test_a_batch_on_llama_cpp_python_is_one_sequence(arch: str, tmp_path: Path) -> None:
    path = write_gemma2(tmp_path / "g-Q8_0.gguf", n_swa=256) if arch == "gemma2" else write_mamba(tmp_path / "m-Q8_0.gguf")
    c = Constraints(context=1000, new_tokens=16, batch=2, options=(("engine", "llama-cpp-python"), ("flash_attn", False)))
    r = api.plan(str(path), hardware=HW, constraints=c, runtime="gguf")
    assert r.solution is not None
    p = r.solution.chosen
    assert (p.settings.n_ctx, p.settings.n_parallel) == (1016, 1)  # type: ignore[attr-defined]
    assert any("one sequence at a time" in n for n in p.notes)
    log, sizes = _logged(api.emit(r).files["run_llama.py"], tmp_path)
    assert re.search(r"n_seq_max\s+=\s+1\b", log)
    cpu = p.memory["cpu"]
    cache = sizes.get("KV", 0) + sizes.get("RS", 0)
    assert abs(cache - cpu.kv_cache) <= 2 * LOG_ROUNDING, (cache, cpu.kv_cache)
    assert abs(sizes["output"] - cpu.activations) <= LOG_ROUNDING
    # llama-server decodes the batch side by side: two sequences, each with its window or state
    server = api.plan(str(path), hardware=HW, constraints=c.with_options(engine="llama.cpp"), runtime="gguf")
    s = server.solution.chosen  # type: ignore[union-attr]
    assert (s.settings.n_ctx, s.settings.n_parallel) == (2032, 2)  # type: ignore[attr-defined]
    assert s.memory["cpu"].kv_cache > cpu.kv_cache
