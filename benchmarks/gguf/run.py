"""GGUF benchmark: fitcheck's predicted CPU peak against real llama-cpp-python runs.

    PYTHONPATH=. python benchmarks/gguf/run.py [--out benchmarks/gguf]

Each scenario writes a tiny GGUF model with the ``gguf`` package (random weights), plans it with
the GGUF runtime (engine llama-cpp-python, CPU only), runs the emitted script with a prompt that
fills the context (``--fill``), and records the child's peak RSS (``ru_maxrss``: it counts the
mapped weight pages the run touched) and the buffer sizes llama.cpp logged. Writes
``results.json`` and ``RESULTS.md`` (the table). Target: predicted peak within +-5 % or 64 MiB,
never under by more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gguf_models import write_gemma2, write_llama

from planner import api
from planner.core.records import Constraints, DeviceMemory, Hardware

MiB = 1024**2
GiB = 1024**3
HW = Hardware(name="bench-cpu", source="profile", gpus=(), ram_total=16 * GiB, ram_free=8 * GiB, disk_free=100 * GiB,
              cache_disk_free=100 * GiB)
# name -> write_llama arguments
MODELS = {
    "small": {"n_layer": 4, "n_embd": 256, "n_ff": 512, "n_head": 4, "n_head_kv": 2, "n_vocab": 2000},
    "wide": {"n_layer": 3, "n_embd": 512, "n_ff": 1024, "n_head": 8, "n_head_kv": 4, "n_vocab": 8000},
    "moe": {"n_layer": 2, "n_embd": 256, "n_ff": 256, "n_head": 4, "n_head_kv": 2, "n_vocab": 1000, "n_expert": 4, "n_expert_used": 2},
    "deep": {"n_layer": 8, "n_embd": 512, "n_ff": 1536, "n_head": 8, "n_head_kv": 2, "n_vocab": 16000},
    "big": {"n_layer": 6, "n_embd": 1024, "n_ff": 2816, "n_head": 8, "n_head_kv": 8, "n_vocab": 1000},
    # gemma2: sliding-window attention (256) on every other layer, soft-capped logits, tied output
    "gemma2": {"n_layer": 4, "n_embd": 256, "n_ff": 512, "n_head": 4, "n_head_kv": 2, "n_vocab": 2000, "n_swa": 256},
}
# (model, quant, n_ctx, kv type, flash attention)
SCENARIOS = [
    ("small", "Q8_0", 512, "f16", False), ("small", "Q8_0", 2048, "f16", False), ("small", "Q4_0", 4096, "f16", True),
    ("small", "F16", 8192, "q8_0", True), ("wide", "Q8_0", 1024, "f16", False), ("wide", "Q4_0", 4096, "q8_0", True),
    ("wide", "F16", 8192, "f16", True), ("moe", "Q8_0", 1024, "f16", False), ("moe", "Q4_0", 4096, "q8_0", True),
    ("deep", "Q8_0", 2048, "f16", False), ("deep", "Q4_0", 3072, "q4_0", True), ("deep", "Q5_0", 4096, "f16", True),
    ("deep", "F16", 1024, "q8_0", True), ("small", "Q5_1", 1024, "q4_0", True),
    # Q4_0 is repacked by the CPU backend (a second resident copy), Q4_1 is not
    ("big", "Q4_0", 512, "f16", True), ("big", "Q4_1", 512, "f16", True),
    ("gemma2", "Q8_0", 2048, "f16", False), ("gemma2", "Q8_0", 8192, "q8_0", True),
]


def within_target(err: int, peak: int) -> bool:
    """The benchmark's target: predicted peak within +-5 % or 64 MiB of the measured one."""
    return -max(64 * MiB, peak // 20) <= err <= max(64 * MiB, peak // 20)


def measure(path: Path, n_ctx: int, kv: str, fa: bool, tmp: Path, *, timeout: float = 600) -> tuple[DeviceMemory, dict, float]:
    """Plan ``path`` for the CPU with llama-cpp-python, run the emitted script with a prompt that
    fills the context: the plan's CPU memory, the script's report and the run's seconds."""
    c = Constraints(context=n_ctx - 16, new_tokens=16, options=(("engine", "llama-cpp-python"), ("flash_attn", fa), ("kv_type", kv)))
    r = api.plan(str(path), hardware=HW, constraints=c, runtime="gguf")
    assert r.solution is not None, r.rejected
    script, report = tmp / "run.py", tmp / "report.json"
    script.write_text(api.emit(r).files["run_llama.py"])
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), "--fill", "--report", str(report)], capture_output=True, text=True,
                          check=False, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return r.solution.chosen.memory["cpu"], json.loads(report.read_text()), time.monotonic() - started


