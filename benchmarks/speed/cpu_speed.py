"""CPU decode speed and load time per scheme, measured, against fitcheck's prediction (issue 13 item 3).

Builds a Llama-3.2-1B-shaped model with random weights (the published config, fewer layers so that
the slow schemes finish), saves it as bf16 safetensors, and in one child process per run loads it
the way fitcheck's emitted script does (``from_pretrained(dtype=..., quantization_config=...,
device_map="cpu")``), then times:

- ``load_s``: ``from_pretrained`` (reading, casting, bnb quantizing);
- ``first_token_s``: after a warm-up ``generate``, one of 1 new token after a ``--prompt``-token prompt (prefill + 1);
- ``decode_tok_s``: the ``--new`` further tokens of a second ``generate``, from its time less the first's.

Every scheme runs at two layer counts (``--layers``): the difference between them is the cost of
the decoder layers alone, which is what bnb quantizes; the rest (embedding, tied head, norms) stays
in the load dtype. Rounds interleave the schemes, so that the ratios between schemes are measured
side by side under the same load (this machine is shared: absolute figures are noisy, ratios less).

    python benchmarks/speed/cpu_speed.py measure   # writes results.json (minutes)
    python benchmarks/speed/cpu_speed.py fit       # the constants of planner/runtimes/transformers/speed.py
    python benchmarks/speed/cpu_speed.py report    # predictions of the current planner -> table.md

Needs torch, transformers, accelerate and bitsandbytes (the test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = {  # meta-llama/Llama-3.2-1B's published config.json (shared/catalog-configs), layers set per run
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
                     "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 128256,
}
SCHEMES = [("bfloat16", "none"), ("float32", "none"), ("bfloat16", "nf4"), ("bfloat16", "int8")]


def build(folder: Path, layers: int) -> None:
    """Save a random Llama-3.2-1B-shaped model with ``layers`` decoder layers (bf16 safetensors)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**{**CONFIG, "num_hidden_layers": layers})
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "config.json").write_text(json.dumps({**CONFIG, "num_hidden_layers": layers}, indent=2))


