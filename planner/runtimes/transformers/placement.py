"""Assigning placement units to devices, the way accelerate's ``infer_auto_device_map`` walks them.

Units are taken in forward order and packed into the first device with room, moving on (never
back) when one is full -- accelerate's sequential walk (accelerate/utils/modeling.py). Unlike
accelerate, the room on each device already excludes what generation will need there: the KV
cache of the layers it holds, prefill activations, and fixed overheads. accelerate reserves none
of that, which is how ``device_map="auto"`` loads and then runs out of memory in ``generate``.

Offloaded units ("cpu" or "disk" while an accelerator runs the model) are executed on the main
device: accelerate's hooks copy each one's weights there for its forward, and its KV cache lives
there. Both are reserved on the main device before packing, iterating until the reservation
covers what ends up offloaded (it only grows, so this settles in a few rounds).

A MoE decoder layer may come as two costs, its dense part and its fused experts module (same
``group``); when they land on different devices, :func:`flat_device_map` names the dense part's
modules one by one, so that the map stays flat and disjoint as accelerate's dispatch requires.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


def kv_device(device: str, executing: Collection[str], main: str) -> str:
    """The device that holds the KV cache of a unit placed on ``device``: the one that runs it.

    An offloaded unit ("cpu" or "disk" while an accelerator runs the model) runs on ``main``, so its
    K and V are made there. The one rule for the placement, the budget and the plan file's
    ``kv_after_prefill``.
    """
    return device if device in executing else main


@dataclass(frozen=True, slots=True)
class Cost:
    """What one unit costs where it may go.

    Attributes:
        name: the unit's module name.
        on_exec: bytes on a device that runs it (weights in the plan's scheme, plus its KV).
        kv: of which KV cache (it follows the layer to its execution device).
        offloaded: weight bytes when kept on "cpu"/"disk" (bnb leaves offloaded modules unquantized).
        streamed: bytes copied to the main device when an offloaded unit runs.
        tied_to: a unit sharing this one's weight; both go to the same device.
        no_disk: the unit may not go to disk (a tied embedding: transformers cannot tie a disk weight).
        stored: bytes as stored in the checkpoint.
        converted: the load rewrites it (dtype cast, quantization, fused experts) instead of
            memory-mapping it.
        written: bytes written to the offload folder if it goes to disk (only tensors rebuilt at
            load are; others are read from the checkpoint in place).
        group: the module a split cost belongs to (a MoE layer split into dense part and experts).
        keys: the device_map keys a dense part stands for, when its group is split across devices.
        kept_mapped: stored bytes of converted tensors whose checkpoint pages stay mapped in the
            process after the load (the file stays mapped while any tensor of it is used in
            place); page cache, so reclaimable, but in the peak RSS.
        retained: heap the CPU process keeps after fusing this unit's experts at load (glibc
            keeps freed blocks under its mmap threshold; later allocations reuse them).
        quantize_retained: the same, after bnb quantized the unit's linear weights.
        unread: stored bytes of the unit that stay memory-mapped and unread on the executing CPU
            (left out of ``on_exec``): a token embedding's rows no token uses.
        stream_retained: heap the CPU process keeps from streaming this unit from disk at every
            forward, when each pass casts it (CPU execution).
    """

    name: str
    on_exec: int
    kv: int
    offloaded: int
    streamed: int
    tied_to: str | None = None
    no_disk: bool = False
    stored: int = 0
    converted: bool = False
    written: int = 0
    group: str | None = None
    keys: tuple[str, ...] = ()
    kept_mapped: int = 0
    retained: int = 0
    quantize_retained: int = 0
    stream_retained: int = 0
    unread: int = 0


@dataclass(frozen=True, slots=True)
class Slot:
    """A device units may be put on, with the bytes available for units (reservations removed).

    ``weight_scale`` and ``transient_scale`` inflate what lands there by the allocator's slack
    (GPU caching allocator; 1.0 elsewhere): weights by the first, KV and streamed layers by the second.
    """

    device: str
    kind: str  # "gpu" (executes), "cpu" (executes when no GPU does, else offload), "disk"
    room: int
    executes: bool
    weight_scale: float = 1.0
    transient_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where each unit went, what each slot holds, and what the main device must keep free."""

    device_of: dict[str, str]
    used: dict[str, int]
    kv_on: dict[str, int]
    reserve: int
    unplaced: tuple[str, ...]


