"""Per-device accounting of a placement: what each device holds at its peak, and what must fit.

A device's peak is the larger of two phases:

- **load**: weights arrive. Tensors that must be converted (dtype cast, bnb quantization, MoE
  experts fused at load) are read through the page cache: their stored bytes show in RSS as file
  pages until the load ends, and the converted copies are anonymous memory. Weights kept in their
  stored dtype stay memory-mapped and are not even touched yet. bnb on a GPU holds one weight in
  full precision while quantizing it.
- **run**: generate. Every resident weight, the KV cache of the layers the device runs, the
  prefill's working set, the logits, and an offloaded layer being streamed in.

When the CPU runs the model, three things measured in benchmarks/accuracy join these:

- the checkpoint stays memory-mapped after a load that uses some tensors in place (anything but a
  full dtype cast), so the pages that converting the others read stay in RSS (``kept_mapped``);
- the heap the load's conversions left (glibc keeps freed blocks) is reused by the prefill, so
  the run holds the larger of the two (``retained``), and the load adds it; after a bnb 4-bit
  load the run holds both (``quantize_retained``);
- disk layers cast at every forward leave their copies on the heap (``stream_retained``).

File pages the kernel can drop on demand (the page cache of tensors already converted, or of a
disk-offloaded layer that was just used) count in the peak RSS that ``fitcheck verify`` measures,
but not in what must fit: ``required = max(run - reclaimable_run, load - reclaimable_load)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.core.records import DeviceMemory
from planner.runtimes.transformers.memory import overhead
from planner.runtimes.transformers.placement import Assignment, Cost
from planner.runtimes.transformers.settings import Scheme


@dataclass(frozen=True, slots=True)
class Transients:
    """Per-plan transient sizes: one layer's prefill working set, the logits, bnb's quantize copy."""

    prefill: int
    logits: int
    quantize: int


def rooms(device: str, *, free: int, margin: int, scheme: Scheme, t: Transients, executes: bool) -> int:
    """Bytes a device has for units (weights + their KV) once fixed costs and transients are set aside."""
    if device.startswith("cuda") or device == "mps":
        room = free - margin - overhead.gpu_fixed() - max(t.prefill + t.logits, t.quantize)
        return room - int((t.prefill + t.logits) * overhead.GPU_SLACK_TRANSIENT)
    if executes:
        return free - margin - overhead.cpu_fixed(scheme, executes=True) - t.prefill - t.logits
    return free - margin - overhead.cpu_fixed(scheme, executes=False)


def gpu_scales() -> tuple[float, float]:
    """(weight, transient) multipliers a GPU slot applies for allocator slack."""
    return 1 + overhead.GPU_SLACK_WEIGHTS, 1 + overhead.GPU_SLACK_TRANSIENT


def account(costs: list[Cost], result: Assignment, *, devices: dict[str, tuple[int, int]], executing: set[str],
            scheme: Scheme, t: Transients) -> dict[str, DeviceMemory]:
    """Predicted memory of every device of a placement.

    Args:
        devices: device -> (free bytes, margin bytes), in placement order.
        executing: devices that run layers (GPUs, or the CPU when no GPU does).
    """
    by_name = {c.name: c for c in costs}
    main = next((d for d in devices if d in executing), "cpu")
    w = dict.fromkeys(devices, 0)
    kv = {d: result.kv_on.get(d, 0) for d in devices}  # placed with the units (placement.kv_device)
    converted_w = dict.fromkeys(devices, 0)
    through_cache = 0  # stored bytes read through the CPU page cache during the load (reclaimable)
    kept_mapped = 0  # of those, pages that stay mapped after the load (CPU execution)
    retained = 0  # heap the CPU process keeps from fusing MoE experts at load
    quantized = 0  # heap the CPU process keeps from bnb's quantizing at load
    unread = 0  # mapped weights a CPU run never reads in (left out of on_exec)
    streamed = written = streamed_pages = stream_kept = 0
    for name, dev in result.device_of.items():
        c = by_name[name]
        if c.tied_to is not None:
            continue
        if dev in executing:
            resident = c.on_exec - c.kv
            unread += c.unread
        else:
            resident = c.offloaded
            streamed = max(streamed, c.streamed)
            streamed_pages = max(streamed_pages, c.stored)
            stream_kept += c.stream_retained
        w[dev] += resident
        if dev == "disk":
            written += c.written
            if c.converted:
                # converted on the CPU, then written out (rebuilt experts) or dropped (research Q1);
                # the heap its conversion used is reused by the next unit's (mixtral-fp32-disk-c128
                # kept 0.45x of all experts' fp32 bytes, about what its CPU-resident experts hold)
                through_cache += c.stored
                kept_mapped += c.kept_mapped
        elif dev != "cpu" or c.converted:
            through_cache += c.stored
            if dev == "cpu":
                converted_w[dev] += resident
                kept_mapped += c.kept_mapped
                retained += c.retained
                quantized += c.quantize_retained
    cpu_runs = "cpu" in executing
    out: dict[str, DeviceMemory] = {}
    for d, (free, margin) in devices.items():
        capacity = free - margin
        if d == "disk":
            out[d] = DeviceMemory(d, w[d], 0, 0, 0, written, capacity, free, margin, load=written, reclaimable=0, required=written)
            continue
        runs = d in executing
        act = (t.prefill + t.logits if runs else 0) + (streamed if d == main and streamed else 0)
        if d == "cpu":
            fixed_run = overhead.cpu_fixed(scheme, executes=runs)
            fixed_load = overhead.cpu_fixed(scheme, executes=False)
            run = fixed_run + w[d] + kv[d] + act
            run_reclaim = streamed if runs else 0
            # at the end of the load, mmapped weights in their stored dtype are not touched yet
            load = fixed_load + converted_w[d] + through_cache
            load_reclaim = through_cache
            if cpu_runs:
                # The load's leftover heap is reused by the prefill, so the run holds the larger
                # of the two; the converted tensors' pages stay mapped (page cache: reclaimable),
                # and so do a streamed disk unit's while it is read (only those of the streamed
                # bytes are reclaimable: its copies are not).
                # The parts still add up to the run: activations take the heap terms, overhead the
                # checkpoint pages kept mapped.
                # bnb int8's prefill reuses its quantize blocks (activations.INT8_*); nf4's does
                # not: Llama-3.2-1B in nf4 peaked at 3,394 MiB with a fixed mmap threshold (no heap
                # kept) and at 3,705-3,805 MiB without, 310-410 MiB more, on top of the prefill
                # (benchmarks/accuracy, llama1b-nf4-c1024)
                if scheme.quantization == "nf4":
                    act = max(act, retained) + quantized + stream_kept
                else:
                    act = max(act, retained + quantized) + stream_kept
                run = fixed_run + w[d] + kv[d] + act + kept_mapped
                run_reclaim = kept_mapped + min(streamed, streamed_pages)
                load += retained + quantized
                fixed_run += kept_mapped
            ov = fixed_run
        else:
            ov = overhead.gpu_fixed() + overhead.gpu_slack(w[d], kv[d] + act)
            run = w[d] + kv[d] + act + ov
            run_reclaim = 0
            load = overhead.gpu_fixed() + w[d] + (t.quantize if scheme.bnb and runs else 0) + overhead.gpu_slack(w[d], 0)
            load_reclaim = 0
        total = max(run, load)
        reclaim = run_reclaim if run >= load else load_reclaim
        need = max(run - run_reclaim, load - load_reclaim)
        out[d] = DeviceMemory(d, w[d], kv[d], act, ov, total, capacity, free, margin, load=load, reclaimable=reclaim, required=need,
                              unread=unread if d == "cpu" else 0, mapped=kept_mapped if d == "cpu" and cpu_runs else 0)
    return out
