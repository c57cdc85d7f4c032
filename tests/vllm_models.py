"""Full-size checkpoints for the vLLM runtime's tests: real configs, header-level tensor lists.

Configs come from /work/shared/catalog-configs/ where present (Llama-3.1-70B, -405B, DeepSeek-V3,
Qwen3-30B-A3B, Llama-3.1-8B); Mixtral-8x22B and Qwen3-235B-A22B are not there, so their configs
are written out from the published config.json values (mistralai/Mixtral-8x22B-v0.1,
Qwen/Qwen3-235B-A22B). The tensors are the names, dtypes and shapes each checkpoint's writer
saves (tests/layouts.py), built as Snapshot records (or served as sparse files by the fake Hub).
"""

from __future__ import annotations

import json
from pathlib import Path

import layouts
from layouts import TensorSpec

from planner.core.records import RepoFile, Snapshot, Tensor

CATALOG = Path("/work/shared/catalog-configs")

MIXTRAL_8X22B_CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 6144, "intermediate_size": 16384,
    "num_hidden_layers": 56, "num_attention_heads": 48, "num_key_value_heads": 8, "num_local_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 32000, "max_position_embeddings": 65536, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
}
QWEN3_235B_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 4096, "intermediate_size": 12288,
    "moe_intermediate_size": 1536, "num_hidden_layers": 94, "num_attention_heads": 64, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "sliding_window": None, "use_sliding_window": False, "norm_topk_prob": True, "rope_theta": 1000000.0,
}


def catalog(name: str) -> dict:
    return json.loads((CATALOG / f"{name}.config.json").read_text())


def llama_spec(cfg: dict) -> dict[str, TensorSpec]:
    return layouts.decoder(layouts.plain("BF16"), layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
                           intermediate=cfg["intermediate_size"], heads=cfg["num_attention_heads"],
                           kv_heads=cfg["num_key_value_heads"], vocab=cfg["vocab_size"], dtype="BF16")


def qwen3_moe_spec(cfg: dict) -> dict[str, TensorSpec]:
    """Qwen3-MoE's layout: q/k norms, a router and per-expert gate/up/down projections."""
    h, hd, heads, kv = cfg["hidden_size"], cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    e, moe = cfg["num_experts"], cfg["moe_intermediate_size"]
    out: dict[str, TensorSpec] = {"model.embed_tokens.weight": ("BF16", (cfg["vocab_size"], h))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = ("BF16", (h,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (h,))
        for name, o, n in (("q_proj", heads * hd, h), ("k_proj", kv * hd, h), ("v_proj", kv * hd, h), ("o_proj", h, heads * hd)):
            out[f"{p}self_attn.{name}.weight"] = ("BF16", (o, n))
        out[p + "self_attn.q_norm.weight"] = ("BF16", (hd,))
        out[p + "self_attn.k_norm.weight"] = ("BF16", (hd,))
        out[p + "mlp.gate.weight"] = ("BF16", (e, h))
        for x in range(e):
            for name, o, n in (("gate_proj", moe, h), ("up_proj", moe, h), ("down_proj", h, moe)):
                out[f"{p}mlp.experts.{x}.{name}.weight"] = ("BF16", (o, n))
    out["model.norm.weight"] = ("BF16", (h,))
    out["lm_head.weight"] = ("BF16", (cfg["vocab_size"], h))
    return out


def deepseek_v3_spec(cfg: dict) -> dict[str, TensorSpec]:
    """DeepSeek-V3 as published: 61 layers (3 dense), 256 routed experts, FP8 block scales, plus the
    multi-token-prediction layer 61 the Hub checkpoint carries."""
    layers = cfg["num_hidden_layers"]
    spec = layouts.deepseek_v3_fp8(layers=layers + cfg.get("num_nextn_predict_layers", 0), experts=cfg["n_routed_experts"],
                                   dense_layers=cfg["first_k_dense_replace"])
    return spec


MODELS = {
    "meta-llama/Llama-3.1-8B": lambda: (catalog("meta-llama__Llama-3.1-8B"), llama_spec),
    "meta-llama/Llama-3.1-70B-Instruct": lambda: (catalog("meta-llama__Llama-3.1-70B-Instruct"), llama_spec),
    "meta-llama/Llama-3.1-405B": lambda: (catalog("meta-llama__Llama-3.1-405B"), llama_spec),
    "deepseek-ai/DeepSeek-V3": lambda: (catalog("deepseek-ai__DeepSeek-V3"), deepseek_v3_spec),
    "Qwen/Qwen3-30B-A3B": lambda: (catalog("Qwen__Qwen3-30B-A3B"), qwen3_moe_spec),
    "Qwen/Qwen3-235B-A22B": lambda: (QWEN3_235B_CONFIG, qwen3_moe_spec),
    "mistralai/Mixtral-8x22B-v0.1": lambda: (MIXTRAL_8X22B_CONFIG, lambda c: layouts.mixtral(
        layers=c["num_hidden_layers"], hidden=c["hidden_size"], intermediate=c["intermediate_size"],
        experts=c["num_local_experts"], heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"],
        vocab=c["vocab_size"])),
}

_CACHE: dict[str, Snapshot] = {}


def config_and_spec(repo: str) -> tuple[dict, dict[str, TensorSpec]]:
    cfg, build = MODELS[repo]()
    return cfg, build(cfg)


def snapshot(repo: str) -> Snapshot:
    """The Snapshot the sources layer would build for ``repo`` (one file holding every tensor)."""
    if repo not in _CACHE:
        cfg, spec = config_and_spec(repo)
        file = "model.safetensors"
        tensors = tuple(Tensor(n, d, s, layouts.tensor_bytes(d, s), file) for n, (d, s) in spec.items())
        size = sum(t.nbytes for t in tensors)
        _CACHE[repo] = Snapshot(id=repo, revision="main", commit="0" * 40, source="hub", config=cfg,
                                files=(RepoFile("config.json", 1000), RepoFile(file, size)), weight_format="safetensors",
                                weight_files=(file,), tensors=tensors)
    return _CACHE[repo]