def assign(costs: list[Cost], slots: list[Slot], *, caps: dict[str, int] | None = None) -> Assignment:
    """Pack ``costs`` into ``slots`` in order; ``caps`` optionally lowers a slot's room (balanced)."""
    main = next((s.device for s in slots if s.executes), slots[0].device)
    reserve = 0
    result = _walk(costs, slots, main, reserve, caps)
    for _ in range(8):
        need = _offload_reserve(costs, result, slots)
        if need <= reserve:
            break
        reserve = need
        result = _walk(costs, slots, main, reserve, caps)
    return result


def _walk(costs: list[Cost], slots: list[Slot], main: str, reserve: int, caps: dict[str, int] | None) -> Assignment:
    room = {s.device: s.room - (int(reserve * s.transient_scale) if s.device == main else 0) for s in slots}
    if caps:
        room = {d: min(r, caps.get(d, r)) for d, r in room.items()}
    used = {s.device: 0 for s in slots}
    kv_on = {s.device: 0 for s in slots}
    executing = {s.device for s in slots if s.executes}
    device_of: dict[str, str] = {}
    unplaced: list[str] = []
    i = 0
    for c in costs:
        if c.tied_to is not None and c.tied_to in device_of:
            device_of[c.name] = device_of[c.tied_to]
            continue
        while i < len(slots):
            s = slots[i]
            if s.kind == "disk" and c.no_disk:
                break
            if s.executes:
                cost = int((c.on_exec - c.kv) * s.weight_scale + c.kv * s.transient_scale)
            else:
                cost = c.offloaded
            if used[s.device] + cost <= room[s.device]:
                device_of[c.name] = s.device
                used[s.device] += cost
                kv_on[kv_device(s.device, executing, main)] += c.kv
                break
            i += 1
        if c.name not in device_of:
            unplaced.append(c.name)
    return Assignment(device_of=device_of, used=used, kv_on=kv_on, reserve=reserve, unplaced=tuple(unplaced))


def _offload_reserve(costs: list[Cost], result: Assignment, slots: list[Slot]) -> int:
    executing = {s.device for s in slots if s.executes}
    off = [c for c in costs if result.device_of.get(c.name) not in executing and c.tied_to is None]
    if not off:
        return 0
    return sum(c.kv for c in off) + max(c.streamed for c in off)


def balanced_caps(costs: list[Cost], gpus: list[Slot]) -> dict[str, int]:
    """Per-GPU targets for a balanced map: an equal share plus one largest unit of slack
    (accelerate's ``get_balanced_memory`` evens the load and adds a buffer of the largest
    no-split block), the last GPU taking what remains."""
    total = sum(c.on_exec for c in costs if c.tied_to is None)
    largest = max((c.on_exec for c in costs), default=0)
    share = -(-total // max(1, len(gpus))) + largest
    caps = {s.device: min(s.room, share) for s in gpus[:-1]}
    return caps


def split_groups(costs: list[Cost], device_of: dict[str, str]) -> list[str]:
    """Groups (MoE layers) whose parts landed on different devices."""
    devices: dict[str, set[str]] = {}
    for c in costs:
        if c.group is not None and c.name in device_of:
            devices.setdefault(c.group, set()).add(device_of[c.name])
    return [g for g, ds in devices.items() if len(ds) > 1]


def flat_device_map(costs: list[Cost], device_of: dict[str, str]) -> dict[str, str]:
    """Module name -> device for every placed cost: flat, disjoint keys, never ``""``.

    A split group whose parts share a device is named once (``model.layers.3``); otherwise the
    dense part's modules are listed beside the experts module.
    """
    split = set(split_groups(costs, device_of))
    out: dict[str, str] = {}
    for c in costs:
        if c.name not in device_of:
            continue
        dev = device_of[c.name]
        if c.group is None:
            out[c.name] = dev
        elif c.group not in split:
            out[c.group] = dev
        else:
            for key in c.keys or (c.name,):
                out[key] = dev
    return out
