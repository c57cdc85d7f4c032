"""Tensor lists for checkpoints whose headers cannot be read without unpickling.

A repo with only ``pytorch_model*.bin`` has no header fitcheck may read: a pickle must never be
loaded to size it. The listing gives the files' sizes and config.json the shapes. For Llama-style
decoders the tensor list is rebuilt from the config (the same names and shapes transformers'
LlamaForCausalLM saves); for anything else, the listing's bytes are split into embeddings, head
and equal layers. Either way the total is scaled to the bytes the listing reports, since those
are what is really stored.
"""

from __future__ import annotations

from planner.core.records import Snapshot, Tensor
from planner.core.units import LOAD_DTYPE_BYTES
from planner.model.arch import Arch

_TO_ST = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
# Pickle framing and storage headers add a few KiB per tensor to .bin files (torch.save zip
# format); under 1 % of any model above 10M parameters, so listing bytes are taken as tensor bytes.


def synthesize(arch: Arch, snapshot: Snapshot) -> tuple[Tensor, ...]:
    """Tensors standing in for a .bin-only checkpoint, totalling the listing's weight bytes."""
    dtype = arch.torch_dtype if arch.torch_dtype in _TO_ST else "float32"
    st = _TO_ST[dtype]
    width = LOAD_DTYPE_BYTES[dtype]
    sizes = {f.path: f.size or 0 for f in snapshot.files}
    listed = sum(sizes.get(f, 0) for f in snapshot.weight_files)
    file = snapshot.weight_files[0] if snapshot.weight_files else "pytorch_model.bin"

    h, v, n = arch.hidden_size, arch.vocab_size, arch.num_layers
    kv = arch.num_kv_heads * arch.head_dim
    q = arch.num_heads * arch.head_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(n):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "mlp.gate_proj.weight", (arch.intermediate_size, h)),
            (p + "mlp.up_proj.weight", (arch.intermediate_size, h)),
            (p + "mlp.down_proj.weight", (h, arch.intermediate_size)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    shapes.append(("model.norm.weight", (h,)))
    if not arch.tie_word_embeddings:
        shapes.append(("lm_head.weight", (v, h)))

    template = sum(_numel(s) for _, s in shapes) * width
    if listed and abs(template - listed) > 0.05 * listed:
        # Not Llama-shaped: keep embeddings and head, spread the rest over the layers.
        fixed = v * h * width * (1 if arch.tie_word_embeddings else 2)
        per_layer = max(0, listed - fixed) // max(1, n) // width
        shapes = [("model.embed_tokens.weight", (v, h))]
        shapes += [(f"model.layers.{i}.mlp.weight", (max(1, per_layer // h), h)) for i in range(n)]
        if not arch.tie_word_embeddings:
            shapes.append(("lm_head.weight", (v, h)))
    return tuple(Tensor(name=name, dtype=st, shape=shape, nbytes=_numel(shape) * width, file=file) for name, shape in shapes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
