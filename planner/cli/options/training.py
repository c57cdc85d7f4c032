"""``--train`` and the other fine-tuning options (they imply the training runtime)."""

from __future__ import annotations

from typing import Any

import click

OPTIONS = [
    click.option("--train", "train", type=click.Choice(["full", "lora", "qlora"]),
                 help="Plan fine-tuning instead of inference: full, LoRA or QLoRA (implies --runtime training)."),
    click.option("--seq", "seq", type=click.IntRange(1, 10_000_000), help="Training: tokens per sequence (default: --context)."),
    click.option("--grad-accum", "grad_accum", type=click.IntRange(1, 100_000), help="Training: micro-batches per optimizer step (default 1)."),
    click.option("--optimizer", "optimizer", type=click.Choice(["adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor"]),
                 help="Training: the optimizer (default: AdamW, or 8-bit AdamW when only that fits)."),
    click.option("--lora-r", "lora_r", type=click.IntRange(1, 4096), help="Training: LoRA rank (default 16)."),
    click.option("--lora-targets", "lora_targets", metavar="NAMES",
                 help="Training: comma-separated modules LoRA adapts (default: q,k,v,o,gate,up,down projections)."),
    click.option("--gradient-checkpointing", "gradient_checkpointing", type=click.Choice(["auto", "on", "off"]),
                 help="Training: recompute activations in the backward (auto: only when needed; default auto)."),
    click.option("--gpus", "gpus", type=click.IntRange(0, 4096),
                 help="Training: GPUs to train on, data-parallel, per node on a cluster (default: every GPU of the machine; 0: the CPU)."),
]

_TRAIN_ONLY = ("seq", "grad_accum", "optimizer", "lora_r", "lora_targets", "gradient_checkpointing", "gpus")


def collect(o: dict[str, Any]) -> dict[str, Any]:
    """The training requests the user gave (and "runtime": "training" when any was)."""
    out: dict[str, Any] = {}
    if o.get("train"):
        out["train"] = o["train"]
    for key in _TRAIN_ONLY:
        if o.get(key) is not None:
            out[key] = o[key]
    if "lora_targets" in out:
        out["lora_targets"] = tuple(t.strip() for t in str(out["lora_targets"]).split(",") if t.strip())
    if out:
        out["runtime"] = "training"
    return out
