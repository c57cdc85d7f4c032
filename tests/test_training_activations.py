"""The saved-activation coefficients of planner/runtimes/training/memory.py, counted again with
``torch.autograd.graph.saved_tensors_hooks`` on tiny random models (every distinct storage autograd
saves, parameters excluded): a transformers or peft upgrade that changes what autograd saves fails
here."""

from __future__ import annotations

import contextlib

import pytest

from planner.model.arch import read_arch
from planner.runtimes.training import memory
from planner.runtimes.training.settings import ALL_TARGETS, TrainingSettings

SEQ, BATCH, R = 64, 2, 8
SIZES = {"hidden_size": 128, "intermediate_size": 352, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512}


def _saved(arch_name: str, layers: int, method: str, precision: str) -> tuple[int, dict]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch_name, num_hidden_layers=layers, attn_implementation="sdpa", **SIZES)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" or (method == "lora" and precision == "bf16-mixed") else torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.train()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=R, lora_dropout=0.0, target_modules=list(ALL_TARGETS)))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    x = torch.randint(0, SIZES["vocab_size"], (BATCH, SEQ))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(input_ids=x, labels=x)
    return sum(seen.values()), config.to_dict()


@pytest.mark.parametrize(("arch_name", "method", "precision"), [
    ("llama", "full", "fp32"), ("qwen2", "full", "fp32"), ("llama", "lora", "fp32"), ("llama", "full", "bf16"),
    ("llama", "full", "bf16-mixed"), ("llama", "lora", "bf16-mixed"),
])
def test_saved_bytes_per_layer_and_outside_the_layers(arch_name, method, precision):
    two, cfg = _saved(arch_name, 2, method, precision)
    four, _ = _saved(arch_name, 4, method, precision)
    arch = read_arch({**cfg, "num_hidden_layers": 2})
    s = TrainingSettings(method=method, optimizer="adamw", gradient_checkpointing=False, precision=precision, seq=SEQ, batch=BATCH,
                         grad_accum=1, lora_r=R if method == "lora" else 0, lora_targets=ALL_TARGETS if method == "lora" else (),
                         gpus=1 if precision != "fp32" else 0, strategy="single", trainable_parameters=0)
    tokens = SEQ * BATCH
    per_layer = (four - two) / 2
    cache = memory._COEFFS[memory.kind(s)].cache
    if cache:
        # autocast's cast copies of the trainable linears are saved too (per layer, not per token)
        h, i, kv = arch.hidden_size, arch.intermediate_size, arch.num_kv_heads * arch.k_head_dim
        shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
        per_layer -= cache * (sum(R * (a + b) for a, b in shapes) if method == "lora" else sum(a * b for a, b in shapes))
    assert per_layer == tokens * memory.per_token_layer(arch, s)
    rest = two - 2 * (four - two) / 2
    if not cache:  # (with the cache, the LM head's cast copy sits outside the layers as well)
        # + 4: the fp32 scalar that the loss's mean saves
        assert rest == tokens * memory.per_token_rest(arch, s) + memory.rotary(arch, s, SEQ) + 4
