"""Calibrate fitcheck's GPU constants on a real GPU: plan, load, generate, measure, fit.

Run on a machine with an NVIDIA GPU (and torch, transformers, accelerate; bitsandbytes for the
int8/nf4 rows, nvidia-ml-py for NVML -- both optional), from the repository root::

    PYTHONPATH=. python benchmarks/gpu_calibration.py --out results-dir [--budget-s 480]

It builds random-weight models from real configs on the GPU machine itself (``save_pretrained``;
nothing is downloaded): Llama-3.2-1B and Llama-3.1-8B from ``../shared/catalog-configs`` (or the
copies in ``tests/data``), and a small MoE. For each it plans with fitcheck for this GPU,
forcing each scheme in turn (bf16, int8, nf4), writes the plan file, runs ``fitcheck verify``'s
child (the emitted script's own ``load_model()`` and a generate at the planned context), and
records predicted against measured memory per device. From the measurements it derives:

- the CUDA context and library workspaces: NVML's used bytes beyond torch's reserved bytes;
- the caching allocator's slack: peak reserved over peak allocated;
- bnb's quantize-on-load transient: the load phase's peak reserved beyond the resident weights.

It writes ``RESULTS.md`` (card, driver, date, table) and ``constants.json`` (the fitted values, to
be copied into planner/memory/overhead.py with their provenance). It stops starting new runs when
``--budget-s`` is spent, so the whole script fits a lent machine's time slot.

``--dry-run`` exercises everything on the CPU with scaled-down configs (no GPU needed): it is how
the script is tested in CI-less sessions without a GPU.

The other runtimes' GPU cases run after the transformers ones, each as a child process with its
share of the budget (``--runtimes``, default all that are installed), writing under ``--out/NAME``:

- diffusers: ``benchmarks/diffusers/gpu_calibration.py`` (offload modes, VAE, quantized components);
- training: ``benchmarks/training/measure.py --gpu`` (full / LoRA / QLoRA steps; not in a dry run);
- vllm: ``benchmarks/vllm_calibration.py`` (``vllm serve --load-format dummy``'s logged KV size;
  only where vllm is installed, never in a dry run).

GGUF plans have no GPU case yet (docs/gguf.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG_DIRS = (ROOT.parent / "shared" / "catalog-configs", ROOT / "tests" / "data")
# A small MoE in the Qwen2-MoE layout (fused experts in transformers 5), about 2.7B parameters:
# big enough that experts dominate, small enough to build and save in seconds.
MOE_CONFIG = {
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
    "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 16, "num_experts_per_tok": 4,
    "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32000,
    "max_position_embeddings": 8192, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
}
MODELS = (
    ("llama-3.2-1b", "meta-llama__Llama-3.2-1B.config.json", ("none", "int8", "nf4")),
    ("llama-3.1-8b", "meta-llama__Llama-3.1-8B.config.json", ("none", "nf4")),
    ("qwen2-moe-2.7b", MOE_CONFIG, ("none",)),
)
# Scaled-down dimensions for --dry-run on a CPU (the same code paths, seconds per model).
DRY = {"hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128, "shared_expert_intermediate_size": 512,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "head_dim": 64}


def load_config(spec: str | dict, dry: bool) -> dict:
    if isinstance(spec, dict):
        cfg = dict(spec)
    else:
        path = next((d / spec for d in CONFIG_DIRS if (d / spec).exists()), None)
        if path is None:
            raise SystemExit(f"config {spec} not found in {', '.join(map(str, CONFIG_DIRS))}")
        cfg = json.loads(path.read_text())
    if dry:
        cfg.update({k: v for k, v in DRY.items() if k in cfg or k == "head_dim"})
        cfg.pop("rope_scaling", None)
    return cfg


def build(cfg: dict, folder: Path, device: str) -> None:
    """Random-init the model on ``device`` and save it as safetensors (bf16)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="5GB")
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def this_gpu_hardware():
    """This machine as fitcheck sees it; without NVML, the GPU from torch's view (same numbers NVML gives)."""
    import torch

    from planner.hardware.probe import probe
    from planner.core.records import Gpu

    hw = probe(offload_dir=tempfile.gettempdir())
    if hw.gpus or not torch.cuda.is_available():
        return hw
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        props = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(index=i, name=props.name, backend="cuda", total_bytes=total, free_bytes=free,
                        compute_capability=(props.major, props.minor), bf16=props.major >= 8))
    return replace(hw, gpus=tuple(gpus), source="probe+torch")


def driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return "unknown (no NVML)"


def run_one(name: str, folder: Path, quant: str, hw, context: int, out_dir: Path) -> dict:
    from planner import api
    from planner.runtimes.transformers import emit
    from planner.core.records import Constraints
    from planner.report.verify import verify_plan_text

    c = Constraints(context=context, batch=1, new_tokens=16, quantization=quant, dtype="bfloat16", offload=False)
    r = api.plan(str(folder), hardware=hw, constraints=c)
    row: dict = {"model": name, "scheme": quant, "context": context}
    if r.solution is None:
        row["error"] = "no plan fits: " + "; ".join(p.reasons[0] for p in r.rejected[:2] if p.reasons)
        return row
    plan = r.solution.chosen
    text = emit.plan_file(r, plan, offload_dir=str(out_dir / "offload"))
    (out_dir / f"plan-{name}-{quant}.json").write_text(text)
    t0 = time.monotonic()
    try:
        v = verify_plan_text(text, timeout=600)
    except Exception as e:  # a failed load is a result too
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    row.update({"label": plan.label, "seconds": round(time.monotonic() - t0, 1), "verify": v.to_dict(), "raw": v.raw})
    return row


def fit(rows: list[dict]) -> dict:
    """Derive the GPU constants from the raw measurements of every run."""
    context, slack, quant = [], [], []
    for row in rows:
        raw = row.get("raw")
        if not raw:
            continue
        before = raw.get("nvml_before", {})
        weights = raw.get("weights_loaded_bytes", {})
        for phase_name, phase in raw["phases"].items():
            for dev, g in phase.get("gpus", {}).items():
                if "nvml_used" in g:
                    context.append(g["nvml_used"] - before.get(dev, 0) - g["torch_reserved"])
                if g.get("torch_peak_allocated"):
                    slack.append(g["torch_peak_reserved"] / g["torch_peak_allocated"] - 1)
                if phase_name == "load" and row.get("scheme") in ("int8", "nf4"):
                    quant.append(g["torch_peak_allocated"] - weights.get(dev, 0))
    return {
        "cuda_context_bytes": {"max": max(context, default=None), "all": context},
        "allocator_slack_fraction": {"max": max(slack, default=None), "all": [round(x, 4) for x in slack]},
        "bnb_quantize_transient_bytes": {"max": max(quant, default=None), "all": quant},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="CPU, scaled-down configs")
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting runs after this many seconds")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--only", help="run only this model, with its first scheme (for a quick check)")
    ap.add_argument("--runtimes", default="transformers,diffusers,training,vllm",
                    help="comma-separated runtimes whose GPU cases run (in this order)")
    args = ap.parse_args()
    wanted = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    # the transformers cases take this share of the budget; the other runtimes split the rest
    share = args.budget_s * (0.5 if len(wanted) > 1 else 1.0)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to exercise the script on the CPU")
    try:
        import bitsandbytes  # noqa: F401
        have_bnb = True
    except ImportError:
        have_bnb = False
    hw = this_gpu_hardware()
    context = 256 if args.dry_run else args.context
    work = Path(tempfile.mkdtemp(prefix="fitcheck-cal-"))
    rows: list[dict] = []
    try:
        for name, spec, schemes in MODELS if "transformers" in wanted else ():
            if args.only:
                if name != args.only:
                    continue
                schemes = schemes[:1]
            if time.monotonic() - started > share:
                rows.append({"model": name, "skipped": "time budget spent"})
                continue
            folder = work / name
            t0 = time.monotonic()
            build(load_config(spec, args.dry_run), folder, device)
            built = round(time.monotonic() - t0, 1)
            for quant in schemes:
                if quant in ("int8", "nf4") and not have_bnb:
                    rows.append({"model": name, "scheme": quant, "skipped": "bitsandbytes not installed"})
                    continue
                if time.monotonic() - started > share:
                    rows.append({"model": name, "scheme": quant, "skipped": "time budget spent"})
                    continue
                row = run_one(name, folder, quant, hw, context, args.out)
                row["build_seconds"] = built
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("verify", "raw")}), flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    others = [r for r in wanted if r != "transformers"]
    runtimes = {name: run_runtime(name, args, started, n_left=len(others) - i) for i, name in enumerate(others)}
    meta = {
        "runtimes": runtimes,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": [g.name for g in hw.gpus] or ["cpu (dry run)"],
        "driver": driver_version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dry_run": args.dry_run,
        "seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "raw.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "constants.json").write_text(json.dumps({"meta": meta, **fit(rows)}, indent=1))
    (args.out / "RESULTS.md").write_text(report(meta, rows))
    print(f"wrote {args.out} in {meta['seconds']} s")


