"""For GPU budgets, the device_map fitcheck emits names real modules and is equal to, or stricter
than, what transformers' own ``infer_auto_device_map`` (the ``device_map="auto"`` path) computes
for the same budget on the meta-device model. There is no GPU here: integer device ids are only
keys in the budget, as in accelerate's own simulations.

Two budgets per architecture and GPU size:
- the GPU's free memory, as a user would pass it (``max_memory={0: free}``): fitcheck must not put
  more on the GPU, since it also keeps room for the CUDA context, KV cache and activations;
- the room fitcheck itself computed for weights: with the same room the two sequential walks must
  agree up to the KV cache fitcheck adds per layer, so fitcheck's GPU modules are a subset. MoE
  plans that offload experts first (a layer's attention on the GPU, its experts module off it)
  pack differently from accelerate's whole-layer walk: for them the GPU's bytes are compared
  with the user's budget and with fitcheck's own room.
"""

from __future__ import annotations

import pytest

from planner.model.footprint import estimate
from planner.runtimes.transformers.memory import activations, budget
from planner.core.records import Gpu, Hardware
from planner.runtimes.transformers.settings import Scheme
from planner.core.records import Constraints
from planner.runtimes.transformers.plans import _Candidate, evaluate
from planner.api import read_model
from planner.core.units import MiB

ARCHS = ["llama", "qwen2", "mistral", "gemma3_text", "mixtral", "qwen2_moe"]
DIMS = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=2048)
C = Constraints(context=128, batch=1, new_tokens=8)


def _meta_model(folder):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def _gpu_params(model, device_map: dict, gpu: int = 0) -> set[str]:
    """Parameter names a device_map puts on GPU ``gpu`` (longest matching key wins)."""
    keys = sorted(device_map, key=len, reverse=True)
    out = set()
    for name, _ in model.named_parameters():
        key = next((k for k in keys if k == "" or name == k or name.startswith(k + ".")), None)
        assert key is not None, f"{name} has no device in the map"
        if device_map[key] == gpu:
            out.add(name)
    return out


def _bytes(model, names: set[str]) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n in names)


def _accelerate_map(model, gpu_bytes: int) -> dict:
    from transformers.integrations.accelerate import infer_auto_device_map

    return infer_auto_device_map(model, max_memory={0: gpu_bytes, "cpu": 10**12}, no_split_module_classes=model._no_split_modules)


def _plan(fp, free: int):
    gpu = Gpu(index=0, name="sim", backend="cuda", total_bytes=free, free_bytes=free, compute_capability=(8, 0), bf16=True,
              bandwidth=900 * 10**9, pcie_bandwidth=32 * 10**9)
    hw = Hardware(name="sim", source="test", gpus=(gpu,), ram_total=64 << 30, ram_free=64 << 30, disk_free=10**12, cache_disk_free=10**12)
    return evaluate(fp, hw, C, _Candidate(Scheme("bfloat16"), "gpu+cpu", "single", (gpu,)))


@pytest.mark.parametrize("arch", ARCHS)
def test_device_map_is_valid_and_no_looser_than_transformers(tiny_models, arch: str) -> None:
    folder = tiny_models.build(arch, **DIMS)
    fp = estimate(read_model(str(folder)))
    model = _meta_model(folder)
    modules = dict(model.named_modules())
    transient = activations.prefill_bytes(fp.arch, context=C.context, batch=1, dtype_bytes=2) + activations.logits_bytes(fp.arch, batch=1)
    # the GPU's fixed costs in fitcheck's model: CUDA context, margin floor, transients with slack
    fixed = 600 * MiB + 128 * MiB + int(transient * 1.15) + MiB
    checked_split = False
    for share in (0.25, 0.5, 0.75, 1.5):
        free = fixed + int(share * fp.stored_bytes * 1.05)
        plan = _plan(fp, free)
        assert plan.fits, plan.reasons
        ours = plan.settings.device_map
        assert all(k in modules for k in ours), [k for k in ours if k not in modules]
        assert "" not in ours and not [k for k in ours for j in ours if j.startswith(k + ".")], "keys must be flat and disjoint"
        mine = _gpu_params(model, ours)
        split = any(k.endswith(".mlp.experts") for k in ours)
        theirs_user = _gpu_params(model, _accelerate_map(model, free))
        if split:
            assert _bytes(model, mine) <= _bytes(model, theirs_user)
        else:
            assert mine <= theirs_user, sorted(mine - theirs_user)[:5]
        room = budget.rooms("cuda:0", free=free, margin=plan.memory["cuda:0"].margin, scheme=Scheme("bfloat16"),
                            t=budget.Transients(activations.prefill_bytes(fp.arch, context=C.context, batch=1, dtype_bytes=2),
                                                activations.logits_bytes(fp.arch, batch=1), 0), executes=True)
        theirs_same_room = _gpu_params(model, _accelerate_map(model, max(room, 0)))
        if split:  # finer units pack tighter than accelerate's walk, which also reserves its largest layer
            assert _bytes(model, mine) <= room
        else:
            assert mine <= theirs_same_room, sorted(mine - theirs_same_room)[:5]
        if 0 < len(mine) < sum(1 for _ in model.parameters()):
            checked_split = True
    assert checked_split, "no budget split the model between GPU and CPU"
