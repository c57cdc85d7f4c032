"""Compare fitcheck's vLLM predictions with what `vllm serve` really allocates (needs a CUDA GPU and vLLM).

For each case: write a config-only folder (config.json from /work/shared/catalog-configs), plan it
with ``fitcheck``'s vLLM runtime on this machine (probed), run the plan's own ``vllm serve`` argv
with ``--load-format dummy --skip-tokenizer-init`` (no weights are downloaded), read vLLM's log lines

    Model loading took X GiB memory ...                      (v1/worker/gpu/model_runner.py:442)
    Available KV cache memory: X GiB                         (v1/worker/gpu_worker.py:796)
    GPU KV cache size: N tokens, Maximum concurrency for L tokens per request: Cx   (v1/core/kv_cache_utils.py:1169)

stop the server, and write predicted vs measured to ``--out`` (JSON) and stdout (a table).

    python benchmarks/vllm_calibration.py --out vllm-calibration.json [--cases llama-8b,qwen3-14b]

Not run yet: no GPU was lent to the session that wrote it. The log parsing is tested on published
vLLM log lines (tests/test_vllm_published.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CATALOG = Path("/work/shared/catalog-configs")
# name -> (catalog config, fitcheck options): one GPU, models whose weights fit it
CASES = {
    "llama-8b": ("meta-llama__Llama-3.1-8B", {"context": 8192}),
    "llama-8b-fp8kv": ("meta-llama__Llama-3.1-8B", {"context": 8192, "kv_cache_dtype": "fp8"}),
    "qwen3-14b": ("Qwen__Qwen3-14B", {"context": 32768}),
    "qwen3-30b-a3b": ("Qwen__Qwen3-30B-A3B", {"context": 32768}),
    "qwen2.5-32b": ("Qwen__Qwen2.5-32B", {"context": 16384}),
}
_PATTERNS = {
    "weights_gib": re.compile(r"Model loading took ([0-9.]+) GiB"),
    "kv_available_gib": re.compile(r"Available KV cache memory: ([0-9.]+) GiB"),
    "kv_tokens": re.compile(r"KV cache size: ([0-9,]+) tokens"),
    "concurrency": re.compile(r"Maximum concurrency for [0-9,]+ tokens per request: ([0-9.]+)x"),
}


def parse_log(text: str) -> dict[str, float]:
    """The figures vLLM logged (the first of each), as numbers."""
    out: dict[str, float] = {}
    for key, pattern in _PATTERNS.items():
        m = pattern.search(text)
        if m:
            out[key] = float(m.group(1).replace(",", ""))
    return out


def write_folder(folder: Path, config: dict) -> None:
    """config.json and a header-only (sparse) model.safetensors with the checkpoint's tensors:
    fitcheck reads the header, `vllm serve --load-format dummy` never reads the data."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    import layouts
    import vllm_models
    from fixtures_models import safetensors_header

    if config.get("num_experts"):
        spec = vllm_models.qwen3_moe_spec(config)
    else:
        spec = layouts.decoder(layouts.plain("BF16"), layers=config["num_hidden_layers"], hidden=config["hidden_size"],
                               intermediate=config["intermediate_size"], heads=config["num_attention_heads"],
                               kv_heads=config["num_key_value_heads"], vocab=config["vocab_size"], dtype="BF16",
                               head_dim=config.get("head_dim"))
        if config.get("tie_word_embeddings"):
            spec.pop("lm_head.weight")
    header, size = safetensors_header(spec)
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "model.safetensors", "wb") as f:
        f.write(header)
        f.truncate(size)


def predict(folder: Path, options: dict, hardware: str | None = None) -> tuple[dict, list[str]]:
    """fitcheck's plan for the folder on this machine (or a profile): its figures and its vllm serve argv."""
    from planner import api
    from planner.core.records import Constraints

    opts = dict(options)
    context = opts.pop("context")
    report = api.plan(str(folder), hardware=api.resolve_hardware(hardware=hardware), runtime="vllm",
                      constraints=Constraints(context=context).with_options(tp=1, pp=1, online_fp8=False, **opts))
    if report.solution is None:
        raise SystemExit(f"{folder}: fitcheck finds no plan: {report.rejected[0].reasons if report.rejected else '?'}")
    plan = report.solution.chosen
    rank = next(iter(plan.memory.values()))
    s = plan.settings
    figures = {"weights_gib": rank.weights / 2**30, "kv_available_gib": rank.kv_cache / 2**30, "kv_tokens": s.kv_cache.tokens,
               "concurrency": s.kv_cache.max_concurrent_sequences}
    return figures, list(api.emit(report).commands["vllm_serve"])


def run_vllm(argv: list[str], folder: Path, timeout: float) -> str:
    """Start `vllm serve` on the folder with dummy weights, wait for the KV log line, stop it."""
    cmd = [*argv[:2], str(folder), *[a for a in argv[3:]], "--load-format", "dummy", "--skip-tokenizer-init", "--port", "8765"]
    if "--revision" in cmd:
        i = cmd.index("--revision")
        del cmd[i:i + 2]
    fd, name = tempfile.mkstemp(suffix=".log", prefix="vllm-serve-")
    log_path = Path(name)
    with os.fdopen(fd, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(5)
                if _PATTERNS["kv_tokens"].search(log_path.read_text(errors="replace")):
                    time.sleep(5)  # let the concurrency line follow
                    break
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    return log_path.read_text(errors="replace")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("vllm-calibration.json"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per vllm serve start")
    a = ap.parse_args()
    rows = []
    for name in a.cases.split(","):
        config, options = CASES[name]
        with tempfile.TemporaryDirectory(prefix=f"vllm-cal-{name}-") as tmp:
            folder = Path(tmp)
            write_folder(folder, json.loads((CATALOG / f"{config}.config.json").read_text()))
            predicted, argv = predict(folder, options)
            measured = parse_log(run_vllm(argv, folder, a.timeout))
        rows.append({"case": name, "argv": argv, "predicted": predicted, "measured": measured})
        print(f"{name:16s} " + "  ".join(f"{k} {predicted[k]:.2f}/{measured.get(k, float('nan')):.2f}" for k in predicted),
              flush=True)
    a.out.write_text(json.dumps({"python": sys.version, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