def run_runtime(name: str, args: argparse.Namespace, started: float, *, n_left: int) -> dict:
    """Run another runtime's prepared GPU cases as a child process with its share of what is left
    of the budget; what it did, for raw.json."""
    import importlib.util
    import subprocess

    left = args.budget_s - (time.monotonic() - started)
    budget = left / max(1, n_left)
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    if name == "diffusers":
        argv = [sys.executable, str(ROOT / "benchmarks" / "diffusers" / "gpu_calibration.py"), "--out", str(out),
                "--budget-s", str(int(budget))] + (["--dry-run"] if args.dry_run else [])
    elif name == "training":
        if args.dry_run:
            return {"skipped": "no dry run: its CPU scenarios are benchmarks/training/measure.py"}
        argv = [sys.executable, str(ROOT / "benchmarks" / "training" / "measure.py"), "--gpu", "--out", str(out / "results.csv")]
    elif name == "vllm":
        if args.dry_run or importlib.util.find_spec("vllm") is None:
            return {"skipped": "vllm is not installed" if not args.dry_run else "no dry run"}
        argv = [sys.executable, str(ROOT / "benchmarks" / "vllm_calibration.py"), "--out", str(out / "vllm-calibration.json")]
    else:
        return {"skipped": f"no GPU cases for {name}"}
    if budget < 30:
        return {"skipped": "time budget spent"}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"argv": argv[1:], "error": f"stopped after its {budget:.0f} s share of the budget"}
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    return {"argv": argv[1:], "returncode": proc.returncode, "seconds": round(time.monotonic() - t0, 1)}


def report(meta: dict, rows: list[dict]) -> str:
    lines = ["# GPU calibration", "", f"{meta['date']} on {', '.join(meta['device'])}, driver {meta['driver']}, torch {meta['torch']}"
             + (" (DRY RUN on CPU: numbers are not GPU measurements)" if meta["dry_run"] else ""), "",
             "| model | scheme | device | predicted peak | measured peak | error | weights pred/meas | KV pred/meas |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        if "verify" not in row:
            lines.append(f"| {row['model']} | {row.get('scheme', '')} | - | - | - | {row.get('error') or row.get('skipped')} | | |")
            continue
        for dev, d in row["verify"]["devices"].items():
            comps = d["components"]
            w, k = comps.get("weights", {}), comps.get("kv_prefill", {})
            lines.append(f"| {row['model']} | {row['scheme']} | {dev} | {d['predicted_peak'] / 2**20:.0f} MiB | {d['measured_peak'] / 2**20:.0f} MiB "
                         f"| {d['peak_error_pct']:+.1f}% | {w.get('predicted', 0) / 2**20:.0f}/{w.get('measured', 0) / 2**20:.0f} MiB "
                         f"| {k.get('predicted', 0) / 2**20:.0f}/{k.get('measured', 0) / 2**20:.0f} MiB |")
    for name, ran in meta.get("runtimes", {}).items():
        lines.append(f"\n{name}: " + (ran.get("skipped") or ran.get("error") or f"exit {ran.get('returncode')} in {ran.get('seconds')} s; "
                                       f"its results are in {name}/"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
