"""probe() on this machine, on a faked NVML, and apply_overrides().

NVML is the only thing faked: a thin stand-in module for ``pynvml`` that answers from a table,
since no NVIDIA driver exists on the machines these tests run on. Everything else is real.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import psutil
import pytest

from planner.core.errors import UsageError
from planner.hardware.probe import apply_overrides, hf_cache_dir, probe
from planner.hardware.profiles import load_profile
from planner.core.records import Gpu, Hardware
from planner.core.units import GiB, MiB

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "FITCHECK_PROFILES_DIR"):
        monkeypatch.delenv(var, raising=False)


# ---- a thin fake of pynvml ---------------------------------------------------------------------


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


# NVML enumerates these in this order; the T4 sits on the lower PCI bus.
A100 = {
    "name": "NVIDIA A100-SXM4-80GB", "total": 81920 * MiB, "free": 81039 * MiB, "cc": (8, 0),
    "mem_clock": 1593, "bus_width": 5120, "gen": 4, "width": 16, "bus": "00000000:41:00.0",
    "uuid": "GPU-aaaa1111-0000-0000-0000-000000000000", "cores": 6912, "sm_clock": 1410,
}
T4 = {
    "name": "Tesla T4", "total": 15360 * MiB, "free": 15104 * MiB, "cc": (7, 5),
    "mem_clock": 5001, "bus_width": 256, "gen": 3, "width": 16, "bus": "00000000:01:00.0",
    "uuid": "GPU-bbbb2222-0000-0000-0000-000000000000", "cores": 2560, "sm_clock": 1590,
}


def fake_nvml(devices: list[dict[str, Any]], *, init_error: Exception | None = None, broken: str | None = None) -> types.ModuleType:
    """A pynvml look-alike. A key missing from a device makes its getter raise NVMLError, like
    NVML_ERROR_NOT_SUPPORTED; ``broken`` names a getter that always raises."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    mod.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    mod.NVML_CLOCK_MEM = 2  # type: ignore[attr-defined]
    mod.calls = []  # type: ignore[attr-defined]

    def get(handle: dict[str, Any], key: str, fn: str) -> Any:
        if fn == broken or key not in handle:
            raise FakeNVMLError("Not Supported")
        return handle[key]

    def init() -> None:
        mod.calls.append("init")  # type: ignore[attr-defined]
        if init_error is not None:
            raise init_error

    def table(**getters: Any) -> None:
        for fn, body in getters.items():
            setattr(mod, fn, body)

    table(
        nvmlInit=init,
        nvmlShutdown=lambda: mod.calls.append("shutdown"),  # type: ignore[attr-defined]
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: devices[i],
        nvmlDeviceGetName=lambda h: get(h, "name", "nvmlDeviceGetName"),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            total=get(h, "total", "nvmlDeviceGetMemoryInfo"), free=h["free"], used=h["total"] - h["free"]
        ),
        nvmlDeviceGetCudaComputeCapability=lambda h: get(h, "cc", "nvmlDeviceGetCudaComputeCapability"),
        nvmlDeviceGetMaxClockInfo=lambda h, kind: get(h, "mem_clock" if kind == 2 else "sm_clock", "nvmlDeviceGetMaxClockInfo"),
        nvmlDeviceGetMemoryBusWidth=lambda h: get(h, "bus_width", "nvmlDeviceGetMemoryBusWidth"),
        nvmlDeviceGetMaxPcieLinkGeneration=lambda h: get(h, "gen", "nvmlDeviceGetMaxPcieLinkGeneration"),
        nvmlDeviceGetMaxPcieLinkWidth=lambda h: get(h, "width", "nvmlDeviceGetMaxPcieLinkWidth"),
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=get(h, "bus", "nvmlDeviceGetPciInfo").encode()),
        nvmlDeviceGetUUID=lambda h: get(h, "uuid", "nvmlDeviceGetUUID"),
        nvmlDeviceGetNumGpuCores=lambda h: get(h, "cores", "nvmlDeviceGetNumGpuCores"),
    )
    return mod


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def install(*args: Any, **kwargs: Any) -> types.ModuleType:
        mod = fake_nvml(*args, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod

    return install


# ---- this machine ----------------------------------------------------------------------------------


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVIDIA driver")
def test_probe_on_this_machine_reports_no_gpu_and_says_why(tmp_path: Path) -> None:
    hw = probe(offload_dir=tmp_path, cache_dir=tmp_path)
    assert hw.name == "this machine" and hw.source == "probe"
    assert hw.gpus == ()
    assert "NVML" in hw.sources["gpus"] or "pynvml" in hw.sources["gpus"]
    assert "no NVIDIA GPU" in hw.description
    vm = psutil.virtual_memory()
    assert hw.ram_total == vm.total
    assert abs(hw.ram_free - vm.available) < 512 * MiB  # available moves a little between calls
    assert hw.cpu_count == os.cpu_count()
    assert hw.ram_bandwidth is None and hw.disk_bandwidth is None  # unknown, and said so
    assert "unknown" in hw.sources["ram_bandwidth"]
    assert all(v.startswith("probe:") for v in hw.sources.values())


def test_probe_never_imports_torch_or_huggingface_hub() -> None:
    code = (
        "import sys, planner.hardware.probe; planner.hardware.probe.probe();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'huggingface_hub', 'transformers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- NVIDIA through a fake NVML ----------------------------------------------------------------------


def test_two_gpus_are_reported_with_their_figures(nvml, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    mod = nvml([A100, T4])
    hw = probe()
    t4, a100 = hw.gpus  # PCI order: the T4's bus 01 comes before the A100's bus 41
    assert (t4.index, t4.device, a100.index, a100.device) == (0, "cuda:0", 1, "cuda:1")
    assert a100 == Gpu(
        index=1,
        name="NVIDIA A100-SXM4-80GB",
        backend="cuda",
        total_bytes=81920 * MiB,
        free_bytes=81039 * MiB,
        compute_capability=(8, 0),
        bf16=True,
        bandwidth=2_039_040_000_000,  # 1593 MHz x 2 x 5120 bit / 8: the datasheet's 2,039 GB/s
        pcie_bandwidth=31_507_692_307,  # PCIe 4.0 x16
    )
    assert (t4.total_bytes, t4.free_bytes, t4.compute_capability, t4.bf16) == (15360 * MiB, 15104 * MiB, (7, 5), False)
    assert t4.bandwidth == 320_064_000_000 and t4.pcie_bandwidth == 15_753_846_153  # 320 GB/s; PCIe 3.0 x16
    assert mod.calls == ["init", "shutdown"]
    assert hw.sources["gpu.total_bytes"].startswith("probe: NVML")
    assert "Tesla T4" in hw.description


def test_default_order_puts_the_fastest_gpu_first(nvml) -> None:  # type: ignore[no-untyped-def]
    nvml([T4, A100])
    hw = probe()
    assert [g.name for g in hw.gpus] == ["NVIDIA A100-SXM4-80GB", "Tesla T4"]
    assert [g.index for g in hw.gpus] == [0, 1]
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in hw.sources["gpus"]


def test_identical_gpus_keep_pci_order(nvml) -> None:  # type: ignore[no-untyped-def]
    second = dict(A100, bus="00000000:81:00.0", uuid="GPU-cccc", free=1 * GiB)
    nvml([second, A100])  # NVML lists the higher bus first; CUDA would not
    hw = probe()
    assert [g.free_bytes for g in hw.gpus] == [81039 * MiB, 1 * GiB]
    assert "CUDA_DEVICE_ORDER" not in hw.sources["gpus"]


@pytest.mark.parametrize(
    ("visible", "names"),
    [
        ("1", ["Tesla T4"]),
        ("1,0", ["Tesla T4", "NVIDIA A100-SXM4-80GB"]),
        ("GPU-bbbb", ["Tesla T4"]),  # a unique UUID prefix
        ("GPU-bbbb2222-0000-0000-0000-000000000000,0", ["Tesla T4", "NVIDIA A100-SXM4-80GB"]),
        ("0,7,1", ["NVIDIA A100-SXM4-80GB"]),  # an invalid index ends the list
        ("0,0", ["NVIDIA A100-SXM4-80GB"]),
        ("GPU-", []),  # matches both: not unique, so invalid
        ("MIG-0123", []),
        ("-1", []),
        ("", []),
    ],
)
def test_cuda_visible_devices_hides_and_renumbers(nvml, monkeypatch: pytest.MonkeyPatch, visible: str, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    nvml([A100, T4])  # CUDA order (fastest first): A100 = 0, T4 = 1
    hw = probe()
    assert [g.name for g in hw.gpus] == names
    assert [g.index for g in hw.gpus] == list(range(len(names)))
    if len(names) < 2:
        assert "CUDA_VISIBLE_DEVICES" in hw.sources["gpus"]


def test_nvml_init_failure_means_no_gpu(nvml) -> None:  # type: ignore[no-untyped-def]
    mod = nvml([A100], init_error=FakeNVMLError("Driver Not Loaded"))
    hw = probe()
    assert hw.gpus == ()
    assert "Driver Not Loaded" in hw.sources["gpus"] and "Driver Not Loaded" in hw.description
    assert mod.calls == ["init"]


def test_nvml_query_failure_means_no_gpu_and_still_shuts_down(nvml) -> None:  # type: ignore[no-untyped-def]
    mod = nvml([A100, T4], broken="nvmlDeviceGetMemoryInfo")
    hw = probe()
    assert hw.gpus == ()
    assert "query failed" in hw.sources["gpus"]
    assert mod.calls == ["init", "shutdown"]


def test_missing_pynvml_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    hw = probe()
    assert hw.gpus == () and "cannot be imported" in hw.sources["gpus"]


def test_unreadable_optional_figures_become_none(nvml) -> None:  # type: ignore[no-untyped-def]
    partial = {k: v for k, v in A100.items() if k not in ("bus_width", "gen", "cc")}
    nvml([partial])
    (gpu,) = probe().gpus
    assert gpu.bandwidth is None and gpu.pcie_bandwidth is None
    assert gpu.compute_capability is None and gpu.bf16 is False  # unknown capability: no bf16 claim
    assert gpu.total_bytes == 81920 * MiB


def test_no_devices(nvml) -> None:  # type: ignore[no-untyped-def]
    nvml([])
    hw = probe()
    assert hw.gpus == () and "no device" in hw.sources["gpus"]


# ---- Apple silicon, through a stand-in `sysctl` on PATH ----------------------------------------------


def _fake_sysctl(tmp_path: Path, values: dict[str, str]) -> Path:
    lines = ["#!/bin/sh", 'case "$2" in']
    lines += [f'  {key}) echo "{value}" ;;' for key, value in values.items()]
    lines += ["  *) echo \"sysctl: unknown oid '$2'\" >&2; exit 1 ;;", "esac"]
    script = tmp_path / "bin" / "sysctl"
    script.parent.mkdir()
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script.parent


@pytest.mark.parametrize(
    ("values", "expect_total", "expect_bf16"),
    [
        ({"machdep.cpu.brand_string": "Apple M1 Max", "iogpu.wired_limit_mb": "0", "hw.optional.arm.FEAT_BF16": "0"}, "default", False),
        ({"machdep.cpu.brand_string": "Apple M3 Pro", "iogpu.wired_limit_mb": "8192"}, 8 * GiB, True),
    ],
)
def test_apple_silicon_is_one_unified_mps_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: dict[str, str], expect_total: Any, expect_bf16: bool
) -> None:
    bin_dir = _fake_sysctl(tmp_path, values)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    hw = probe(offload_dir=tmp_path, cache_dir=tmp_path)
    (gpu,) = hw.gpus
    ram = psutil.virtual_memory().total
    if expect_total == "default":  # this machine's RAM, under macOS's default cap
        expect_total = ram * 2 // 3 if ram <= 36 * GiB else ram * 3 // 4
    assert (gpu.backend, gpu.device, gpu.unified, gpu.name) == ("mps", "mps", True, values["machdep.cpu.brand_string"])
    assert gpu.total_bytes == expect_total
    assert gpu.free_bytes <= min(gpu.total_bytes, hw.ram_free + 512 * MiB)
    assert gpu.bf16 is expect_bf16
    assert gpu.bandwidth is None and gpu.pcie_bandwidth is None


# ---- disk and cache ----------------------------------------------------------------------------------


def test_missing_offload_folder_is_measured_at_its_ancestor(tmp_path: Path) -> None:
    target = tmp_path / "not" / "yet" / "there"
    hw = probe(offload_dir=target, cache_dir=tmp_path / "cache-to-be")
    expected = shutil.disk_usage(tmp_path).free
    assert abs(hw.disk_free - expected) < 256 * MiB  # other processes write meanwhile
    assert abs(hw.cache_disk_free - expected) < 256 * MiB
    assert repr(str(tmp_path)) in hw.sources["disk_free"] and str(target) in hw.sources["disk_free"]
    assert not target.exists()  # measuring creates nothing


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "/srv/hf"},
        {"XDG_CACHE_HOME": "/xdg"},
        {"HF_HOME": "~/hf-home", "HF_HUB_CACHE": "/fast/hub"},
        {"HUGGINGFACE_HUB_CACHE": "/legacy/hub"},
        {"HF_HOME": "$FITCHECK_TEST_BASE/hf", "FITCHECK_TEST_BASE": "/base"},
    ],
)
def test_hf_cache_dir_matches_huggingface_hub(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    names = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "FITCHECK_TEST_BASE")
    child = {k: v for k, v in os.environ.items() if k not in names}
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child.update(env)
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    theirs = subprocess.run([sys.executable, "-c", code], env=child, capture_output=True, text=True, check=True).stdout.strip()
    assert hf_cache_dir() == Path(theirs)


