"""GGUF cache benchmark: fitcheck's cache and compute bytes against what llama.cpp allocates for
MLA (deepseek2), recurrent (mamba, mamba2) and hybrid (jamba, granitehybrid, nemotron_h, lfm2,
falcon-h1) models.

    PYTHONPATH=. python benchmarks/gguf/caches.py [--out benchmarks/gguf]

Each scenario writes a tiny random-weight model (tests/gguf_cache_models.py), creates a llama.cpp
context for it through llama-cpp-python's C API (tests/test_gguf_caches.py ``load``: CPU, extra
buffer types off) and records the KV, RS (recurrent state) and compute buffer sizes llama.cpp
logs beside fitcheck's. Writes ``caches.json`` and ``CACHES.md``. The cache bytes must print as
llama.cpp prints them (MiB, two decimals); the compute buffer must not be under-predicted.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gguf_cache_models import (
    write_deepseek2,
    write_falcon_h1,
    write_granitehybrid,
    write_jamba,
    write_lfm2,
    write_mamba,
    write_mamba2,
    write_nemotron_h,
)
from test_gguf_caches import facts, load, mib, parts

from planner.runtimes.gguf import memory

MiB = 1024**2
WRITERS = {"deepseek2": (write_deepseek2, {}), "deepseek2-wide": (write_deepseek2, {"n_head": 8, "n_vocab": 4000}),
           "mamba": (write_mamba, {}), "mamba-wide": (write_mamba, {"n_layer": 4, "n_embd": 1024, "d_inner": 2048, "d_state": 32,
                                                                   "dt_rank": 64, "n_vocab": 1000}),
           "jamba": (write_jamba, {}), "jamba-deep": (write_jamba, {"n_layer": 8, "attn_every": 4, "n_embd": 512, "d_inner": 1024}),
           "mamba2": (write_mamba2, {}), "mamba2-wide": (write_mamba2, {"n_layer": 4, "n_embd": 1024, "d_inner": 2048, "d_state": 128,
                                                                      "n_head": 32, "n_group": 2, "n_vocab": 1000}),
           "granitehybrid": (write_granitehybrid, {}),
           "granitehybrid-2": (write_granitehybrid, {"n_layer": 6, "attn_every": 3, "n_group": 2, "n_vocab": 4000}),
           "nemotron_h": (write_nemotron_h, {"pattern": "MFMAMFMFA", "n_group": 2, "n_head_kv": 1, "n_embd": 512, "n_head": 8,
                                             "d_inner": 1024, "ssm_head": 16, "n_vocab": 4000}),
           "lfm2": (write_lfm2, {"n_layer": 8, "attn_every": 4, "n_embd": 1024, "n_ff": 2048, "n_head": 8, "n_head_kv": 4,
                                 "n_vocab": 4000}),
           "falcon-h1": (write_falcon_h1, {"n_layer": 4, "n_embd": 512, "n_ff": 1024, "n_head": 8, "n_head_kv": 2, "d_inner": 768,
                                           "d_state": 128, "ssm_head": 12, "n_group": 2, "n_vocab": 4000})}
# (model, n_ctx, n_seq, flash attention, cache type)
SCENARIOS = [("deepseek2", 1024, 1, False, "f16"), ("deepseek2", 4096, 1, True, "q8_0"), ("deepseek2-wide", 4096, 1, False, "f16"),
             ("deepseek2-wide", 8192, 2, True, "f16"), ("mamba", 4096, 1, False, "f16"), ("mamba-wide", 2048, 4, True, "f16"),
             ("jamba", 2048, 1, False, "f16"), ("jamba", 8192, 3, True, "q8_0"), ("jamba-deep", 4096, 2, False, "f16"),
             ("jamba-deep", 16384, 1, True, "q4_0"), ("mamba2", 4096, 1, False, "f16"), ("mamba2-wide", 2048, 4, True, "f16"),
             ("granitehybrid", 2048, 1, False, "f16"), ("granitehybrid-2", 8192, 3, True, "q8_0"), ("nemotron_h", 4096, 2, False, "f16"),
             ("nemotron_h", 16384, 1, True, "q4_0"), ("lfm2", 2048, 8, True, "f16"), ("lfm2", 4096, 1, False, "f16"),
             ("falcon-h1", 2048, 3, False, "f16"), ("falcon-h1", 8192, 1, True, "q8_0")]


def run(out: Path) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fitcheck-gguf-caches-") as tmp:
        for name, n_ctx, n_seq, fa, kv in SCENARIOS:
            path = Path(tmp) / f"{name}-Q8_0.gguf"
            if not path.exists():
                fn, kw = WRITERS[name]
                fn(path, **kw)  # type: ignore[operator]
            m = facts(path)
            s = memory.Setting(n_ctx=n_ctx, n_gpu_layers=0, type_k=kv, type_v=kv, flash_attn=fa, n_seq=n_seq)
            logged = load(path, n_ctx, n_seq, fa, kv)
            ours = parts(m, s)
            row = {"model": name, "arch": m.arch, "n_ctx": n_ctx, "n_seq": n_seq, "fa": fa, "kv": kv,
                   "kv_predicted": ours["kv_buffer"], "kv_logged": logged.get("kv_buffer", "-"),
                   "state_predicted": ours["rs_buffer"], "state_logged": logged.get("rs_buffer", "-"),
                   "compute_predicted": memory.compute(m, s), "compute_logged": logged["compute"]}
            row["cache_exact"] = all(mib(ours[k]) == logged[k] for k in ("kv_buffer", "k", "v", "rs_buffer", "r", "s") if k in logged)
            row["compute_ok"] = float(logged["compute"]) * MiB <= row["compute_predicted"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "caches.json").write_text(json.dumps(rows, indent=1))
    (out / "CACHES.md").write_text(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["# GGUF cache benchmark: MLA, recurrent and hybrid caches (llama-cpp-python 0.3.36, CPU)", "",
             "Generated by `benchmarks/gguf/caches.py`. MiB; predicted / as llama.cpp logs it (\"-\": no such buffer).", "",
             "| model | arch | n_ctx | seqs | fa | cache type | KV | state | compute | cache exact | compute covered |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kv = f"{mib(r['kv_predicted'])}/{r['kv_logged']}"
        st = f"{mib(r['state_predicted'])}/{r['state_logged']}"
        lines.append(f"| {r['model']} | {r['arch']} | {r['n_ctx']} | {r['n_seq']} | {'on' if r['fa'] else 'off'} | {r['kv']} | {kv} | "
                     f"{st} | {mib(r['compute_predicted'])}/{r['compute_logged']} | {'yes' if r['cache_exact'] else 'NO'} | "
                     f"{'yes' if r['compute_ok'] else 'NO'} |")
    lines += ["", f"{sum(r['cache_exact'] for r in rows)} of {len(rows)} scenarios with every cache figure as llama.cpp logs it; "
              f"{sum(r['compute_ok'] for r in rows)} of {len(rows)} with the compute buffer covered."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run(Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path(__file__).parent)
