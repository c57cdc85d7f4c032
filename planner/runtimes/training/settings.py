"""The settings of one training plan (what the emitted script runs with)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import Settings

METHODS = ("full", "lora", "qlora")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor")
# the projections LoRA targets by default: every linear of a Llama-style block (QLoRA paper,
# Dettmers et al. 2023, sec. 4: LoRA on all linear layers is needed to match full fine-tuning)
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# "single": one device; "ddp": one full replica per GPU; DeepSpeed ZeRO stages 2 and 3, each with
# or without CPU offload of the optimizer (and, for stage 3, the parameters); FSDP full sharding;
# FSDP hybrid sharding (HYBRID_SHARD: full sharding within a node, replicas across nodes).
STRATEGIES = ("single", "ddp", "zero2", "zero2-offload", "zero3", "zero3-offload", "fsdp", "fsdp-hybrid")


@dataclass(frozen=True, slots=True)
class TrainingSettings(Settings):
    """How one training plan runs.

    Attributes:
        method: "full", "lora" or "qlora".
        optimizer: one of :data:`OPTIMIZERS`.
        gradient_checkpointing: recompute each decoder layer in the backward pass.
        precision: "bf16-mixed" or "fp16-mixed" (fp32 master weights, autocast), "bf16" (pure
            bf16 weights, gradients and optimizer states) or "fp32".
        seq: tokens per sequence.
        batch: sequences per micro-batch (per device).
        grad_accum: micro-batches per optimizer step.
        lora_r: LoRA rank (0 for full fine-tuning).
        lora_targets: the module names LoRA adapts (empty for full fine-tuning).
        gpus: GPUs used on each node (0: the CPU trains).
        strategy: one of :data:`STRATEGIES`.
        trainable_parameters: parameters the optimizer updates.
        max_batch: the largest micro-batch that fits at ``seq`` with these settings.
        max_seq: the largest sequence that fits at ``batch`` with these settings.
        nodes: machines trained on, each with ``gpus`` GPUs (1: one machine).
    """

    method: str
    optimizer: str
    gradient_checkpointing: bool
    precision: str
    seq: int
    batch: int
    grad_accum: int
    lora_r: int
    lora_targets: tuple[str, ...]
    gpus: int
    strategy: str
    trainable_parameters: int
    max_batch: int = 0
    max_seq: int = 0
    nodes: int = 1

    @property
    def world_size(self) -> int:
        """Data-parallel ranks in all: the GPUs of every node (accelerate's ``num_processes``)."""
        return self.gpus * self.nodes

    @property
    def zero_stage(self) -> int | None:
        """The DeepSpeed ZeRO stage, or None when DeepSpeed is not used."""
        return {"zero2": 2, "zero2-offload": 2, "zero3": 3, "zero3-offload": 3}.get(self.strategy)

    @property
    def offload(self) -> bool:
        return self.strategy.endswith("-offload")

    @property
    def compute_bytes(self) -> int:
        """Bytes per element of activations (the autocast or load dtype)."""
        return 4 if self.precision == "fp32" else 2
