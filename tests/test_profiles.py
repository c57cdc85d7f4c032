"""The shipped hardware profiles, and the loader's handling of users' own profiles."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from planner.core.errors import UsageError
from planner.hardware.probe import _pcie_bandwidth
from planner.hardware.profiles import PROFILES_ENV, list_profiles, load_profile, profile_dirs
from planner.core.records import Hardware
from planner.core.units import GiB, MiB

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "hardware_profiles"

# Machine fields that must carry a figure, and a source for it, in every shipped profile.
MACHINE_FIGURES = ("ram_total", "ram_free", "ram_bandwidth", "disk_free", "cache_disk_free", "disk_bandwidth", "cpu_count")
GPU_FIGURES = ("name", "total_bytes", "free_bytes", "compute_capability", "bf16", "bandwidth", "pcie_bandwidth")


@pytest.fixture(autouse=True)
def _no_user_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILES_ENV, raising=False)


@pytest.fixture(scope="module")
def shipped() -> dict[str, Hardware]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(PROFILES_ENV, raising=False)
        return {hw.name: hw for hw in list_profiles()}


def _consumer(hw: Hardware) -> bool:
    return any("GeForce" in g.name for g in hw.gpus)


# ---- the shipped data ---------------------------------------------------------------------------


def test_every_shipped_file_loads_by_name() -> None:
    files = sorted(SHIPPED.glob("*.toml"))
    assert len(files) >= 18
    for path in files:
        hw = load_profile(path.stem)
        assert hw.name == path.stem
        assert hw.source == "profile"
        assert hw.description


def test_list_is_sorted_and_matches_the_files(shipped: dict[str, Hardware]) -> None:
    names = [hw.name for hw in list_profiles()]
    assert names == sorted(names)
    assert set(names) == {p.stem for p in SHIPPED.glob("*.toml")}
    assert profile_dirs() == (SHIPPED,)  # running from source: the repo-root folder


def test_categories_are_covered(shipped: dict[str, Hardware]) -> None:
    consumer_sizes = [g.total_bytes for hw in shipped.values() if _consumer(hw) for g in hw.gpus]
    assert min(consumer_sizes) <= 8 * GiB, "a consumer GPU of 8 GB"
    assert any(31 * GiB <= s <= 32 * GiB for s in consumer_sizes), "a consumer GPU of 32 GB"
    assert {12 * GiB // MiB, 24 * GiB // MiB} <= {s // MiB for s in consumer_sizes}, "12 and 24 GiB consumer cards"

    names = {g.name for hw in shipped.values() for g in hw.gpus}
    for datacenter in ("Tesla T4", "NVIDIA L4", "NVIDIA A10G", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        assert datacenter in names

    multi = [hw for hw in shipped.values() if len(hw.gpus) >= 2]
    assert len(multi) >= 2
    assert any(_consumer(hw) for hw in multi) and any(not _consumer(hw) for hw in multi)

    apple = [hw for hw in shipped.values() if any(g.backend == "mps" for g in hw.gpus)]
    assert apple and all(g.unified for hw in apple for g in hw.gpus)
    assert any(not g.bf16 for hw in apple for g in hw.gpus) and any(g.bf16 for hw in apple for g in hw.gpus)

    cpu_only = {hw.ram_total for hw in shipped.values() if not hw.gpus}
    assert {8 * GiB, 16 * GiB} <= cpu_only

    colab = shipped["colab-free-t4"]
    assert [g.name for g in colab.gpus] == ["Tesla T4"]
    assert 12.6 * GiB < colab.ram_total < 12.8 * GiB  # Colab shows "12.7 GB"
    assert colab.cpu_count == 2


def test_every_figure_has_a_source(shipped: dict[str, Hardware]) -> None:
    for hw in shipped.values():
        assert "gpus" in hw.sources, hw.name
        for field in MACHINE_FIGURES:
            assert getattr(hw, field) is not None, f"{hw.name}: {field} missing"
            assert hw.sources.get(field, "").strip(), f"{hw.name}: no source for {field}"
        for gpu in hw.gpus:
            for field in GPU_FIGURES:
                if getattr(gpu, field) is not None:
                    assert hw.sources.get(f"gpu.{field}", "").strip(), f"{hw.name}: no source for gpu.{field}"
            assert gpu.bandwidth is not None, hw.name
            if gpu.backend == "cuda":
                assert gpu.compute_capability is not None and gpu.pcie_bandwidth is not None, hw.name
            else:  # unified memory: no host link, and the profile says why
                assert gpu.pcie_bandwidth is None and "not applicable" in hw.sources["gpu.pcie_bandwidth"]


def test_figures_are_consistent(shipped: dict[str, Hardware]) -> None:
    # Every PCIe figure is the theoretical one the probe computes, so profiles and probes agree.
    links = {_pcie_bandwidth(gen, width) for gen in (3, 4, 5) for width in (8, 16)}
    for hw in shipped.values():
        assert 0 < hw.ram_free <= hw.ram_total, hw.name
        assert hw.disk_free > 0 and hw.cache_disk_free > 0, hw.name
        assert [g.index for g in hw.gpus] == list(range(len(hw.gpus))), hw.name
        for g in hw.gpus:
            assert 0 < g.free_bytes <= g.total_bytes, hw.name
            if g.backend == "cuda":
                assert g.free_bytes < g.total_bytes, f"{hw.name}: free must leave the driver's reserve"
                assert g.bf16 == (g.compute_capability >= (8, 0)), hw.name
                assert g.pcie_bandwidth in links, hw.name
            else:
                assert g.free_bytes <= hw.ram_free, f"{hw.name}: unified GPU memory comes out of free RAM"
                assert g.total_bytes < hw.ram_total
                assert g.bf16 == ("M1" not in g.name.split()), hw.name


def test_nvml_totals_are_stored_exactly(shipped: dict[str, Hardware]) -> None:
    # 24 GiB is 25,769,803,776 bytes; NVML reports 24564 MiB for an RTX 4090.
    assert shipped["rtx-4090"].gpus[0].total_bytes == 25_757_220_864
    assert shipped["t4"].gpus[0].total_bytes == 15360 * MiB
    assert shipped["h100-sxm-80gb"].gpus[0].total_bytes == 81559 * MiB
    assert shipped["rtx-4060-8gb"].gpus[0].pcie_bandwidth == _pcie_bandwidth(4, 8)  # AD107 is x8
    assert len(shipped["8x-a100-80gb"].gpus) == 8


def test_to_dict_is_json_ready(shipped: dict[str, Hardware]) -> None:
    d = shipped["2x-rtx-3090"].to_dict()
    assert d["gpus"][1]["compute_capability"] == [8, 6]
    assert d["gpus"][0]["free_bytes"] < d["gpus"][1]["free_bytes"]  # GPU 0 drives the display


# ---- names ----------------------------------------------------------------------------------------


def test_names_ignore_case_and_blanks() -> None:
    assert load_profile("  RTX-4090 ").name == "rtx-4090"


@pytest.mark.parametrize(("typo", "expected"), [("rtx4090", "rtx-4090"), ("4090", "rtx-4090"), ("a100", "a100-80gb"), ("h100", "h100-sxm-80gb")])
def test_unknown_name_suggests_close_matches(typo: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        load_profile(typo)
    assert f"no hardware profile named {typo!r}" in info.value.message
    assert "did you mean" in info.value.message and expected in info.value.message
    assert "fitcheck profiles" in (info.value.hint or "")
    assert "\n" not in info.value.message


def test_unknown_name_without_a_match() -> None:
    with pytest.raises(UsageError) as info:
        load_profile("zzzzzz")
    assert "did you mean" not in info.value.message
    assert "fitcheck profiles" in (info.value.hint or "")


# ---- users' profiles ------------------------------------------------------------------------------

GOOD = """
description = "my box"
ram_total = 34_359_738_368
ram_free = 30_000_000_000
disk_free = 100_000_000_000
cache_disk_free = 50_000_000_000

