"""The diffusers runtime's settings record: the switches one plan turns on."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import Settings

DTYPES = ("float16", "bfloat16", "float32")
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# "none": every component on the accelerator; "model": enable_model_cpu_offload (one component
# at a time, pipeline_utils.py:1174); "sequential": enable_sequential_cpu_offload (leaf modules,
# pipeline_utils.py:1293); "group": enable_group_offload(offload_type="block_level",
# num_blocks_per_group=1) (pipeline_utils.py:1361), with CUDA streams or to a disk folder.
OFFLOADS = ("none", "model", "group", "sequential")
QUANTS = ("nf4", "int8")


@dataclass(frozen=True, slots=True)
class DiffusersSettings(Settings):
    """One way to run a pipeline.

    Attributes:
        device: where it computes: "cuda:0", "mps" or "cpu".
        dtype: the pipeline's ``torch_dtype`` ("float16", "bfloat16", "float32").
        offload: "none", "model", "group" or "sequential".
        group_stream: group offload overlaps transfers with compute on a CUDA stream (needs
            pinned RAM for a copy of the offloaded weights).
        group_disk: group offload keeps the offloaded weights in a disk folder, not in RAM.
        vae_slicing: ``pipe.vae.enable_slicing()``: decode the batch one image at a time.
        vae_tiling: ``pipe.vae.enable_tiling()``: decode in tiles of the VAE's sample size.
        attention_slicing: ``pipe.enable_attention_slicing(...)`` slice size ("auto", "max") or "".
        quantized: (component, "nf4" | "int8") pairs: bitsandbytes through PipelineQuantizationConfig.
        dropped: components loaded as None (SD3's T5 encoder: text_encoder_3 and tokenizer_3).
        resolution: (width, height) in pixels.
        batch: images per call.
        guidance: classifier-free guidance on (two denoiser passes per step).
        steps: denoising steps.
        variant: the weight variant loaded ("fp16") or "".
    """

    device: str
    dtype: str
    offload: str
    resolution: tuple[int, int]
    batch: int
    guidance: bool
    steps: int
    group_stream: bool = False
    group_disk: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    attention_slicing: str = ""
    quantized: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()
    variant: str = ""

    def quant_of(self, component: str) -> str:
        """"nf4", "int8" or "" for ``component``."""
        return next((q for c, q in self.quantized if c == component), "")

    @property
    def label(self) -> str:
        parts = [SHORT[self.dtype]]
        parts += [f"{c} {q}" for c, q in self.quantized]
        parts += [f"no {c}" for c in self.dropped]
        if self.offload != "none":
            mode = {"model": "model offload", "sequential": "sequential offload", "group": "group offload"}[self.offload]
            if self.group_stream:
                mode += " (stream)"
            if self.group_disk:
                mode += " (disk)"
            parts.append(mode)
        if self.vae_slicing:
            parts.append("VAE slicing")
        if self.vae_tiling:
            parts.append("VAE tiling")
        if self.attention_slicing:
            parts.append(f"attention slicing {self.attention_slicing}")
        return ", ".join(parts) + f" on {self.device}"
