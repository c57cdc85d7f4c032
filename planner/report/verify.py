"""``fitcheck verify``: run a plan's load and generate in a child process and compare the memory
each device really used with what the plan predicted.

Measured, per device:

- cpu: the child's peak RSS (kernel VmHWM, reset per phase), with its anonymous / file-backed
  split; weights as torch holds them after the load; the KV cache after the prefill.
- cuda:N: torch's peak reserved bytes plus what NVML shows beyond torch (the CUDA context and
  the libraries' workspaces); weights and KV as torch holds them.
- disk: the bytes in the offload folder after the load.

The comparison is per component where it can be measured (weights, KV after prefill, peak), with
the error in MiB and in %. Verification fails (exit 1) when a measured peak exceeded the capacity
the plan assumed for the device (its free memory minus the margin).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.core.errors import VerifyError
from planner.core.ids import show as ids_show
from planner.core.records import Hardware, _ToDict
from planner.core.units import fmt_bytes
from planner.runtimes import registry
from planner.runtimes.base import Runtime


@dataclass(frozen=True, slots=True)
class Component(_ToDict):
    """Predicted against measured for one quantity of one device, in bytes."""

    name: str
    predicted: int
    measured: int

    @property
    def error_bytes(self) -> int:
        return self.predicted - self.measured

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.measured) / self.measured if self.measured else 0.0


@dataclass(frozen=True, slots=True)
class DeviceCheck(_ToDict):
    """One device's verification: components, its peak, and the capacity the plan assumed."""

    device: str
    predicted_peak: int
    measured_peak: int
    capacity: int
    components: tuple[Component, ...]
    detail: dict[str, int]

    @property
    def over_capacity(self) -> bool:
        return self.measured_peak > self.capacity


@dataclass(frozen=True, slots=True)
class Verification(_ToDict):
    """The outcome of a verification run."""

    label: str
    devices: dict[str, DeviceCheck]
    seconds: float
    generated_tokens: int
    raw: dict[str, Any]
    # name -> (predicted, measured): load_s, first_token_s, tokens_per_s (None where not known)
    timings: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(d.over_capacity for d in self.devices.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "label": self.label,
            "seconds": round(self.seconds, 2),
            "generated_tokens": self.generated_tokens,
            "speed": {name: {"predicted": _round(pred), "measured": _round(got)} for name, (pred, got) in self.timings.items()},
            "devices": {
                name: {
                    "predicted_peak": d.predicted_peak,
                    "measured_peak": d.measured_peak,
                    "capacity": d.capacity,
                    "over_capacity": d.over_capacity,
                    "peak_error_bytes": d.predicted_peak - d.measured_peak,
                    "peak_error_pct": round(100.0 * (d.predicted_peak - d.measured_peak) / d.measured_peak, 2) if d.measured_peak else 0.0,
                    "components": {c.name: {"predicted": c.predicted, "measured": c.measured, "error_bytes": c.error_bytes,
                                            "error_pct": round(c.error_pct, 2)} for c in d.components},
                    "detail": d.detail,
                }
                for name, d in self.devices.items()
            },
        }


