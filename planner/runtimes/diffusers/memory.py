"""Memory of a pipeline run, per phase: text encoding, denoising, VAE decode.

Inference holds no activations for a backward pass, so a phase's working memory is the peak of
one forward: linear in the latent pixels times the effective batch (prompts x 2 under
classifier-free guidance), plus an N^2 attention term only where attention is computed without
SDPA (attention slicing). Each formula's coefficients were fitted on CPU measurements of real
component shapes with random weights (benchmarks/diffusers/calib.jsonl, RESULTS.md): peak RSS
over the RSS before the forward, MALLOC_MMAP_THRESHOLD_=65536.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.units import MiB
from planner.runtimes.diffusers.facts import Component, PipelineFacts
from planner.runtimes.diffusers.settings import DTYPE_BYTES, DiffusersSettings

# --- coefficients (bytes = FIXED + K x effective batch x positions x channels x dtype bytes) --
# UNet: positions = latent pixels at level 0, channels = block_out_channels[0]. Fitted on the real
# SD 1.5 UNet, fp32 (calib.jsonl): x = batch x positions x channels x 4 B = 2.5 / 5 / 10 / 40 MiB
# (256^2 CFG, 512^2 one pass, 512^2 CFG, 1024^2 CFG) peaked +171 / +187 / +303 / +1083 MiB. Through
# the two largest: K = 26, 43 MiB fixed. Below about 5 MiB the peak stops falling: a floor of 1.7x
# the largest leaf module's weights (112.5 MiB fp32 for SD 1.5: 191 MiB), which scales with the model
# (working copies of the largest conv weights, the likely part).
UNET_FIXED = 43 * MiB
UNET_K = 26.0
# A UNet whose full-resolution level has no attention (SDXL: down_block_types[0] = "DownBlock2D")
# holds less per latent pixel: the real SDXL UNet (all 2.57B parameters, bf16, CFG) measured
# +355 / +219 MiB at 1024^2 / 768^2 (x = 20 / 11.25 MiB), and with one transformer layer per
# block +355 MiB bf16 and +677 MiB fp32 at 1024^2 (calib.jsonl rows 22-23, 26, 28: depth adds
# nothing, the dtype scales it): K = 15.8 through them. SD 1.5's K (26) predicted +563 / +336.
UNET_K_NO_ATTN0 = 15.8
UNET_FLOOR_LEAVES = 1.7
# With attention slicing: the tensors live beside the sliced scores, per x as above. Fitted on the
# "auto" row (calib.jsonl, 512^2 CFG: +677 MiB = 43 fixed + 12.2 x 10 MiB + 2 x 4 x 4096^2 x 4 B);
# "max" (one slice of 128 MiB) then stays under the feed-forward's peak, as measured (+303 MiB).
UNET_ATTN_K = 12.2
# DiT (Flux, SD3): positions = image tokens (latent pixels / patch^2) + text tokens, channels =
# heads x head_dim. Fitted on the Flux-dev transformer at its real width with one double and one
# single block (a no-grad forward frees each block's tensors, so depth does not add), fp32, 512
# text tokens (calib.jsonl): +183 / +304 / +847 MiB at 256^2 / 512^2 / 1024^2 (768 / 1536 / 4608
# tokens x 3072 x 4 B = 9 / 18 / 54 MiB): through 512^2 and 1024^2, K = 15.1 and 32 MiB fixed;
# 40 MiB keeps 256^2 within 6 MiB.
DIT_FIXED = 40 * MiB
DIT_K = 15.1
# SD3's MMDiT (joint blocks only, no single blocks with Flux's 4x-wide parallel MLP): the
# SD3.5-large transformer at its real width (2432) with 2 of its 38 blocks, bf16, CFG, 333 text
# tokens (calib.jsonl rows 24, 27): +553 / +337 MiB at 1024^2 / 768^2 (x = 41.1 / 24.5 MiB):
# K = 13.0 and 19 MiB fixed through both; Flux's coefficients predicted +660 / +409.
MMDIT_FIXED = 19 * MiB
MMDIT_K = 13.0
# VAE decode: positions = output pixels, channels = block_out_channels[0] (the decoder's last,
# full-resolution level). Fitted on the SD VAE, fp32, one image: measured here +260 MiB at 256^2 and
# +980 MiB at 512^2 (calib.jsonl), the CPU runs 2180 and 3860 at 768^2 and 1024^2 (the same
# 260 and 980 at the small sizes, so MiB): one line through all four, 3840 B per pixel = 7.5 x 128
# channels x 4 B, and 20 MiB fixed.
VAE_FIXED = 20 * MiB
VAE_K = 7.5
# A batch of b images costs max(1, 0.8 b) times one image's variable part (calib.jsonl: batch 2 at
# 256^2 and 512^2 1.59x and 1.60x, batch 4 at 256^2 3.19x). VAE slicing decodes one at a time.
VAE_BATCH_SHARE = 0.8
# Tiled decode keeps every decoded tile, the blended rows and the output: 3 channels per pixel,
# this many copies (autoencoder_kl.py:364-400).
TILE_COPIES = 4
# Text encoders: positions = tokens, channels = the feed-forward width, plus the attention
# scores (transformers' eager attention for T5: its position bias). Small next to the rest.
TEXT_FIXED = 32 * MiB
TEXT_K = 4.0
# Sliced attention (attention_processor.py SlicedAttnProcessor): scores and their softmax,
# 2 x slice x N^2, for the largest attention level (slice: heads // 2 for "auto", 1 for "max",
# unet_2d_condition.py:754-760).
SLICED_COPIES = 2

# Tokens of the prompt embeddings the denoiser attends to, by pipeline: Flux and SD3 take the T5
# sequence (FluxPipeline max_sequence_length=512, pipeline_flux.py __call__; SD3 256 T5 tokens
# after CLIP's 77, pipeline_stable_diffusion_3.py __call__ max_sequence_length=256).
FLUX_TEXT_TOKENS = 512
SD3_TEXT_TOKENS = 77 + 256
CLIP_TOKENS = 77


@dataclass(frozen=True, slots=True)
class Phase:
    """One phase of a pipeline call.

    Attributes:
        name: "text encoding", "denoising" or "VAE decode".
        components: the components that run in it.
        activations: its working memory on the compute device, in bytes.
        upcast: components run in fp32 in this phase (SDXL's VAE with force_upcast).
    """

    name: str
    components: tuple[str, ...]
    activations: int
    upcast: tuple[str, ...] = ()


def vae_scale(facts: PipelineFacts) -> int:
    """Pixels per latent pixel: 2^(len(vae.block_out_channels) - 1) (8 for every SD/Flux VAE)."""
    vae = facts.vae
    blocks = vae.config.get("block_out_channels", [0, 0, 0, 0]) if vae else [0, 0, 0, 0]
    return 2 ** (len(blocks) - 1)


def is_unet(c: Component) -> bool:
    return "UNet" in c.cls


def default_guidance(facts: PipelineFacts) -> bool:
    """Whether the pipeline runs classifier-free guidance by default: not Flux (guidance-distilled
    dev, timestep-distilled schnell: FluxPipeline's true_cfg_scale defaults to 1.0)."""
    return not facts.pipeline.startswith("Flux")


def default_resolution(facts: PipelineFacts) -> tuple[int, int]:
    """The pipeline's default image size: the denoiser's sample_size x the VAE scale (SD 1.5:
    64 x 8 = 512; SDXL 128 x 8 = 1024), 1024 for Flux (default_sample_size=128)."""
    den = facts.denoiser
    size = den.config.get("sample_size")
    if not isinstance(size, int) or facts.pipeline.startswith("Flux"):
        size = 128
    side = size * vae_scale(facts)
    return side, side


def text_tokens(facts: PipelineFacts, dropped: tuple[str, ...]) -> int:
    if facts.pipeline.startswith("Flux"):
        return FLUX_TEXT_TOKENS
    if facts.pipeline.startswith("StableDiffusion3"):
        return SD3_TEXT_TOKENS if "text_encoder_3" not in dropped else CLIP_TOKENS
    return CLIP_TOKENS


def _levels(cfg: dict) -> list[tuple[int, int]]:
    """(downsampling level, heads) of each UNet down block with attention."""
    types = cfg.get("down_block_types") or []
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim") or 8
    channels = cfg.get("block_out_channels") or [320]
    out = []
    for i, t in enumerate(types):
        if "Attn" not in str(t):
            continue
        h = heads[i] if isinstance(heads, list) and i < len(heads) else heads
        if not isinstance(h, int) or h <= 0:
            h = 8
        out.append((i, h))
    return out or [(0, 8)] if channels else []


def denoise_activations(facts: PipelineFacts, s: DiffusersSettings) -> int:
    den = facts.denoiser
    a = DTYPE_BYTES[s.dtype]
    w, h = s.resolution
    scale = vae_scale(facts)
    batch = s.batch * (2 if s.guidance else 1)
    lat = (h // scale) * (w // scale)
    cfg = den.config
    if is_unet(den):
        c0 = (cfg.get("block_out_channels") or [320])[0]
        k = UNET_K if any(level == 0 for level, _ in _levels(cfg)) else UNET_K_NO_ATTN0
        linear = k * batch * lat * c0 * a
        if s.attention_slicing:
            # the sliced scores are live while the attention runs, beside that block's own
            # tensors but not the feed-forward's: the peak is the larger of the two
            worst = 0
            for level, heads in _levels(cfg):
                n = lat // (4 ** level)
                per = heads // 2 if s.attention_slicing == "auto" else 1
                worst = max(worst, SLICED_COPIES * max(per, 1) * n * n * a)
            linear = max(linear, UNET_ATTN_K * batch * lat * c0 * a + worst)
        return int(max(UNET_FIXED + linear, UNET_FLOOR_LEAVES * den.largest_leaf * a))
    patch = cfg.get("patch_size") or (2 if facts.pipeline.startswith("StableDiffusion3") else 1)
    # Flux packs 2x2 latent pixels into one token (pipeline_flux.py _pack_latents) with patch_size 1
    tokens = lat // 4 if facts.pipeline.startswith("Flux") else lat // (patch * patch)
    width = int(cfg.get("num_attention_heads") or 24) * int(cfg.get("attention_head_dim") or 128)
    fixed, k = (MMDIT_FIXED, MMDIT_K) if facts.pipeline.startswith("StableDiffusion3") else (DIT_FIXED, DIT_K)
    return int(fixed + k * batch * (tokens + text_tokens(facts, s.dropped)) * width * a)


def vae_upcast(facts: PipelineFacts, s: DiffusersSettings) -> bool:
    """SDXL pipelines decode in fp32 when the VAE is fp16 and its config sets force_upcast
    (pipeline_stable_diffusion_xl.py:1264)."""
    vae = facts.vae
    return (vae is not None and s.dtype == "float16" and bool(vae.config.get("force_upcast", True))
            and facts.pipeline.startswith("StableDiffusionXL"))


def decode_activations(facts: PipelineFacts, s: DiffusersSettings) -> int:
    vae = facts.vae
    if vae is None:
        return 0
    a = 4 if vae_upcast(facts, s) else DTYPE_BYTES[s.dtype]
    w, h = s.resolution
    c = (vae.config.get("block_out_channels") or [128])[0]
    images = 1 if s.vae_slicing else s.batch
    tile = int(vae.config.get("sample_size") or 512)
    tile = tile[0] if isinstance(tile, list) else tile
    spread = max(1.0, VAE_BATCH_SHARE * images)
    if s.vae_tiling and (w > tile or h > tile):
        # autoencoder_kl.py:161,200: tiles only above sample_size; each tile is one decode
        one = VAE_FIXED + VAE_K * spread * tile * tile * c * a
        return int(one + TILE_COPIES * s.batch * 3 * w * h * a)
    return int(VAE_FIXED + VAE_K * spread * w * h * c * a)


def text_activations(c: Component, facts: PipelineFacts, s: DiffusersSettings) -> int:
    cfg = c.config
    a = DTYPE_BYTES[s.dtype]
    tokens = CLIP_TOKENS
    if "T5" in c.cls:
        tokens = FLUX_TEXT_TOKENS if facts.pipeline.startswith("Flux") else 256
    ff = int(cfg.get("intermediate_size") or cfg.get("d_ff") or 4 * int(cfg.get("hidden_size") or cfg.get("d_model") or 768))
    heads = int(cfg.get("num_attention_heads") or cfg.get("num_heads") or 12)
    prompts = s.batch * (2 if s.guidance else 1)
    return int(TEXT_FIXED + prompts * (TEXT_K * tokens * ff + 2 * heads * tokens * tokens) * a)


def phases(facts: PipelineFacts, s: DiffusersSettings) -> tuple[Phase, ...]:
    """The phases of one pipeline call under ``s``, in order."""
    live = [c for c in facts.components if c.name not in s.dropped]
    encoders = [c for c in live if c.role == "text_encoder"]
    out = [Phase("text encoding", (c.name,), text_activations(c, facts, s)) for c in encoders]
    out.append(Phase("denoising", (facts.denoiser.name,), denoise_activations(facts, s)))
    if facts.vae is not None:
        out.append(Phase("VAE decode", (facts.vae.name,), decode_activations(facts, s),
                         upcast=(facts.vae.name,) if vae_upcast(facts, s) else ()))
    for c in live:
        if c.role == "other":  # the safety checker runs on the decoded images (224 x 224 crops)
            out.append(Phase("safety check", (c.name,), text_activations(c, facts, s)))
    return tuple(out)


def weight_bytes(c: Component, s: DiffusersSettings) -> int:
    """Bytes of ``c``'s weights on its device under ``s``: the dtype, or bitsandbytes for its
    Linear weights (nf4: 0.5 B + an fp32 absmax per 64-element block, bitsandbytes functional.py
    quantize_4bit blocksize=64; int8: 1 B + an fp32 scale per row)."""
    a = DTYPE_BYTES[s.dtype]
    q = s.quant_of(c.name)
    if not q:
        return c.parameters * a
    kept = kept_linear(c)
    linear = c.linear_parameters - kept
    # kept Linears load in fp32 under fp16, else in the pipeline dtype (transformers
    # modeling_utils.py:3851 _get_dtype_plan, transformers 5.24)
    rest = (c.parameters - c.linear_parameters) * a + kept * (4 if s.dtype == "float16" else a)
    if q == "nf4":
        return int(rest + linear * (0.5 + 4 / 64))
    return int(rest + linear * 1.0 + linear // 1024 * 4)


def kept_linear(c: Component) -> int:
    """Linear parameters bnb leaves unquantized: T5's feed-forward output projections. T5 models
    declare ``_keep_in_fp32_modules = ["wo"]`` (transformers models/t5/modeling_t5.py:542) and the
    bnb quantizers add those to ``modules_to_not_convert`` (quantizers/quantizer_bnb_4bit.py:122,
    quantizers/base.py:275): one d_ff x d_model Linear per block (T5-XXL: 1.0B of its 4.6B Linear
    parameters)."""
    if "T5" not in c.cls:
        return 0
    cfg = c.config
    return int(cfg.get("num_layers") or 0) * int(cfg.get("d_ff") or 0) * int(cfg.get("d_model") or 0)
