"""Memory of one training step on one device: weights, gradients, optimizer states, the step's
transient, saved activations and the loss's transients.

The activation coefficients were counted with ``torch.autograd.graph.saved_tensors_hooks`` on CPU
(transformers 5.24, peft, torch 2.13, SDPA attention; every distinct storage that autograd saves,
parameters excluded), fitted on random Llama-style models by varying one size at a time (hidden
h, K/V width, intermediate I, heads, LoRA rank r, vocab V; 2 vs 4 layers to separate the layers
from the rest). The fits were exact to the byte for every configuration tried; see
docs/training.md ("Where the numbers come from"). Bytes per token of one sequence:

    layer = A_h*h + A_kv*kv + A_I*I + A_r*r*targets + 4*(heads + 2)
    rest  = 4*V + R_h*h + 20 (8 under LoRA), and R_hd*head_dim per position (rotary cos/sin,
            shared by the sequences of a batch)

``4*(heads + 2)`` is SDPA's fp32 log-sum-exp per head and RMSNorm's two fp32 rsqrt; ``4*V`` is the
fp32 log_softmax the loss saves (transformers' ForCausalLMLoss upcasts the logits).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.arch import Arch
from planner.model.bnb import nf4_bytes
from planner.model.footprint import Footprint
from planner.runtimes.training import shapes
from planner.runtimes.training.settings import TrainingSettings


@dataclass(frozen=True, slots=True)
class Coeffs:
    """Saved bytes per token (see the module docstring) and the autocast weight cache."""

    a_h: int
    a_kv: int
    a_i: int
    a_r: int  # per LoRA target
    r_h: int
    r_hd: int
    cache: int  # bytes per trainable linear parameter that autocast keeps cast for the backward
    residual: int  # bytes per element of the residual stream (what checkpointing keeps per layer)


# (method kind, precision) -> coefficients, each measured as the module docstring says:
#   full fp32:              per layer 4*(8h + 2kv + 4I), rest 4*(3h + 2hd)
#   full bf16 (pure):       per layer 20h + 4kv + 8I (RMSNorm's fp32 upcast adds 2 B per h), rest 8h + 4hd
#   full bf16-mixed (fp32 weights under torch.autocast bf16): 28h + 8kv + 8I, rest 10h + 8hd, and
#       autocast's weight cache, 2 B per linear parameter (torch caches casts of leaf tensors that
#       require grad: aten/src/ATen/autocast_mode.cpp ``cached_cast``)
#   lora fp32:              6h + 2kv + 4I + 7r per layer (x4 B), rest 8hd
#   lora bf16 base + fp32 adapters under autocast: 24h + 4kv + 8I + 2r per target, rest 4hd, and
#       the cache of the adapters (2 B per adapter parameter)
_COEFFS: dict[tuple[str, str], Coeffs] = {
    ("full", "fp32"): Coeffs(32, 8, 16, 0, 12, 8, 0, 4),
    ("full", "bf16"): Coeffs(20, 4, 8, 0, 8, 4, 0, 2),
    ("full", "mixed"): Coeffs(28, 8, 8, 0, 10, 8, 2, 4),
    ("lora", "fp32"): Coeffs(24, 8, 16, 4, 0, 8, 0, 4),
    ("lora", "mixed"): Coeffs(24, 4, 8, 2, 0, 4, 2, 2),
}
# Constant bytes per token: token ids and labels (int64) and the final norm's rsqrt (measured 20;
# 8 under LoRA, where the frozen embedding and norm save less).
_REST_FIXED = 20
_REST_FIXED_LORA = 8
# Cross-entropy's backward holds two more fp32 tensors of the logits' size at once (the gradient
# of log_softmax's output and of its input; torch's log_softmax_backward) while the saved
# activations are all still alive; with 16-bit logits the gradient is cast back (2 B more).
LOSS_BACKWARD_FP32 = 2
# bitsandbytes' 8-bit optimizers keep fp32 states for tensors under 4096 elements
# (bitsandbytes/optim/optimizer.py, Optimizer8bit ``min_8bit_size=4096``) and, for the others, one
# fp32 absmax per 256-element block per state (``blocksize = 256`` in ``init_state``).
BNB_MIN_8BIT = 4096
BNB_BLOCK = 256


def kind(s: TrainingSettings) -> tuple[str, str]:
    """(method family, precision family) of the activation coefficients."""
    method = "full" if s.method == "full" else "lora"
    if s.precision == "fp32":
        return method, "fp32"
    # DeepSpeed's bf16/fp16 modes convert the module to 16 bits (master weights live in the
    # optimizer) and FSDP's MixedPrecision casts each gathered unit: the forward runs like pure
    # 16-bit weights, without autocast and its cache
    if s.precision == "bf16" or (method == "full" and s.strategy not in ("single", "ddp")):
        return method, "bf16" if method == "full" else "mixed"
    return method, "mixed"


def per_token_layer(arch: Arch, s: TrainingSettings) -> int:
    """Saved bytes per token of one sequence in one decoder layer."""
    c = _COEFFS[kind(s)]
    targets = len(s.lora_targets) if s.method != "full" else 0
    return (c.a_h * arch.hidden_size + c.a_kv * arch.num_kv_heads * arch.k_head_dim + c.a_i * _mlp_width(arch)
            + c.a_r * s.lora_r * targets + 4 * (arch.num_heads + 2))


def per_token_rest(arch: Arch, s: TrainingSettings) -> int:
    """Saved bytes per token outside the decoder layers (embedding, final norm, LM head input, loss)."""
    c = _COEFFS[kind(s)]
    return 4 * arch.vocab_size + c.r_h * arch.hidden_size + (_REST_FIXED if s.method == "full" else _REST_FIXED_LORA)


def rotary(arch: Arch, s: TrainingSettings, seq: int) -> int:
    """The rotary cos and sin tables every layer saves: one per position, shared by the batch."""
    return _COEFFS[kind(s)].r_hd * arch.k_head_dim * seq


def _mlp_width(arch: Arch) -> int:
    # MoE: the active experts' MLPs see each token (top-k of them), plus any shared expert
    if arch.is_moe:
        e_i = arch.expert_intermediate_size or arch.intermediate_size
        return e_i * max(1, arch.num_experts_per_tok) + (arch.intermediate_size if arch.num_shared_experts else 0)
    return arch.intermediate_size


def activations(arch: Arch, s: TrainingSettings, *, seq: int, batch: int) -> int:
    """Saved activations at the end of the forward, with the loss's backward transient (the peak
    of the activations, at the start of the backward)."""
    tokens = seq * batch
    layer = per_token_layer(arch, s)
    loss = tokens * arch.vocab_size * (4 * LOSS_BACKWARD_FP32 + (0 if s.precision == "fp32" else 2))
    rest = tokens * per_token_rest(arch, s) + rotary(arch, s, seq) + loss
    if s.gradient_checkpointing:
        # each layer keeps only its input (the residual stream); the backward recomputes one layer
        # at a time, whose saved set is alive while its gradient is taken -- after the loss's
        # backward has freed its transients, so the two do not add up (llama-20m, seq 1024 x 2:
        # measured 208 MiB above the states at the backward's peak; keep + rest + loss = 221)
        keep = arch.num_layers * tokens * arch.hidden_size * _COEFFS[kind(s)].residual
        return keep + tokens * per_token_rest(arch, s) + rotary(arch, s, seq) + max(loss, tokens * layer)
    return arch.num_layers * tokens * layer + rest


@dataclass(frozen=True, slots=True)
class Parts:
    """One device's training memory, by part (bytes)."""

    weights: int
    gradients: int
    optimizer: int
    step: int  # the optimizer step's transient
    activations: int
    cache: int  # autocast's cast weights (alive from the forward to the end of the backward)


