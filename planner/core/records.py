"""The frozen records passed between the stages: probe -> read -> model -> runtime -> solve -> report.

Bytes are ``int`` everywhere; bandwidths are bytes per second (``int``). Every record has
``to_dict()``, and ``--json`` prints exactly that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from planner.core.errors import UsageError


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
        out: dict[str, Any] = _plain(self)
        return out


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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
        link_bandwidth: GPU-to-GPU bandwidth inside the machine (NVLink), bytes/s, None when unknown.
        nodes: for a cluster, its machines in node order (``gpus`` then lists theirs in that order);
            empty for one machine.
        network_bandwidth: for a cluster, bytes/s between two nodes (one direction), None when unknown.
        memlock_limit: bytes this process may lock in RAM (``mlock``, llama.cpp's ``--load-mode
            mmap+mlock``): the soft RLIMIT_MEMLOCK; None when nothing limits it (unlimited, the
            process holds CAP_IPC_LOCK, or the figure is unknown, as for profiles).
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
    link_bandwidth: int | None = None
    nodes: tuple[Hardware, ...] = ()
    network_bandwidth: int | None = None
    memlock_limit: int | None = None

    def cuda_by_node(self) -> tuple[tuple[Gpu, ...], ...]:
        """The CUDA GPUs of each node, in node order (one node for a single machine)."""
        if not self.nodes:
            return (tuple(g for g in self.gpus if g.backend == "cuda"),)
        out, i = [], 0
        for node in self.nodes:
            out.append(tuple(g for g in self.gpus[i:i + len(node.gpus)] if g.backend == "cuda"))
            i += len(node.gpus)
        return tuple(out)


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
class FileSelection(_ToDict):
    """The files a runtime would read from a repo.

    Attributes:
        format: how their headers are parsed: "safetensors", "gguf", "pytorch" (never read), or
            "json" (small JSON files only, e.g. a diffusers pipeline's model_index.json).
        files: repo paths whose headers (or, for "json", contents) the sources layer fetches.
        weight_files: the files a download for running the plan fetches (their sizes come from
            the listing).
        group: a label for a set of files that is one choice among several in the same repo
            (a GGUF quant type such as "Q4_K_M"; a diffusers variant such as "fp16"); "" if none.
        notes: what the user should know about the choice (files present but not read; model
            code in the repo), one line each; the sources layer adds them to the snapshot's notes.
    """

    format: str
    files: tuple[str, ...]
    weight_files: tuple[str, ...] = ()
    group: str = ""
    notes: tuple[str, ...] = ()


# How the sources layer learns which files to read: (listing, parsed config.json or None) -> the
# file set (the api builds it from the runtimes' ``select``; it raises NoWeights when none fits).
Selector = Callable[[Sequence[RepoFile], Mapping[str, Any] | None], FileSelection]


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
        weight_format: "safetensors", "pytorch" (pickled pytorch_model*.bin) or "gguf".
        weight_files: the weight files transformers would load, in order.
        tensors: the tensors of those files, from their headers (empty for "pytorch").
        gated: whether the Hub marks the repo gated.
        notes: things the user should know about how it was read (one line each).
        fetch: what reading it cost.
        gguf: for ``weight_format == "gguf"``: the parsed headers' summary (metadata from shard
            1, per-file version/alignment/data offset; planner.sources.gguf_files), else None.
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
    gguf: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# What was asked (cli -> api -> every runtime), and the generic plan every runtime prices
# --------------------------------------------------------------------------------------------

PREFERENCES = ("speed", "quality", "memory")
# Headroom left unused on every device, as a fraction of its free memory with a floor; it covers
# what the memory model gets wrong on the low side. In benchmarks/accuracy (45 CPU scenarios, 121
# runs, predicted against the highest run of each), on the small models (peaks under 2.2 GiB) the
# worst under-predictions were 63, 59, 57 and 54 MiB (at most 7.1 %): the floor is twice the worst,
# because a scenario's highest run is only the highest of 2-8 runs of a scattered peak (spread up
# to 484 MiB). At the boundary 5 % of free memory is 5.3 % of the peak, and it takes over from the
# floor above 2.5 GiB free, where the full-size runs (1B and 7B, 1.7-19.6 GiB) were at worst 0.8 %
# low (137 MiB of 19.6 GiB). See benchmarks/accuracy/RESULTS.md and the README ("How much headroom").
DEFAULT_MARGIN_FRACTION = 0.05
DEFAULT_MARGIN_FLOOR = 128 * 1024**2
# Tokens the emitted script generates after the prefill, planned into the KV cache.
DEFAULT_NEW_TOKENS = 32
# The prompt planned when none is asked for (a long chat or a short document); a model trained on
# fewer tokens is planned at its limit instead (Constraints.context_is_default).
DEFAULT_CONTEXT = 4096


@dataclass(frozen=True, slots=True)
class Constraints:
    """What the user asked for. Every runtime reads the fields that mean something to it.

    Attributes:
        context: prompt tokens per sequence (prefill length).
        batch: sequences generated together.
        new_tokens: tokens generated after the prefill.
        prefer: "speed", "quality" or "memory" (how the solver ranks the plans that fit).
        dtype: force this load dtype (the runtime says which it knows).
        quantization: force this quantization (the runtime says which it knows).
        offload: allow CPU and disk offload.
        margin_fraction, margin_floor: headroom kept free on every device.
        context_is_default: ``context`` was not asked for: the planner lowers it to the model's
            limit (less ``new_tokens``) when that is shorter.
        options: runtime-specific requests as sorted ``(name, value)`` pairs (e.g.
            ``("train", "qlora")``, ``("quant", "Q4_K_M")``, ``("resolution", (1024, 1024))``);
            each runtime reads its own with :meth:`option` and ignores the rest. The CLI builds
            them from the option groups in ``planner/cli/options/``.
    """

    context: int = DEFAULT_CONTEXT
    batch: int = 1
    new_tokens: int = DEFAULT_NEW_TOKENS
    prefer: str = "speed"
    dtype: str | None = None
    quantization: str | None = None
    offload: bool = True
    margin_fraction: float = DEFAULT_MARGIN_FRACTION
    margin_floor: int = DEFAULT_MARGIN_FLOOR
    options: tuple[tuple[str, Any], ...] = ()
    context_is_default: bool = False

    def __post_init__(self) -> None:
        if self.context < 1 or self.batch < 1 or self.new_tokens < 0:
            raise UsageError("context and batch must be at least 1")
        if self.prefer not in PREFERENCES:
            raise UsageError(f"--prefer {self.prefer!r} is not one of {', '.join(PREFERENCES)}")

    def option(self, name: str, default: Any = None) -> Any:
        """The runtime-specific request ``name`` (``default`` when it was not given)."""
        for key, value in self.options:
            if key == name:
                return value
        return default

    def with_options(self, **values: Any) -> Constraints:
        """These constraints with ``values`` added to (or replacing) :attr:`options`."""
        merged = dict(self.options)
        merged.update(values)
        return replace(self, options=tuple(sorted(merged.items())))

    def margin(self, free: int) -> int:
        """The headroom kept unused on a device with ``free`` bytes free."""
        return max(int(free * self.margin_fraction), self.margin_floor)


@dataclass(frozen=True, slots=True)
class DeviceMemory(_ToDict):
    """Predicted memory of one device under a plan, in bytes.

    The fields up to ``mapped`` are what every runtime fills (0 where a part does not apply). A
    runtime whose memory has parts of its own uses the optional parts below them; each is part of
    ``total`` and left out of ``to_dict()`` while 0, so a plan's JSON shows only the parts its
    runtime has.

    Attributes:
        device: the device name: "cpu", "disk", "cuda:0", "mps", or per rank "node0:cuda:0".
        weights: weights resident on the device after loading.
        kv_cache: KV cache held on the device at the planned context, batch and new tokens.
        activations: transient prefill working memory and logits on the device.
        overhead: fixed costs: CUDA context and allocator slack (GPU), the Python process with
            torch and transformers imported (CPU).
        total: the predicted peak: the larger of the run phase (every part) and the load phase
            (``load``). This is what ``fitcheck verify`` measures (peak RSS on the CPU, bytes
            written for the disk).
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
        compute: compute buffers a runtime allocates besides activations (llama.cpp's graph
            buffers; a diffusers phase's working memory).
        gradients: gradients held on the device (training).
        optimizer: optimizer state held on the device (training).
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
    compute: int = 0
    gradients: int = 0
    optimizer: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(self)
        for part in _OPTIONAL_PARTS:
            if not out[part]:
                del out[part]
        return out


_OPTIONAL_PARTS = ("compute", "gradients", "optimizer")


@dataclass(frozen=True, slots=True)
class Speed(_ToDict):
    """A plan's speed estimate; each figure is None where the runtime does not estimate it.

    Attributes:
        tokens_per_s: decode tokens per second of one sequence.
        first_token_s: seconds to the first token (prefill).
        load_s: seconds to load the model.
        image_s: seconds per image (diffusion pipelines).
    """

    tokens_per_s: float | None = None
    first_token_s: float | None = None
    load_s: float | None = None
    image_s: float | None = None

    @property
    def score(self) -> float:
        """Higher is faster: tokens per second, else images per second, else 0."""
        if self.tokens_per_s is not None:
            return self.tokens_per_s
        if self.image_s:
            return 1.0 / self.image_s
        return 0.0


@dataclass(frozen=True, slots=True)
class Settings(_ToDict):
    """Base of a runtime's settings record: how that runtime runs one plan (frozen, ``to_dict()``).

    Each runtime subclasses it (transformers: scheme, placement, strategy, device_map; GGUF:
    n_gpu_layers, tensor_split, ...). Nothing outside the runtime reads its fields; the report
    merges ``to_dict()`` into the plan's JSON block.
    """


@dataclass(frozen=True, slots=True)
class Plan(_ToDict):
    """One way to run the model, priced per device, from any runtime.

    The solver ranks plans by these fields alone, whatever runtime made them.

    Attributes:
        runtime: the engine that runs it: the runtime's name, or one of its ``engines``.
        label: one line for people, e.g. "bf16 on gpu+cpu (balanced)" or "Q4_K_M, 33 layers on cuda:0".
        settings: the runtime's own settings record.
        memory: device -> predicted memory.
        speed: the speed estimate.
        quality: effective weight bits (32, 16, 8, 4, ...) used to rank precision.
        fits: whether every device's requirement is within its capacity.
        reasons: for a plan that does not fit, why, in numbers (one line each).
        notes: facts about the plan worth telling (one line each).
        on_accelerators: every weight is on accelerators (the "speed" policy ranks these first).
        offloaded_bytes: bytes of weights not on an accelerator (cpu + disk) when a GPU runs the model.
        disk_bytes: bytes written to the offload folder.
        kv_bytes: KV cache of all layers at the planned context, batch and new tokens (0: none).
        kv_bytes_per_token: KV bytes one token of one sequence adds (0: no KV cache).
        preference: among plans of equal speed and precision, the order in which an expert of the
            runtime would try them (lower first; e.g. training: no checkpointing before
            checkpointing, AdamW before an 8-bit optimizer). The solver breaks such ties by it
            before memory; 0 for runtimes with no such order.
    """

    runtime: str
    label: str
    settings: Settings
    memory: dict[str, DeviceMemory]
    speed: Speed
    quality: int
    fits: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    on_accelerators: bool = False
    offloaded_bytes: int = 0
    disk_bytes: int = 0
    kv_bytes: int = 0
    kv_bytes_per_token: int = 0
    preference: int = 0

    @property
    def what(self) -> str:
        """The label before " on ": what is loaded (e.g. "nf4 + bf16")."""
        return self.label.partition(" on ")[0]

    @property
    def where(self) -> str:
        """The label after " on ": where it runs (the whole label when it has no " on ")."""
        head, sep, tail = self.label.partition(" on ")
        return tail if sep else head


@dataclass(frozen=True, slots=True)
class Solution:
    """The chosen plan, the other plans that fit (best first), and those that do not."""

    chosen: Plan
    alternatives: tuple[Plan, ...]
    rejected: tuple[Plan, ...]


@runtime_checkable
class ModelFacts(Protocol):
    """What every runtime's model record offers the rest of fitcheck (e.g. transformers'
    :class:`planner.model.footprint.Footprint`); the rest of it is the runtime's own."""

    @property
    def parameters(self) -> int: ...

    @property
    def download_bytes(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a plan command shows: the model read, the machine, the constraints, the plans.

    Attributes:
        snapshot: what the sources layer read.
        footprint: the runtime's facts about the model (``runtime.model(snapshot)``).
        hardware: the machine planned for.
        constraints: what was asked.
        solution: the ranked plans that fit, or None.
        rejected: the plans that do not fit, with their reasons.
        suggestion: when nothing fits, the smallest bundled profile that would, in words.
        runtime: the registry name of the runtime that made ``footprint`` (and the chosen plan).
        others: under ``--runtime auto``, what each other runtime that also planned the model
            read and made of it (reports without a solution): the ranked plans may come from any
            of them (:meth:`view` gives a plan's own runtime's report).
    """

    snapshot: Snapshot
    footprint: ModelFacts
    hardware: Hardware
    constraints: Constraints
    solution: Solution | None
    rejected: tuple[Plan, ...] = ()
    suggestion: str | None = None
    runtime: str = "transformers"
    others: tuple[Report, ...] = ()

    def view(self, runtime: str) -> Report:
        """This report as the runtime named ``runtime`` made it: its snapshot and facts, the same
        plans (the one to pass to that runtime's ``describe_*`` and ``emit``).

        Raises:
            KeyError: no runtime of that name planned the model.
        """
        if runtime == self.runtime:
            return self
        for other in self.others:
            if other.runtime == runtime:
                return Report(other.snapshot, other.footprint, self.hardware, self.constraints, self.solution,
                              self.rejected, self.suggestion, runtime)
        raise KeyError(runtime)

    @property
    def fits(self) -> bool:
        return self.solution is not None

    @property
    def download_fits(self) -> bool:
        """Whether the download fits on the disk that holds the HF cache (local models: nothing to download)."""
        if self.snapshot.source == "local":
            return True
        return self.footprint.download_bytes <= self.hardware.cache_disk_free
