"""The repos the benchmark serves: sparse safetensors checkpoints whose only real bytes are headers.

Four sizes, each a realistic layout so that header bytes, tensor counts and request counts are
what the real Hub would show:

========================  ======  =======  ===============================================
repo                      shards  tensors  layout
========================  ======  =======  ===============================================
bench/llama-3.1-8b-1shard      1      291  Llama-3.1-8B in one model.safetensors (16 GB)
bench/llama-3.1-8b             4      291  Llama-3.1-8B as published (4 shards)
bench/llama-3.1-70b           30      723  Llama-3.1-70B as published (30 shards)
bench/deepseek-v3            163   91,991  DeepSeek-V3: FP8 block-quantised MoE + MTP layer
========================  ======  =======  ===============================================

The DeepSeek-V3 layout follows the published checkpoint (deepseek-ai/DeepSeek-V3, 163 shards named
``model-00001-of-000163.safetensors``): 61 decoder layers of MLA attention, the first 3 dense and
the other 58 with 256 routed experts and one shared expert, plus the multi-token-prediction layer
61 that the checkpoint carries and transformers skips. Every 2-D projection is F8_E4M3 with an F32
``weight_scale_inv`` of one value per 128x128 block; norms, embeddings, the router and the head are
BF16. Like the real index, it lists 91,991 tensors.
"""

from __future__ import annotations

import json
import sys
from math import ceil
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from fakehub import FileContent  # noqa: E402
from fixtures_models import TensorSpec, decoder_tensors, sparse_repo_files  # noqa: E402

LLAMA_8B = dict(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256)
LLAMA_70B = dict(layers=80, hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)

# meta-llama/Llama-3.1-8B config.json as published.
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}

# deepseek-ai/DeepSeek-V3 config.json as published (auto_map included: the real repo has it).
DEEPSEEK_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    },
    "aux_loss_alpha": 0.001,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

# FP8 block size of DeepSeek-V3's quantization_config.weight_block_size.
_BLOCK = 128


def deepseek_v3_tensors(config: dict = DEEPSEEK_V3_CONFIG) -> dict[str, TensorSpec]:
    """The tensor layout of DeepSeek-V3's published checkpoint, named as it names them."""
    c = config
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    q_rank, kv_rank = c["q_lora_rank"], c["kv_lora_rank"]
    nope, rope, v_dim = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    out: dict[str, TensorSpec] = {}

    def fp8(name: str, rows: int, cols: int) -> None:
        out[name + ".weight"] = ("F8_E4M3", (rows, cols))
        out[name + ".weight_scale_inv"] = ("F32", (ceil(rows / _BLOCK), ceil(cols / _BLOCK)))

    def mlp(prefix: str, inter: int) -> None:
        fp8(prefix + "gate_proj", inter, hidden)
        fp8(prefix + "up_proj", inter, hidden)
        fp8(prefix + "down_proj", hidden, inter)

    def layer(i: int) -> None:
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ("BF16", (hidden,))
        fp8(p + "self_attn.q_a_proj", q_rank, hidden)
        out[p + "self_attn.q_a_layernorm.weight"] = ("BF16", (q_rank,))
        fp8(p + "self_attn.q_b_proj", heads * (nope + rope), q_rank)
        fp8(p + "self_attn.kv_a_proj_with_mqa", kv_rank + rope, hidden)
        out[p + "self_attn.kv_a_layernorm.weight"] = ("BF16", (kv_rank,))
        fp8(p + "self_attn.kv_b_proj", heads * (nope + v_dim), kv_rank)
        fp8(p + "self_attn.o_proj", hidden, heads * v_dim)
        out[p + "post_attention_layernorm.weight"] = ("BF16", (hidden,))
        if i < c["first_k_dense_replace"]:
            mlp(p + "mlp.", c["intermediate_size"])
            return
        out[p + "mlp.gate.weight"] = ("BF16", (c["n_routed_experts"], hidden))
        out[p + "mlp.gate.e_score_correction_bias"] = ("F32", (c["n_routed_experts"],))
        for e in range(c["n_routed_experts"]):
            mlp(f"{p}mlp.experts.{e}.", c["moe_intermediate_size"])
        mlp(p + "mlp.shared_experts.", c["moe_intermediate_size"] * c["n_shared_experts"])

    out["model.embed_tokens.weight"] = ("BF16", (c["vocab_size"], hidden))
    for i in range(c["num_hidden_layers"]):
        layer(i)
    # The multi-token-prediction module ships as one more layer (num_nextn_predict_layers=1).
    mtp = c["num_hidden_layers"]
    layer(mtp)
    p = f"model.layers.{mtp}."
    out[p + "embed_tokens.weight"] = ("BF16", (c["vocab_size"], hidden))
    out[p + "enorm.weight"] = ("BF16", (hidden,))
    out[p + "hnorm.weight"] = ("BF16", (hidden,))
    out[p + "eh_proj.weight"] = ("BF16", (hidden, 2 * hidden))
    out[p + "shared_head.norm.weight"] = ("BF16", (hidden,))
    out[p + "shared_head.head.weight"] = ("BF16", (c["vocab_size"], hidden))
    out["model.norm.weight"] = ("BF16", (hidden,))
    out["lm_head.weight"] = ("BF16", (c["vocab_size"], hidden))
    return out


def _small_files(config: dict) -> dict[str, FileContent]:
    """What a model repo carries besides weights (sizes close to Llama-3.1's; content is filler)."""
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": b'{"bos_token_id": 128000, "eos_token_id": 128001, "do_sample": true}',
        "README.md": b"# benchmark fixture\n" + b"x" * 30_000,
        "tokenizer_config.json": b"{}" + b" " * 50_000,
        "tokenizer.json": b"{}" + b" " * 9_000_000,
        "special_tokens_map.json": b"{}",
    }


# (name, shards, builder): the builder returns the repo's files.
REPOS: dict[str, tuple[int, object]] = {
    "bench/llama-3.1-8b-1shard": (1, lambda: {**_small_files(LLAMA_8B_CONFIG),
                                               **sparse_repo_files(decoder_tensors(**LLAMA_8B), shards=1)}),
    "bench/llama-3.1-8b": (4, lambda: {**_small_files(LLAMA_8B_CONFIG),
                                        **sparse_repo_files(decoder_tensors(**LLAMA_8B), shards=4)}),
    "bench/llama-3.1-70b": (30, lambda: {**_small_files(_llama_70b_config()),
                                          **sparse_repo_files(decoder_tensors(**LLAMA_70B), shards=30)}),
    "bench/deepseek-v3": (163, lambda: {**_small_files(DEEPSEEK_V3_CONFIG),
                                         **sparse_repo_files(deepseek_v3_tensors(), shards=163, naming="six-digit")}),
}


def _llama_70b_config() -> dict:
    return json.loads((_TESTS / "data" / "llama-3.1-70b.config.json").read_text())


def build(name: str) -> dict[str, FileContent]:
    """The files of one benchmark repo."""
    return REPOS[name][1]()  # type: ignore[operator]
