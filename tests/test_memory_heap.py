"""The CPU heap terms of the memory model, on Llama-3.2-1B's real layout (the bundled catalog entry).

glibc keeps freed blocks under its 32 MiB mmap threshold, so what bnb's quantize-on-load leaves on
the heap depends on the size of each working copy of each weight, not on the average: on
Llama-3.2-1B every copy of the attention projections is under it, and only the packed 4-bit form of
the MLP weights (benchmarks/accuracy).
"""

from __future__ import annotations

from machines import cpu_only
from planner import api
from planner.sources import catalog
from planner.model.footprint import estimate
from planner.runtimes.transformers.memory import activations, overhead, weights
from planner.runtimes.transformers.settings import Scheme
from planner.core.records import Constraints
from planner.core.units import GiB

REPO = "meta-llama/Llama-3.2-1B"
Q_O, K_V, MLP = 2048 * 2048, 512 * 2048, 8192 * 2048  # hidden 2048, 8 KV heads of 64, intermediate 8192


def _footprint():
    snap = catalog.lookup(REPO)
    assert snap is not None
    return estimate(snap)


def test_a_decoder_layer_lists_each_linear_weight_size() -> None:
    layer = next(u for u in _footprint().units if u.kind == "layer")
    assert layer.linear_sizes == ((K_V, 2), (Q_O, 2), (MLP, 3))
    assert sum(p * n for p, n in layer.linear_sizes) == layer.role("linear").params


def test_the_quantize_heap_counts_only_weights_whose_fp32_copy_is_under_the_threshold() -> None:
    fp = _footprint()
    layer = next(u for u in fp.units if u.kind == "layer")
    assert MLP * 4 >= overhead.GLIBC_MMAP_THRESHOLD_MAX > Q_O * 4
    nf4 = Scheme(dtype="bfloat16", quantization="nf4")
    (fp32, f32_share), (bf16, bf16_share), (packed, packed_share) = overhead.CPU_QUANTIZE_COPIES["nf4"]
    assert MLP * bf16 >= overhead.GLIBC_MMAP_THRESHOLD_MAX > MLP * packed  # the MLP weights count by their packed form
    attention = (2 * Q_O + 2 * K_V) * (fp32 * f32_share + bf16 * bf16_share + packed * packed_share)
    mlp = 3 * MLP * packed * packed_share
    assert weights.quantize_retained(layer, nf4) == int(attention + mlp)
    assert weights.quantize_retained(layer, Scheme(dtype="bfloat16", quantization="none")) == 0
    assert weights.largest_heap_linear(fp.units) == Q_O


def test_a_cpu_nf4_plan_holds_the_quantize_heap_on_top_of_the_prefill() -> None:
    hw = cpu_only(16 * GiB)
    c = Constraints(context=1024, dtype="bfloat16", quantization="nf4")
    plan = api.plan(REPO, hardware=hw, constraints=c, snapshot=catalog.lookup(REPO)).solution.chosen
    fp = _footprint()
    prefill = activations.prefill_bytes(fp.arch, context=1024, batch=1, dtype_bytes=2, quantization="nf4",
                                        largest_linear=fp.largest_linear, heap_linear=weights.largest_heap_linear(fp.units), cpu=True)
    held = sum(weights.quantize_retained(u, Scheme(dtype="bfloat16", quantization="nf4")) for u in fp.units)
    assert held > 0
    assert plan.memory["cpu"].activations == prefill + activations.logits_bytes(fp.arch, batch=1) + held