def run(out: Path) -> list[dict]:
    """Run the scenarios not yet in ``out/results.json`` (a run can be resumed), writing after each."""
    out.mkdir(parents=True, exist_ok=True)
    done = out / "results.json"
    rows: list[dict] = json.loads(done.read_text()) if done.exists() else []
    have = {(r["model"], r["quant"], r["n_ctx"], r["kv"], r["fa"]) for r in rows}
    with tempfile.TemporaryDirectory(prefix="fitcheck-gguf-bench-") as tmp:
        t = Path(tmp)
        for model, quant, n_ctx, kv, fa in SCENARIOS:
            if (model, quant, n_ctx, kv, fa) in have:
                continue
            path = t / f"{model}-{quant}.gguf"
            if not path.exists():
                (write_gemma2 if model == "gemma2" else write_llama)(path, qtype=quant, **MODELS[model])  # type: ignore[operator]
            cpu, got, seconds = measure(path, n_ctx, kv, fa, t)
            b = got["buffers"]
            peak = got["peak_rss"]
            err = cpu.total - peak
            rows.append({"model": model, "quant": quant, "n_ctx": n_ctx, "kv": kv, "fa": fa, "predicted_peak": cpu.total,
                         "measured_peak": peak, "error_bytes": err, "error_pct": round(100 * err / peak, 2),
                         "ok": within_target(err, peak),
                         "kv_predicted": cpu.kv_cache, "kv_logged": b.get("KV:CPU", 0), "compute_predicted": cpu.compute,
                         "compute_logged": b.get("compute:CPU", 0), "weights_predicted": cpu.weights,
                         "weights_logged": sum(v for k, v in b.items() if k.startswith("model:")),
                         "repacked_logged": b.get("model:CPU_REPACK", 0),
                         "tokens": got["generated_tokens"], "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), flush=True)
            done.write_text(json.dumps(rows, indent=1))
    order = {sc: i for i, sc in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: order.get((r["model"], r["quant"], r["n_ctx"], r["kv"], r["fa"]), len(order)))
    done.write_text(json.dumps(rows, indent=1))
    (out / "RESULTS.md").write_text(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    def m(x: int) -> str:
        return f"{x / MiB:.1f}"

    lines = ["# GGUF benchmark: predicted vs measured CPU peak (llama-cpp-python, CPU)", "",
             "Generated by `benchmarks/gguf/run.py` (llama-cpp-python 0.3.36, 2 shared vCPUs, AVX2/AVX-512). Peak = the",
             "script process's VmHWM with a prompt that fills the context; KV and compute = predicted / as llama.cpp",
             "logs them (the predicted compute includes the CPU work buffer of attention without flash attention). MiB.", "",
             "| model | quant | n_ctx | KV | fa | predicted | measured | error | error % | KV pred/log | compute pred/log | ok |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['quant']} | {r['n_ctx']} | {r['kv']} | {'on' if r['fa'] else 'off'} | {m(r['predicted_peak'])} | "
                     f"{m(r['measured_peak'])} | {r['error_bytes'] / MiB:+.1f} | {r['error_pct']:+.1f} | "
                     f"{m(r['kv_predicted'])}/{m(r['kv_logged'])} | {m(r['compute_predicted'])}/{m(r['compute_logged'])} | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    low = min(rows, key=lambda r: r["error_bytes"])
    high = max(rows, key=lambda r: r["error_bytes"])
    under = [r for r in rows if r["error_bytes"] < 0]
    lines += ["", (f"Lowest prediction against its run: {low['error_bytes'] / MiB:+.1f} MiB ({low['model']} {low['quant']} n_ctx "
                   f"{low['n_ctx']}); highest: {high['error_bytes'] / MiB:+.1f} MiB ({high['model']} {high['quant']} n_ctx "
                   f"{high['n_ctx']}); {len(under)} of {len(rows)} runs under-predicted."),
              f"{sum(r['ok'] for r in rows)} of {len(rows)} scenarios within the target (+-5 % or 64 MiB)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path(__file__).parent
    if "--table" in sys.argv:  # rewrite RESULTS.md from results.json
        (out / "RESULTS.md").write_text(table(json.loads((out / "results.json").read_text())))
    else:
        run(out)
