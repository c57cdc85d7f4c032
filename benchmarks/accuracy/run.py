"""CPU accuracy benchmark: fitcheck's predicted peak memory against the measured one.

    python benchmarks/accuracy/run.py            # every scenario (~45 min on 2 vCPUs)
    python benchmarks/accuracy/run.py --quick    # one scenario per scheme and placement (~10 min)
    python benchmarks/accuracy/run.py --only llama-bf16-c128 --rerun

Run it with the interpreter of fitcheck's environment (torch, transformers, accelerate and
bitsandbytes installed). For each scenario (scenarios.py) it:

1. builds the scenario's model once (models.py; bf16 safetensors with random weights, kept in
   ``.work/models``);
2. plans it through the library (``planner.api.plan``) for this machine, or for less RAM where
   the scenario forces disk offload or sets a max-context boundary, with the scheme forced;
3. writes the plan file (``emit.plan_file``) and runs ``fitcheck verify``'s child on it: the
   emitted load, a prefill, then ``generate``, measuring peak RSS per phase;
4. compares predicted and measured per device (``planner.verify.compare``).

Measurements are cached in ``.work/measure`` under a hash of what the child runs (the load
settings and the generate block, not the predictions), so re-running after a change to the
memory model re-plans every scenario and recompares at no cost; only a changed load (another
placement, say) runs again. ``--rerun`` ignores the cache.

Writes ``results.csv`` (one row per scenario and device, with components) and ``RESULTS.md``
(the table, the error distribution, the worst errors, the machine).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from scenarios import SCENARIOS, Scenario  # noqa: E402

from planner import api, emit  # noqa: E402
from planner.context import max_context  # noqa: E402
from planner.probe import probe  # noqa: E402
from planner.records import Hardware, Plan  # noqa: E402
from planner.solve import Constraints  # noqa: E402
from planner.units import MiB  # noqa: E402
from planner.verify import Verification, compare, verify_plan_text  # noqa: E402

WORK = Path(os.environ.get("FITCHECK_BENCH_DIR", HERE / ".work"))
# The target (issue #2): within +-5 % or 64 MiB of the measured peak, whichever is larger.
TOL_FRACTION = 0.05
TOL_FLOOR = 64 * MiB
# Max-context scenarios: the context the RAM is chosen for, per (model, dtype, quant, batch).
MAXCTX = [("llama-gqa", "bfloat16", "none", 1, 4096), ("mistral-swa", "bfloat16", "none", 1, 4096),
          ("gemma3-tied", "bfloat16", "nf4", 4, 1024)]


def tolerance(measured: int) -> int:
    return max(int(TOL_FRACTION * measured), TOL_FLOOR)


def machine_hw() -> Hardware:
    """This machine as the probe sees it, with RAM fixed at the probe's first reading.

    ``available`` drifts with whatever else runs; plans must not change between runs of the
    benchmark, so the figure is read once per run (it only matters for max-context scenarios,
    which set their own RAM anyway).
    """
    return probe(offload_dir=str(WORK))


def with_ram(hw: Hardware, ram: int | None) -> Hardware:
    return hw if ram is None else dataclasses.replace(hw, ram_free=ram, source=hw.source + "+override")


def constraints(s: Scenario) -> Constraints:
    return Constraints(context=s.context, batch=s.batch, dtype=s.dtype, quantization=s.quant, offload=s.offload)


def plan_scenario(s: Scenario, folder: Path, hw: Hardware) -> tuple[api.Report, Plan]:
    """The plan fitcheck would emit for ``s`` (for "over", the rejected plan of the same scheme)."""
    report = api.plan(str(folder), hardware=with_ram(hw, s.ram), constraints=constraints(s))
    if report.solution is not None and s.kind != "over":
        p = report.solution.chosen
        want = ("cpu+disk", "cpu") if s.offload else ("cpu",)
        if p.placement not in want:
            raise SystemExit(f"{s.id}: the solver chose {p.label}, expected {want}")
        return report, p
    if s.kind == "over":
        rej = [p for p in report.rejected if p.scheme.dtype == s.dtype and p.scheme.quantization == s.quant
               and p.placement == "cpu" and p.memory]
        if report.solution is None and rej:
            return report, rej[0]
        raise SystemExit(f"{s.id}: expected fitcheck to say it does not fit")
    why = "; ".join(r for p in report.rejected for r in p.reasons)[:400]
    raise SystemExit(f"{s.id}: no plan fits ({why})")


def measure_key(plan_text: str) -> str:
    """What the child runs: the load settings (less the advisory max_memory) and the generate block."""
    doc = json.loads(plan_text)
    load = {k: v for k, v in doc["load"].items() if k != "max_memory"}
    raw = json.dumps({"load": load, "generate": doc["generate"]}, sort_keys=True).encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def measure(s: Scenario, plan_text: str, *, rerun: bool) -> tuple[dict[str, Any], float, bool]:
    """The child's raw measurements for this plan file (cached), its seconds, and whether it ran now."""
    cache = WORK / "measure" / f"{s.id}-{measure_key(plan_text)}.json"
    if cache.exists() and not rerun:
        doc = json.loads(cache.read_text())
        return doc["raw"], doc["seconds"], False
    offload = json.loads(plan_text)["load"].get("offload_folder")
    if offload:
        shutil.rmtree(offload, ignore_errors=True)
    v = verify_plan_text(plan_text, timeout=1800)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"scenario": s.id, "seconds": v.seconds, "raw": v.raw,
                                 "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
    return v.raw, v.seconds, True


