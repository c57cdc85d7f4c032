"""``python -m planner.runtimes.diffusers.verify_child PLAN OUT``: run a diffusers plan file's
script (a few steps) and write what each phase used, for ``fitcheck verify``.

It renders the script exactly as ``--script`` writes it (emit.script_from_doc), imports it, and
runs ``load()`` then ``generate(pipe, steps)``. Measured:

- CPU: peak RSS (VmHWM), reset between phases through /proc/self/clear_refs;
- CUDA: torch's peak reserved bytes per device, reset between phases.

Phases (the keys ``fitcheck verify`` compares): "imports", "load", "prefill" (the text encoding:
the pipeline's ``encode_prompt``) and "generate" (the rest of the call); ``diffusers_phases``
holds the peak of each pipeline phase ("text encoding", "denoising", "VAE decode") on its own.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from planner.hardware import rss

# Steps run under verify: each step's working memory is the same, so two show the denoising peak.
VERIFY_STEPS = 2
_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status() -> dict[str, int]:
    return rss.status(_FIELDS)


def reset_peak(torch: Any | None) -> None:
    rss.reset_peak()
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def gpus(torch: Any | None) -> dict[str, dict[str, int]]:
    if torch is None or not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": {"torch_peak_reserved": int(torch.cuda.max_memory_reserved(i)), "torch_reserved": int(torch.cuda.memory_reserved(i))}
            for i in range(torch.cuda.device_count())}


def snapshot(torch: Any | None) -> dict[str, Any]:
    s = status()
    return {"peak_rss": s["VmHWM"], "rss": s["VmRSS"], "rss_anon": s["RssAnon"], "rss_file": s["RssFile"], "gpus": gpus(torch),
            "t": time.monotonic()}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The larger of two phase snapshots, field by field (peaks) with b's current values."""
    out = dict(b)
    out["peak_rss"] = max(a.get("peak_rss", 0), b["peak_rss"])
    g = {}
    for dev in set(a.get("gpus", {})) | set(b.get("gpus", {})):
        x, y = a.get("gpus", {}).get(dev, {}), b.get("gpus", {}).get(dev, {})
        g[dev] = {"torch_peak_reserved": max(x.get("torch_peak_reserved", 0), y.get("torch_peak_reserved", 0)),
                  "torch_reserved": y.get("torch_reserved", x.get("torch_reserved", 0))}
    out["gpus"] = g
    return out


def run(plan_path: Path, out_path: Path) -> None:
    from planner.runtimes.diffusers.emit import script_from_doc

    plan = json.loads(plan_path.read_text())
    doc = plan["pipeline"]
    results: dict[str, Any] = {"phases": {}, "diffusers_phases": {}}
    reset_peak(None)
    import diffusers  # noqa: F401  (the script imports it; its cost is part of the process)
    import torch
    import transformers  # noqa: F401

    results["phases"]["imports"] = snapshot(torch)
    reset_peak(torch)
    text = script_from_doc(doc, label=plan.get("label", "plan"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fitcheck_generate.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location("fitcheck_generate", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        pipe = module.load()
    results["phases"]["load"] = snapshot(torch)
    weights: dict[str, int] = {}
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            for p in comp.parameters():
                dev = "cpu" if p.device.type == "cpu" else str(p.device) if p.device.index is not None else f"{p.device.type}:0"
                weights[dev] = weights.get(dev, 0) + p.numel() * p.element_size()
    results["weights_loaded_bytes"] = weights
    sub = results["diffusers_phases"]

    def watch(owner: Any, attr: str, key: str) -> None:
        fn = getattr(owner, attr)

        def wrapped(*a: Any, **k: Any) -> Any:
            reset_peak(torch)
            out = fn(*a, **k)
            sub[key] = _merge(sub.get(key, {}), snapshot(torch))
            return out

        setattr(owner, attr, wrapped)

    watch(pipe, "encode_prompt", "text encoding")
    den = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if den is not None:
        watch(den, "forward", "denoising")
    if getattr(pipe, "vae", None) is not None:
        watch(pipe.vae, "decode", "VAE decode")
    reset_peak(torch)
    with torch.inference_mode():
        images = module.generate(pipe, steps=min(int(doc["steps"]), VERIFY_STEPS))
    end = snapshot(torch)
    text_phase = sub.get("text encoding", end)
    results["phases"]["prefill"] = text_phase
    rest = end
    for key in ("denoising", "VAE decode"):
        if key in sub:
            rest = _merge(rest, sub[key])
    results["phases"]["generate"] = rest
    results["generated_tokens"] = 0
    results["images"] = len(images)
    results["cpu_peak_rss"] = max(p["peak_rss"] for p in results["phases"].values())
    out_path.write_text(json.dumps(results))


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
