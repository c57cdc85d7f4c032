"""The training runtime's plans: what it picks for Llama-3.1-8B on an 8 GB, a 24 GB and an 80 GB
GPU and on 8 x 80 GB (from the bundled catalog: offline), and the parts it prices."""

from __future__ import annotations

import pytest

from planner.api import plan, resolve_hardware
from planner.core.errors import UsageError
from planner.core.records import Constraints
from planner.core.units import GiB
from planner.runtimes import registry
from planner.runtimes.training import memory, plans, shapes
from planner.sources import catalog

LLAMA_8B = "meta-llama/Llama-3.1-8B"


def _plan(hardware: str, method: str, seq: int = 2048, batch: int = 1, **options):
    c = Constraints(batch=batch, options=tuple(sorted({"train": method, "seq": seq, **options}.items())))
    return plan(LLAMA_8B, hardware=resolve_hardware(hardware=hardware), constraints=c, snapshot=catalog.lookup(LLAMA_8B),
                runtime="training")


def _chosen(report):
    assert report.solution is not None, report.rejected[-1].reasons
    return report.solution.chosen.settings


def test_training_never_joins_auto_planning():
    assert "training" in registry.names()
    assert all(rt.name != "training" for rt in registry.chosen("auto"))
    assert registry.chosen("training")[0].name == "training"


def test_8gb_gpu_fits_qlora_only_at_a_short_sequence_with_checkpointing():
    # the nf4 base is 5.3 GiB (its bf16 embedding and LM head are 2 GiB of it) of the 6.6 GiB usable
    assert not _plan("rtx-4060-8gb", "qlora").fits
    s = _chosen(_plan("rtx-4060-8gb", "qlora", seq=128))
    assert (s.method, s.gradient_checkpointing, s.precision) == ("qlora", True, "bf16-mixed")
    assert not _plan("rtx-4060-8gb", "lora", seq=128).fits


def test_24gb_gpu_lora_and_qlora_need_checkpointing_full_does_not_fit():
    q = _chosen(_plan("rtx-4090", "qlora"))
    assert q.gradient_checkpointing and q.optimizer == "adamw"
    lo = _chosen(_plan("rtx-4090", "lora"))
    assert lo.gradient_checkpointing
    full = _plan("rtx-4090", "full")
    assert not full.fits and full.suggestion


def test_80gb_gpu_trains_lora_without_checkpointing_and_full_with_cheaper_states():
    lo = _chosen(_plan("a100-80gb", "lora"))
    assert not lo.gradient_checkpointing and lo.optimizer == "adamw"
    full = _chosen(_plan("a100-80gb", "full"))
    # 16 B/param of mixed-precision AdamW (128 GB for 8B) cannot fit: an 8-bit optimizer or pure bf16
    assert full.optimizer != "adamw" or full.precision == "bf16"
    assert full.optimizer not in ("sgd", "adafactor")


def test_8x80gb_full_fine_tuning_shards_without_offload():
    s = _chosen(_plan("8x-a100-80gb", "full"))
    assert s.gpus == 8 and s.strategy in ("zero2", "fsdp", "zero3") and s.optimizer == "adamw"
    ddp = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="off")
    assert not any(p.settings.strategy == "ddp" for p in (ddp.solution.alternatives if ddp.solution else ()))


def test_checkpointing_forced_on_or_off_is_kept():
    on = _chosen(_plan("a100-80gb", "lora", gradient_checkpointing="on"))
    assert on.gradient_checkpointing
    off = _plan("rtx-4090", "lora", gradient_checkpointing="off")
    assert not off.fits and all(not p.settings.gradient_checkpointing for p in off.rejected)


def test_largest_batch_and_sequence_are_reported_and_fit():
    r = _plan("rtx-4090", "qlora")
    s = _chosen(r)
    assert s.max_batch >= 1 and s.max_seq >= 2048
    hw = resolve_hardware(hardware="rtx-4090")
    fp = r.footprint
    assert plans.fits(fp, hw, r.constraints, s, seq=s.max_seq)
    assert not plans.fits(fp, hw, r.constraints, s, seq=s.max_seq + 1)
    assert not plans.fits(fp, hw, r.constraints, s, batch=s.max_batch + 1)


def test_lora_trainable_parameters_of_llama_8b():
    # r x (in + out) per projection: q, o 4096+4096; k, v 4096+1024; gate, up, down 4096+14336
    arch = catalog_footprint().arch
    n, tensors, largest = shapes.lora_parameters(arch, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    assert n == 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432) == 41_943_040
    assert tensors == 32 * 14 and largest == 16 * 14336


def test_full_fine_tuning_states_are_16_bytes_per_parameter_with_adamw_in_mixed_precision():
    r = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="on")
    fp = r.footprint
    s = next(p.settings for p in [*r.rejected, *(r.solution.alternatives if r.solution else ()), *((r.solution.chosen,) if r.solution else ())]
             if p.settings.strategy == "ddp" and p.settings.precision == "bf16-mixed")
    p = memory.parts(fp, s, cpu=False, foreach=True)
    assert p.weights + p.gradients + p.optimizer == 16 * fp.parameters  # ZeRO paper, sec. 3.1: 16 B/param
    assert p.step == 4 * fp.parameters  # foreach AdamW: one more fp32 copy of the parameters


def test_unknown_requests_are_usage_errors():
    with pytest.raises(UsageError):
        _plan("rtx-4090", "lora", gpus=2)


def catalog_footprint():
    from planner.model.footprint import estimate

    return estimate(catalog.lookup(LLAMA_8B))


def test_qlora_base_is_about_a_quarter_of_bf16_plus_the_embeddings():
    fp = catalog_footprint()
    r = _chosen(_plan("rtx-4090", "qlora"))
    base = memory.base_weights(fp, r, cpu=False)
    # 6.98B linear params in nf4 (~0.52 B each with absmax) + 2 x 525M embedding/head params in bf16
    assert 5.2 * GiB < base < 5.45 * GiB


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "mixtral"])
def test_lora_trainable_parameters_match_peft(tiny_models, arch):
    # dense with biases (qwen2), sliding window (mistral), fused MoE experts (mixtral: MLP targets dropped)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tiny_models.build(arch, "float32")
    c = Constraints(options=(("lora_r", 4), ("seq", 32), ("train", "lora")))
    r = plan(str(folder), hardware=resolve_hardware(hardware="cpu-laptop-16gb"), constraints=c, runtime="training")
    s = r.solution.chosen.settings
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(s.lora_targets)))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == s.trainable_parameters
    assert any("cannot target" in n for n in r.solution.chosen.notes) == (arch == "mixtral")


def test_gradient_accumulation_keeps_the_gradients_through_the_forward():
    one = _plan("a100-80gb", "full", optimizer="adamw-8bit", gradient_checkpointing="on")
    two = _plan("a100-80gb", "full", optimizer="adamw-8bit", gradient_checkpointing="on", grad_accum=4)
    a, b = (r.solution.chosen.memory["cuda:0"] for r in (one, two))
    assert b.gradients == a.gradients and b.total > a.total
    assert two.solution.chosen.settings.grad_accum == 4


def test_gpus_zero_trains_on_the_cpu_in_fp32():
    r = _plan("rtx-4090", "lora", seq=256, gpus=0)
    p = r.solution.chosen if r.solution else r.rejected[0]
    assert set(p.memory) == {"cpu"} and p.settings.precision == "fp32" and not p.on_accelerators
