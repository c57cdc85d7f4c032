"""Multi-GPU sharding against DeepSpeed's own estimators, the launch configs, and the predictions
for Llama-3.1-8B against the published torchtune and Unsloth figures (differences stated)."""

from __future__ import annotations

import json

import pytest
from test_training_plans import LLAMA_8B, _plan, catalog_footprint

from planner.api import emit
from planner.core.units import GiB
from planner.runtimes.training import distributed, memory, shapes


def _by_strategy(report, strategy: str, precision: str = "bf16-mixed"):
    every = [*((report.solution.chosen,) + report.solution.alternatives if report.solution else ()), *report.rejected]
    return next(p for p in every if p.settings.strategy == strategy and p.settings.precision == precision)


@pytest.mark.parametrize(("strategy", "stage", "offload"), [("zero2", 2, False), ("zero2-offload", 2, True), ("zero3", 3, False),
                                                            ("zero3-offload", 3, True)])
def test_model_states_per_gpu_match_deepspeeds_estimators_for_adamw(strategy, stage, offload):
    r = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="on")
    fp = catalog_footprint()
    p = _by_strategy(r, strategy)
    m = p.memory["cuda:0"]
    gpu, cpu = distributed.deepspeed_estimate(stage, params=fp.parameters, largest_module=shapes.largest_tensor(fp), gpus=8,
                                              gpus_per_node=8, offload=offload)
    states = m.weights + m.gradients + m.optimizer
    # fitcheck's ZeRO parts reproduce DeepSpeed's count of model states (16-bit weights and grads,
    # fp32 master weights and Adam's two states) to within rounding
    assert abs(states - gpu) <= 8 * 8, (strategy, states, gpu)
    if offload:
        assert p.memory["cpu"].optimizer == pytest.approx(cpu, rel=0.01) or stage == 2


def test_sharding_lowers_per_gpu_memory_in_the_expected_order():
    r = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="on")
    total = {s: _by_strategy(r, s).memory["cuda:0"].total for s in ("ddp", "zero2", "zero3", "zero3-offload")}
    assert total["ddp"] > total["zero2"] > total["zero3"] > total["zero3-offload"]


def test_emitted_deepspeed_and_accelerate_configs():
    r = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="on")
    p = _by_strategy(r, "zero3-offload")
    art = emit(r, p)
    ds = json.loads(art.files["ds_config.json"])
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu" and ds["bf16"]["enabled"]
    assert ds["train_micro_batch_size_per_gpu"] == 1
    acc = art.files["accelerate_config.yaml"]
    assert "distributed_type: DEEPSPEED" in acc and "num_processes: 8" in acc
    assert art.commands["train"][:2] == ("accelerate", "launch")
    fsdp = emit(r, _by_strategy(r, "fsdp")).files["accelerate_config.yaml"]
    assert "distributed_type: FSDP" in fsdp and "ds_config.json" not in emit(r, _by_strategy(r, "fsdp")).files


# --- published GPU figures for Llama-3.1-8B ---------------------------------------------------------
# torchtune's README (memory table, one RTX 4090, batch 2, packed seq 2048, activation checkpointing):
# QLoRA 7.4 GiB, LoRA 16.2 GiB, full 18.9 GiB. Their recipes also use a chunked cross-entropy
# (CEWithChunkedOutputLoss: the logits are upcast to fp32 one chunk at a time) and, for full, pure
# bf16 weights with a paged 8-bit AdamW stepped inside the backward (optimizer_in_bwd: no full set
# of gradients is ever held). fitcheck plans the transformers loss, which upcasts all the logits at
# once; its loss alone is 14 B per token per vocabulary entry: 4,096 tokens x 128,256 x 14 = 6.8 GiB.
TORCHTUNE_GIB = {"qlora": 7.4, "lora": 16.2, "full": 18.9}


def test_predictions_against_torchtune_differ_by_the_loss_and_the_optimizer_in_backward():
    fp = catalog_footprint()
    arch = fp.arch
    loss = 4096 * arch.vocab_size * (4 + 4 * memory.LOSS_BACKWARD_FP32 + 2)
    assert 6.7 * GiB < loss < 6.9 * GiB
    q = _by_strategy(_plan("rtx-4090", "qlora", batch=2, gradient_checkpointing="on"), "single").memory["cuda:0"].total
    lo = _by_strategy(_plan("rtx-4090", "lora", batch=2, gradient_checkpointing="on"), "single").memory["cuda:0"].total
    # fitcheck predicts more than torchtune measured (never less): QLoRA 15.5 vs 7.4 GiB and LoRA 25.1
    # vs 16.2 GiB. Without the full-logits loss (6.8 GiB) and its share of the allocator slack
    # (15 %: 1.0 GiB) the rest is QLoRA 7.6 vs 7.4 GiB and LoRA 17.3 vs 16.2 GiB; the CUDA context
    # (600 MiB, which torch's peak-allocated figure leaves out) and the slack on the rest of the
    # activations make most of what remains
    for total, published in ((q, TORCHTUNE_GIB["qlora"]), (lo, TORCHTUNE_GIB["lora"])):
        assert total > published * GiB
        rest = total - loss * 1.15
        assert 0 < rest - published * GiB < 1.3 * GiB, (rest / GiB, published)
    full = _plan("rtx-4090", "full", batch=2, gradient_checkpointing="on", optimizer="paged-adamw-8bit")
    assert not full.fits  # fitcheck keeps every gradient and the paged states resident: 52 GiB in pure bf16
    pure = _by_strategy(full, "single", precision="bf16").memory["cuda:0"]
    # torchtune's 18.9 GiB is the bf16 weights (15.0 GiB) plus the working set; fitcheck adds the
    # gradients (15.0 GiB) that optimizer_in_bwd frees at once and the 8-bit states (15.2 GiB) that
    # bnb's paged optimizer lets the driver evict to host memory
    assert pure.weights == pytest.approx(15.0 * GiB, rel=0.01) and pure.gradients == pure.weights