# ---- apply_overrides ---------------------------------------------------------------------------------


def test_override_with_matching_count_keeps_the_model() -> None:
    hw = apply_overrides(load_profile("rtx-4090"), gpus=(20 * GiB,))
    (gpu,) = hw.gpus
    assert (gpu.name, gpu.compute_capability, gpu.bf16, gpu.bandwidth) == ("NVIDIA GeForce RTX 4090", (8, 9), True, 1_008_000_000_000)
    assert gpu.total_bytes == gpu.free_bytes == 20 * GiB
    assert hw.source == "profile+override"
    assert hw.sources["gpu.total_bytes"].startswith("override")
    assert hw.ram_total == load_profile("rtx-4090").ram_total  # untouched


def test_override_with_another_count_makes_generic_gpus() -> None:
    hw = apply_overrides(load_profile("rtx-4090"), gpus=(24 * GiB, 16 * GiB))
    assert [g.name for g in hw.gpus] == ["GPU (override)"] * 2
    assert [(g.index, g.backend, g.bf16, g.bandwidth, g.compute_capability) for g in hw.gpus] == [
        (0, "cuda", True, None, None),
        (1, "cuda", True, None, None),
    ]
    assert [g.free_bytes for g in hw.gpus] == [24 * GiB, 16 * GiB]
    assert "generic" in hw.sources["gpus"]
    assert "gpu.bandwidth" not in hw.sources  # the profile's figure no longer applies


