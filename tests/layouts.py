"""Header layouts of the checkpoint formats people actually bring, for fixture repos.

Every builder returns ``{tensor name: (safetensors dtype, shape)}`` as the format's writer saves it
(names, dtypes, packed shapes), to be served as sparse files by the fake Hub or written as
header-only files. The shapes are those of the real formats:

- GPTQ (auto-gptq / gptqmodel): ``qweight`` I32 [in * bits / 32, out], ``qzeros`` I32
  [in / group, out * bits / 32], ``scales`` F16 [in / group, out], ``g_idx`` I32 [in];
- AWQ (GEMM): ``qweight`` I32 [in, out * bits / 32], ``qzeros`` I32 [in / group, out * bits / 32],
  ``scales`` F16 [in / group, out];
- bitsandbytes 4-bit: ``weight`` U8 [n / 2, 1], ``weight.absmax`` F32 [n / 64] (double quant: U8,
  plus ``nested_absmax`` F32 [ceil(n / 64 / 256)] and ``nested_quant_map`` F32 [256]),
  ``weight.quant_map`` F32 [16], ``weight.quant_state.bitsandbytes__nf4`` U8 [~80];
  8-bit: ``weight`` I8 [out, in], ``SCB`` F32 [out], ``weight_format`` U8 [] (as bnb 0.50 saves them);
- FP8: ``weight`` F8_E4M3 [out, in] with ``weight_scale_inv`` F32 [ceil(out / 128), ceil(in / 128)]
  (DeepSeek-V3, Qwen FP8), or per-tensor ``weight_scale`` F32 [] and ``input_scale`` F32 [];
- MXFP4 (gpt-oss): ``*_blocks`` U8 [E, out, in / 32, 16] and ``*_scales`` U8 [E, out, in / 32];
- compressed-tensors: pack-quantized ``weight_packed`` I32 [out, in * bits / 32], ``weight_scale``
  BF16 [out, in / group], ``weight_shape`` I64 [2]; float-quantized ``weight`` F8_E4M3 [out, in],
  ``weight_scale`` BF16 [out, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

TensorSpec = tuple[str, tuple[int, ...]]
Linear = Callable[[str, int, int], dict[str, TensorSpec]]


def plain(dtype: str = "F16") -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight": (dtype, (out, inp))}
    return linear


def gptq(bits: int = 4, group: int = 128) -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.qweight": ("I32", (inp * bits // 32, out)), f"{name}.qzeros": ("I32", (inp // group, out * bits // 32)),
                f"{name}.scales": ("F16", (inp // group, out)), f"{name}.g_idx": ("I32", (inp,))}
    return linear


def awq(bits: int = 4, group: int = 128) -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.qweight": ("I32", (inp, out * bits // 32)), f"{name}.qzeros": ("I32", (inp // group, out * bits // 32)),
                f"{name}.scales": ("F16", (inp // group, out))}
    return linear


def bnb4(double_quant: bool = True) -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        n = out * inp
        blocks = n // 64
        w = f"{name}.weight"
        spec = {w: ("U8", (n // 2, 1)), f"{w}.quant_map": ("F32", (16,)), f"{w}.quant_state.bitsandbytes__nf4": ("U8", (80,))}
        if double_quant:
            spec.update({f"{w}.absmax": ("U8", (blocks,)), f"{w}.nested_absmax": ("F32", (math.ceil(blocks / 256),)),
                         f"{w}.nested_quant_map": ("F32", (256,))})
        else:
            spec[f"{w}.absmax"] = ("F32", (blocks,))
        return spec
    return linear


def bnb8() -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight": ("I8", (out, inp)), f"{name}.SCB": ("F32", (out,)), f"{name}.weight_format": ("U8", ())}
    return linear


def fp8_block(block: int = 128) -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight": ("F8_E4M3", (out, inp)),
                f"{name}.weight_scale_inv": ("F32", (math.ceil(out / block), math.ceil(inp / block)))}
    return linear


def fp8_tensor() -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight": ("F8_E4M3", (out, inp)), f"{name}.weight_scale": ("F32", ()), f"{name}.input_scale": ("F32", ())}
    return linear


def ct_pack(bits: int = 4, group: int = 128) -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight_packed": ("I32", (out, inp * bits // 32)), f"{name}.weight_scale": ("BF16", (out, inp // group)),
                f"{name}.weight_shape": ("I64", (2,))}
    return linear


def ct_fp8() -> Linear:
    def linear(name: str, out: int, inp: int) -> dict[str, TensorSpec]:
        return {f"{name}.weight": ("F8_E4M3", (out, inp)), f"{name}.weight_scale": ("BF16", (out, 1))}
    return linear


def decoder(linear: Linear, *, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int,
            dtype: str = "F16", head_dim: int | None = None) -> dict[str, TensorSpec]:
    """A Llama-style decoder whose Linear layers use ``linear``'s layout; embeddings, norms and
    lm_head stay in ``dtype`` (every quantizer leaves them alone)."""
    hd = head_dim or hidden // heads
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": (dtype, (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (dtype, (hidden,))
        out[p + "post_attention_layernorm.weight"] = (dtype, (hidden,))
        for name, o, n in (("self_attn.q_proj", heads * hd, hidden), ("self_attn.k_proj", kv_heads * hd, hidden),
                           ("self_attn.v_proj", kv_heads * hd, hidden), ("self_attn.o_proj", hidden, heads * hd),
                           ("mlp.gate_proj", intermediate, hidden), ("mlp.up_proj", intermediate, hidden),
                           ("mlp.down_proj", hidden, intermediate)):
            out.update(linear(p + name, o, n))
    out["model.norm.weight"] = (dtype, (hidden,))
    out["lm_head.weight"] = (dtype, (vocab, hidden))
    return out


def decoder_config(model_type: str = "llama", *, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int,
                   vocab: int, quantization_config: dict | None = None, dtype: str = "float16") -> dict:
    cfg = {"model_type": model_type, "architectures": ["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"],
           "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 32768, "tie_word_embeddings": False,
           "torch_dtype": dtype}
    if quantization_config is not None:
        cfg["quantization_config"] = quantization_config
    return cfg


# --- gpt-oss-20b, as published (openai/gpt-oss-20b: config.json and the three shards' headers) ---

GPT_OSS_20B_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "eos_token_id": 200002, "experts_per_token": 4,
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096, "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072, "model_type": "gpt_oss",
    "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                                            "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 201088,
}


def gpt_oss(*, layers: int = 24, hidden: int = 2880, intermediate: int = 2880, experts: int = 32, heads: int = 64,
            kv_heads: int = 8, head_dim: int = 64, vocab: int = 201088) -> dict[str, TensorSpec]:
    """gpt-oss's tensors: attention in bf16 with biases and sinks, MXFP4 experts, bf16 router."""
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": ("BF16", (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ("BF16", (hidden,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (hidden,))
        for name, o, n in (("q_proj", heads * head_dim, hidden), ("k_proj", kv_heads * head_dim, hidden),
                           ("v_proj", kv_heads * head_dim, hidden), ("o_proj", hidden, heads * head_dim)):
            out[f"{p}self_attn.{name}.weight"] = ("BF16", (o, n))
            out[f"{p}self_attn.{name}.bias"] = ("BF16", (o,))
        out[p + "self_attn.sinks"] = ("BF16", (heads,))
        out[p + "mlp.router.weight"] = ("BF16", (experts, hidden))
        out[p + "mlp.router.bias"] = ("BF16", (experts,))
        e = p + "mlp.experts."
        out[e + "gate_up_proj_blocks"] = ("U8", (experts, 2 * intermediate, hidden // 32, 16))
        out[e + "gate_up_proj_scales"] = ("U8", (experts, 2 * intermediate, hidden // 32))
        out[e + "gate_up_proj_bias"] = ("BF16", (experts, 2 * intermediate))
        out[e + "down_proj_blocks"] = ("U8", (experts, hidden, intermediate // 32, 16))
        out[e + "down_proj_scales"] = ("U8", (experts, hidden, intermediate // 32))
        out[e + "down_proj_bias"] = ("BF16", (experts, hidden))
    out["model.norm.weight"] = ("BF16", (hidden,))
    out["lm_head.weight"] = ("BF16", (vocab, hidden))
    return out


def gpt_oss_20b_shard_name(i: int, n: int) -> str:
    """openai/gpt-oss-20b's three shards: model-00000-of-00002 ... model-00002-of-00002 (zero-based)."""
    return f"model-{i:05d}-of-{n - 1:05d}.safetensors"


# --- DeepSeek-V3 FP8 (block scales), a few layers with the real widths ------------------------

DEEPSEEK_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 4, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "vocab_size": 129280, "max_position_embeddings": 163840, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
}


def deepseek_v3_fp8(*, layers: int = 4, experts: int = 8, dense_layers: int = 1) -> dict[str, TensorSpec]:
    """DeepSeek-V3's layout with FP8 block-scaled Linears: MLA attention (``kv_a_proj_with_mqa`` is
    [576, 7168], whose scale grid [5, 56] does not divide it evenly), dense first layer, routed and
    shared experts. Fewer routed experts and layers than the real model keep it small."""
    h, inter, moe, rank, qrank, heads = 7168, 18432, 2048, 512, 1536, 128
    fp8 = fp8_block()
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": ("BF16", (129280, h))}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ("BF16", (h,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (h,))
        out.update(fp8(p + "self_attn.q_a_proj", qrank, h))
        out[p + "self_attn.q_a_layernorm.weight"] = ("BF16", (qrank,))
        out.update(fp8(p + "self_attn.q_b_proj", heads * 192, qrank))
        out.update(fp8(p + "self_attn.kv_a_proj_with_mqa", rank + 64, h))
        out[p + "self_attn.kv_a_layernorm.weight"] = ("BF16", (rank,))
        out.update(fp8(p + "self_attn.kv_b_proj", heads * 256, rank))
        out.update(fp8(p + "self_attn.o_proj", h, heads * 128))
        if i < dense_layers:
            for name, o, n in (("gate_proj", inter, h), ("up_proj", inter, h), ("down_proj", h, inter)):
                out.update(fp8(f"{p}mlp.{name}", o, n))
            continue
        out[p + "mlp.gate.weight"] = ("BF16", (experts, h))
        out[p + "mlp.gate.e_score_correction_bias"] = ("F32", (experts,))
        for e in range(experts):
            for name, o, n in (("gate_proj", moe, h), ("up_proj", moe, h), ("down_proj", h, moe)):
                out.update(fp8(f"{p}mlp.experts.{e}.{name}", o, n))
        for name, o, n in (("gate_proj", moe, h), ("up_proj", moe, h), ("down_proj", h, moe)):
            out.update(fp8(f"{p}mlp.shared_experts.{name}", o, n))
    out["model.norm.weight"] = ("BF16", (h,))
    out["lm_head.weight"] = ("BF16", (129280, h))
    return out


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def tensor_bytes(dtype: str, shape: tuple[int, ...]) -> int:
    from fixtures_models import tensor_nbytes

    return tensor_nbytes(dtype, shape)


# --- Small real checkpoints of the formats transformers can load on CPU -------------------------


def make_bnb_checkpoint(folder, source, *, bits: int = 4):
    """``source`` (a tiny bf16 model) quantized by bitsandbytes on CPU and saved pre-quantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    q = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.bfloat16) if bits == 4 else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=q, device_map="cpu")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def make_fp8_checkpoint(folder, source, *, block: int = 128):
    """``source``'s Linear weights written as float8_e4m3fn with ``weight_scale_inv`` [ceil(out/128),
    ceil(in/128)] and quantization_config {"quant_method": "fp8", "weight_block_size": [128, 128]},
    the layout of DeepSeek-V3 and Qwen FP8 checkpoints; everything else as in ``source``."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder, dirs_exist_ok=True)
    out = {}
    for name, w in load_file(f"{source}/model.safetensors").items():
        if not name.endswith("_proj.weight"):
            out[name] = w
            continue
        rows, cols = w.shape
        grid = (math.ceil(rows / block), math.ceil(cols / block))
        scale = torch.empty(grid)
        q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
        for a in range(grid[0]):
            for b in range(grid[1]):
                blk = w[a * block:(a + 1) * block, b * block:(b + 1) * block].float()
                s = blk.abs().max().clamp(min=1e-12) / 448.0  # e4m3's largest normal
                scale[a, b] = s
                q[a * block:(a + 1) * block, b * block:(b + 1) * block] = (blk / s).to(torch.float8_e4m3fn)
        out[name] = q
        out[name[: -len("weight")] + "weight_scale_inv"] = scale
    save_file(out, f"{folder}/model.safetensors", metadata={"format": "pt"})
    _patch_config(folder, quantization_config={"quant_method": "fp8", "weight_block_size": [block, block],
                                               "activation_scheme": "dynamic"})
    return folder


def make_mxfp4_gpt_oss(folder, *, experts: int = 4, hidden: int = 64, intermediate: int = 64):
    """A tiny gpt-oss with its experts in MXFP4 (random e2m1 blocks, scales near 2^-7), saved with
    gpt-oss's tensor names and quantization_config."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from fixtures_models import make_tokenizer

    tok = make_tokenizer("gpt_oss")
    cfg = AutoConfig.for_model("gpt_oss", hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1024,
                               num_local_experts=experts, num_experts_per_tok=2, max_position_embeddings=512, sliding_window=32,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, w in load_file(f"{folder}/model.safetensors").items():
        for proj, rows, cols in (("gate_up_proj", 2 * intermediate, hidden), ("down_proj", hidden, intermediate)):
            if name.endswith(f"experts.{proj}"):
                out[name + "_blocks"] = torch.randint(0, 256, (experts, rows, cols // 32, 16), dtype=torch.uint8, generator=gen)
                out[name + "_scales"] = torch.full((experts, rows, cols // 32), 120, dtype=torch.uint8)
                break
        else:
            out[name] = w
    save_file(out, f"{folder}/model.safetensors", metadata={"format": "pt"})
    _patch_config(folder, quantization_config=dict(GPT_OSS_20B_CONFIG["quantization_config"]))
    return folder


def _patch_config(folder, **changes) -> None:
    import json
    from pathlib import Path

    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg, indent=2))


# --- Planning helpers for the tests that load what was planned -----------------------------------


def cpu_hardware(ram: int = 8 << 30, disk: int = 10**12):
    """A CPU-only machine with ``ram`` bytes free."""
    from planner.hardware.probe import apply_overrides
    from planner.core.records import Hardware

    base = Hardware(name="cpu", source="test", gpus=(), ram_total=1, ram_free=1, disk_free=1, cache_disk_free=1)
    return apply_overrides(base, ram=ram, disk=disk)


def ram_forcing_disk(snap, constraints) -> int:
    """A RAM size at which the plan for ``snap`` is cpu+disk: just below the smallest RAM that holds it all."""
    from planner import api

    def placement(ram: int) -> str | None:
        r = api.plan(snap.id, hardware=cpu_hardware(ram), constraints=constraints, snapshot=snap)
        return r.solution.chosen.settings.placement if r.solution else None

    lo, hi = 64 << 20, 8192 << 20
    assert placement(hi) == "cpu"
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        if placement(mid) == "cpu":
            hi = mid
        else:
            lo = mid
    for step in range(1, 64):
        ram = hi - step * 8192
        if placement(ram) == "cpu+disk":
            return ram
    raise AssertionError("no RAM size gives a cpu+disk plan")


def mixtral(*, layers: int = 32, hidden: int = 4096, intermediate: int = 14336, experts: int = 8, heads: int = 32,
            kv_heads: int = 8, vocab: int = 32000) -> dict[str, TensorSpec]:
    """Mixtral-8x7B's Hub layout: per-expert w1/w2/w3 under block_sparse_moe (fused at load)."""
    hd = hidden // heads
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": ("BF16", (vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ("BF16", (hidden,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (hidden,))
        for name, o, n in (("q_proj", heads * hd, hidden), ("k_proj", kv_heads * hd, hidden), ("v_proj", kv_heads * hd, hidden),
                           ("o_proj", hidden, heads * hd)):
            out[f"{p}self_attn.{name}.weight"] = ("BF16", (o, n))
        out[p + "block_sparse_moe.gate.weight"] = ("BF16", (experts, hidden))
        for e in range(experts):
            for name, o, n in (("w1", intermediate, hidden), ("w2", hidden, intermediate), ("w3", intermediate, hidden)):
                out[f"{p}block_sparse_moe.experts.{e}.{name}.weight"] = ("BF16", (o, n))
    out["model.norm.weight"] = ("BF16", (hidden,))
    out["lm_head.weight"] = ("BF16", (vocab, hidden))
    return out


MIXTRAL_8X7B_CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05, "rope_theta": 1e6,
}


# --- Multimodal and encoder-decoder ---------------------------------------------------------------


def llava_1_5(*, text_layers: int = 32, hidden: int = 4096, intermediate: int = 11008, vocab: int = 32064,
              vision_layers: int = 24, vision_hidden: int = 1024, vision_intermediate: int = 4096, patches: int = 577,
              patch: int = 14) -> dict[str, TensorSpec]:
    """llava-hf/llava-1.5-7b-hf's Hub layout: CLIP ViT-L/14-336 under vision_tower.vision_model, a
    two-layer projector, Llama-2-7B under language_model.model, all fp16."""
    d = "F16"
    out: dict[str, TensorSpec] = {}
    v = "vision_tower.vision_model."
    out[v + "embeddings.class_embedding"] = (d, (vision_hidden,))
    out[v + "embeddings.patch_embedding.weight"] = (d, (vision_hidden, 3, patch, patch))
    out[v + "embeddings.position_embedding.weight"] = (d, (patches, vision_hidden))
    for norm in ("pre_layrnorm", "post_layernorm"):
        out[f"{v}{norm}.weight"] = (d, (vision_hidden,))
        out[f"{v}{norm}.bias"] = (d, (vision_hidden,))
    for i in range(vision_layers):
        p = f"{v}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out[f"{p}self_attn.{name}.weight"] = (d, (vision_hidden, vision_hidden))
            out[f"{p}self_attn.{name}.bias"] = (d, (vision_hidden,))
        for norm in ("layer_norm1", "layer_norm2"):
            out[f"{p}{norm}.weight"] = (d, (vision_hidden,))
            out[f"{p}{norm}.bias"] = (d, (vision_hidden,))
        out[p + "mlp.fc1.weight"] = (d, (vision_intermediate, vision_hidden))
        out[p + "mlp.fc1.bias"] = (d, (vision_intermediate,))
        out[p + "mlp.fc2.weight"] = (d, (vision_hidden, vision_intermediate))
        out[p + "mlp.fc2.bias"] = (d, (vision_hidden,))
    out["multi_modal_projector.linear_1.weight"] = (d, (hidden, vision_hidden))
    out["multi_modal_projector.linear_1.bias"] = (d, (hidden,))
    out["multi_modal_projector.linear_2.weight"] = (d, (hidden, hidden))
    out["multi_modal_projector.linear_2.bias"] = (d, (hidden,))
    lm = decoder(plain(d), layers=text_layers, hidden=hidden, intermediate=intermediate, heads=32, kv_heads=32, vocab=vocab, dtype=d)
    for name, spec in lm.items():
        out["language_model." + name] = spec
    return out


LLAVA_1_5_CONFIG = {
    "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 32000,
    "projector_hidden_act": "gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "text_config": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                    "max_position_embeddings": 4096, "torch_dtype": "float16"},
    "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768},
    "tie_word_embeddings": False, "torch_dtype": "float16",
}

_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=1024, max_position_embeddings=512)
_TINY_SIGLIP = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
# model_type -> config kwargs of a tiny image-text-to-text model (checked to build in transformers 5.24)
TINY_MULTIMODAL = {
    "llava": dict(text_config={"model_type": "llama", **_TINY_TEXT}, image_token_id=5,
                  vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32}),
    "gemma3": dict(text_config={"model_type": "gemma3_text", **_TINY_TEXT, "head_dim": 16}, vision_config=_TINY_SIGLIP,
                   mm_tokens_per_image=4),
    "paligemma": dict(text_config={"model_type": "gemma", **_TINY_TEXT, "head_dim": 16},
                      vision_config={**_TINY_SIGLIP, "projection_dim": 64}),
    "mistral3": dict(text_config={"model_type": "mistral", **_TINY_TEXT},
                     vision_config={"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "head_dim": 16}),
    "qwen2_vl": dict(text_config={"model_type": "qwen2_vl_text", **_TINY_TEXT, "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]}},
                     vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "in_chans": 3, "patch_size": 4,
                                    "spatial_merge_size": 2, "temporal_patch_size": 2}),
}


def make_tiny_multimodal(folder, model_type: str, *, hub_names: bool = False):
    """A tiny image-text-to-text model saved with a tokenizer. ``hub_names`` rewrites a CLIP/SigLIP
    tower's tensors to the Hub's ``vision_tower.vision_model.*`` (transformers 5 saves ``vision_tower.*``)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForImageTextToText

    from fixtures_models import make_tokenizer

    tok = make_tokenizer("llama")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    kw = dict(TINY_MULTIMODAL[model_type])
    kw["text_config"] = {**kw["text_config"], **ids}
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **kw), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if hub_names:
        sd = load_file(f"{folder}/model.safetensors")
        sd = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v for k, v in sd.items()}
        save_file(sd, f"{folder}/model.safetensors", metadata={"format": "pt"})
    return folder, model


def make_tiny_t5(folder):
    """A tiny T5 (encoder-decoder, shared embedding tied to both sides and the head) with a tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from fixtures_models import make_tokenizer

    tok = make_tokenizer("llama")
    cfg = AutoConfig.for_model("t5", d_model=64, d_ff=128, num_layers=3, num_decoder_layers=3, num_heads=4, d_kv=16,
                               vocab_size=1024, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model