# Unsloth's table (Llama-3.1-8B, QLoRA r=32, batch 1, HF + Flash Attention 2 as the baseline)
# implies about 2.53 MB per token above about 9.7 GB.
UNSLOTH_MB_PER_TOKEN = 2.53
UNSLOTH_BASE_GB = 9.7


def test_qlora_memory_per_token_against_unsloths_hf_baseline():
    def total(seq: int) -> int:
        r = _plan("a100-80gb", "qlora", seq=seq, gradient_checkpointing="on", lora_r=32)
        return r.solution.chosen.memory["cuda:0"].total

    a, b = total(2048), total(8192)
    slope = (b - a) / 6144
    base = a - slope * 2048
    # per token: 2.37 MB against 2.53. The HF baseline's prepare_model_for_kbit_training upcasts the
    # bf16 embedding and LM head to fp32, which the emitted script does not call: its logits are then
    # fp32 (2 B more per vocabulary entry per token: 2.37 + 0.26 = 2.63 MB, 4 % over Unsloth's), and
    # the two weights take 2 x 525M params x 2 B = 2.1 GB more (7.5 + 2.1 = 9.6 GB against 9.7)
    vocab = catalog_footprint().arch.vocab_size
    assert slope / 1e6 == pytest.approx(UNSLOTH_MB_PER_TOKEN, rel=0.08)
    assert (slope + 2 * vocab) / 1e6 == pytest.approx(UNSLOTH_MB_PER_TOKEN, rel=0.05)
    upcast = 2 * vocab * 4096 * 2
    assert abs(base + upcast - UNSLOTH_BASE_GB * 1e9) < 0.3e9
    assert LLAMA_8B


def test_multi_gpu_script_parses_and_launches_through_accelerate():
    import ast

    r = _plan("8x-a100-80gb", "full", optimizer="adamw", gradient_checkpointing="on")
    for strategy in ("ddp", "zero2", "zero3-offload", "fsdp"):
        art = emit(r, _by_strategy(r, strategy))
        tree = ast.parse(art.files["train.py"])
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        doc = json.loads(art.files["plan.json"])
        assert doc["train"]["strategy"] == strategy and doc["train"]["gpus"] == 8
        if strategy == "zero3-offload":
            assert json.loads(art.files["ds_config.json"])["optimizer"]["type"] == "AdamW"
    # bitsandbytes' 8-bit optimizers are planned with DDP only
    eight = _plan("8x-a100-80gb", "full", optimizer="adamw-8bit")
    every = [*((eight.solution.chosen,) + eight.solution.alternatives if eight.solution else ()), *eight.rejected]
    assert {p.settings.strategy for p in every} == {"ddp"}


# --- host RAM while the ranks load the model ------------------------------------------------------

def test_host_ram_at_load_counts_a_copy_per_rank_under_ddp_and_zero2_but_one_per_node_under_fsdp():
    from planner.core.records import Constraints
    from planner.api import plan, resolve_hardware
    from planner.sources import catalog
    from test_training_plans import LLAMA_8B

    def on(ram_gib: int):
        c = Constraints(batch=1, options=tuple(sorted({"train": "full", "seq": 2048, "optimizer": "adamw",
                                                       "gradient_checkpointing": "on"}.items())))
        return plan(LLAMA_8B, hardware=resolve_hardware(hardware="4x-l4", ram=ram_gib * GiB), constraints=c,
                    snapshot=catalog.lookup(LLAMA_8B), runtime="training")

    r = on(192)
    ddp, zero2, fsdp, zero3 = (_by_strategy(r, s) for s in ("ddp", "zero2", "fsdp", "zero3"))
    whole = ddp.memory["cuda:0"].weights  # one rank's loaded model (fp32 masters of bf16-mixed: 4 B x 8.03 B params)
    assert 29 * GiB < whole < 31 * GiB
    # from_pretrained without a device_map: every rank of DDP and ZeRO-2 loads the whole model into host RAM
    assert ddp.memory["cpu"].weights == zero2.memory["cpu"].weights == 4 * whole
    # FSDP's cpu_ram_efficient_loading: local rank 0 only; ZeRO-3's zero.Init: the node's partitions
    assert fsdp.memory["cpu"].weights == whole and zero3.memory["cpu"].weights == whole
    assert all(p.memory["cpu"].overhead == 4 * 375 * 1024**2 for p in (ddp, fsdp))  # four processes' imports
    # with 96 GiB of RAM the four copies (120 GiB) do not fit: the rejection says so, with the numbers
    small = on(96)
    z2 = _by_strategy(small, "zero2")
    assert not z2.fits and any("on cpu" in why and "GiB usable" in why for why in z2.reasons), z2.reasons
    assert _by_strategy(small, "fsdp").memory["cpu"].total < _by_strategy(small, "fsdp").memory["cpu"].capacity
    fsdp_config = emit(r, fsdp).files["accelerate_config.yaml"]
    assert "fsdp_cpu_ram_efficient_loading: true" in fsdp_config and "fsdp_sync_module_states: true" in fsdp_config
