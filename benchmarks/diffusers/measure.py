"""One CPU measurement of a diffusers component's working memory, in a fresh process.

Usage: ``MALLOC_MMAP_THRESHOLD_=65536 python measure.py '<scenario JSON>'`` prints one JSON line.

A scenario builds one component with random weights from a real config (real shapes, no
download), then runs one phase and reports the peak RSS above the RSS just before it:

* ``{"part": "unet", "config": ".../unet/config.json", "width": 512, "height": 512, "batch": 2,
  "attention_slicing": null|"auto"|"max", "text_dim": 768, "text_len": 77}``: one UNet forward
  (``batch`` is the effective batch: prompts x 2 with classifier-free guidance);
* ``{"part": "dit", "config": ".../transformer/config.json", "layers": [1, 1], ...}``: one Flux
  transformer forward with ``layers`` = (double, single) blocks at the real width;
* ``{"part": "vae", "config": ".../vae/config.json", "batch": 1, "slicing": false, "tiling": false}``:
  one ``vae.decode`` of latents for ``width`` x ``height``;
* ``{"part": "sd3", "config": ".../transformer/config.json", "layers": 1, "text_len": 333}``: one SD3
  transformer forward with ``layers`` joint blocks at the real width;
* ``{"part": "t5", "config": ".../text_encoder_3/config.json", "layers": 2, "text_len": 256}``: one T5
  encoder forward of ``batch`` prompts with ``layers`` of its blocks;
* a UNet's ``"transformer_layers": [1, 1, 1]`` keeps every width but builds that many transformer
  layers per block (SDXL's [1, 2, 10] is 10 GB in fp32); like the DiT's depth, a no-grad forward
  frees each layer's tensors, so only the skip connections across blocks stay live;
* ``"dtype": "bfloat16"`` builds the component in that dtype (default float32);
* ``{"part": "clip", "config": ".../text_encoder/config.json", "batch": 2}``: one CLIP text
  encoder forward of ``batch`` prompts of 77 tokens.

Peak RSS is VmHWM from /proc/self/status, reset before the phase by writing 5 to
/proc/self/clear_refs. ``MALLOC_MMAP_THRESHOLD_=65536`` makes glibc return freed blocks at once,
so the peak is what the tensors held, not what the heap kept.
"""

from __future__ import annotations

import json
import sys
import time


def _rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def main(spec: dict) -> dict:
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    torch.manual_seed(0)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    cfg = json.load(open(spec["config"]))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    w, h, b = spec["width"], spec["height"], spec["batch"]
    part = spec["part"]
    # build in the target dtype: SDXL's UNet would first take 10 GB of fp32 random weights
    torch.set_default_dtype(dtype)
    if part == "unet":
        from diffusers import UNet2DConditionModel

        if spec.get("transformer_layers"):  # real widths, fewer transformer layers per block (see docstring)
            cfg["transformer_layers_per_block"] = spec["transformer_layers"]
        model = UNet2DConditionModel.from_config(cfg).to(dtype).eval()
        if spec.get("attention_slicing"):
            model.set_attention_slice(spec["attention_slicing"])
        scale = spec.get("vae_scale", 8)
        x = torch.randn(b, cfg["in_channels"], h // scale, w // scale, dtype=dtype)
        ctx = torch.randn(b, spec.get("text_len", 77), cfg["cross_attention_dim"], dtype=dtype)
        added = None
        if cfg.get("addition_embed_type") == "text_time":  # SDXL: pooled text embeds + 6 time ids
            pooled_dim = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
            added = {"text_embeds": torch.randn(b, pooled_dim, dtype=dtype), "time_ids": torch.zeros(b, 6, dtype=dtype)}

        def run() -> None:
            model(x, torch.tensor(500), encoder_hidden_states=ctx, added_cond_kwargs=added)
    elif part == "dit":
        from diffusers import FluxTransformer2DModel

        double, single = spec.get("layers", [1, 1])
        cfg.update(num_layers=double, num_single_layers=single)
        model = FluxTransformer2DModel.from_config(cfg).to(dtype).eval()
        scale, patch = spec.get("vae_scale", 8), cfg.get("patch_size", 1) * 2
        n_img = (h // scale // 2) * (w // scale // 2)
        n_txt = spec.get("text_len", 512)
        x = torch.randn(b, n_img, cfg["in_channels"], dtype=dtype)
        ctx = torch.randn(b, n_txt, cfg["joint_attention_dim"], dtype=dtype)
        pooled = torch.randn(b, cfg["pooled_projection_dim"], dtype=dtype)
        img_ids = torch.zeros(n_img, 3)
        txt_ids = torch.zeros(n_txt, 3)
        guidance = torch.full((b,), 3.5) if cfg.get("guidance_embeds") else None

        def run() -> None:
            model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=torch.full((b,), 0.5),
                  img_ids=img_ids, txt_ids=txt_ids, guidance=guidance)
    elif part == "sd3":
        from diffusers import SD3Transformer2DModel

        cfg.update(num_layers=spec.get("layers", 1))
        model = SD3Transformer2DModel.from_config(cfg).to(dtype).eval()
        scale = spec.get("vae_scale", 8)
        x = torch.randn(b, cfg["in_channels"], h // scale, w // scale, dtype=dtype)
        ctx = torch.randn(b, spec.get("text_len", 333), cfg["joint_attention_dim"], dtype=dtype)
        pooled = torch.randn(b, cfg["pooled_projection_dim"], dtype=dtype)

        def run() -> None:
            model(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=torch.full((b,), 500.0))
    elif part == "t5":
        from transformers import T5Config, T5EncoderModel

        cfg.update(num_layers=spec.get("layers", cfg["num_layers"]))
        model = T5EncoderModel(T5Config.from_dict(cfg)).to(dtype).eval()
        ids = torch.randint(0, cfg["vocab_size"] - 1, (b, spec.get("text_len", 256)))

        def run() -> None:
            model(ids)
    elif part == "vae":
        from diffusers import AutoencoderKL

        model = AutoencoderKL.from_config(cfg).to(dtype).eval()
        if spec.get("slicing"):
            model.enable_slicing()
        if spec.get("tiling"):
            model.enable_tiling()
        scale = 2 ** (len(cfg["block_out_channels"]) - 1)
        z = torch.randn(b, cfg["latent_channels"], h // scale, w // scale, dtype=dtype)

        def run() -> None:
            model.decode(z)
    elif part == "clip":
        from transformers import CLIPTextConfig, CLIPTextModel

        model = CLIPTextModel(CLIPTextConfig.from_dict(cfg)).to(dtype).eval()
        ids = torch.randint(0, cfg["vocab_size"] - 1, (b, spec.get("text_len", 77)))

        def run() -> None:
            model(ids)
    else:
        raise SystemExit(f"unknown part {part!r}")
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        before = _rss()["VmRSS"]
        _reset_peak()
        t = time.perf_counter()
        run()
        seconds = time.perf_counter() - t
        peak = _rss()["VmHWM"]
    return {**spec, "parameters": params, "rss_before": before, "peak": peak, "delta": peak - before, "seconds": round(seconds, 2)}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