[[gpus]]
count = 2
name = "NVIDIA GeForce RTX 3090"
backend = "cuda"
total_bytes = 25_769_803_776
free_bytes = 25_000_000_000
compute_capability = [8, 6]
bf16 = true

[sources]
ram_total = "I counted"
"""


def _user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))
    return tmp_path


def test_user_profile_is_listed_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dir(tmp_path, monkeypatch, {"my-box.toml": GOOD})
    names = [hw.name for hw in list_profiles()]
    assert "my-box" in names and "rtx-4090" in names
    hw = load_profile("my-box")
    assert [g.index for g in hw.gpus] == [0, 1]
    assert hw.gpus[1].compute_capability == (8, 6) and hw.gpus[1].bf16
    assert hw.ram_bandwidth is None and hw.cpu_count is None  # optional figures stay unknown
    assert hw.sources == {"ram_total": "I counted"}


def test_user_profile_overrides_a_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dir(tmp_path, monkeypatch, {"rtx-4090.toml": GOOD})
    assert load_profile("rtx-4090").description == "my box"
    assert sum(hw.name == "rtx-4090" for hw in list_profiles()) == 1


def _broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_broken("ram_total = 34_359_738_368\n", ""), "ram_total"),
        (_broken("ram_free = 30_000_000_000", "ram_free = -1"), "ram_free"),
        (_broken("total_bytes = 25_769_803_776", 'total_bytes = "24GB"'), "gpus[0].total_bytes"),
        (_broken("disk_free = 100_000_000_000", "disk_free = true"), "disk_free"),
        (_broken("free_bytes = 25_000_000_000", "free_bytes = 30_000_000_000"), "gpus[0].free_bytes"),
        (_broken("bf16 = true", "bf16 = false"), "gpus[0].bf16"),
        (_broken("compute_capability = [8, 6]\n", ""), "gpus[0].compute_capability"),
        (_broken('backend = "cuda"', 'backend = "rocm"'), "gpus[0].backend"),
        (_broken("count = 2", "count = 0"), "gpus[0].count"),
        (_broken("ram_free =", "ram_fre ="), "ram_fre"),
        (_broken('ram_total = "I counted"', 'ram_totl = "I counted"'), "sources.ram_totl"),
        (_broken("[[gpus]]", "[[gpus]]\nunified = 1"), "gpus[0].unified"),
    ],
)
def test_malformed_user_profile_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, field: str) -> None:
    _user_dir(tmp_path, monkeypatch, {"broken-box.toml": text})
    for call in (list_profiles, lambda: load_profile("broken-box")):
        with pytest.raises(UsageError) as info:
            call()
        assert "broken-box.toml" in info.value.message
        assert repr(field) in info.value.message


def test_mps_gpu_must_be_unified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _broken('backend = "cuda"', 'backend = "mps"').replace("compute_capability = [8, 6]\n", "")
    _user_dir(tmp_path, monkeypatch, {"mac.toml": text})
    with pytest.raises(UsageError, match="'gpus\\[0\\].unified'"):
        load_profile("mac")


def test_unparsable_toml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dir(tmp_path, monkeypatch, {"bad-toml.toml": "ram_total = = 3\n"})
    with pytest.raises(UsageError, match="bad-toml.toml"):
        list_profiles()


def test_a_broken_user_file_does_not_block_other_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dir(tmp_path, monkeypatch, {"broken-box.toml": "nonsense = 1\n"})
    assert load_profile("rtx-4090").gpus[0].name == "NVIDIA GeForce RTX 4090"


def test_bad_file_name_and_bad_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_dir(tmp_path, monkeypatch, {"My Box.toml": GOOD})
    with pytest.raises(UsageError, match="lowercase-with-dashes"):
        list_profiles()
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path / "missing"))
    with pytest.raises(UsageError, match=PROFILES_ENV):
        load_profile("rtx-4090")


def test_profile_is_a_frozen_record() -> None:
    hw = load_profile("t4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hw.ram_total = 1  # type: ignore[misc]


def test_profiles_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys, planner.hardware.profiles;"
        "heavy = {'psutil', 'pynvml', 'huggingface_hub', 'torch', 'transformers'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
