"""CPU benchmark of the training runtime: predicted peak vs measured peak RSS of the emitted script.

Each scenario builds (once) a random-weight model with transformers, plans it with fitcheck's
training runtime for a CPU machine, writes the emitted ``train.py`` and runs it for a few
optimizer steps in a fresh process under ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc then returns
freed blocks above 64 KiB to the kernel at once, so the peak RSS is the peak of live memory
rather than of the heap glibc keeps). The measured peak is the process's VmHWM over the whole
run (``--report``: the script reads /proc/self/status per phase).

    PYTHONPATH=. python benchmarks/training/measure.py [--only NAME ...] [--out benchmarks/training/results.csv]
    PYTHONPATH=. python benchmarks/training/measure.py --repredict    # the current code's predictions
    PYTHONPATH=. python benchmarks/training/measure.py --gpu --out gpu.csv   # on a lent GPU

Writes results.csv and prints the table of RESULTS.md. ``--gpu`` plans for the probed machine
and runs the GPU scenarios (a random-weight Llama-3.2-1B from its real config, full, LoRA and
QLoRA with and without checkpointing): the script's peak is torch's peak allocated bytes, which
leaves out the CUDA context and the allocator's slack that the prediction includes, so the table
shows the prediction both with and without them (``predicted_tensors``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# Two architectures: Llama-style (GQA 8/4 heads, untied embeddings) and Qwen2-style (q/k/v biases,
# GQA 6/2, tied embeddings); big enough that weights, states and activations dwarf the fixed cost.
MODELS = {
    "llama-20m": ("llama", {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4, "num_attention_heads": 8,
                            "num_key_value_heads": 4, "vocab_size": 8192, "max_position_embeddings": 4096}),
    # a GPU-sized model from its published config (tests/data), random weights
    "llama-3.2-1b": ("llama", json.loads((ROOT / "tests" / "data" / "meta-llama__Llama-3.2-1B.config.json").read_text())),
    "qwen2-14m": ("qwen2", {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 6,
                            "num_key_value_heads": 2, "vocab_size": 6144, "max_position_embeddings": 4096,
                            "tie_word_embeddings": True}),
}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    method: str
    optimizer: str
    ckpt: str
    seq: int
    batch: int
    grad_accum: int = 1


SCENARIOS = [
    Scenario("llama-full-adamw-s512-b2", "llama-20m", "full", "adamw", "off", 512, 2),
    Scenario("llama-full-adamw-ckpt-s1024-b2", "llama-20m", "full", "adamw", "on", 1024, 2),
    Scenario("llama-full-sgd-s256-b4", "llama-20m", "full", "sgd", "off", 256, 4),
    Scenario("llama-full-8bit-s1024-b1", "llama-20m", "full", "adamw-8bit", "off", 1024, 1),
    Scenario("llama-full-adafactor-s512-b1", "llama-20m", "full", "adafactor", "off", 512, 1),
    Scenario("llama-lora-adamw-s1024-b2", "llama-20m", "lora", "adamw", "off", 1024, 2),
    Scenario("llama-lora-adamw-ckpt-s2048-b1", "llama-20m", "lora", "adamw", "on", 2048, 1),
    Scenario("llama-lora-8bit-s512-b4", "llama-20m", "lora", "adamw-8bit", "off", 512, 4),
    Scenario("llama-qlora-paged-s1024-b1", "llama-20m", "qlora", "paged-adamw-8bit", "off", 1024, 1),
    Scenario("llama-qlora-adamw-ckpt-s2048-b2", "llama-20m", "qlora", "adamw", "on", 2048, 2),
    Scenario("qwen2-full-adamw-s1024-b1", "qwen2-14m", "full", "adamw", "off", 1024, 1),
    Scenario("qwen2-full-adamw-ckpt-s2048-b1", "qwen2-14m", "full", "adamw", "on", 2048, 1),
    Scenario("qwen2-full-accum2-s512-b2", "qwen2-14m", "full", "adamw", "off", 512, 2, 2),
    Scenario("qwen2-lora-adamw-s2048-b1", "qwen2-14m", "lora", "adamw", "off", 2048, 1),
    Scenario("qwen2-lora-sgd-ckpt-s1024-b4", "qwen2-14m", "lora", "sgd", "on", 1024, 4),
    Scenario("qwen2-qlora-8bit-s512-b2", "qwen2-14m", "qlora", "adamw-8bit", "off", 512, 2),
    Scenario("qwen2-qlora-adamw-ckpt-s1024-b4", "qwen2-14m", "qlora", "adamw", "on", 1024, 4),
]


GPU_SCENARIOS = [
    Scenario(f"gpu-llama1b-{m}-{o}-{'ckpt' if c == 'on' else 'nockpt'}-s2048-b2", "llama-3.2-1b", m, o, c, 2048, 2)
    for m, o in (("full", "adamw"), ("full", "adamw-8bit"), ("lora", "adamw"), ("qlora", "adamw")) for c in ("off", "on")
]


def build(name: str, root: Path) -> Path:
    folder = root / name
    if (folder / "config.json").exists():
        return folder
    import torch
    from fixtures_models import make_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, cfg = MODELS[name]
    tok = make_tokenizer(arch)
    cfg = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype")}
    cfg.update(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = AutoConfig.for_model(arch, **cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def predict(folder: Path, sc: Scenario, *, gpu: bool = False):
    from planner.api import emit, plan, resolve_hardware
    from planner.core.records import Constraints

    opts = {"train": sc.method, "optimizer": sc.optimizer, "gradient_checkpointing": sc.ckpt, "seq": sc.seq, "grad_accum": sc.grad_accum,
            "lora_r": 16}
    c = Constraints(batch=sc.batch, options=tuple(sorted(opts.items())))
    hw = resolve_hardware() if gpu else resolve_hardware(hardware="cpu-laptop-16gb")
    if gpu:
        c = c.with_options(gpus=1)
    r = plan(str(folder), hardware=hw, constraints=c, runtime="training")
    p = r.solution.chosen if r.solution else r.rejected[0]
    return p, emit(r, p)


def run(sc: Scenario, root: Path, *, gpu: bool = False) -> dict:
    folder = build(sc.model, root / "models")
    p, art = predict(folder, sc, gpu=gpu)
    work = root / sc.name
    work.mkdir(parents=True, exist_ok=True)
    for fname, text in art.files.items():
        (work / fname).write_text(text)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "train.py", "--steps", "3", "--report", "report.json"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode:
        raise RuntimeError(f"{sc.name}: {proc.stderr[-1500:]}")
    rep = json.loads((work / "report.json").read_text())
    m = p.memory["cuda:0" if gpu else "cpu"]
    measured = rep["peak"]
    extra = {}
    if gpu:
        extra["predicted_tensors"] = m.total - m.overhead  # what torch's peak allocated counts
    return {**extra, "scenario": sc.name, "model": sc.model, "method": sc.method, "optimizer": sc.optimizer, "ckpt": sc.ckpt, "seq": sc.seq,
            "batch": sc.batch, "grad_accum": sc.grad_accum, "predicted": m.total, "measured": measured,
            "error_mib": round((m.total - measured) / 2**20, 1), "error_pct": round(100 * (m.total - measured) / measured, 1),
            "weights": m.weights, "gradients": m.gradients, "optimizer_bytes": m.optimizer, "activations": m.activations,
            "step": m.compute, "overhead": m.overhead, "phases": json.dumps(rep["phases"]), "seconds": round(time.time() - t0, 1)}


def repredict(row: dict, root: Path) -> dict:
    """``row`` (a measured scenario) with the prediction of the current code: the measurement does
    not depend on fitcheck's prediction, only on the settings the script runs with, which are the
    scenario's."""
    sc = next(s for s in SCENARIOS if s.name == row["scenario"])
    p, _ = predict(build(sc.model, root / "models"), sc)
    m = p.memory["cpu"]
    measured = int(row["measured"])
    return {**row, "predicted": m.total, "error_mib": round((m.total - measured) / 2**20, 1),
            "error_pct": round(100 * (m.total - measured) / measured, 1), "weights": m.weights, "gradients": m.gradients,
            "optimizer_bytes": m.optimizer, "activations": m.activations, "step": m.compute, "overhead": m.overhead}


