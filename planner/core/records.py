"""The frozen records passed between the stages: probe -> estimate -> solve -> emit.

Bytes are ``int`` everywhere; bandwidths are bytes per second (``int``). Every record has
``to_dict()``, and ``--json`` prints exactly that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _ToDict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this record (tuples become lists)."""
        return _plain(self)


def from_plain(cls: type, data: Any) -> Any:
    """Rebuild a record of type ``cls`` from :meth:`to_dict`'s output, guided by its type hints.

    Nested records, tuples (fixed or ``tuple[X, ...]``), dicts of records and optional fields are
    rebuilt; anything else is taken as is. Raises TypeError/KeyError/ValueError on data of another shape.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} needs an object, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise KeyError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    return cls(**{name: _coerce(hints[name], value) for name, value in data.items()})


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        import sys
        import typing

        # The module's names as locals too: a field named like a module (Footprint.prequant) would
        # otherwise shadow it while its annotation ("prequant.PreQuant") is resolved.
        names = vars(sys.modules[cls.__module__])
        _HINTS[cls] = typing.get_type_hints(cls, names, names)
    return _HINTS[cls]


def _coerce(tp: Any, value: Any) -> Any:
    import types
    import typing

    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_plain(tp, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list for {tp}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if len(args) != len(value):
            raise ValueError(f"expected {len(args)} items for {tp}")
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp}")
        return {k: _coerce(args[1], v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Hardware (probe.py, profiles.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gpu(_ToDict):
    """One accelerator as the solver sees it.

    Attributes:
        index: device index as torch numbers it (``cuda:<index>``; 0 for ``mps``).
        name: marketing name, e.g. "NVIDIA GeForce RTX 4090".
        backend: "cuda" (NVIDIA) or "mps" (Apple silicon, unified memory).
        total_bytes: memory on the device.
        free_bytes: memory free now (probe) or assumed free (profile: total minus what a desktop
            or driver typically holds, as the profile documents).
        compute_capability: (major, minor) for CUDA devices, None otherwise.
        bf16: whether the device computes in bfloat16 natively (CUDA compute capability >= 8.0).
        bandwidth: memory bandwidth in bytes/s, None when unknown.
        pcie_bandwidth: host-to-device bandwidth in bytes/s (one direction), None when unknown.
        unified: memory is shared with the CPU (Apple silicon); then RAM and this device are one pool.
    """

    index: int
    name: str
    backend: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int] | None = None
    bf16: bool = False
    bandwidth: int | None = None
    pcie_bandwidth: int | None = None
    unified: bool = False

    @property
    def device(self) -> str:
        """The torch device string: ``cuda:0`` or ``mps``."""
        return "mps" if self.backend == "mps" else f"cuda:{self.index}"


@dataclass(frozen=True, slots=True)
class Hardware(_ToDict):
    """A machine: probed, taken from a profile, or either with overrides.

    Attributes:
        name: "this machine" for the probe, else the profile name.
        source: "probe", "profile", or either followed by "+override".
        gpus: the accelerators, in torch index order.
        ram_total: system RAM in bytes.
        ram_free: RAM available to a new process (psutil's ``available``), in bytes.
        ram_bandwidth: CPU memory bandwidth in bytes/s, None when unknown.
        disk_free: free bytes where the offload folder lives.
        cache_disk_free: free bytes where the Hugging Face cache lives (the download goes there).
        disk_bandwidth: sequential read bandwidth of the offload disk in bytes/s, None when unknown.
        cpu_count: logical CPUs, None when unknown.
        description: one line for people.
        sources: figure name -> where the figure comes from (profiles), or "probe".
    """

    name: str
    source: str
    gpus: tuple[Gpu, ...]
    ram_total: int
    ram_free: int
    disk_free: int
    cache_disk_free: int
    ram_bandwidth: int | None = None
    disk_bandwidth: int | None = None
    cpu_count: int | None = None
    description: str = ""
    sources: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# What was read about a model (hub.py, local.py, catalog.py, cache.py)
# --------------------------------------------------------------------------------------------


class Tensor(NamedTuple):
    """One tensor as a safetensors header describes it.

    The one record that is a NamedTuple rather than a frozen dataclass: a DeepSeek-V3-sized
    checkpoint has 91,991 tensors, and a frozen dataclass costs ~1.2 us to build against ~0.3 us
    for a NamedTuple (benchmarks/perf/FINDINGS.md #6). It is just as immutable.

    Attributes:
        name: the checkpoint's tensor name.
        dtype: the safetensors dtype string ("BF16", "I32", "F8_E4M3", "U8", ...).
        shape: the stored shape (for packed formats, the packed shape).
        nbytes: bytes on disk.
        file: the weight file that holds it.
        offset: start of its data in the file's data region (0 when not known).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str
    offset: int = 0

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "nbytes": self.nbytes, "file": self.file,
                "offset": self.offset}


@dataclass(frozen=True, slots=True)
class RepoFile(_ToDict):
    """A file of the repo listing: its path and size in bytes (None when the listing lacks it)."""

    path: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Fetch(_ToDict):
    """What reading a model cost: requests made, bytes received, wall seconds."""

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot(_ToDict):
    """Everything read about a model, before any estimating.

    Attributes:
        id: the repo id or local path the user gave.
        revision: the revision asked for ("main" by default).
        commit: the commit sha it resolved to, when known.
        source: "hub", "cache" (HF cache or fitcheck's metadata cache), "catalog" or "local".
        config: the parsed config.json.
        files: the repo listing.
        weight_format: "safetensors" or "pytorch" (pickled pytorch_model*.bin).
        weight_files: the weight files transformers would load, in order.
        tensors: the tensors of those files, from their headers (empty for "pytorch").
        gated: whether the Hub marks the repo gated.
        notes: things the user should know about how it was read (one line each).
        fetch: what reading it cost.
        summary: when the tensors were not read because fitcheck's cache holds their estimate
            (``planner.model.footprint.Footprint.to_dict()`` for this commit and estimator version).
    """

    id: str
    revision: str
    commit: str | None
    source: str
    config: dict[str, Any]
    files: tuple[RepoFile, ...]
    weight_format: str
    weight_files: tuple[str, ...]
    tensors: tuple[Tensor, ...]
    gated: bool = False
    notes: tuple[str, ...] = ()
    fetch: Fetch = Fetch()
    summary: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Plans (solve.py -> emit.py, render.py)
# --------------------------------------------------------------------------------------------

_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True, slots=True)
class Scheme(_ToDict):
    """How weights are loaded.

    Attributes:
        dtype: the ``dtype`` passed to from_pretrained ("float32", "bfloat16", "float16"); for
            bnb, also the compute dtype and the dtype of the modules bnb leaves alone.
        quantization: "none", "int8" (bnb LLM.int8), "nf4" (bnb 4-bit NF4 with double
            quantization) or "prequantized" (the checkpoint's own format).
    """

    dtype: str
    quantization: str = "none"

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def bnb(self) -> bool:
        return self.quantization in ("int8", "nf4")

    @property
    def label(self) -> str:
        if self.quantization == "none":
            return _SHORT[self.dtype]
        if self.quantization == "prequantized":
            return f"as stored + {_SHORT[self.dtype]}"
        return f"{self.quantization} + {_SHORT[self.dtype]}"