def child(folder: str, dtype: str, quant: str, prompt: int, new: int) -> dict:
    """One measured run (in its own process): load, prefill + 1 token, then ``new`` more tokens."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kw: dict = {"dtype": getattr(torch, dtype), "device_map": "cpu"}
    if quant == "nf4":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype))
    elif quant == "int8":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    t0, c0 = time.perf_counter(), time.process_time()
    model = AutoModelForCausalLM.from_pretrained(folder, **kw)
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    ids = torch.randint(0, CONFIG["vocab_size"], (1, prompt))
    gen = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, **gen)  # warm-up: first calls allocate and dispatch
        t0, c0 = time.perf_counter(), time.process_time()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **gen)
        first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        model.generate(ids, max_new_tokens=1 + new, min_new_tokens=1 + new, **gen)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    decode = max(total - first, 1e-9)
    decode_cpu = max(total_cpu - first_cpu, 1e-9)
    # CPU seconds (all threads) are the work, which the other processes of a shared machine do
    # not inflate the way they inflate wall time: work / threads is the time on an idle machine
    return {"load_s": load_s, "load_cpu_s": load_cpu, "first_token_s": first, "first_token_cpu_s": first_cpu,
            "decode_s": decode, "decode_tok_s": new / decode, "decode_cpu_s_per_token": decode_cpu / new,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "threads": torch.get_num_threads()}


def measure(args: argparse.Namespace) -> None:
    runs = []
    with tempfile.TemporaryDirectory(prefix="cpu-speed-") as tmp:
        folders = {}
        for n in args.layers:
            folders[n] = Path(tmp) / f"llama1b-{n}l"
            build(folders[n], n)
        for rnd in range(args.rounds):
            for dtype, quant in SCHEMES:
                if f"{dtype}/{quant}" not in args.schemes:
                    continue
                for n in args.layers:
                    load = os.getloadavg()[0]
                    out = subprocess.run([sys.executable, __file__, "child", str(folders[n]), dtype, quant, str(args.prompt), str(args.new)],
                                         capture_output=True, text=True, timeout=args.timeout)
                    row = {"round": rnd, "layers": n, "dtype": dtype, "quantization": quant, "loadavg_before": load,
                           "stderr_tail": out.stderr[-300:] if out.returncode else ""}
                    if out.returncode == 0:
                        row.update(json.loads(out.stdout.strip().splitlines()[-1]))
                    else:
                        row["error"] = f"exit {out.returncode}"
                    runs.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "stderr_tail"}), flush=True)
                    _save(args.out, args, runs)
    _save(args.out, args, runs)


def _save(path: Path, args: argparse.Namespace, runs: list[dict]) -> None:
    import torch
    import transformers

    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - recorded, not needed
        bnb = None
    try:
        import kernels  # noqa: F401

        has_kernels = True
    except ImportError:
        has_kernels = False
    doc = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name(),
                       "torch": torch.__version__, "transformers": transformers.__version__, "bitsandbytes": bnb,
                       "kernels_installed": has_kernels},
           "setup": {"model": "meta-llama/Llama-3.2-1B shape, random bf16 weights", "layers": args.layers, "prompt": args.prompt,
                     "new_tokens": args.new, "rounds": args.rounds},
           "runs": runs}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(args: argparse.Namespace) -> None:
    """Predict every measured configuration with the planner's CPU model as it is now; write table.md.

    The model predicts CPU-seconds of work per token and per load; the measured CPU time is the
    comparison that a shared machine does not distort. Wall time is shown too: on an idle
    machine it would be the CPU time divided by the threads.
    """
    sys.path.insert(0, str(ROOT))
    from planner.runtimes.transformers.speed import (
        cpu_decode_seconds,
        cpu_load_seconds,
        cpu_threads,
    )

    doc = json.loads(args.out.read_text())
    cpus = doc["machine"]["cpu_count"]
    threads = cpu_threads(cpus)
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        if "error" not in r:
            groups.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r)

    def median(rs: list[dict], key: str) -> float:
        values = sorted(r[key] for r in rs)
        n = len(values)
        return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2

    rows = []
    for (dtype, quant, n), rs in sorted(groups.items(), key=lambda kv: (SCHEMES.index(kv[0][:2]), kv[0][2])):
        counts = param_counts(n)
        # compute only (no bandwidth floor): the work per token, in CPU-seconds
        work = cpu_decode_seconds(params=counts, quantization=quant, dtype=dtype, cpu_count=1, ram_bandwidth=10**15)
        idle = cpu_decode_seconds(params=counts, quantization=quant, dtype=dtype, cpu_count=cpus, ram_bandwidth=None)
        load = cpu_load_seconds(params=counts, quantization=quant, dtype=dtype, stored_dtype="bfloat16", cpu_count=cpus)
        rows.append({"dtype": dtype, "quantization": quant, "layers": n, "runs": len(rs),
                     "measured_cpu_s_per_token": median(rs, "decode_cpu_s_per_token"), "predicted_cpu_s_per_token": work,
                     "measured_wall_tok_s": median(rs, "decode_tok_s"), "predicted_idle_tok_s": 1 / idle,
                     "measured_idle_tok_s": threads / median(rs, "decode_cpu_s_per_token"),
                     "measured_load_cpu_s": median(rs, "load_cpu_s"), "measured_load_wall_s": median(rs, "load_s"),
                     "predicted_load_s": load, "first_token_cpu_s": median(rs, "first_token_cpu_s"),
                     "loadavg": median(rs, "loadavg_before"), "peak_rss_mib": max(r["peak_rss_bytes"] for r in rs) / 2**20})
    doc["predictions"] = rows
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["| scheme | layers | runs | CPU s/token measured | predicted | error | idle tok/s from CPU time | predicted | "
             "wall tok/s (shared) | load CPU s measured | predicted | error | load wall s (shared) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = (r["predicted_cpu_s_per_token"] - r["measured_cpu_s_per_token"]) / r["measured_cpu_s_per_token"] * 100
        lerr = (r["predicted_load_s"] - r["measured_load_cpu_s"]) / r["measured_load_cpu_s"] * 100
        label = r["dtype"] if r["quantization"] == "none" else f"{r['quantization']} + {r['dtype']}"
        lines.append(f"| {label} | {r['layers']} | {r['runs']} | {r['measured_cpu_s_per_token']:.3f} | {r['predicted_cpu_s_per_token']:.3f} | "
                     f"{err:+.0f} % | {r['measured_idle_tok_s']:.2f} | {r['predicted_idle_tok_s']:.2f} | {r['measured_wall_tok_s']:.2f} | "
                     f"{r['measured_load_cpu_s']:.1f} | {r['predicted_load_s']:.1f} | {lerr:+.0f} % | {r['measured_load_wall_s']:.0f} | "
                     f"{r['loadavg']:.0f} |")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def param_counts(layers: int) -> dict[str, int]:
    """Parameters of the benchmark model as the planner's CPU model counts them
    (planner/runtimes/transformers/plans.py ``_cpu_params``)."""
    h, i, kv = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_key_value_heads"] * CONFIG["head_dim"]
    linear = 2 * h * h + 2 * h * kv + 3 * h * i
    return {"layer": layers * (linear + 2 * h) + h, "linear": layers * linear, "head": CONFIG["vocab_size"] * h,
            "embed": CONFIG["vocab_size"] * h, "cast": layers * (linear + 2 * h) + h + CONFIG["vocab_size"] * h}


def fit(args: argparse.Namespace) -> None:
    """The constants of planner/runtimes/transformers/speed.py from results.json: per scheme the
    slope of CPU-s/token (and load CPU-s) over the layer counts, and the rest per dtype."""
    doc = json.loads(args.out.read_text())
    by: dict[tuple, list[float]] = {}
    load: dict[tuple, list[float]] = {}
    for r in doc["runs"]:
        if "error" not in r:
            by.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r["decode_cpu_s_per_token"])
            load.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r["load_cpu_s"])
    med = {k: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2 for k, v in by.items()}
    lmed = {k: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2 for k, v in load.items()}
    lo, hi = min(args.layers), max(args.layers)
    for dtype, quant in SCHEMES:
        a, b = med.get((dtype, quant, lo)), med.get((dtype, quant, hi))
        if a is None or b is None:
            continue
        per_layer = (b - a) / (hi - lo)
        layer_params = param_counts(1)["layer"] - CONFIG["hidden_size"]
        head = a - lo * per_layer
        la, lb = lmed[(dtype, quant, lo)], lmed[(dtype, quant, hi)]
        print(f"{dtype}/{quant}: layer {per_layer / layer_params:.3e} CPU-s/param; rest {head:.3f} s = "
              f"{head / CONFIG['vocab_size'] / CONFIG['hidden_size']:.3e} per head param; load {la:.2f} -> {lb:.2f} CPU-s "
              f"({(lb - la) / (hi - lo) / param_counts(1)['linear']:.2e} per linear param)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        folder, dtype, quant, prompt, new = sys.argv[2:7]
        print(json.dumps(child(folder, dtype, quant, int(prompt), int(new))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["measure", "report", "fit"])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--schemes", nargs="+", default=[f"{d}/{q}" for d, q in SCHEMES])
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    {"measure": measure, "report": report, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
