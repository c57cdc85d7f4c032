"""Real llama.cpp runs (through llama-cpp-python, skipped when it is not installed): plan a tiny
GGUF model, run the emitted script with a prompt that fills the context, and compare with what
llama.cpp itself logs (KV, compute and model buffers) and with the measured peak RSS."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

# checked without importing it: llama_cpp runs only in the child processes the tests start
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (docs/gguf.md: building it)", allow_module_level=True)

from fakehub import FakeHub
from gguf_models import write_llama

from planner import api
from planner.core.records import Constraints, Hardware
from planner.runtimes.gguf import memory

GiB = 1024**3
MiB = 1024**2
LOG_ROUNDING = MiB // 200 + 1
HW = Hardware(name="test-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
              cache_disk_free=100 * GiB)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gguf-real")
    return write_llama(d / "tiny-Q8_0.gguf", qtype="Q8_0", n_layer=4, n_embd=256, n_ff=512, n_vocab=2000)


def _run(script: str, tmp: Path) -> dict:
    path, report = tmp / "run_llama.py", tmp / "report.json"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), "--fill", "--report", str(report)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(report.read_text())


@pytest.mark.parametrize(("kv", "fa", "context"), [("f16", False, 1000), ("q8_0", True, 2000)])
def test_emitted_script_runs_and_llama_cpp_agrees(model: Path, tmp_path: Path, kv: str, fa: bool, context: int) -> None:
    c = Constraints(context=context - 16, new_tokens=16,
                    options=(("engine", "llama-cpp-python"), ("flash_attn", fa), ("kv_type", kv)))
    r = api.plan(str(model), hardware=HW, constraints=c, runtime="gguf")
    assert r.solution is not None
    p = r.solution.chosen
    got = _run(api.emit(r).files["run_llama.py"], tmp_path)
    assert got["generated_tokens"] > 0
    cpu = p.memory["cpu"]
    b = got["buffers"]
    # llama.cpp's own KV size (it logs MiB with two decimals: equal to within 0.005 MiB)
    assert abs(b["KV:CPU"] - cpu.kv_cache) <= LOG_ROUNDING
    # the mapped model buffer spans the tensors with their alignment padding
    assert cpu.weights - LOG_ROUNDING <= b["model:CPU_Mapped"] <= cpu.weights + 64 * 1024
    s = p.settings.setting()  # type: ignore[attr-defined]
    logged = b["compute:CPU"]
    predicted = memory.compute(r.footprint, s)  # type: ignore[arg-type]
    assert logged <= predicted <= logged * 1.6 + MiB, (logged, predicted)
    peak = got["peak_rss"]
    # the target: within 5 % or 64 MiB, never under by more
    assert cpu.total >= peak - max(64 * MiB, peak // 20), (cpu.total, peak)
    assert cpu.total <= peak + max(64 * MiB, peak // 20), (cpu.total, peak)


def test_verify_runs_the_plan_from_the_fake_hub(hub: FakeHub, repo_id: str, model: Path) -> None:
    hub.add_repo(repo_id, {model.name: model})
    r = api.plan(repo_id, hardware=HW, constraints=Constraints(context=500, new_tokens=8, options=(("engine", "llama-cpp-python"),)),
                 runtime="gguf")
    assert r.solution is not None
    v = api.verify_plan_text(api.emit(r).files["plan.json"], timeout=300)
    assert v.ok and v.generated_tokens > 0
    cpu = v.devices["cpu"]
    comps = {c.name: c for c in cpu.components}
    assert abs(comps["kv_prefill"].predicted - comps["kv_prefill"].measured) <= LOG_ROUNDING
    assert abs(cpu.predicted_peak - cpu.measured_peak) <= max(64 * MiB, cpu.measured_peak // 20)


def test_repacked_q4_0_weights_are_counted_twice_on_the_cpu(tmp_path: Path) -> None:
    path = write_llama(tmp_path / "tiny-Q4_0.gguf", qtype="Q4_0", n_layer=2, n_embd=256, n_ff=512, n_vocab=1000)
    r = api.plan(str(path), hardware=HW, constraints=Constraints(context=240, new_tokens=16, options=(("engine", "llama-cpp-python"),)),
                 runtime="gguf")
    assert r.solution is not None
    got = _run(api.emit(r).files["run_llama.py"], tmp_path)
    b = got["buffers"]
    logged = sum(v for k, v in b.items() if k.startswith("model:"))
    cpu = r.solution.chosen.memory["cpu"]
    if "model:CPU_REPACK" in b:  # this CPU repacks Q4_0 (AVX2, NEON): the copy is in the prediction
        # llama.cpp's logged buffers leave out token_embd (kept apart for get_rows)
        embd = r.footprint.embd_bytes  # type: ignore[attr-defined]
        assert logged - LOG_ROUNDING * 2 <= cpu.weights <= logged + embd + 64 * 1024
    assert cpu.total >= got["peak_rss"] - max(64 * MiB, got["peak_rss"] // 20)


def test_sliding_window_cache_matches_llama_cpp(tmp_path: Path) -> None:
    from gguf_models import write_gemma2

    path = write_gemma2(tmp_path / "tiny-gemma2-Q8_0.gguf", n_swa=256)
    r = api.plan(str(path), hardware=HW, constraints=Constraints(context=2032, new_tokens=16, options=(("engine", "llama-cpp-python"),
                                                                                                     ("flash_attn", False))),
                 runtime="gguf")
    assert r.solution is not None
    m = r.footprint
    assert [la.swa for la in m.layers] == [True, False, True, False]  # type: ignore[attr-defined]
    cpu = r.solution.chosen.memory["cpu"]
    # 2 full layers x 2048 cells + 2 window layers x pad256(256 + 512) = 768 cells (llama.cpp: 2.00 + 0.75 MiB)
    assert cpu.kv_cache == (2 * 2048 + 2 * 768) * 2 * 2 * 64 * 2
    got = _run(api.emit(r).files["run_llama.py"], tmp_path)
    b = got["buffers"]
    assert abs(b["KV:CPU"] - cpu.kv_cache) <= 2 * LOG_ROUNDING
    assert b["compute:CPU"] <= memory.compute(m, r.solution.chosen.settings.setting()) <= b["compute:CPU"] * 1.6 + MiB  # type: ignore[arg-type, attr-defined]
    assert cpu.total >= got["peak_rss"] - max(64 * MiB, got["peak_rss"] // 20)
