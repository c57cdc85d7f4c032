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
    """Predict every measured configuration with the planner's CPU model as it is now; write the table.

    The comparison is wall time on an idle machine (the load average is recorded per run and
    shown): what a user waits for. CPU time is recorded too, but it is not the target: OpenMP
    threads spin while they wait, so the CPU time of a kernel grows with the contention (the
    shared-machine runs of RESULTS.md) and under-counts nothing on an idle one.
    """
    sys.path.insert(0, str(ROOT))
    from planner.runtimes.transformers.speed import cpu_decode_seconds, cpu_load_seconds

    doc = json.loads(args.out.read_text())
    cpus = doc["machine"]["cpu_count"]
    groups: dict[tuple, list[dict]] = {}
    for r in doc["runs"]:
        if "error" not in r:
            groups.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r)

    rows = []
    for (dtype, quant, n), rs in sorted(groups.items(), key=lambda kv: (SCHEMES.index(kv[0][:2]), kv[0][2])):
        counts = param_counts(n)
        idle = cpu_decode_seconds(params=counts, quantization=quant, dtype=dtype, cpu_count=cpus, ram_bandwidth=None)
        load = cpu_load_seconds(params=counts, quantization=quant, dtype=dtype, stored_dtype="bfloat16", cpu_count=cpus)
        rows.append({"dtype": dtype, "quantization": quant, "layers": n, "runs": len(rs),
                     "measured_tok_s": _median([r["decode_tok_s"] for r in rs]), "predicted_tok_s": 1 / idle,
                     "measured_load_s": _median([r["load_s"] for r in rs]), "predicted_load_s": load,
                     "measured_cpu_s_per_token": _median([r["decode_cpu_s_per_token"] for r in rs]),
                     "loadavg": max(r["loadavg_before"] for r in rs), "peak_rss_mib": max(r["peak_rss_bytes"] for r in rs) / 2**20})
    doc["predictions"] = rows
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["| scheme | layers | runs | decode tok/s measured | predicted | error | load s measured | predicted | error | "
             "CPU s/token (all threads) | max load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = (r["predicted_tok_s"] - r["measured_tok_s"]) / r["measured_tok_s"] * 100
        lerr = (r["predicted_load_s"] - r["measured_load_s"]) / r["measured_load_s"] * 100
        label = r["dtype"] if r["quantization"] == "none" else f"{r['quantization']} + {r['dtype']}"
        lines.append(f"| {label} | {r['layers']} | {r['runs']} | {r['measured_tok_s']:.2f} | {r['predicted_tok_s']:.2f} | {err:+.0f} % | "
                     f"{r['measured_load_s']:.1f} | {r['predicted_load_s']:.1f} | {lerr:+.0f} % | {r['measured_cpu_s_per_token']:.3f} | "
                     f"{r['loadavg']:.1f} |")
    lines += ["", "Ranking by decode speed, every pair of schemes at each depth (measured / predicted faster):", ""]
    wrong = 0
    for n in sorted({r["layers"] for r in rows}):
        at = [r for r in rows if r["layers"] == n]
        for i, a in enumerate(at):
            for b in at[i + 1:]:
                m = a["measured_tok_s"] > b["measured_tok_s"]
                p = a["predicted_tok_s"] > b["predicted_tok_s"]
                gap = abs(a["measured_tok_s"] - b["measured_tok_s"]) / max(a["measured_tok_s"], b["measured_tok_s"]) * 100
                wrong += m != p
                la = lambda r: r["dtype"] if r["quantization"] == "none" else r["quantization"]  # noqa: E731
                lines.append(f"- {n} layers: {la(a)} vs {la(b)}: measured {la(a) if m else la(b)} faster by {gap:.0f} %, "
                             f"predicted {la(a) if p else la(b)}: {'right' if m == p else 'WRONG'}")
    lines.append(f"\n{wrong} pair(s) ranked wrong.")
    out = args.out.with_name(args.out.stem.replace("results", "table") + ".md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def param_counts(layers: int) -> dict[str, int]:
    """Parameters of the benchmark model as the planner's CPU model counts them
    (planner/runtimes/transformers/plans.py ``_cpu_params``)."""
    h, i, kv = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG["num_key_value_heads"] * CONFIG["head_dim"]
    linear = 2 * h * h + 2 * h * kv + 3 * h * i
    return {"layer": layers * (linear + 2 * h) + h, "linear": layers * linear, "head": CONFIG["vocab_size"] * h,
            "embed": CONFIG["vocab_size"] * h, "cast": layers * (linear + 2 * h) + h + CONFIG["vocab_size"] * h}


def fit(args: argparse.Namespace) -> None:
    """The constants of planner/runtimes/transformers/speed.py from a measure run on an idle
    machine: per scheme, the wall seconds per token times the threads (thread-seconds) are a
    straight line over the layer counts; its slope per decoder-layer parameter is the layer
    constant and its intercept per head parameter the head constant. Load: wall seconds, a fixed
    part and a part per quantized linear parameter (bnb) or per cast parameter (fp32)."""
    doc = json.loads(args.out.read_text())
    threads = {r["threads"] for r in doc["runs"] if "threads" in r}
    assert len(threads) == 1, threads
    t = threads.pop()
    tok: dict[tuple, list[float]] = {}
    load: dict[tuple, list[float]] = {}
    for r in doc["runs"]:
        if "error" not in r:
            tok.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r["decode_s"] / doc["setup"]["new_tokens"] * t)
            load.setdefault((r["dtype"], r["quantization"], r["layers"]), []).append(r["load_s"])
    lo, hi = min(args.layers), max(args.layers)
    one = param_counts(1)
    layer_params, head_params, linear = one["layer"] - CONFIG["hidden_size"], one["head"], one["linear"]
    for dtype, quant in SCHEMES:
        if (dtype, quant, lo) not in tok or (dtype, quant, hi) not in tok:
            continue
        a, b = _median(tok[(dtype, quant, lo)]), _median(tok[(dtype, quant, hi)])
        per_layer = (b - a) / (hi - lo)
        head = a - lo * per_layer
        la, lb = _median(load[(dtype, quant, lo)]), _median(load[(dtype, quant, hi)])
        per_linear = (lb - la) / (hi - lo) / linear
        print(f"({quant!r}, {dtype!r}): layer {per_layer / layer_params:.3e}, head {head / head_params:.3e} thread-s/param; "
              f"load {la:.2f} -> {lb:.2f} s: fixed {la - lo * per_linear * linear:.2f} s + {per_linear:.2e} s per linear param")


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
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    {"measure": measure, "report": report, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