def verify_plan_file(path: Path, *, timeout: float = 1800.0, trust_remote_code: bool = False, allow_pickle: bool = False,
                     progress: Callable[[str], None] | None = None) -> Verification:
    """Verify the plan file at ``path``; ``progress`` gets a line as each phase of the run ends."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise VerifyError(f"cannot read plan file {str(path)!r} ({type(e).__name__})") from None
    return verify_plan_text(text, timeout=timeout, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, progress=progress)


def verify_plan_text(text: str, *, timeout: float = 1800.0, trust_remote_code: bool = False, allow_pickle: bool = False,
                     progress: Callable[[str], None] | None = None, hardware: Hardware | None = None) -> Verification:
    """Verify a plan file given as text.

    A plan file can come from anywhere (a pull request, a colleague), and verifying it runs a
    load: code from the model repo runs only with ``trust_remote_code``, and pickled weights are
    unpickled only with ``allow_pickle`` -- whatever the file itself asks for.
    """
    plan = _checked(text)
    load = plan["load"]
    runtime = _runtime(plan)
    with tempfile.TemporaryDirectory(prefix="fitcheck-verify-") as tmp:
        plan_path, out_path = Path(tmp) / "plan.json", Path(tmp) / "result.json"
        argv = runtime.verify_argv(plan, str(plan_path), str(out_path))  # refuses what its runtime cannot run here
        if argv is not None:
            check_hardware(plan, hardware)  # before anything loads or downloads
        if load.get("trust_remote_code") and not trust_remote_code:
            raise VerifyError("the plan runs Python code from the model repo (trust_remote_code)",
                              hint="review that code, then pass --trust-remote-code to verify")
        if load.get("pickled_weights") and not allow_pickle:
            raise VerifyError("the plan loads pickled pytorch_model*.bin weights, and unpickling can run code",
                              hint="pass --allow-pickle to verify if you trust the repo")
        if argv is None:
            raise VerifyError(f"plans of the {runtime.name} runtime cannot be verified on this machine")
        plan_path.write_text(text)
        started = time.monotonic()
        returncode, stderr = _run_child(argv, timeout=timeout, progress=progress)
        seconds = time.monotonic() - started
        if returncode != 0 or not out_path.exists():
            last = (stderr or ["no output"])[-1]
            killed = " (killed: out of memory?)" if returncode in (-9, 137) else ""
            raise VerifyError(f"the load failed with exit code {returncode}{killed}: {last[:300]}")
        raw = json.loads(out_path.read_text())
    return compare(plan, raw, seconds)


# What the child prints on stderr as each phase ends (verify_child.phase), and what the parent
# then tells the user is next: a verify of a large model takes minutes.
PROGRESS = "@@fitcheck-progress "
_NEXT = {"start": "importing torch and transformers", "imports": "loading the model (downloading its weights first if the "
         "Hugging Face cache lacks them)", "load": "prefill", "prefill": "generating", "generate": "done"}


def _run_child(argv: list[str], *, timeout: float, progress: Callable[[str], None] | None) -> tuple[int, list[str]]:
    """Run the child; report its phases to ``progress`` as they end. Returns (exit code, its other stderr lines)."""
    import threading

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines: list[str] = []
    started = time.monotonic()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(PROGRESS):
                name = line[len(PROGRESS):].split()[0] if line[len(PROGRESS):].split() else ""
                if progress is not None and name in _NEXT:
                    progress(f"[{time.monotonic() - started:6.1f} s] {name} done; {_NEXT[name]}")
            elif line.strip():
                lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise VerifyError(f"the load and generate did not finish within {timeout:g} s") from None
    finally:
        reader.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
    return code, lines


# The accelerator names a plan file's "predicted" block uses (every other key is a CPU, the disk, or
# a runtime's own entry).
_ACCELERATOR = re.compile(r"^(node\d+:)?(cuda|xpu|npu):\d+$|^mps$")


def check_hardware(plan: dict[str, Any], hardware: Hardware | None = None) -> None:
    """Refuse a plan for accelerators this machine does not have, or that lack the memory the plan
    needs on them, before the load starts (or downloads anything).

    Raises:
        VerifyError: a device of the plan is missing here, or has less free memory than the plan needs there.
    """
    predicted = plan.get("predicted", {})
    wanted = [d for d in predicted if isinstance(d, str) and _ACCELERATOR.match(d)] if isinstance(predicted, dict) else []
    if not wanted:
        return
    if hardware is None:
        from planner.hardware.probe import probe

        hardware = probe()
    here = {g.device: g for g in hardware.gpus}
    planned_on = plan.get("hardware", {}).get("name") if isinstance(plan.get("hardware"), dict) else None
    where = f" (it was planned for {ids_show(planned_on)})" if planned_on else ""
    missing = [d for d in wanted if d not in here]
    if missing:
        has = ", ".join(f"{g.device} {g.name}" for g in hardware.gpus) or "no GPU"
        raise VerifyError(f"the plan runs on {', '.join(missing)}, which this machine does not have ({has}){where}",
                          hint="plan for this machine (fitcheck plan MODEL, without --hardware) and verify that plan")
    for d in wanted:
        need = plan["predicted"][d].get("required", plan["predicted"][d].get("total", 0))
        if isinstance(need, int) and here[d].free_bytes < need:
            raise VerifyError(f"{d} has {fmt_bytes(here[d].free_bytes)} free here, and the plan needs {fmt_bytes(need)} on it{where}",
                              hint="free memory on that GPU, or plan again on this machine")


def _checked(text: str) -> dict[str, Any]:
    """Parse a plan file and check it is one fitcheck could have written (the runtime checks its
    own settings in ``verify_argv``), before anything runs."""
    try:
        plan = json.loads(text)
    except (ValueError, RecursionError):
        raise VerifyError("the plan file is not JSON") from None
    if not isinstance(plan, dict) or not all(isinstance(plan.get(k), dict) for k in ("load", "generate", "predicted")):
        raise VerifyError("the plan file is not one fitcheck wrote (needs load, generate and predicted objects)")
    return plan


def _runtime(plan: dict[str, Any]) -> Runtime:
    """The runtime the plan file names (plan files written before runtimes were named are transformers')."""
    name = plan.get("runtime", "transformers")
    if not isinstance(name, str) or name not in registry.names():
        raise VerifyError(f"the plan file names an unknown runtime {ids_show(name)}")
    return registry.get(name)


def compare(plan: dict[str, Any], raw: dict[str, Any], seconds: float) -> Verification:
    """Set the child's measurements against the plan's predictions."""
    phases = raw["phases"]
    devices: dict[str, DeviceCheck] = {}
    kv = raw.get("kv_after_prefill_bytes", {})
    weights = raw.get("weights_loaded_bytes", {})
    for name, pred in plan["predicted"].items():
        if name == "cpu":
            peak = raw["cpu_peak_rss"]
            at_peak = max(phases.values(), key=lambda p: p["peak_rss"])
            detail = {"rss_after_imports": phases["imports"]["rss"], "rss_after_load": phases["load"]["rss"],
                      "peak_phase_anon": (at_peak.get("sampled_peak") or {}).get("RssAnon", 0),
                      "peak_phase_file": (at_peak.get("sampled_peak") or {}).get("RssFile", 0),
                      "load_peak": phases["load"]["peak_rss"], "prefill_peak": phases["prefill"]["peak_rss"],
                      "generate_peak": phases["generate"]["peak_rss"]}
        elif name == "disk":
            peak = raw.get("offload_bytes", 0)
            detail = {}
        else:
            peak, detail = _gpu_peak(name, raw)
        comps = [Component("peak", pred["total"], peak)]
        own = raw.get("components", {}).get(name)
        if own is not None:  # a runtime's own components (training: weights, then a peak per phase of a step)
            comps[:0] = [Component("weights", pred["weights"], weights.get(name, 0))] + [
                Component(c["name"], c["predicted"], c["measured"]) for c in own]
        elif name != "disk":
            # torch counts a memory-mapped embedding whole, read or not: compare like with like
            comps.insert(0, Component("weights", pred["weights"] + pred.get("unread", 0), weights.get(name, 0)))
            comps.insert(1, Component("kv_prefill", pred.get("kv_after_prefill", pred["kv_cache"]), int(kv.get(name, 0))))
            comps.insert(2, Component("kv_final", pred["kv_cache"], int(raw.get("kv_after_generate_bytes", {}).get(name, 0))))
        devices[name] = DeviceCheck(name, pred["total"], peak, pred["capacity"], tuple(comps), detail)
    return Verification(label=plan.get("label", ""), devices=devices, seconds=seconds,
                        generated_tokens=raw.get("generated_tokens", 0), raw=raw, timings=timings(plan, raw))


def timings(plan: dict[str, Any], raw: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Predicted against measured: load seconds, prefill seconds (time to first token), decode tokens/s.

    Measured from the child's phase times: load = load end - imports end; prefill = prefill end -
    load end (one forward of the whole prompt); decode = the generate phase less one prefill (generate
    runs the prompt again), over the tokens it generated after the first, per sequence.
    """
    pred = plan.get("predicted_speed") or {}
    t = {name: p.get("t") for name, p in raw.get("phases", {}).items()}
    load = prefill = rate = None
    if isinstance(t.get("imports"), (int, float)) and isinstance(t.get("load"), (int, float)):
        load = t["load"] - t["imports"]
    if isinstance(t.get("load"), (int, float)) and isinstance(t.get("prefill"), (int, float)):
        prefill = t["prefill"] - t["load"]
    new = int(raw.get("generated_tokens", 0))
    if prefill is not None and isinstance(t.get("generate"), (int, float)) and new > 1:
        phase = t["generate"] - t["prefill"]
        decode = phase - prefill
        # a tiny model's decode can take less than the noise in one prefill's time: then the whole
        # generate phase over its tokens (a lower bound of the rate) rather than nothing
        rate = (new - 1) / decode if decode > 0 else (new / phase if phase > 0 else None)
    return {"load_s": (pred.get("load_s"), load), "first_token_s": (pred.get("first_token_s"), prefill),
            "tokens_per_s": (pred.get("tokens_per_s"), rate)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _gpu_peak(device: str, raw: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """torch's peak reserved plus NVML's bytes beyond torch (context, library workspaces)."""
    before = raw.get("nvml_before", {}).get(device, 0)
    best = 0
    detail: dict[str, int] = {}
    for name, p in raw["phases"].items():
        g = p.get("gpus", {}).get(device)
        if not g:
            continue
        beyond = max(0, g.get("nvml_used", 0) - before - g["torch_reserved"]) if "nvml_used" in g else 0
        total = g["torch_peak_reserved"] + beyond
        detail[f"{name}_torch_peak_reserved"] = g["torch_peak_reserved"]
        detail[f"{name}_beyond_torch"] = beyond
        best = max(best, total)
    return best, detail


def signed_bytes(n: int) -> str:
    """A difference in bytes for people, with its sign: ``+18.7 MiB``, ``-1.2 GiB``, ``0 B``."""
    return ("+" if n > 0 else "") + fmt_bytes(n)


def work_done(v: Verification) -> str:
    """What the run did, in words: training steps (with the last loss), images, or tokens."""
    losses = v.raw.get("losses")
    if isinstance(losses, list) and losses:
        last = losses[-1]
        tail = f", last loss {last:.3g}" if isinstance(last, (int, float)) else ""
        return f"{len(losses)} training step{'s' if len(losses) != 1 else ''}{tail}"
    images = v.raw.get("images")
    if isinstance(images, int) and images > 0:
        return f"{images} image{'s' if images != 1 else ''} generated"
    return f"{v.generated_tokens} tokens generated"


def render_verification(v: Verification) -> str:
    lines = [f"Verified: {v.label} ({work_done(v)}, {v.seconds:.1f} s)",
             f"  {'device':<8} {'component':<10} {'predicted':>11} {'measured':>11} {'error':>11} {'error %':>8}"]
    for name, d in v.devices.items():
        for c in d.components:
            lines.append(f"  {name:<8} {c.name:<10} {fmt_bytes(c.predicted):>11} {fmt_bytes(c.measured):>11} "
                         f"{signed_bytes(c.error_bytes):>11} {c.error_pct:>+7.1f}%")
        verdict = "OVER CAPACITY" if d.over_capacity else "within capacity"
        lines.append(f"  {name:<8} {'capacity':<10} {fmt_bytes(d.capacity):>11}   -> measured peak {verdict}")
    names = {"load_s": ("load", "s"), "first_token_s": ("prefill", "s"), "tokens_per_s": ("decode", "tok/s")}
    for key, (pred, got) in v.timings.items():
        if got is None:
            continue
        what, unit = names.get(key, (key, ""))
        versus = f"predicted {pred:.2f} {unit}, {100 * (pred - got) / got:+.0f}%" if pred is not None and got else "not predicted"
        lines.append(f"  {'speed':<8} {what:<10} measured {got:.2f} {unit} ({versus})")
    lines.append("OK: every device stayed within what the plan assumed." if v.ok else "FAIL: a device went over the capacity the plan assumed.")
    return "\n".join(lines)
