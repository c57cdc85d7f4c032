"""config.json -> Arch: real configs read right, absurd ones refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.model.arch import read_arch
from planner.core.errors import BadConfig, UnsupportedModel
from planner.runtimes.transformers.memory import kv

# Real config.json files of published models (copies of the workspace's shared/catalog-configs,
# kept here so that a clone alone runs the suite).
DATA = Path(__file__).parent / "data"


def _config(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_llama_3_1_8b_kv_is_128_kib_per_token() -> None:
    # llama.cpp logs 1024.00 MiB of fp16 KV at n_ctx 8192 for Llama-3.1-8B (FIELD-NOTES).
    arch = read_arch(_config("meta-llama__Llama-3.1-8B.config.json"))
    assert (arch.num_layers, arch.num_kv_heads, arch.head_dim) == (32, 8, 128)
    assert kv.bytes_per_token(arch, dtype_bytes=2) == 128 * 1024
    assert kv.total_bytes(arch, context=8192, new_tokens=0, batch=1, dtype_bytes=2) == 1024 * 1024**2


def test_mistral_sliding_window_caps_the_cache() -> None:
    arch = read_arch(_config("mistralai__Mistral-7B-v0.1.config.json"))
    assert arch.sliding_window == 4096 and set(arch.layer_types) == {"sliding_attention"}
    at_window = kv.total_bytes(arch, context=4096, new_tokens=0, batch=1, dtype_bytes=2)
    assert kv.total_bytes(arch, context=32768, new_tokens=0, batch=1, dtype_bytes=2) == at_window
    # a sliding layer keeps window - 1 tokens
    assert at_window == 32 * 8 * 128 * 2 * 2 * 4095


def test_qwen2_ignores_sliding_window_unless_enabled() -> None:
    cfg = _config("Qwen__Qwen2.5-7B-Instruct.config.json")
    assert read_arch(cfg).sliding_window is None
    # Qwen2Config: with use_sliding_window, layers from max_window_layers on slide.
    assert read_arch({**cfg, "use_sliding_window": True, "sliding_window": 1024}).sliding_window is None  # max_window_layers = 28 = all
    half = read_arch({**cfg, "use_sliding_window": True, "sliding_window": 1024, "max_window_layers": 14})
    assert half.sliding_window == 1024 and half.layer_types.count("sliding_attention") == 14


def test_gemma2_alternates_and_gemma3_uses_one_global_in_six() -> None:
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_hidden_layers": 6,
            "sliding_window": 16, "head_dim": 16}
    g2 = read_arch({**base, "model_type": "gemma2"})
    assert g2.layer_types == ("sliding_attention", "full_attention") * 3
    g3 = read_arch({**base, "model_type": "gemma3_text"})
    assert g3.layer_types == ("sliding_attention",) * 5 + ("full_attention",)


def test_layer_types_from_config_win() -> None:
    cfg = {"model_type": "gpt_oss", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
           "num_hidden_layers": 2, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"], "head_dim": 16}
    arch = read_arch(cfg)
    assert arch.layer_types == ("sliding_attention", "full_attention")
    assert kv.layer_bytes(arch, 0, context=100, new_tokens=0, batch=1, dtype_bytes=2) == 2 * 16 * 2 * 2 * 7


def test_mla_caches_the_compressed_latent() -> None:
    cfg = {"model_type": "deepseek_v3", "hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128,
           "num_hidden_layers": 61, "vocab_size": 129280, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
           "v_head_dim": 128, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1, "intermediate_size": 18432}
    arch = read_arch(cfg)
    # transformers 5.24 caches (kv_lora_rank + qk_rope_head_dim) per token per layer: 1152 B in bf16.
    assert (arch.k_head_dim, arch.v_head_dim, arch.num_kv_heads) == (512, 64, 1)
    assert kv.bytes_per_token(arch, dtype_bytes=2) == 61 * 1152
    assert (arch.mla_k_dim, arch.mla_v_dim) == (192, 128)
    assert arch.is_moe and arch.num_experts == 256 and arch.num_experts_per_tok == 8


def test_multimodal_reads_the_text_config() -> None:
    cfg = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
           "text_config": {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_hidden_layers": 32,
                           "vocab_size": 32064, "num_key_value_heads": 32},
           "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024}}
    arch = read_arch(cfg)
    assert arch.auto_class == "AutoModelForImageTextToText" and arch.has_vision
    assert arch.model_type == "llama" and arch.outer_model_type == "llava" and arch.num_layers == 32


def test_gpt2_field_aliases() -> None:
    arch = read_arch({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024})
    assert (arch.num_layers, arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.max_position_embeddings) == (12, 768, 12, 12, 1024)


def test_t5_is_encoder_decoder() -> None:
    arch = read_arch({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 512, "num_heads": 8, "d_kv": 64,
                      "num_layers": 6, "num_decoder_layers": 6, "vocab_size": 32128, "is_encoder_decoder": True, "d_ff": 2048})
    assert arch.is_encoder_decoder and arch.auto_class == "AutoModelForSeq2SeqLM" and arch.head_dim == 64


_BASE = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"num_attention_heads": 10**12}, "num_attention_heads"),
        ({"hidden_size": -5}, "hidden_size"),
        ({"hidden_size": "64"}, "hidden_size"),
        ({"hidden_size": 64.5}, "hidden_size"),
        ({"hidden_size": True}, "hidden_size"),
        ({"vocab_size": None}, "vocab_size"),
        ({"num_key_value_heads": 8}, "num_key_value_heads"),
        ({"hidden_size": 65}, "head_dim"),
        ({"layer_types": ["full_attention"]}, "layer_types"),
        ({"model_type": ["llama"]}, "model_type"),
        ({"architectures": "LlamaForCausalLM"}, "architectures"),
        ({"quantization_config": "gptq"}, "quantization_config"),
        ({"num_local_experts": 4, "num_experts_per_tok": 8}, "num_experts_per_tok"),
    ],
)
def test_absurd_configs_name_the_field(change: dict, field: str) -> None:
    cfg = {k: v for k, v in {**_BASE, **change}.items() if v is not None}
    with pytest.raises(BadConfig) as e:
        read_arch(cfg, where="config.json of evil/repo")
    assert field in e.value.message and "config.json of evil/repo" in e.value.message


def test_missing_required_fields_and_non_objects() -> None:
    with pytest.raises(BadConfig, match="num_hidden_layers"):
        read_arch({k: v for k, v in _BASE.items() if k != "num_hidden_layers"})
    with pytest.raises(BadConfig, match="not an object"):
        read_arch([1, 2])  # type: ignore[arg-type]
    with pytest.raises(BadConfig, match="neither"):
        read_arch({})


def test_recurrent_models_are_refused_not_guessed() -> None:
    with pytest.raises(UnsupportedModel, match="mamba"):
        read_arch({**_BASE, "model_type": "mamba"})
