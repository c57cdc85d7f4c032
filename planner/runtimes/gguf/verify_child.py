"""``fitcheck verify`` for GGUF plans: run the plan's llama-cpp-python script in a child with a
prompt that fills the context, and report its peak RSS and llama.cpp's own buffer sizes in the
shape planner.report.verify.compare reads.

    python -m planner.runtimes.gguf.verify_child PLAN_JSON OUT_JSON

Peak RSS is the kernel's high-water mark of the script's process (``ru_maxrss``), which counts
memory-mapped weight pages the run touched; weights and KV are the sizes llama.cpp logs
("CPU_Mapped model buffer size", "CPU KV buffer size").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def main(argv: list[str]) -> int:
    plan_path, out_path = argv[0], argv[1]
    with open(plan_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    with tempfile.TemporaryDirectory(prefix="fitcheck-gguf-") as tmp:
        script = os.path.join(tmp, "run_llama.py")
        report = os.path.join(tmp, "report.json")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(doc["script"])
        proc = subprocess.run([sys.executable, script, "--fill", "--report", report], check=False, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(report):
            sys.stderr.write(proc.stderr[-2000:])
            return proc.returncode or 1
        with open(report, encoding="utf-8") as fh:
            got = json.load(fh)
    buffers = got["buffers"]
    weights = sum(v for k, v in buffers.items() if k.startswith("model:CPU"))
    kv = sum(v for k, v in buffers.items() if k.startswith("KV:CPU"))
    phase = {"rss": got["rss_after_load"], "peak_rss": got["peak_rss"]}
    raw = {
        "phases": {"imports": {"rss": 0, "peak_rss": 0}, "load": {"rss": got["rss_after_load"], "peak_rss": got["rss_after_load"]},
                   "prefill": phase, "generate": phase},
        "cpu_peak_rss": got["peak_rss"],
        "weights_loaded_bytes": {"cpu": weights},
        "kv_after_prefill_bytes": {"cpu": kv},
        "kv_after_generate_bytes": {"cpu": kv},
        "generated_tokens": got["generated_tokens"],
        "llama_cpp_buffers": buffers,
        "text": got["text"],
        # VmLck after load and whether llama.cpp logged "failed to mlock" (a --mlock plan)
        "mlock": {"locked": got.get("locked"), "failed": bool(got.get("mlock_failed"))},
    }
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(raw, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
