"""What this machine has: RAM (psutil), NVIDIA GPUs (NVML), Apple silicon (sysctl), free disk.

Nothing here creates a CUDA context: NVML is the driver's management library and reads device
state without one, and torch is never imported. psutil and pynvml are imported inside the
functions that use them, so ``fitcheck --help`` does not pay for them.

A machine without an NVIDIA driver, without NVML, or with NVML failing in any way has "no GPU";
the reason is kept in ``Hardware.sources["gpus"]`` and in the description, never raised.
Bandwidth fields the probe cannot know (RAM, disk, and everything on Apple silicon) are None.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from planner.core.errors import UsageError
from planner.core.paths import hf_cache_dir  # noqa: F401  (re-exported: probe reports its disk)
from planner.core.records import Gpu, Hardware
from planner.core.units import GiB, MiB, fmt_bytes

# PCIe data rate per lane and direction, in bytes/s, after line encoding (8b/10b for gen 1-2,
# 128b/130b for gen 3-5) and before packet overhead -- the "theoretical" figure. Gen 6 uses
# FLIT mode with no line encoding (1b/1b); its FLIT CRC/FEC is protocol overhead like TLP
# headers, so it is not subtracted either. Source: PCI-SIG, PCI Express Base Specification
# rev. 1.0-6.0 (2.5, 5, 8, 16, 32, 64 GT/s). Profiles store the same theoretical figures.
PCIE_LANE_BYTES_PER_S: dict[int, float] = {
    1: 2.5e9 * 8 / 10 / 8,
    2: 5e9 * 8 / 10 / 8,
    3: 8e9 * 128 / 130 / 8,
    4: 16e9 * 128 / 130 / 8,
    5: 32e9 * 128 / 130 / 8,
    6: 64e9 / 8,
}

# NVML's memory clock is half the transfer rate: memory moves data twice per reported clock
# ("double data rate"). The NVML reference documents nvmlDeviceGetMaxClockInfo as the maximum
# clock in MHz and nvmlDeviceGetMemoryBusWidth as the bus width in bits, but not the data rate;
# the factor 2 is what makes them match the datasheets, for every memory type we checked:
#   RTX 4090 (GDDR6X):     10501 MHz x 384 bit  x 2 / 8 = 1008 GB/s (datasheet 1008 GB/s)
#   A100-SXM4-80GB (HBM2e): 1593 MHz x 5120 bit x 2 / 8 = 2039 GB/s (datasheet 2039 GB/s)
#   A100-SXM4-40GB (HBM2):  1215 MHz x 5120 bit x 2 / 8 = 1555 GB/s (datasheet 1555 GB/s)
#   Tesla T4 (GDDR6):       5001 MHz x 256 bit  x 2 / 8 =  320 GB/s (datasheet 320 GB/s)
NVML_MEM_CLOCK_TRANSFERS_PER_CYCLE = 2

# macOS caps what the GPU may keep resident (MTLDevice.recommendedMaxWorkingSetSize). The policy
# is not documented; llama.cpp logs it at start-up ("recommendedMaxWorkingSetSize = ... MB") and
# those logs show 2/3 of RAM on 16, 24 and 32 GiB Macs (11453.25, 17179.89, 22906.50 MB) and 3/4
# on a 64 GiB M2 Max (51539.61 MB). `sudo sysctl iogpu.wired_limit_mb=N` overrides it, and we
# read that when it is set. PyTorch's MPS allocator lets a process go further, to
# PYTORCH_MPS_HIGH_WATERMARK_RATIO (default 1.7, ATen/mps/MPSAllocator.h) x this value, but past
# the recommended size macOS starts swapping, so the recommended size is the usable share.
_APPLE_SMALL_RAM = 36 * GiB  # at or below: 2/3; above: 3/4
_APPLE_SHARE_SMALL = (2, 3)
_APPLE_SHARE_LARGE = (3, 4)

# Generic GPU used by apply_overrides when the override's count differs from the machine's.
_OVERRIDE_GPU_NAME = "GPU (override)"


def probe(*, offload_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Hardware:
    """Describe this machine.

    Args:
        offload_dir: where accelerate would offload weights; its filesystem's free space becomes
            ``disk_free``. Default: the current directory. A folder that does not exist yet is
            measured at its nearest existing ancestor.
        cache_dir: the Hugging Face hub cache; default as huggingface_hub resolves it
            (:func:`hf_cache_dir`). Its free space becomes ``cache_disk_free``.

    Returns:
        A :class:`Hardware` named "this machine" with ``source="probe"``. GPUs are in the order
        torch numbers them (see :func:`_cuda_order`); GPUs hidden by ``CUDA_VISIBLE_DEVICES`` are
        left out. It never raises for a missing or broken GPU driver.
    """
    import platform  # lazy, like psutil: keeps `fitcheck --help` fast

    import psutil

    vm = psutil.virtual_memory()
    sources: dict[str, str] = {
        "ram_total": "probe: psutil.virtual_memory().total",
        "ram_free": "probe: psutil.virtual_memory().available",
        "ram_bandwidth": "probe: unknown (no portable way to read it); None",
        "disk_bandwidth": "probe: unknown (not measured); None",
        "cpu_count": "probe: os.cpu_count()",
    }
    notes: list[str] = []

    if sys.platform == "darwin" and platform.machine() == "arm64":
        gpus, gpu_sources, note = _apple_gpu(vm.total, vm.available)
    else:
        gpus, gpu_sources, note = _nvidia_gpus()
    sources.update(gpu_sources)
    if note:
        notes.append(note)

    offload = Path(offload_dir) if offload_dir is not None else Path.cwd()
    cache = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    disk_free, offload_at = _free_disk(offload)
    cache_free, cache_at = _free_disk(cache)
    sources["disk_free"] = f"probe: shutil.disk_usage({str(offload_at)!r}).free (offload folder {str(offload)!r})"
    sources["cache_disk_free"] = f"probe: shutil.disk_usage({str(cache_at)!r}).free (HF cache {str(cache)!r})"

    memlock, sources["memlock_limit"] = memlock_limit()
    cpus = os.cpu_count()
    gpu_words = ", ".join(f"{g.name} {fmt_bytes(g.total_bytes)}" for g in gpus) or "no GPU"
    description = f"this machine: {cpus or '?'} CPUs, {fmt_bytes(vm.total)} RAM, {gpu_words}"
    if notes:
        description += " (" + "; ".join(notes) + ")"
    return Hardware(
        name="this machine",
        source="probe",
        gpus=tuple(gpus),
        ram_total=int(vm.total),
        ram_free=int(vm.available),
        disk_free=disk_free,
        cache_disk_free=cache_free,
        cpu_count=cpus,
        description=description,
        sources=sources,
        memlock_limit=memlock,
    )


def apply_overrides(
    hw: Hardware,
    *,
    gpus: tuple[int, ...] | None = None,
    ram: int | None = None,
    disk: int | None = None,
) -> Hardware:
    """Replace figures of a probed or profiled machine with the user's (``--gpu``, ``--ram``, ``--disk``).

    Args:
        hw: the machine to start from.
        gpus: memory per GPU in bytes, one entry per GPU. When the count matches ``hw.gpus``,
            each GPU keeps its model data (name, compute capability, bandwidths) and gets the new
            memory as both total and free. Otherwise the GPUs are replaced by generic CUDA GPUs
            ("GPU (override)", bf16, unknown bandwidth). ``()`` means no GPU at all.
        ram: system RAM in bytes; sets both ``ram_total`` and ``ram_free``. On Apple silicon the
            GPU's share is not re-derived: pass ``gpus`` too.
        disk: free disk in bytes; sets both ``disk_free`` and ``cache_disk_free``.

    Returns:
        A new :class:`Hardware`; ``source`` gains "+override" when anything changed.

    Raises:
        UsageError: for a size that is not a positive integer.
    """
    for what, values in (("--gpu", gpus or ()), ("--ram", (ram,) if ram is not None else ()), ("--disk", (disk,) if disk is not None else ())):
        for v in values:
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise UsageError(f"{what} size {v!r} must be a positive number of bytes")
    if gpus is None and ram is None and disk is None:
        return hw

    changes: dict[str, Any] = {}
    sources = dict(hw.sources)
    if gpus is not None:
        if len(gpus) == len(hw.gpus):
            new_gpus = tuple(dataclasses.replace(g, total_bytes=m, free_bytes=m) for g, m in zip(hw.gpus, gpus, strict=True))
            sources["gpu.total_bytes"] = sources["gpu.free_bytes"] = "override: --gpu (model data kept)"
        else:
            new_gpus = tuple(
                Gpu(index=i, name=_OVERRIDE_GPU_NAME, backend="cuda", total_bytes=m, free_bytes=m, bf16=True)
                for i, m in enumerate(gpus)
            )
            for key in [k for k in sources if k.startswith("gpu.")]:
                del sources[key]
            sources["gpu.total_bytes"] = sources["gpu.free_bytes"] = "override: --gpu"
            sources["gpus"] = (
                f"override: --gpu gave {len(gpus)} GPU(s) where {hw.name} has {len(hw.gpus)}; generic CUDA GPUs "
                "assumed (bf16, compute capability and bandwidth unknown)"
            )
        changes["gpus"] = new_gpus
    if ram is not None:
        changes["ram_total"] = changes["ram_free"] = ram
        sources["ram_total"] = sources["ram_free"] = "override: --ram"
    if disk is not None:
        changes["disk_free"] = changes["cache_disk_free"] = disk
        sources["disk_free"] = sources["cache_disk_free"] = "override: --disk"
    source = hw.source if hw.source.endswith("+override") else hw.source + "+override"
    return dataclasses.replace(hw, source=source, sources=sources, **changes)


# Bit of CAP_IPC_LOCK in /proc/<pid>/status CapEff (include/uapi/linux/capability.h:
# "#define CAP_IPC_LOCK 14").
_CAP_IPC_LOCK = 14


def memlock_limit() -> tuple[int | None, str]:
    """(bytes this process may lock, where the figure comes from); None when nothing limits it.

    Linux refuses an ``mlock`` past the soft RLIMIT_MEMLOCK with ENOMEM unless the process holds
    CAP_IPC_LOCK (mm/mlock.c, do_mlock: ``if ((locked <= lock_limit) || capable(CAP_IPC_LOCK))``),
    so a process with that capability (root in most containers, unless it was dropped) has no
    limit. macOS applies the same rlimit. Where the ``resource`` module is missing (Windows:
    llama.cpp grows the working set itself, llama-mmap.cpp raw_lock), None.
    """
    try:
        import resource
    except ImportError:
        return None, "probe: no resource module (not POSIX); None"
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if sys.platform.startswith("linux") and _has_cap_ipc_lock():
        return None, f"probe: CAP_IPC_LOCK held (RLIMIT_MEMLOCK {soft} does not bind); None"
    if soft == resource.RLIM_INFINITY:
        return None, "probe: resource.getrlimit(RLIMIT_MEMLOCK) unlimited; None"
    return int(soft), "probe: resource.getrlimit(RLIMIT_MEMLOCK) soft limit"


def _has_cap_ipc_lock() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_IPC_LOCK & 1)
    except (OSError, ValueError):
        pass
    return False


# --------------------------------------------------------------------------------------------
# NVIDIA, through NVML
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Device:
    nvml_index: int
    bus_id: str | None
    uuid: str | None
    gpu: Gpu  # index is filled in once the CUDA order is known
    speed: int | None  # CUDA cores x max SM clock (MHz): our stand-in for CUDA's "fastest"


def _nvidia_gpus() -> tuple[list[Gpu], dict[str, str], str | None]:
    """Read every NVIDIA GPU through NVML; (gpus, sources, note). Never raises."""
    try:
        import pynvml  # lazy; from the nvidia-ml-py package
    except Exception as e:  # ImportError, or a broken install
        return [], {"gpus": f"probe: no GPU (pynvml cannot be imported: {e})"}, "no NVIDIA GPU: nvidia-ml-py missing"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... or OSError
        return [], {"gpus": f"probe: no GPU (NVML init failed: {_err(e)})"}, f"no NVIDIA GPU: {_err(e)}"
    try:
        devices = [_read_device(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as e:  # any NVML failure on a required figure: report no GPU, as for no driver
        return [], {"gpus": f"probe: no GPU (NVML query failed: {_err(e)})"}, f"no NVIDIA GPU: NVML query failed: {_err(e)}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass

    ordered, order_note = _cuda_order(devices)
    visible, visible_note = _cuda_visible(ordered, os.environ.get("CUDA_VISIBLE_DEVICES"))
    gpus = [dataclasses.replace(d.gpu, index=i) for i, d in enumerate(visible)]
    notes = [n for n in (order_note, visible_note) if n]
    sources = {
        "gpus": "probe: NVML nvmlDeviceGetCount/GetHandleByIndex"
        + (f" ({'; '.join(notes)})" if notes else "")
        + ("" if devices else "; NVML reports no device"),
        "gpu.name": "probe: NVML nvmlDeviceGetName",
        "gpu.total_bytes": "probe: NVML nvmlDeviceGetMemoryInfo().total",
        "gpu.free_bytes": "probe: NVML nvmlDeviceGetMemoryInfo().free (driver-reserved memory excluded)",
        "gpu.compute_capability": "probe: NVML nvmlDeviceGetCudaComputeCapability",
        "gpu.bf16": "probe: compute capability >= 8.0",
        "gpu.bandwidth": "probe: NVML max memory clock x 2 (double data rate) x bus width / 8; None if unreadable",
        "gpu.pcie_bandwidth": "probe: NVML max PCIe link generation x width, PCIe per-lane rates; None if unreadable",
    }
    return gpus, sources, "; ".join(notes) or None


def _read_device(nvml: Any, i: int) -> _Device:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    mem = nvml.nvmlDeviceGetMemoryInfo(h)
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
        cc: tuple[int, int] | None = (int(major), int(minor))
    except Exception:
        cc = None
    bandwidth = _optional(lambda: _mem_bandwidth(nvml, h))
    pcie = _optional(lambda: _pcie_bandwidth(nvml.nvmlDeviceGetMaxPcieLinkGeneration(h), nvml.nvmlDeviceGetMaxPcieLinkWidth(h)))
    cores = _optional(lambda: int(nvml.nvmlDeviceGetNumGpuCores(h)))
    sm_clock = _optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)))
    gpu = Gpu(
        index=i,
        name=_text(nvml.nvmlDeviceGetName(h)),
        backend="cuda",
        total_bytes=int(mem.total),
        free_bytes=int(mem.free),
        compute_capability=cc,
        # bf16 arithmetic needs compute capability 8.0 (Ampere) or later.
        bf16=cc is not None and cc >= (8, 0),
        bandwidth=bandwidth,
        pcie_bandwidth=pcie,
    )
    return _Device(
        nvml_index=i,
        bus_id=_optional(lambda: _text(nvml.nvmlDeviceGetPciInfo(h).busId).lower()),
        uuid=_optional(lambda: _text(nvml.nvmlDeviceGetUUID(h))),
        gpu=gpu,
        speed=cores * sm_clock if cores and sm_clock else None,
    )


def _mem_bandwidth(nvml: Any, h: Any) -> int | None:
    clock_mhz = int(nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM))
    bus_bits = int(nvml.nvmlDeviceGetMemoryBusWidth(h))
    if clock_mhz <= 0 or bus_bits <= 0:
        return None
    return clock_mhz * 10**6 * NVML_MEM_CLOCK_TRANSFERS_PER_CYCLE * bus_bits // 8


def _pcie_bandwidth(generation: int, width: int) -> int | None:
    """Theoretical one-direction bandwidth of a PCIe link, in bytes/s; None for an unknown generation."""
    per_lane = PCIE_LANE_BYTES_PER_S.get(int(generation))
    if per_lane is None or int(width) <= 0:
        return None
    return int(per_lane * int(width))


def _cuda_order(devices: list[_Device]) -> tuple[list[_Device], str | None]:
    """Put NVML's devices in the order CUDA (and so torch) numbers them.

    CUDA_DEVICE_ORDER=PCI_BUS_ID numbers devices by ascending PCI bus id, which is also how
    nvidia-smi lists them; we sort by the bus id NVML reports. The default, FASTEST_FIRST, uses
    "a simple heuristic" that CUDA does not publish (CUDA C Programming Guide, "CUDA Environment
    Variables"). For identical GPUs it falls back to PCI order; for mixed GPUs we approximate it
    with CUDA cores x max SM clock, fastest first, ties in PCI order, and say so in a note.
    """
    by_bus = sorted(devices, key=lambda d: (d.bus_id is None, d.bus_id or "", d.nvml_index))
    order = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper()
    if order == "PCI_BUS_ID" or len({d.gpu.name for d in devices}) <= 1:
        return by_bus, None
    if any(d.speed is None for d in devices):
        return by_bus, "mixed GPUs and their speed is unreadable: PCI bus order assumed; set CUDA_DEVICE_ORDER=PCI_BUS_ID to be sure"
    fastest = sorted(by_bus, key=lambda d: -(d.speed or 0))  # stable: ties keep PCI order
    return fastest, "mixed GPUs: CUDA's FASTEST_FIRST order approximated; set CUDA_DEVICE_ORDER=PCI_BUS_ID to be sure"


def _cuda_visible(devices: list[_Device], env: str | None) -> tuple[list[_Device], str | None]:
    """Apply CUDA_VISIBLE_DEVICES the way the CUDA runtime does.

    Per the CUDA C Programming Guide ("CUDA Environment Variables"): a comma-separated list of
    integer indices (into the CUDA order) or GPU UUIDs (``GPU-...``, any unique prefix); devices
    are renumbered in the order listed, and an invalid entry ends the list -- only the devices
    before it are visible. We treat a repeated device and a MIG UUID (``MIG-...``, which needs
    MIG-instance memory NVML reports separately) as invalid entries too.
    """
    if env is None:
        return devices, None
    chosen: list[_Device] = []
    stop_reason = None
    for raw in env.split(","):
        token = raw.strip()
        found = _find_visible(devices, token)
        if found is None or found in chosen:
            stop_reason = f"entry {token!r} is invalid or repeated, so the list ends there" if token else None
            break
        chosen.append(found)
    hidden = len(devices) - len(chosen)
    if not hidden and stop_reason is None:
        return chosen, None
    note = f"CUDA_VISIBLE_DEVICES={env!r} hides {hidden} of {len(devices)} GPU(s)"
    if stop_reason:
        note += f"; {stop_reason}"
    return chosen, note


def _find_visible(devices: list[_Device], token: str) -> _Device | None:
    if token.isdigit():
        i = int(token)
        return devices[i] if i < len(devices) else None
    if token.upper().startswith("GPU-"):
        hits = [d for d in devices if d.uuid and d.uuid.lower().startswith(token.lower())]
        return hits[0] if len(hits) == 1 else None
    return None  # "-1", "MIG-...", names, empty entries


# --------------------------------------------------------------------------------------------
# Apple silicon
# --------------------------------------------------------------------------------------------


def _apple_gpu(ram_total: int, ram_free: int) -> tuple[list[Gpu], dict[str, str], str | None]:
    brand = _sysctl("machdep.cpu.brand_string") or "Apple silicon"  # e.g. "Apple M2 Max"
    limit_mb = _sysctl_int("iogpu.wired_limit_mb")  # 0 (the default) means "macOS policy"
    if limit_mb:
        total = min(limit_mb * MiB, ram_total)
        total_source = f"probe: sysctl iogpu.wired_limit_mb = {limit_mb}"
    else:
        num, den = _APPLE_SHARE_SMALL if ram_total <= _APPLE_SMALL_RAM else _APPLE_SHARE_LARGE
        total = ram_total * num // den
        total_source = f"probe: {num}/{den} of RAM, macOS's default GPU working-set cap (recommendedMaxWorkingSetSize)"
    # BF16 is an Armv8.6 feature; M1 lacks it and M2 onwards have it. macOS reports it as
    # hw.optional.arm.FEAT_BF16 (macOS 12+); without that key, the brand string decides.
    feat = _sysctl_int("hw.optional.arm.FEAT_BF16")
    bf16 = bool(feat) if feat is not None else "M1" not in brand.split()
    gpu = Gpu(
        index=0,
        name=brand,
        backend="mps",
        total_bytes=total,
        free_bytes=max(0, min(total, ram_free)),
        bf16=bf16,
        unified=True,
    )
    sources = {
        "gpus": "probe: Apple silicon (sys.platform darwin, arm64): one unified-memory mps GPU",
        "gpu.name": "probe: sysctl machdep.cpu.brand_string",
        "gpu.total_bytes": total_source,
        "gpu.free_bytes": "probe: min(GPU share, psutil available RAM): the pool is shared with the CPU",
        "gpu.bf16": "probe: sysctl hw.optional.arm.FEAT_BF16" if feat is not None else "probe: not M1 (brand string)",
        "gpu.bandwidth": "probe: unknown on Apple silicon; None",
        "gpu.pcie_bandwidth": "probe: not applicable, unified memory has no host link; None",
    }
    return [gpu], sources, None


def _sysctl(key: str) -> str | None:
    import subprocess  # lazy: only Macs get here

    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def _sysctl_int(key: str) -> int | None:
    value = _sysctl(key)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Disk and small helpers
# --------------------------------------------------------------------------------------------


def _free_disk(path: Path) -> tuple[int, Path]:
    """Free bytes on the filesystem that holds ``path``, or would hold it once created."""
    at = Path(os.path.abspath(os.path.expanduser(path)))
    while not at.exists() and at.parent != at:
        at = at.parent
    try:
        return int(shutil.disk_usage(at).free), at
    except OSError:
        return 0, at  # unreadable: report no room rather than invent some


def _optional(read: Any) -> Any:
    try:
        return read()
    except Exception:  # an NVML call this GPU or driver does not support
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip().rstrip(":")
