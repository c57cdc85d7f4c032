"""A placement unit's weight bytes for a scheme, on the device that holds it.

bitsandbytes replaces ``nn.Linear`` modules only (transformers/integrations/bitsandbytes.py,
``replace_with_bnb_linear``) and leaves alone what ``get_modules_to_not_convert`` lists
(quantizers/base.py): the output embedding (lm_head), tied weights, the last module, the model's
``_keep_in_fp32_modules`` and, with ``llm_int8_enable_fp32_cpu_offload``, every module the
device_map puts on "cpu" or "disk" (quantizer_bnb_4bit.py ``_process_model_before_weight_loading``).
Those stay in the load dtype. MoE experts that transformers 5 fuses into 3-D parameters
(``mlp.experts.gate_up_proj``, conversion_mapping.py) are not ``nn.Linear`` and stay too.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.model.bnb import nf4_bytes
from planner.model.footprint import Unit
from planner.model.prequant import PreQuant
from planner.runtimes.transformers.memory import overhead
from planner.runtimes.transformers.settings import Scheme

# bnb LLM.int8: int8 weight (1 byte/param) plus one fp32 absmax per output row, SCB
# (bitsandbytes/nn/modules.py Int8Params._quantize -> functional.int8_vectorwise_quant).
INT8_BYTES_PER_PARAM = 1
INT8_SCALE_BYTES_PER_ROW = 4
# bnb 4-bit storage is a fact of the format, shared with the training runtime: planner/model/bnb.py.


def unit_bytes(unit: Unit, scheme: Scheme, *, offloaded: bool, prequant: PreQuant | None = None, dequantize: bool = False,
               cpu: bool = False) -> int:
    """Bytes ``unit`` occupies once loaded under ``scheme``.

    Args:
        offloaded: the unit sits on "cpu" or "disk" while an accelerator runs the model; bnb then
            leaves it unquantized (``llm_int8_enable_fp32_cpu_offload``).
        prequant: the checkpoint's own quantization, when it has one.
        dequantize: the runtime dequantizes the pre-quantized weights to ``scheme.dtype`` on load
            (see ``planner.runtimes.transformers.quantizers``).
        cpu: the unit runs on the CPU (bnb 4-bit then holds its CPU layout after the first forward).
    """
    width = scheme.dtype_bytes
    total = 0
    for role, s in unit.roles.items():
        if role in ("packed", "qaux"):
            if dequantize:
                total += s.params * width if role == "packed" else 0
            else:
                total += s.bytes
        elif role == "int":
            total += s.bytes
        elif role == "linear" and scheme.bnb and not offloaded:
            total += _bnb_linear(scheme.quantization, s.params, s.rows, s.tensors, cpu=cpu)
        else:
            total += s.params * width
    return total


def _bnb_linear(quant: str, params: int, rows: int, tensors: int, *, cpu: bool) -> int:
    if quant == "int8":
        return params * INT8_BYTES_PER_PARAM + rows * INT8_SCALE_BYTES_PER_ROW
    return nf4_bytes(params, tensors, cpu=cpu)


def converted_stored(unit: Unit, scheme: Scheme, *, offloaded: bool = False, dequantize: bool = False) -> int:
    """Stored bytes of the unit's tensors that the load converts rather than memory-maps: bnb's
    quantized linears, MoE experts fused at load, dequantized packed weights. (A dtype cast
    converts every tensor; callers handle that case.)"""
    total = unit.rebuilt_bytes
    if scheme.bnb and not offloaded:
        total += unit.role("linear").bytes
    if dequantize:
        total += unit.role("packed").bytes + unit.role("qaux").bytes
    return total


def load_retained(unit: Unit, scheme: Scheme) -> int:
    """Heap the CPU process keeps after fusing this unit's MoE experts at load (see
    overhead.CPU_REBUILD_RETAINED).

    Only working copies under glibc's largest mmap threshold stay on the heap; bigger ones are
    unmapped when freed, so the models that matter most (billions of parameters, tensors of
    hundreds of MB) keep little of this.
    """
    width = scheme.dtype_bytes
    total = 0
    experts = unit.role("expert")
    if unit.rebuilt_bytes and experts.tensors:
        # per layer, transformers stacks the experts' matrices per projection ([E, out, in]):
        # the working copies are a third of the layer's expert weights each (gate, up, down)
        stacked = experts.params * width // 3
        if stacked < overhead.GLIBC_MMAP_THRESHOLD_MAX:
            fused_gate_up = 2 * stacked
            where = "above" if fused_gate_up >= overhead.GLIBC_MMAP_THRESHOLD_MAX else "below"
            total += int(experts.params * width * overhead.CPU_REBUILD_RETAINED[where])
    return total


# Bytes the kernel maps around each page fault on a file mapping (fault_around_bytes, 64 KiB by
# default: mm/memory.c), so a row read from a memory-mapped embedding brings up to this much
# besides itself into the process's RSS.
FAULT_AROUND_BYTES = 64 * 1024


def unread_embedding(unit: Unit, vocab_size: int, *, tokens: int) -> int:
    """Stored bytes of a memory-mapped token embedding that a run of ``tokens`` tokens never pages
    in: each token reads one row. Qwen2.5-7B's 1,039 MiB embedding (CPU, nf4, 544 tokens) left
    its file-backed RSS 930 MiB under a count of the whole embedding (benchmarks/accuracy,
    qwen7bhalf-nf4-c512)."""
    if vocab_size <= 0 or unit.stored_bytes <= 0:
        return 0
    row = unit.stored_bytes // vocab_size
    return max(0, unit.stored_bytes - tokens * (row + FAULT_AROUND_BYTES))


def largest_heap_linear(units: Iterable[Unit]) -> int:
    """Elements of the largest linear weight whose fp32 working copy stays under glibc's largest
    mmap threshold (the CPU heap keeps the copies of those, not of bigger ones)."""
    return max((params for u in units for params, _ in u.linear_sizes if params * 4 < overhead.GLIBC_MMAP_THRESHOLD_MAX),
               default=0)


def quantize_retained(unit: Unit, scheme: Scheme, *, offloaded: bool = False) -> int:
    """Heap the CPU process keeps after bnb quantized this unit's linear weights at load (see
    overhead.CPU_QUANTIZE_COPIES); 0 without bnb or for a unit bnb leaves alone.

    bnb quantizes one weight at a time; of each working copy, those under glibc's largest mmap
    threshold stay in part on the heap (Llama-3.2-1B: every copy of its attention projections,
    only the packed form of its 16.8M-parameter MLP weights).
    """
    if not scheme.bnb or offloaded or not unit.role("linear").tensors:
        return 0
    total = 0.0
    for params, n in unit.linear_sizes:
        for width, share in overhead.CPU_QUANTIZE_COPIES.get(scheme.quantization, ()):
            if params * width < overhead.GLIBC_MMAP_THRESHOLD_MAX:
                total += params * n * width * share
    return int(total)


def stream_retained(unit: Unit, scheme: Scheme) -> int:
    """Heap the CPU process keeps from casting this unit at each forward from disk (see
    overhead.CPU_STREAM_RETAINED): the cast copies are freed after the layer runs, but those
    under glibc's largest mmap threshold stay on the heap, interleaved with activations."""
    tensors = sum(s.tensors for s in unit.roles.values())
    if not tensors or unit.params * scheme.dtype_bytes // tensors >= overhead.GLIBC_MMAP_THRESHOLD_MAX:
        return 0
    return int(unit.params * scheme.dtype_bytes * overhead.CPU_STREAM_RETAINED)
