"""Tiny random-weight diffusers pipelines, saved the way the Hub holds them (tests only).

``build_sd(folder)`` saves a StableDiffusionPipeline (UNet, VAE, CLIP text encoder, a tiny CLIP
tokenizer) and ``build_flux(folder)`` a FluxPipeline (DiT transformer, VAE, CLIP and T5 text
encoders), each with its default fp32 files and, with ``fp16=True``, the fp16 variant beside
them. Shapes are a few hundred kilobytes; they run on the CPU in a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase) + list(string.digits) + list(",.!?'-")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _clip(seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                        vocab_size=86, max_position_embeddings=77, projection_dim=32, bos_token_id=84,
                                        eos_token_id=85, pad_token_id=85))


def _save(pipe, folder: Path, fp16: bool) -> Path:
    import torch

    pipe.save_pretrained(folder, safe_serialization=True)
    if fp16:
        pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    return folder


def build_sd(folder: Path, *, fp16: bool = False) -> Path:
    """A tiny StableDiffusionPipeline in ``folder`` (32 x 32 images, VAE scale 2)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    tmp = folder.parent / (folder.name + "-tok")
    tokenizer = _tokenizer(tmp)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=_clip(1), tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return _save(pipe, folder, fp16)


def build_flux(folder: Path, *, fp16: bool = False) -> Path:
    """A tiny FluxPipeline in ``folder`` (32 x 32 images, VAE scale 2, 2x2 latent packing)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tmp = folder.parent / (folder.name + "-tok")
    tokenizer = _tokenizer(tmp)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                         axes_dims_rope=[4, 6, 6], guidance_embeds=True)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(2)
    t5 = T5EncoderModel(T5Config(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, vocab_size=86, pad_token_id=85,
                                 eos_token_id=85, decoder_start_token_id=85))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_clip(1), tokenizer=tokenizer,
                        text_encoder_2=t5, tokenizer_2=tokenizer, transformer=transformer)
    return _save(pipe, folder, fp16)


def cached(kind: str, *, fp16: bool = False) -> Path:
    """The tiny pipeline ``kind`` ("sd" or "flux"), built once per version of this file and of
    diffusers and kept under the temp folder (building one costs 20-40 s on a loaded machine).
    Tests copy it before changing it."""
    import diffusers

    key = hashlib.sha256(Path(__file__).read_bytes() + diffusers.__version__.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"fitcheck-tiny-pipelines-{key}" / f"{kind}{'-fp16' if fp16 else ''}"
    if (folder / "model_index.json").is_file():
        return folder
    partial = folder.parent / f".{folder.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    (build_sd if kind == "sd" else build_flux)(partial, fp16=fp16)
    shutil.rmtree(partial.parent / f"{partial.name}-tok", ignore_errors=True)
    try:
        partial.rename(folder)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    return folder