def table(rows: list[dict]) -> str:
    lines = ["| scenario | method | optimizer | ckpt | seq x batch | predicted MiB | measured MiB | error MiB | error % |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['method']} | {r['optimizer']} | {r['ckpt']} | {r['seq']} x {r['batch']}"
                     f"{' (accum ' + str(r['grad_accum']) + ')' if int(r['grad_accum']) > 1 else ''} | "
                     f"{int(r['predicted']) / 2**20:.0f} | {int(r['measured']) / 2**20:.0f} | {float(r['error_mib']):+.0f} | "
                     f"{float(r['error_pct']):+.1f} |")
    return "\n".join(lines)


def _write(rows: list[dict], out: str) -> None:
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--root", default="/tmp/fitcheck-training-bench")
    ap.add_argument("--out", default=str(HERE / "results.csv"))
    ap.add_argument("--repredict", action="store_true", help="recompute the predictions of the measured rows in --out")
    ap.add_argument("--gpu", action="store_true", help="plan for this machine's GPU and run the GPU scenarios")
    a = ap.parse_args()
    root = Path(a.root)
    if a.repredict:
        with open(a.out, newline="") as f:
            rows = [repredict(r, root) for r in csv.DictReader(f)]
        _write(rows, a.out)
        print(table(rows))
        return
    rows = []
    for sc in GPU_SCENARIOS if a.gpu else SCENARIOS:
        if a.only and sc.name not in a.only:
            continue
        rows.append(run(sc, root, gpu=a.gpu))
        _write(rows, a.out)  # after every scenario: a long run keeps what it measured
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
