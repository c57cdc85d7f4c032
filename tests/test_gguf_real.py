"""Real llama.cpp runs (through llama-cpp-python, skipped when it is not installed): plan a tiny
GGUF model, run the emitted script with a prompt that fills the context, and compare with what
llama.cpp itself logs (KV, compute and model buffers) and with the measured peak RSS."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
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


# A child that loads a GGUF through llama-cpp-python's low-level parameters with the overrides
# --n-cpu-moe N passes (the high-level Llama() has no tensor override argument): the pattern of
# each of the first N layers' experts and ggml_backend_cpu_buffer_type() taken from the
# libggml-base that libllama loaded (the wheel ships libggml-base.so and .so.0 as two files, and
# the other copy's buffer type is a different pointer, which llama.cpp then uses as is).
_OVERRIDE_CHILD = r'''
import ctypes, json, os, re, sys, tempfile
path, n_cpu_moe, n_ctx, report = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
log = tempfile.TemporaryFile(mode="w+b")
saved = os.dup(2)
os.dup2(log.fileno(), 2)
import llama_cpp
import llama_cpp.llama_cpp as ll

class Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]

base = ctypes.CDLL(next(line.split()[-1] for line in open("/proc/self/maps") if "libggml-base" in line))
base.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
cpu = base.ggml_backend_cpu_buffer_type()
pats = [b"blk\\.%d\\.ffn_(up|down|gate|gate_up)_(ch|)exps" % i for i in range(n_cpu_moe)]
arr = (Override * (len(pats) + 1))(*[Override(p, cpu) for p in pats], Override(None, None))
default = ll.llama_model_default_params

def params():
    p = default()
    if pats:
        p.tensor_buft_overrides = ctypes.cast(arr, ctypes.c_void_p).value
    return p

ll.llama_model_default_params = params
llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_gpu_layers=0, verbose=True)
out = llm([4 + i % 500 for i in range(n_ctx - 24)], max_tokens=8, temperature=0.0)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
os.dup2(saved, 2)
log.seek(0)
text = log.read().decode("utf-8", "replace")
buffers = {}
for dev, kind, mib in re.findall(r"(\w+)\s+(model|KV|compute|output) buffer size =\s+([0-9.]+) MiB", text):
    buffers[kind + ":" + dev] = buffers.get(kind + ":" + dev, 0) + int(float(mib) * 1024 * 1024)
moved = re.findall(r"tensor (\S+) \(.*\) buffer type overridden to (\w+)", text)
json.dump({"peak_rss": peak, "buffers": buffers, "overridden": moved, "tokens": out["usage"]["completion_tokens"]}, open(report, "w"))
'''


def _run_overrides(path: Path, n_cpu_moe: int, n_ctx: int, tmp: Path) -> dict:
    child, report = tmp / "override_child.py", tmp / f"override-{n_cpu_moe}.json"
    child.write_text(_OVERRIDE_CHILD)
    proc = subprocess.run([sys.executable, str(child), str(path), str(n_cpu_moe), str(n_ctx), str(report)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(report.read_text())


def test_experts_kept_on_the_cpu_are_repacked_as_llama_cpp_logs(tmp_path: Path) -> None:
    from gguf_models import write_llama as write

    from planner.core.records import Gpu
    from planner.runtimes import registry
    from planner.runtimes.gguf.plans import GgufSettings, evaluate

    # dense F16 (never repacked), experts Q4_0: llama.cpp's CPU_REPACK buffer holds only experts
    path = write(tmp_path / "moe-F16-Q4_0.gguf", qtype="F16", expert_qtype="Q4_0", n_layer=4, n_embd=256, n_ff=512, n_vocab=1000,
                 n_expert=8, n_expert_used=2)
    m = registry.get("gguf").model(api.read_model(str(path), runtime="gguf"))
    assert all(0 < la.experts_repack == la.repack == la.experts for la in m.layers)  # type: ignore[attr-defined]
    n_ctx, n_layer = 512, m.n_layer
    base = GgufSettings(repo=str(path), quant="F16", files=(path.name,), engine="llama.cpp", n_gpu_layers=0, n_layer=n_layer,
                        n_ctx=n_ctx, n_parallel=1, cache_type_k="f16", cache_type_v="f16", flash_attn=False)
    c = Constraints(context=n_ctx - 16, new_tokens=16)
    plain, over = _run_overrides(path, 0, n_ctx, tmp_path), _run_overrides(path, n_layer, n_ctx, tmp_path)
    if "model:CPU_REPACK" not in plain["buffers"]:
        pytest.skip("this CPU does not repack Q4_0 (no AVX2 or NEON)")
    # every expert overridden to the plain CPU buffer type lands in CPU_REPACK, not in CPU
    assert len(over["overridden"]) == 3 * n_layer and {b for _, b in over["overridden"]} == {"CPU_REPACK"}
    assert over["buffers"]["model:CPU_REPACK"] == plain["buffers"]["model:CPU_REPACK"]
    # a GPU plan whose experts all stay on the CPU (--n-cpu-moe n_layer): the CPU holds the mapped
    # experts and their repacked copy, which is what llama.cpp repacked here
    gpu = Gpu(index=0, name="test gpu", backend="cuda", total_bytes=64 * GiB, free_bytes=64 * GiB, bandwidth=10**12)
    hw = Hardware(name="test", source="profile", gpus=(gpu,), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
                  cache_disk_free=100 * GiB)
    on_gpu = evaluate(m, hw, c, replace(base, n_gpu_layers=n_layer + 1, n_cpu_moe=n_layer, gpus=(gpu.device,)))
    experts = sum(la.experts for la in m.layers)
    repacked = on_gpu.memory["cpu"].weights - (m.input_bytes - on_gpu.memory["cpu"].unread) - experts
    assert abs(repacked - over["buffers"]["model:CPU_REPACK"]) <= LOG_ROUNDING
    half = evaluate(m, hw, c, replace(base, n_gpu_layers=n_layer + 1, n_cpu_moe=2, gpus=(gpu.device,)))
    assert on_gpu.memory["cpu"].weights - half.memory["cpu"].weights == sum(la.experts + la.experts_repack for la in m.layers[2:])
    # the all-CPU run with the overrides: the plan's weights are llama.cpp's mapped + repacked buffers
    # (token_embd left out of the logged figures), and its total covers the peak RSS
    cpu = evaluate(m, HW, c, replace(base, n_cpu_moe=n_layer)).memory["cpu"]
    logged = over["buffers"]["model:CPU_Mapped"] + over["buffers"]["model:CPU_REPACK"]
    assert logged - 2 * LOG_ROUNDING <= cpu.weights <= logged + m.embd_bytes + 64 * 1024  # type: ignore[attr-defined]
    assert abs(cpu.total - over["peak_rss"]) <= max(64 * MiB, over["peak_rss"] // 20), (cpu.total, over["peak_rss"])


# llama.cpp's C API with n_seq_max sequences (Llama() has no argument for it) and the
# sliding-window cache llama-server makes by default (swa_full off; the C default is on).
_SEQ_CHILD = r'''
import sys
import llama_cpp
path, n_ctx, n_seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llama_cpp.llama_backend_init()
model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
cp = llama_cpp.llama_context_default_params()
cp.n_ctx, cp.n_seq_max, cp.n_threads, cp.swa_full = n_ctx, n_seq, 2, False
sys.exit(0 if llama_cpp.llama_init_from_model(model, cp) else 3)
'''


@pytest.mark.parametrize(("n_ctx", "n_seq"), [(2048, 2), (4096, 4), (1000, 3), (8192, 2)])
def test_sliding_window_cache_per_sequence_matches_llama_cpp(tmp_path: Path, n_ctx: int, n_seq: int) -> None:
    import re

    from gguf_models import write_gemma2

    from planner.runtimes import registry

    path = write_gemma2(tmp_path / "tiny-gemma2-Q8_0.gguf", n_swa=256)
    m = registry.get("gguf").model(api.read_model(str(path), runtime="gguf"))
    proc = subprocess.run([sys.executable, "-c", _SEQ_CHILD, str(path), str(n_ctx), str(n_seq)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # llama-kv-cache-iswa.cpp logs the cells of one stream: the non-SWA cache first, then the SWA one
    full, window = (int(x) for x in re.findall(r"creating\s+(?:non-)?SWA KV cache, size = (\d+) cells", proc.stderr))
    s = memory.Setting(n_ctx=n_ctx, n_gpu_layers=0, n_seq=n_seq)
    assert (memory.cells(m, s, False), memory.cells(m, s, True)) == (full * n_seq, window * n_seq)
    logged = sum(float(x) for x in re.findall(r"CPU KV buffer size =\s+([0-9.]+) MiB", proc.stderr))
    ours = sum(memory.kv_layer(m, il, s) for il in range(m.n_layer))  # type: ignore[arg-type]
    assert abs(ours - logged * MiB) <= 2 * LOG_ROUNDING


def test_a_sliding_window_key_llama_cpp_does_not_read_keeps_the_full_cache(tmp_path: Path) -> None:
    import re

    from planner.runtimes import registry

    # llama.cpp's llama arch never reads {arch}.attention.sliding_window: a full cache on every layer
    path = write_llama(tmp_path / "tiny-swa-Q8_0.gguf", n_layer=4, n_embd=256, n_ff=512, n_vocab=1000, swa=256)
    m = registry.get("gguf").model(api.read_model(str(path), runtime="gguf"))
    assert m.n_swa == 0 and not any(la.swa for la in m.layers)  # type: ignore[attr-defined]
    proc = subprocess.run([sys.executable, "-c", _SEQ_CHILD, str(path), "2048", "1"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SWA KV cache" not in proc.stderr
    logged = sum(float(x) for x in re.findall(r"CPU KV buffer size =\s+([0-9.]+) MiB", proc.stderr))
    s = memory.Setting(n_ctx=2048, n_gpu_layers=0)
    assert abs(sum(memory.kv_layer(m, il, s) for il in range(m.n_layer)) - logged * MiB) <= LOG_ROUNDING  # type: ignore[arg-type]