def parts(fp: Footprint, s: TrainingSettings, *, cpu: bool, foreach: bool, seq: int | None = None,
          batch: int | None = None) -> Parts:
    """The parts of one replica's memory (before any sharding across GPUs)."""
    arch = fp.arch
    seq = seq or s.seq
    batch = batch or s.batch
    trainable = s.trainable_parameters
    if s.method == "full":
        master = 4 if s.precision in ("fp32", "bf16-mixed", "fp16-mixed") else 2
        weights = fp.parameters * master
        grad_width = master
        largest = shapes.largest_tensor(fp)
        small = shapes.small_parameters(fp, BNB_MIN_8BIT)
        cache = 2 * _linear_params(fp) if kind(s)[1] == "mixed" else 0
    else:
        weights = base_weights(fp, s, cpu=cpu) + 4 * trainable  # peft keeps adapters in fp32
        grad_width = 4
        _, _, largest = shapes.lora_parameters(arch, s.lora_r, s.lora_targets)
        small = trainable if largest < BNB_MIN_8BIT else 0
        cache = 2 * trainable if kind(s)[1] == "mixed" else 0
    gradients = trainable * grad_width
    optimizer = optimizer_bytes(fp, s, trainable=trainable, width=grad_width, small=small)
    step = step_transient(s, trainable=trainable, width=grad_width, largest=largest, foreach=foreach)
    return Parts(weights, gradients, optimizer, step, activations(arch, s, seq=seq, batch=batch), cache)


