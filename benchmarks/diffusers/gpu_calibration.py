"""Pipeline cases for a lent GPU: each offload mode's predicted against measured memory.

    PYTHONPATH=.:tests python benchmarks/diffusers/gpu_calibration.py --out results-dir [--budget-s 420]

It builds SD 1.5 at its real shapes with random weights from the catalog configs on the GPU
machine itself (save_pretrained in fp16; nothing is downloaded; the tokenizer is the tests' tiny
CLIP one, whose ids fall inside the real vocabulary), plans it with fitcheck for this GPU, and for
each offload mode (none, model, sequential, group, group with a stream) and resolution runs
``fitcheck verify``'s child on the emitted script (2 steps), recording the predicted and the
measured peak per device. It writes rows.json and RESULTS.md; the GPU constants
(plans.CUDA_CONTEXT, GPU_SLACK_TRANSIENT, the group/sequential residency) are fitted from them.
``--dry-run`` runs the tiny SD pipeline on the CPU (mode none only), to test the script here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path("/work/shared/catalog-configs/pipelines/runwayml__stable-diffusion-v1-5")
MODES = [("none", False), ("model", False), ("sequential", False), ("group", False), ("group", True)]
RESOLUTIONS = [(512, 512), (768, 768)]


def build_real_sd(folder: Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from diffusers_pipelines import _tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    def cfg(name: str) -> dict:
        return {k: v for k, v in json.loads((CONFIGS / name / "config.json").read_text()).items() if not k.startswith("_")}

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(vae=AutoencoderKL.from_config(cfg("vae")), text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(cfg("text_encoder"))),
                                   tokenizer=_tokenizer(folder.parent / "tok"), unet=UNet2DConditionModel.from_config(cfg("unet")),
                                   scheduler=PNDMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from planner import api
    from planner.core.records import Constraints

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.dry_run:
            from diffusers_pipelines import build_sd

            folder, hw, modes, sizes = build_sd(Path(tmp) / "sd"), api.resolve_hardware(hardware="cpu-laptop-16gb"), MODES[:1], [(32, 32)]
        else:
            folder, hw, modes, sizes = build_real_sd(Path(tmp) / "sd"), api.resolve_hardware(), MODES, RESOLUTIONS
        for (mode, stream), res in [(m, r) for r in sizes for m in modes]:
            if time.monotonic() - started > a.budget_s:
                break
            r = api.plan(str(folder), hardware=hw, constraints=Constraints().with_options(resolution=res, steps=2), runtime="diffusers")
            every = [*(([r.solution.chosen, *r.solution.alternatives]) if r.solution else []), *r.rejected]
            pick = [p for p in every if p.settings.offload == mode and p.settings.group_stream == stream
                    and not p.settings.quantized and not p.settings.vae_tiling and not p.settings.group_disk]
            if not pick:
                continue
            plan_path = Path(tmp) / "plan.json"
            plan_path.write_text(api.emit(r, pick[0]).files["plan.json"])
            res_path = Path(tmp) / "result.json"
            proc = subprocess.run([sys.executable, "-m", "planner.runtimes.diffusers.verify_child", str(plan_path), str(res_path)],
                                  capture_output=True, text=True, timeout=600, check=False,
                                  env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
            raw = json.loads(res_path.read_text()) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}
            pred = {d: m.total for d, m in pick[0].memory.items()}
            measured = {"cpu": raw.get("cpu_peak_rss", 0)}
            for ph in raw.get("phases", {}).values():
                for dev, g in ph.get("gpus", {}).items():
                    measured[dev] = max(measured.get(dev, 0), g["torch_peak_reserved"])
            rows.append({"mode": mode, "stream": stream, "resolution": res, "label": pick[0].label, "predicted": pred,
                         "measured": measured, "phases": raw.get("diffusers_phases"), "error": raw.get("error")})
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    lines = ["| mode | resolution | device | predicted MiB | measured MiB |", "|---|---|---|---:|---:|"]
    for row in rows:
        for dev, want in row["predicted"].items():
            lines.append(f"| {row['label']} | {row['resolution'][0]}x{row['resolution'][1]} | {dev} | {want / 2**20:.0f} | "
                         f"{row['measured'].get(dev, 0) / 2**20:.0f} |")
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