def maxctx_scenarios(hw: Hardware) -> list[Scenario]:
    """For each MAXCTX entry: the RAM that puts the boundary near its target context, a run at
    the largest context fitcheck says fits there, and a run where fitcheck says it does not fit
    even with no margin, by more than the benchmark's tolerance."""
    out = []
    for name, dtype, quant, batch, target in MAXCTX:
        folder = models.build(models.MODELS[name], WORK / "models")
        probe_s = Scenario("probe", name, dtype, quant, target, batch)
        report = api.plan(str(folder), hardware=with_ram(hw, 64 << 30), constraints=constraints(probe_s))
        required = report.solution.chosen.memory["cpu"].required
        # free = required + the default margin (128 MiB floor at these sizes) + 16 MiB of slack
        ram = required + report.constraints.margin_floor + 16 * MiB
        at = api.plan(str(folder), hardware=with_ram(hw, ram), constraints=constraints(probe_s))
        mc = max_context(at)
        tag = f"{name.split('-')[0]}-{'bf16' if quant == 'none' else quant}-b{batch}"
        out.append(Scenario(f"{tag}-maxctx", name, dtype, quant, mc.max_context, batch, ram=ram, kind="maxctx"))
        over = mc.max_context
        step = max(64, mc.max_context // 16)
        while True:  # the first context whose predicted peak exceeds the whole RAM by the tolerance
            over += step
            r = api.plan(str(folder), hardware=with_ram(hw, 64 << 30),
                         constraints=constraints(dataclasses.replace(probe_s, context=over)))
            m = r.solution.chosen.memory["cpu"]
            if m.required - tolerance(m.required) > ram:
                break
        out.append(Scenario(f"{tag}-over", name, dtype, quant, over, batch, ram=ram, kind="over"))
    return out


def run_one(s: Scenario, hw: Hardware, *, rerun: bool) -> list[dict[str, Any]]:
    folder = models.build(models.MODELS[s.model], WORK / "models")
    report, p = plan_scenario(s, folder, hw)
    text = emit.plan_file(report, p, offload_dir=str(WORK / "offload" / s.id))
    raw, seconds, ran = measure(s, text, rerun=rerun)
    v = compare(json.loads(text), raw, seconds)
    return rows(s, p, v, ran)


def rows(s: Scenario, p: Plan, v: Verification, ran: bool) -> list[dict[str, Any]]:
    out = []
    for dev, d in v.devices.items():
        m = p.memory[dev]
        comps = {c.name: c for c in d.components}
        err = d.predicted_peak - d.measured_peak
        tol = tolerance(d.measured_peak)
        row = {
            "scenario": s.id, "kind": s.kind, "model": s.model, "arch": models.MODELS[s.model].arch,
            "scheme": p.scheme.label, "placement": p.placement, "context": s.context, "batch": s.batch,
            "device": dev, "predicted_mib": d.predicted_peak / MiB, "measured_mib": d.measured_peak / MiB,
            "error_mib": err / MiB, "error_pct": 100.0 * err / d.measured_peak if d.measured_peak else 0.0,
            "tolerance_mib": tol / MiB, "within": (abs(err) <= tol) if dev != "disk" else (err == 0 or abs(err) <= tol),
            "capacity_mib": d.capacity / MiB, "free_mib": m.free / MiB, "fits_predicted": p.fits,
            "over_capacity": d.over_capacity,
            "pred_weights_mib": m.weights / MiB, "pred_kv_mib": m.kv_cache / MiB, "pred_act_mib": m.activations / MiB,
            "pred_overhead_mib": m.overhead / MiB, "pred_load_mib": m.load / MiB, "pred_reclaimable_mib": m.reclaimable / MiB,
            "pred_required_mib": m.required / MiB,
            "meas_weights_mib": comps["weights"].measured / MiB if "weights" in comps else 0.0,
            "meas_kv_prefill_mib": comps["kv_prefill"].measured / MiB if "kv_prefill" in comps else 0.0,
            "pred_kv_prefill_mib": comps["kv_prefill"].predicted / MiB if "kv_prefill" in comps else 0.0,
            "seconds": round(v.seconds, 1), "measured_now": ran,
        }
        for k in ("rss_after_imports", "rss_after_load", "load_peak", "prefill_peak", "generate_peak",
                  "peak_phase_anon", "peak_phase_file"):
            row[f"meas_{k}_mib"] = d.detail.get(k, 0) / MiB
        out.append(row)
    return out


def machine_info() -> dict[str, str]:
    import importlib.metadata as md

    info = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "kernel": platform.release(),
            "python": platform.python_version(), "cpus": str(os.cpu_count())}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu"] = model
        info["flags of note"] = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags)
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["ram"] = f"{int(mem.split()[1]) / 1024 ** 2:.1f} GiB"
    except (OSError, StopIteration):
        pass
    for pkg in ("torch", "transformers", "accelerate", "bitsandbytes", "safetensors"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "-"
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the scenarios marked quick, and no max-context runs")
    ap.add_argument("--only", nargs="*", help="scenario ids (or prefixes) to run")
    ap.add_argument("--rerun", action="store_true", help="measure again even when a cached measurement exists")
    ap.add_argument("--no-maxctx", action="store_true", help="skip the max-context scenarios")
    ap.add_argument("--no-write", action="store_true", help="print the table but do not write RESULTS.md/results.csv")
    args = ap.parse_args(argv)

    hw = machine_hw()
    chosen = [s for s in SCENARIOS if s.quick or not args.quick]
    if not args.quick and not args.no_maxctx:
        chosen += maxctx_scenarios(hw)
    if args.only:
        chosen = [s for s in chosen if any(s.id == o or s.id.startswith(o) for o in args.only)]
    all_rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for i, s in enumerate(chosen, 1):
        t0 = time.monotonic()
        try:
            got = run_one(s, hw, rerun=args.rerun)
        except Exception as e:  # one failed scenario must not lose the others' results
            print(f"[{i}/{len(chosen)}] {s.id}: FAILED {type(e).__name__}: {e}", flush=True)
            all_rows.append({"scenario": s.id, "kind": s.kind, "model": s.model, "device": "-", "failed": f"{type(e).__name__}: {e}"[:300]})
            continue
        all_rows += got
        for r in got:
            mark = "ok " if r["within"] else "OUT"
            print(f"[{i}/{len(chosen)}] {mark} {s.id:<28} {r['device']:<5} pred {r['predicted_mib']:8.1f}  meas {r['measured_mib']:8.1f}  "
                  f"err {r['error_mib']:+7.1f} MiB ({r['error_pct']:+5.1f} %)  {'ran' if r['measured_now'] else 'cached'} "
                  f"{time.monotonic() - t0:5.1f} s", flush=True)
    print(f"{len(chosen)} scenarios in {time.monotonic() - started:.0f} s")
    if not args.no_write:
        import report

        report.write(all_rows, machine_info(), HERE, quick=args.quick)
    return 0 if all(r.get("within", False) for r in all_rows if r.get("device") not in ("disk",)) else 1


if __name__ == "__main__":
    sys.exit(main())