def base_weights(fp: Footprint, s: TrainingSettings, *, cpu: bool) -> int:
    """The frozen base model of LoRA (compute dtype) or QLoRA (bnb nf4 linears, the rest in the
    compute dtype)."""
    width = s.compute_bytes
    total = 0
    for u in fp.units:
        for role, st in u.roles.items():
            if role == "linear" and s.method == "qlora":
                total += nf4_bytes(st.params, st.tensors, cpu=cpu)
            elif role in ("packed", "qaux", "int"):
                total += st.bytes
            else:
                total += st.params * width
    return total


def _linear_params(fp: Footprint) -> int:
    return sum(u.role("linear").params + u.role("expert").params + u.role("head").params for u in fp.units)


def optimizer_bytes(fp: Footprint, s: TrainingSettings, *, trainable: int, width: int, small: int) -> int:
    """Optimizer state for ``trainable`` parameters of ``width`` bytes each."""
    if s.optimizer == "adamw":
        return 2 * trainable * width  # exp_avg and exp_avg_sq, in the parameters' dtype (torch/optim/adamw.py)
    if s.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        big = trainable - small
        return 2 * big + 2 * 4 * (-(-big // BNB_BLOCK)) + 2 * 4 * small
    if s.optimizer == "sgd":
        return trainable * width  # momentum_buffer (torch/optim/sgd.py)
    if s.optimizer == "adafactor":
        if s.method == "full":
            return 4 * shapes.factored_elements(fp)
        # LoRA: A (r x in) and B (out x r) are factored into rows + columns
        per = sum(2 * s.lora_r + lin.fan_in + lin.fan_out for lin in shapes.layer_linears(fp.arch) if lin.name in s.lora_targets)
        return 4 * per * fp.arch.num_layers
    raise ValueError(s.optimizer)


# torch's foreach AdamW (the default for CUDA tensors: torch/optim/optimizer.py
# ``_default_to_fused_or_foreach``) computes sqrt(exp_avg_sq) for every parameter at once
# (torch/optim/adamw.py ``_multi_tensor_adamw``: ``exp_avg_sq_sqrt = torch._foreach_sqrt(...)``):
# one more copy of the parameters. The for-loop step (CPU tensors) makes that copy one tensor at a
# time, plus the update: about twice the largest tensor. bitsandbytes' 8-bit step works per tensor
# in place; Adafactor builds the update and its square per tensor (transformers optimization.py).
STEP_LOOP_TENSORS = 2
STEP_ADAFACTOR_TENSORS = 3


def step_transient(s: TrainingSettings, *, trainable: int, width: int, largest: int, foreach: bool) -> int:
    if s.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return STEP_LOOP_TENSORS * largest * 4
    if s.optimizer == "adafactor":
        return STEP_ADAFACTOR_TENSORS * largest * 4
    if foreach:
        return trainable * width
    return STEP_LOOP_TENSORS * largest * width