@dataclass(frozen=True, slots=True)
class DeviceMemory(_ToDict):
    """Predicted memory of one device under a plan, in bytes.

    Attributes:
        weights: weights resident on the device after loading.
        kv_cache: KV cache held on the device at the planned context, batch and new tokens.
        activations: transient prefill working memory and logits on the device.
        overhead: fixed costs: CUDA context and allocator slack (GPU), the Python process with
            torch and transformers imported (CPU).
        total: the predicted peak: the larger of the run phase (weights + kv_cache + activations
            + overhead) and the load phase (``load``). This is what ``fitcheck verify`` measures
            (peak RSS on the CPU, bytes written for the disk).
        capacity: what the plan lets the device use: free memory minus the margin.
        free: what the device had free (probe) or is assumed to have free (profile).
        margin: the headroom the plan leaves unused.
        load: the predicted peak while loading.
        reclaimable: page cache inside ``total`` that the kernel drops on demand (CPU only).
        required: what must fit within ``capacity``: ``total`` less what is reclaimable.
        unread: weights the device holds memory-mapped that a run never reads in, left out of
            ``weights`` and ``total``: the rows of a CPU-run token embedding that no token of the
            prompt or the answer uses (CPU only).
        mapped: the part of ``overhead`` that is checkpoint pages kept mapped after the load
            converted the tensors beside them (page cache, also in ``reclaimable``; CPU only).
    """

    device: str
    weights: int
    kv_cache: int
    activations: int
    overhead: int
    total: int
    capacity: int
    free: int
    margin: int
    load: int = 0
    reclaimable: int = 0
    required: int = 0
    unread: int = 0
    mapped: int = 0


@dataclass(frozen=True, slots=True)
class Plan(_ToDict):
    """One way to load the model, with its predicted memory and speed.

    Attributes:
        scheme: dtype and quantization.
        placement: "gpu", "gpu+cpu", "gpu+cpu+disk", "cpu", "cpu+disk", "mps".
        strategy: "single", "sequential" or "balanced" (how units are spread over several GPUs).
        device_map: unit (module name) -> device ("cuda:0" as 0, "cpu", "disk", "mps").
        memory: device -> predicted memory.
        tokens_per_s: estimated decode speed of one sequence.
        quality: effective weight bits (32, 16, 8, 4) used to rank precision.
        fits: whether every device's total is within capacity.
        reasons: for a plan that does not fit, why, in numbers (one line each).
        notes: facts about the plan worth telling (one line each).
        offloaded_bytes: bytes of weights not on an accelerator (cpu + disk) when a GPU runs the model.
        disk_bytes: bytes written to the offload folder.
    """

    scheme: Scheme
    placement: str
    strategy: str
    device_map: dict[str, Any]
    memory: dict[str, DeviceMemory]
    tokens_per_s: float
    quality: int
    fits: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    offloaded_bytes: int = 0
    disk_bytes: int = 0

    @property
    def label(self) -> str:
        where = self.placement if self.strategy in ("single", "") else f"{self.placement} ({self.strategy})"
        return f"{self.scheme.label} on {where}"