def test_override_to_no_gpu_and_of_ram_and_disk() -> None:
    hw = apply_overrides(load_profile("t4"), gpus=(), ram=64 * GiB, disk=10**12)
    assert hw.gpus == ()
    assert hw.ram_total == hw.ram_free == 64 * GiB
    assert hw.disk_free == hw.cache_disk_free == 10**12
    assert hw.sources["ram_free"] == "override: --ram" and hw.sources["cache_disk_free"] == "override: --disk"


def test_overrides_apply_to_a_probe_too(nvml) -> None:  # type: ignore[no-untyped-def]
    nvml([A100])
    hw = apply_overrides(probe(), gpus=(40 * GiB,))
    assert hw.source == "probe+override"
    assert hw.gpus[0].name == "NVIDIA A100-SXM4-80GB" and hw.gpus[0].free_bytes == 40 * GiB


def test_no_override_returns_the_machine_and_suffix_is_added_once() -> None:
    hw = load_profile("l4")
    assert apply_overrides(hw) is hw
    twice = apply_overrides(apply_overrides(hw, ram=GiB), disk=GiB)
    assert twice.source == "profile+override"
    assert (twice.ram_total, twice.disk_free) == (GiB, GiB)


@pytest.mark.parametrize("kwargs", [{"gpus": (0,)}, {"gpus": (24 * GiB, -1)}, {"ram": 0}, {"disk": True}, {"ram": 1.5}])
def test_override_rejects_sizes_that_are_not_positive_ints(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        apply_overrides(load_profile("l4"), **kwargs)


def test_override_returns_a_hardware_record() -> None:
    hw = apply_overrides(load_profile("m2-max-32gb"), gpus=(16 * GiB,))
    assert isinstance(hw, Hardware)
    assert hw.gpus[0].backend == "mps" and hw.gpus[0].unified  # count matches: Apple GPU kept
