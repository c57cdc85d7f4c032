"""Tensor lists for checkpoints whose headers cannot be read without unpickling.

A repo with only ``pytorch_model*.bin`` has no header fitcheck may read: a pickle must never be
loaded to size it. The listing gives the files' sizes and config.json the shapes. For the families
whose module names fitcheck knows (Llama-named decoders, GPT-2) the tensor list is rebuilt from the
config, with the names and shapes transformers' model of that family has; when its total is more
than 5 % off the listing's bytes, those bytes are split into the family's embeddings, norms and
equal layers instead, since those are what is really stored. Any other family is refused: a
device_map in Llama names would not load it (from_pretrained: "device_map ... does not give any
device for transformer.wte.weight").
"""

from __future__ import annotations

from planner.core.errors import UnsupportedModel
from planner.core.records import Snapshot, Tensor
from planner.core.units import LOAD_DTYPE_BYTES
from planner.model.arch import Arch

_TO_ST = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
# Pickle framing and storage headers add a few KiB per tensor to .bin files (torch.save zip
# format); under 1 % of any model above 10M parameters, so listing bytes are taken as tensor bytes.

# Model types whose transformers model has exactly model.embed_tokens, model.layers.N, model.norm
# and (untied) lm_head holding parameters: checked on meta-device models of transformers 5.24
# (tests/test_review_leftovers.py builds each and compares). olmo (no norm weights), phi
# (final_layernorm) and phi3 are not in it; neither is any multimodal wrapper (its outer type differs).
LLAMA_NAMED = frozenset({
    "llama", "mistral", "ministral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "granite", "olmo2", "starcoder2", "cohere", "stablelm", "helium", "exaone4", "deepseek_v3",
})
# Families with their own names: transformers/models/gpt2/modeling_gpt2.py (GPT2Model: wte, wpe, h, ln_f).
OWN_NAMES = frozenset({"gpt2"})


def synthesize(arch: Arch, snapshot: Snapshot) -> tuple[Tensor, ...]:
    """Tensors standing in for a .bin-only checkpoint, totalling the listing's weight bytes."""
    dtype = arch.torch_dtype if arch.torch_dtype in _TO_ST else "float32"
    st = _TO_ST[dtype]
    width = LOAD_DTYPE_BYTES[dtype]
    sizes = {f.path: f.size or 0 for f in snapshot.files}
    listed = sum(sizes.get(f, 0) for f in snapshot.weight_files)
    file = snapshot.weight_files[0] if snapshot.weight_files else "pytorch_model.bin"

    if arch.outer_model_type != arch.model_type or arch.model_type not in LLAMA_NAMED | OWN_NAMES:
        raise UnsupportedModel(
            f"{snapshot.id}: only pickled pytorch_model*.bin weights, and fitcheck knows the module names of "
            f"{arch.outer_model_type[:40]} models only from safetensors headers",
            hint="plan a revision or copy with .safetensors weights (supported .bin-only families: "
                 + ", ".join(sorted(LLAMA_NAMED | OWN_NAMES)) + ")")
    if arch.model_type == "gpt2":
        return _gpt2(arch, st, width, listed, file)
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
        shapes.append(("model.norm.weight", (h,)))  # a device_map without it does not load
        if not arch.tie_word_embeddings:
            shapes.append(("lm_head.weight", (v, h)))
    return tuple(Tensor(name=name, dtype=st, shape=shape, nbytes=_numel(shape) * width, file=file) for name, shape in shapes)


def _gpt2(arch: Arch, st: str, width: int, listed: int, file: str) -> tuple[Tensor, ...]:
    """GPT2LMHeadModel's parameters (modeling_gpt2.py: Conv1D weights are [in, out]; the head is tied)."""
    h, v, n, inner = arch.hidden_size, arch.vocab_size, arch.num_layers, arch.intermediate_size
    pos = arch.max_position_embeddings or 1024  # GPT2Config's n_positions default (configuration_gpt2.py)
    fixed: list[tuple[str, tuple[int, ...]]] = [("transformer.wte.weight", (v, h)), ("transformer.wpe.weight", (pos, h))]
    tail: list[tuple[str, tuple[int, ...]]] = [("transformer.ln_f.weight", (h,)), ("transformer.ln_f.bias", (h,))]
    if not arch.tie_word_embeddings:
        tail.append(("lm_head.weight", (v, h)))
    layer = [("ln_1.weight", (h,)), ("ln_1.bias", (h,)), ("attn.c_attn.weight", (h, 3 * h)), ("attn.c_attn.bias", (3 * h,)),
             ("attn.c_proj.weight", (h, h)), ("attn.c_proj.bias", (h,)), ("ln_2.weight", (h,)), ("ln_2.bias", (h,)),
             ("mlp.c_fc.weight", (h, inner)), ("mlp.c_fc.bias", (inner,)), ("mlp.c_proj.weight", (inner, h)), ("mlp.c_proj.bias", (h,))]
    shapes = fixed + [(f"transformer.h.{i}.{name}", shape) for i in range(n) for name, shape in layer] + tail
    template = sum(_numel(s) for _, s in shapes) * width
    if listed and abs(template - listed) > 0.05 * listed:
        # other shapes than the config says: keep embeddings, norms and head, spread the rest over the layers
        per_layer = max(0, listed - sum(_numel(s) for _, s in fixed + tail) * width) // max(1, n) // width
        shapes = fixed + [(f"transformer.h.{i}.mlp.c_fc.weight", (h, max(1, per_layer // h))) for i in range(n)] + tail
    return tuple(Tensor(name=name, dtype=st, shape=shape, nbytes=_numel(shape) * width, file=file) for name, shape in shapes)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
