"""The shapes training prices, from the model layer's facts: linear projections per decoder layer,
trainable parameters per method, the largest trainable tensor.

Only :mod:`planner.model` facts are read (:class:`~planner.model.footprint.Footprint` and its
:class:`~planner.model.arch.Arch`); nothing here touches a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.arch import Arch
from planner.model.footprint import Footprint

# transformers 5 fuses routed experts into 3-D parameters (conversion_mapping.py), which are not
# nn.Linear: peft's LoRA cannot target them by module name, so an MoE model's MLP targets apply
# to its dense and shared-expert projections only.
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True, slots=True)
class Linear:
    """One projection of a decoder layer: its module name and (in_features, out_features)."""

    name: str
    fan_in: int
    fan_out: int

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out


def layer_linears(arch: Arch) -> tuple[Linear, ...]:
    """The Llama-style projections of one decoder layer (q, k, v, o, and the SwiGLU MLP when the
    layer is dense)."""
    h = arch.hidden_size
    q = arch.num_heads * arch.k_head_dim
    k = arch.num_kv_heads * arch.k_head_dim
    v = arch.num_kv_heads * arch.v_head_dim
    out = [Linear("q_proj", h, q), Linear("k_proj", h, k), Linear("v_proj", h, v), Linear("o_proj", arch.num_heads * arch.v_head_dim, h)]
    if not arch.is_moe:
        i = arch.intermediate_size
        out += [Linear("gate_proj", h, i), Linear("up_proj", h, i), Linear("down_proj", i, h)]
    return tuple(out)


def kv_width(arch: Arch) -> int:
    """Features of one token's K plus V projections (grouped-query attention keeps fewer heads)."""
    return arch.num_kv_heads * (arch.k_head_dim + arch.v_head_dim)


def lora_parameters(arch: Arch, r: int, targets: tuple[str, ...]) -> tuple[int, int, int]:
    """(trainable parameters, adapter tensors, elements of the largest adapter tensor) of LoRA rank
    ``r`` on ``targets`` in every decoder layer: ``r x (in + out)`` per targeted linear (A is
    r x in, B is out x r; peft tuners/lora/layer.py ``update_layer``)."""
    chosen = [lin for lin in layer_linears(arch) if lin.name in targets]
    per_layer = sum(r * (lin.fan_in + lin.fan_out) for lin in chosen)
    largest = max((r * max(lin.fan_in, lin.fan_out) for lin in chosen), default=0)
    return per_layer * arch.num_layers, 2 * len(chosen) * arch.num_layers, largest


def untargeted(arch: Arch, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Targets asked for that the model's layers do not hold as linears (MoE experts)."""
    names = {lin.name for lin in layer_linears(arch)}
    return tuple(t for t in targets if t not in names)


def largest_tensor(fp: Footprint) -> int:
    """Elements of the model's largest parameter: the largest linear, or an embedding or LM head
    (usually the largest, vocab x hidden)."""
    best = fp.largest_linear
    for u in fp.units:
        for role in ("embed", "head"):
            s = u.role(role)
            if s.tensors:
                best = max(best, s.params // s.tensors)
        e = u.role("expert")
        if e.tensors:
            best = max(best, e.params // e.tensors)
    return best


def small_parameters(fp: Footprint, below: int) -> int:
    """Parameters held in tensors of fewer than ``below`` elements (norm weights, biases): the
    aggregate ``float`` role of each unit, taken per tensor on average."""
    total = 0
    for u in fp.units:
        s = u.role("float")
        if s.tensors and s.params // s.tensors < below:
            total += s.params
    return total


def factored_elements(fp: Footprint) -> int:
    """Elements of Adafactor's second-moment state for the whole model: rows + columns of every
    matrix (transformers optimization.py ``Adafactor._get_options``: factored when ndim >= 2), the
    full size of every vector."""
    arch = fp.arch
    per_layer = sum(lin.fan_in + lin.fan_out for lin in layer_linears(arch))
    if arch.is_moe:
        e_i = arch.expert_intermediate_size or arch.intermediate_size
        # gate_up [E, 2I, h] and down [E, h, I]: rows+cols over the last two dims, per expert
        per_layer += arch.num_experts * ((2 * e_i + arch.hidden_size) + (arch.hidden_size + e_i))
    matrices = per_layer * arch.num_layers
    embeds = sum(1 for u in fp.units for role in ("embed", "head") if u.role(role).tensors)
    matrices += embeds * (arch.vocab_size + arch.hidden_size)
    vectors = sum(u.role("float").params for u in fp.units)
    return matrices + vectors
