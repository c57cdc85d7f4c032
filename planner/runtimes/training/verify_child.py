"""``python -m planner.runtimes.training.verify_child PLAN OUT``: run a training plan file's
``train.py`` for a few optimizer steps and write what each phase used, in the shape
planner.report.verify.compare reads.

The script is rendered exactly as ``fitcheck plan --train`` writes it (emit.script_from_settings)
and run as its own process with ``--report``: its measuring code (VmHWM reset through
/proc/self/clear_refs before each phase) is the one place phases are measured. The child env sets
``MALLOC_MMAP_THRESHOLD_=65536``: glibc otherwise keeps freed heap below its dynamic mmap
threshold (up to 32 MiB per allocation, mallopt(3)), and the RSS a phase left behind hides the
next phase's own peak.

Phases: "imports", "load", "forward", "backward", "step" (the script's), and the keys the generic
report reads: "prefill" (the forward) and "generate" (the larger of backward and step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

# glibc's M_MMAP_THRESHOLD as the child sets it (bytes): allocations from 64 KiB up are mmapped and
# returned to the kernel on free (mallopt(3), "M_MMAP_THRESHOLD"; the default is dynamic up to 32 MiB)
MMAP_THRESHOLD = 65536
PHASES = ("forward", "backward", "step")


def child_env() -> dict[str, str]:
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "TOKENIZERS_PARALLELISM": "false"}


def to_raw(plan: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """The script's report as the generic comparison reads it, with a component per phase."""
    ph = got["phases"]
    snap = {name: {"rss": int(ph[name]), "peak_rss": int(ph[name])} for name in ("imports", "load", *PHASES)}
    snap["prefill"] = snap["forward"]
    snap["generate"] = max(snap["backward"], snap["step"], key=lambda x: x["peak_rss"])
    predicted = (plan.get("predicted_phases") or {}).get("cpu", {})
    components = [{"name": name, "predicted": int(predicted.get(name, 0)), "measured": int(ph[name])} for name in PHASES]
    return {"phases": snap, "cpu_peak_rss": int(got["peak"]), "weights_loaded_bytes": {"cpu": int(got.get("weights_bytes", 0))},
            "components": {"cpu": components}, "generated_tokens": 0, "losses": got["losses"],
            "trainable_parameters": got["trainable_parameters"], "malloc_mmap_threshold": MMAP_THRESHOLD}


def main(argv: list[str]) -> int:
    from planner.runtimes.training.emit import VERIFY_STEPS, script_from_settings

    plan_path, out_path = argv[0], argv[1]
    with open(plan_path, encoding="utf-8") as fh:
        plan = json.load(fh)
    with tempfile.TemporaryDirectory(prefix="fitcheck-train-") as tmp:
        script, report = os.path.join(tmp, "train.py"), os.path.join(tmp, "report.json")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(script_from_settings(plan["train"], label=str(plan.get("label", "plan"))))
        steps = int(plan.get("generate", {}).get("steps", VERIFY_STEPS))
        proc = subprocess.run([sys.executable, script, "--steps", str(steps), "--report", report], cwd=tmp, env=child_env(),
                              check=False, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(report):
            sys.stderr.write(proc.stderr[-2000:])
            return proc.returncode or 1
        with open(report, encoding="utf-8") as fh:
            got = json.load(fh)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(to_raw(plan, got), fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
