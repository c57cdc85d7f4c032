"""The child process of ``fitcheck verify``: load and generate as the emitted script does, measuring.

Run as ``python -m planner.runtimes.transformers.verify_child PLAN_FILE OUT_JSON``. It renders the load script from
the plan file with :func:`planner.runtimes.transformers.emit.script_from_settings` (the same text ``--script``
writes), imports it, calls its ``load_model()``, then generates ``new_tokens`` tokens after a
prefill of ``context`` random tokens for each of ``batch`` sequences. At each phase it records:

- CPU: the process's peak RSS (VmHWM, reset between phases through /proc/self/clear_refs) and the
  split of RSS into anonymous and file-backed pages (RssAnon, RssFile), also sampled every 2 ms
  to find the split at the peak;
- each GPU: torch's peak reserved bytes and NVML's used bytes (which include the CUDA context);
- disk: the bytes in the offload folder.

Only this process imports torch; the parent stays light.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from planner.hardware import rss

_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
# Sampling period of the RSS split. 2 ms catches the split near peaks that last a layer's
# forward (tens of ms on CPU); the kernel's VmHWM gives the exact peak itself.
_SAMPLE_S = 0.002


def status() -> dict[str, int]:
    return rss.status(_FIELDS)


class Sampler:
    """Background sampler of the RSS split; remembers the split at the highest RSS seen."""

    def __init__(self) -> None:
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = status()
            if s["VmRSS"] > self.peak["VmRSS"]:
                self.peak = {k: s[k] for k in self.peak}
            time.sleep(_SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gpu_state(torch: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    if not torch.cuda.is_available():
        return out
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        pynvml = None
    for i in range(torch.cuda.device_count()):
        entry = {"torch_peak_reserved": int(torch.cuda.max_memory_reserved(i)), "torch_reserved": int(torch.cuda.memory_reserved(i)),
                 "torch_peak_allocated": int(torch.cuda.max_memory_allocated(i)), "torch_allocated": int(torch.cuda.memory_allocated(i))}
        if pynvml is not None:
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                entry["nvml_used"] = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
            except Exception:
                pass
        if "nvml_used" not in entry:
            # without NVML, the driver's own count of used memory (this process holds a context already)
            free, total = torch.cuda.mem_get_info(i)
            entry["nvml_used"] = int(total - free)
        out[f"cuda:{i}"] = entry
    return out


def nvml_used() -> dict[str, int]:
    """NVML used bytes per GPU before torch touches CUDA (the baseline for the context's cost)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return {f"cuda:{i}": int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
                for i in range(pynvml.nvmlDeviceGetCount())}
    except Exception:
        return {}


def _resident(model: Any) -> dict[str, int]:
    """Bytes of parameters and buffers per device (offloaded ones sit on "meta" and are skipped)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "meta" or id(t) in seen:
            continue
        seen.add(id(t))
        dev = "cpu" if t.device.type == "cpu" else str(t.device)
        size = t.numel() * t.element_size()
        for extra in ("SCB", "quant_state"):  # bnb keeps scales beside the weight
            state = getattr(t, extra, None)
            tensors: list[Any] = [state] if _is_tensor(state) else [v for v in vars(state).values() if _is_tensor(v)] if state is not None else []
            nested = getattr(state, "state2", None)
            if nested is not None:
                tensors += [v for v in vars(nested).values() if _is_tensor(v)]
            size += sum(v.numel() * v.element_size() for v in tensors)
        out[dev] = out.get(dev, 0) + size
    return out


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "element_size") and hasattr(value, "numel")


def folder_bytes(path: str | None) -> int:
    if not path or not os.path.isdir(path):
        return 0
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def phase(name: str, results: dict[str, Any], sampler: Sampler | None, torch: Any | None) -> None:
    s = status()
    results["phases"][name] = {
        "peak_rss": s["VmHWM"],
        "rss": s["VmRSS"],
        "rss_anon": s["RssAnon"],
        "rss_file": s["RssFile"],
        "sampled_peak": dict(sampler.peak) if sampler else None,
        "gpus": gpu_state(torch) if torch is not None else {},
        "t": time.monotonic(),
    }
    # the parent shows this on a terminal (planner.report.verify.PROGRESS)
    print(f"@@fitcheck-progress {name} done", file=sys.stderr, flush=True)
    if sampler:
        sampler.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    rss.reset_peak()
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def run(plan_path: Path, out_path: Path) -> None:
    from planner.runtimes.transformers.emit import script_from_settings

    plan = json.loads(plan_path.read_text())
    settings, generate = plan["load"], plan["generate"]
    results: dict[str, Any] = {"phases": {}, "nvml_before": nvml_used(), "peak_reset_works": rss.reset_peak()}
    with Sampler() as sampler:
        phase("start", results, sampler, None)
        import torch
        import transformers  # noqa: F401  (the emitted script imports it; its cost is part of the process)

        if settings.get("bitsandbytes"):
            import bitsandbytes  # noqa: F401
        phase("imports", results, sampler, torch)

        text = script_from_settings(settings, generate, label=plan.get("label", "plan"))
        with tempfile.TemporaryDirectory() as tmp:
            script_path = Path(tmp) / "fitcheck_load.py"
            script_path.write_text(text)
            spec = importlib.util.spec_from_file_location("fitcheck_load", script_path)
            assert spec is not None and spec.loader is not None  # a .py path always has a source loader
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            model = module.load_model()
        phase("load", results, sampler, torch)
        results["weights_loaded_bytes"] = _resident(model)
        results["offload_bytes"] = folder_bytes(settings.get("offload_folder"))

        batch, context, new = int(generate["batch"]), int(generate["context"]), int(generate["new_tokens"])
        vocab = int(model.config.get_text_config().vocab_size)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(min(100, vocab - 1), vocab - 1, (batch, context), generator=gen).to(settings["exec_device"])
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            prefill = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            cache = prefill.past_key_values
            results["kv_after_prefill_bytes"] = _cache_bytes(cache)
            del prefill, cache
            phase("prefill", results, sampler, torch)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(new, 1), min_new_tokens=max(new, 1),
                                 do_sample=False, return_dict_in_generate=True)
            results["kv_after_generate_bytes"] = _cache_bytes(out.past_key_values)
            results["generated_tokens"] = int(out.sequences.shape[1] - context)
        phase("generate", results, sampler, torch)
    overall = max(p["peak_rss"] for p in results["phases"].values())
    results["cpu_peak_rss"] = overall
    out_path.write_text(json.dumps(results))


def _cache_bytes(cache: Any) -> dict[str, int]:
    """Bytes of the cache's K/V tensors per device ("cpu", "cuda:0", ...)."""
    tensors = []
    for layer in getattr(cache, "layers", None) or ():
        tensors += [getattr(layer, n, None) for n in ("keys", "values")]
    for sub in ("self_attention_cache", "cross_attention_cache"):  # EncoderDecoderCache
        inner = getattr(cache, sub, None)
        for layer in getattr(inner, "layers", None) or ():
            tensors += [getattr(layer, n, None) for n in ("keys", "values")]
    out: dict[str, int] = {}
    for t in tensors:
        if t is not None and hasattr(t, "numel") and t.numel():
            dev = "cpu" if t.device.type == "cpu" else str(t.device)
            out[dev] = out.get(dev, 0) + t.numel() * t.element_size()
    return out


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
