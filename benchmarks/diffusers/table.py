"""Predicted against measured working memory of each phase, from calib.jsonl -> RESULTS.md's table.

Each line of calib.jsonl is one fresh-process CPU measurement (measure.py): a real-shape
component with random weights (SD 1.5's UNet and VAE, Flux-dev's transformer at its real width
with one double and one single block), peak RSS over the RSS before the phase,
MALLOC_MMAP_THRESHOLD_=65536. The prediction is the runtime's own phase formula
(planner/runtimes/diffusers/memory.py) on the catalog's facts of the same pipeline, fp32.

Usage: PYTHONPATH=. python benchmarks/diffusers/table.py [--write]  (prints the table; --write: RESULTS.md)
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from planner.api import read_model
from planner.core.units import MiB
from planner.runtimes.diffusers import facts, memory
from planner.runtimes.diffusers.settings import DiffusersSettings

HERE = Path(__file__).parent
REPOS = {"runwayml__stable-diffusion-v1-5": "runwayml/stable-diffusion-v1-5", "black-forest-labs__FLUX.1-dev": "black-forest-labs/FLUX.1-dev",
         "stabilityai__stable-diffusion-xl-base-1.0": "stabilityai/stable-diffusion-xl-base-1.0",
         "stabilityai__stable-diffusion-3.5-large": "stabilityai/stable-diffusion-3.5-large"}
TARGET_FRACTION, TARGET_BYTES = 0.05, 64 * MiB


def predicted(row: dict, cache: dict) -> int:
    folder = Path(row["config"]).parents[1].name
    if folder not in cache:
        cache[folder] = facts.build(read_model(REPOS[folder], runtime="diffusers"))
    fx = cache[folder]
    part, b = row["part"], row["batch"]
    guidance = part in ("unet", "sd3") and b % 2 == 0
    prompts = b // 2 if guidance else b
    s = DiffusersSettings(device="cpu", dtype=row.get("dtype", "float32"), offload="none", resolution=(row["width"], row["height"]), batch=prompts,
                          guidance=guidance, steps=1, vae_slicing=bool(row.get("slicing")), vae_tiling=bool(row.get("tiling")),
                          attention_slicing=row.get("attention_slicing") or "")
    if part == "vae":
        return memory.decode_activations(fx, s)
    if part in ("clip", "t5"):
        enc = fx.component("text_encoder" if part == "clip" else "text_encoder_3")
        assert enc is not None
        return memory.text_activations(enc, fx, replace(s, batch=b, guidance=False))
    return memory.denoise_activations(fx, s)


def describe(row: dict) -> str:
    extra = [k for k in ("slicing", "tiling") if row.get(k)]
    if row.get("attention_slicing"):
        extra.append(f"attention slicing {row['attention_slicing']}")
    xl = "stable-diffusion-xl" in row["config"]
    what = {"unet": "SDXL UNet forward" if xl else "SD 1.5 UNet forward", "dit": "Flux transformer forward", "vae": "SD VAE decode",
            "clip": "SD 1.5 CLIP text encoder forward", "sd3": f"SD3.5-large transformer forward ({row.get('layers')} of 38 blocks)",
            "t5": f"SD3.5 T5-XXL encoder forward ({row.get('layers')} of 24 blocks)"}[row["part"]]
    if row.get("transformer_layers"):
        extra.append(f"transformer layers {row['transformer_layers']}")
    if row.get("dtype", "float32") != "float32":
        extra.append(row["dtype"].replace("bfloat16", "bf16"))
    size = f"{row.get('text_len', 256)} tokens" if row["part"] == "t5" else f"{row['width']}x{row['height']}"
    return f"{what}, {size}, batch {row['batch']}" + (f", {', '.join(extra)}" if extra else "")


def main() -> None:
    import contextlib
    import io
    import sys

    if "--write" in sys.argv:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            table()
        head = (HERE / "RESULTS_HEAD.md").read_text()
        (HERE / "RESULTS.md").write_text(head + "\n" + buf.getvalue())
        return
    table()


def table() -> None:
    cache: dict = {}
    rows = [json.loads(line) for line in (HERE / "calib.jsonl").read_text().splitlines() if line.strip()]
    print("| # | scenario | measured MiB | predicted MiB | error | within target | seconds |")
    print("|---|---|---:|---:|---:|---|---:|")
    worst_under = worst_over = 0.0
    for i, row in enumerate(rows, 1):
        got, want = row["delta"], predicted(row, cache)
        err = want - got
        ok = abs(err) <= max(TARGET_FRACTION * got, TARGET_BYTES) or err > 0
        under = err < 0 and -err > max(TARGET_FRACTION * got, TARGET_BYTES)
        worst_under = min(worst_under, err / MiB)
        worst_over = max(worst_over, err / MiB)
        verdict = "yes" if abs(err) <= max(TARGET_FRACTION * got, TARGET_BYTES) else ("over" if ok else "UNDER")
        print(f"| {i} | {describe(row)} | {got / MiB:.0f} | {want / MiB:.0f} | {err / MiB:+.0f} ({err / got:+.1%}) | {verdict} |"
              f" {row['seconds']:.0f} |")
        del under
    print(f"\nworst under-prediction {worst_under:+.0f} MiB, worst over-prediction {worst_over:+.0f} MiB")


if __name__ == "__main__":
    main()
