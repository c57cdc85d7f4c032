"""Named hardware profiles: one TOML file per machine, read into :class:`~planner.core.records.Hardware`.

A profile lets people ask "would this fit on an RTX 4090 / a Colab T4 / an 8x A100 box?" without
owning one. The files live in three places, searched in this order (a later one overrides an
earlier one of the same name, so a user can correct or extend ours):

1. ``planner/hardware_profiles/`` -- where the wheel puts them (pyproject force-includes the
   top-level folder there);
2. ``<repo>/hardware_profiles/`` -- when running from a source checkout or an editable install
   (only used when 1 does not exist);
3. the folder named by ``FITCHECK_PROFILES_DIR``, for the user's own profiles.

The file stem is the profile name (lowercase-with-dashes). The format, field by field::

    description = "one line for people"          # required
    ram_total = 68_719_476_736                   # required, bytes
    ram_free = 62_277_025_792                    # required, bytes, <= ram_total
    disk_free = 500_000_000_000                  # required, bytes, where the offload folder lives
    cache_disk_free = 500_000_000_000            # required, bytes, where the HF cache lives
    ram_bandwidth = 89_600_000_000               # optional, bytes/s
    disk_bandwidth = 7_000_000_000               # optional, bytes/s
    cpu_count = 32                               # optional, logical CPUs
    link_bandwidth = 450_000_000_000             # optional, bytes/s GPU to GPU inside the machine (NVLink)
    gpus = []                                    # required; [] for a CPU-only machine

    [[gpus]]                                     # one table per kind of GPU
    count = 2                                    # optional, default 1: identical GPUs
    name = "NVIDIA GeForce RTX 4090"             # required
    backend = "cuda"                             # required: "cuda" or "mps"
    total_bytes = 25_757_220_864                 # required, bytes, > 0
    free_bytes = 24_683_479_040                  # required, bytes, <= total_bytes
    compute_capability = [8, 9]                  # required for cuda, absent for mps
    bf16 = true                                  # required; for cuda it must equal cc >= 8.0
    bandwidth = 1_008_000_000_000                # optional, bytes/s
    pcie_bandwidth = 31_507_692_307              # optional, bytes/s, one direction
    unified = false                              # optional, default false; must be true for mps

    [sources]                                    # figure name -> where it comes from
    ram_total = "..."
    "gpu.total_bytes" = "..."                    # GPU fields are keyed "gpu.<field>"
    gpus = "..."                                 # how many GPUs, and how they are linked

Unknown keys are errors (they are usually typos). Only the standard library is imported here,
because ``fitcheck`` must start fast.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from planner.core.errors import UsageError
from planner.core.records import Gpu, Hardware

PROFILES_ENV = "FITCHECK_PROFILES_DIR"

_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# Field -> (type, required). Sizes and bandwidths are ints; TOML booleans are not accepted as ints.
_MACHINE_FIELDS: dict[str, tuple[type, bool]] = {
    "description": (str, True),
    "ram_total": (int, True),
    "ram_free": (int, True),
    "disk_free": (int, True),
    "cache_disk_free": (int, True),
    "ram_bandwidth": (int, False),
    "disk_bandwidth": (int, False),
    "cpu_count": (int, False),
    "link_bandwidth": (int, False),
    "gpus": (list, True),
    "sources": (dict, False),
}
_GPU_FIELDS: dict[str, tuple[type, bool]] = {
    "count": (int, False),
    "name": (str, True),
    "backend": (str, True),
    "total_bytes": (int, True),
    "free_bytes": (int, True),
    "compute_capability": (list, False),
    "bf16": (bool, True),
    "bandwidth": (int, False),
    "pcie_bandwidth": (int, False),
    "unified": (bool, False),
}
_BACKENDS = ("cuda", "mps")

#: Keys a ``[sources]`` table may use: machine fields, ``gpus`` (count and links) and ``gpu.<field>``.
SOURCE_KEYS: frozenset[str] = frozenset(
    [k for k in _MACHINE_FIELDS if k not in ("gpus", "sources", "description")]
    + ["gpus"]
    + [f"gpu.{k}" for k in _GPU_FIELDS if k != "count"]
)


def list_profiles() -> tuple[Hardware, ...]:
    """Every available hardware profile, loaded and validated, sorted by name.

    Returns:
        The profiles as :class:`Hardware` records with ``source="profile"``.

    Raises:
        UsageError: if any profile file is malformed (the message names the file and the field),
            or ``FITCHECK_PROFILES_DIR`` is set but is not a folder.
    """
    return tuple(_load_file(name, path) for name, path in sorted(_profile_paths().items()))


def override_warnings(gpus: tuple[int, ...]) -> list[str]:
    """Warnings for ``--gpu`` sizes that look like a card's total rather than its free memory.

    A bundled card's nominal total (NVML's ``memory.total`` rounded to whole GiB, in GiB or GB)
    is never all free: the driver reserves 250-320 MiB and a display more (the profiles' sources,
    e.g. rtx-4090.toml ``gpu.free_bytes``), so a plan made for it may not load.
    """
    totals = sorted({g.total_bytes for hw in list_profiles() for g in hw.gpus})
    nominal = {round(t / 1024**3) for t in totals}
    out = []
    for size in gpus:
        # within 1 % of a card's exact total, or exactly its whole-GiB figure in GiB or GB
        exact = any(abs(size - t) <= t // 100 for t in totals)
        if exact or any(size in (n * 1024**3, n * 10**9) for n in nominal):
            out.append(f"--gpu {size / 1024**3:.1f} GiB is a card's total memory, not what is free on it (the driver "
                       "and a display take some): give the free figure (nvidia-smi's memory.free, or `fitcheck probe`)")
    return out


def load_profile(name: str) -> Hardware:
    """Load one hardware profile by name (``rtx-4090``, ``colab-free-t4``, ...).

    Only the requested file is parsed, so a broken profile elsewhere does not get in the way.

    Args:
        name: the profile name; case and surrounding blanks are ignored.

    Returns:
        The profile as a :class:`Hardware` record with ``source="profile"``.

    Raises:
        UsageError: for an unknown name (the message lists close matches), or a malformed file.
    """
    key = str(name).strip().lower()
    paths = _profile_paths()
    path = paths.get(key)
    if path is None:
        close = _close_matches(key, sorted(paths))
        suggestion = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"no hardware profile named {name!r}{suggestion}",
            hint="run `fitcheck profiles` to list the profiles",
        )
    return _load_file(key, path)


def profile_dirs() -> tuple[Path, ...]:
    """The folders searched for profiles, lowest precedence first (see the module docstring)."""
    package = Path(__file__).resolve().parent.parent  # planner/
    dirs: list[Path] = []
    for candidate in (package / "hardware_profiles", package.parent / "hardware_profiles"):
        if candidate.is_dir():
            dirs.append(candidate)
            break
    user = os.environ.get(PROFILES_ENV)
    if user:
        user_dir = Path(user).expanduser()
        if not user_dir.is_dir():
            raise UsageError(
                f"{PROFILES_ENV}={user} is not a folder",
                hint=f"point {PROFILES_ENV} at a folder of <name>.toml profiles, or unset it",
            )
        dirs.append(user_dir)
    return tuple(dirs)


# --------------------------------------------------------------------------------------------


def _profile_paths() -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for folder in profile_dirs():
        for path in sorted(folder.glob("*.toml")):
            if not _NAME.match(path.stem):
                raise UsageError(
                    f"hardware profile {path}: the file name must be lowercase-with-dashes, like rtx-4090.toml",
                )
            paths[path.stem] = path  # a later folder overrides an earlier one
    return paths


def _close_matches(key: str, names: list[str]) -> list[str]:
    # Substring hits first ("4090" -> "rtx-4090"), then difflib's similarity ranking.
    hits = [n for n in names if key and key in n][:3]
    for n in difflib.get_close_matches(key, names, n=3, cutoff=0.5):
        if n not in hits:
            hits.append(n)
    return hits[:3]


class _Checker:
    """Reports the first problem in one file as a UsageError naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str) -> UsageError:
        return UsageError(
            f"hardware profile {self.path}: field {field!r} {problem}",
            hint="fix the file (see the format in planner/profiles.py) or remove it",
        )

    def fields(self, table: dict[str, Any], spec: dict[str, tuple[type, bool]], prefix: str) -> None:
        for key in table:
            if key not in spec:
                raise self.fail(prefix + key, f"is not a known field (known: {', '.join(spec)})")
        for key, (kind, required) in spec.items():
            if key not in table:
                if required:
                    raise self.fail(prefix + key, "is missing")
                continue
            value = table[key]
            # bool is a subclass of int in Python; a size of `true` is a mistake, not 1 byte.
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok:
                raise self.fail(prefix + key, f"must be {_KIND_NAMES[kind]}, got {type(value).__name__} {value!r}")

    def at_least(self, table: dict[str, Any], key: str, minimum: int, prefix: str = "") -> None:
        if key in table and table[key] < minimum:
            raise self.fail(prefix + key, f"must be at least {minimum}, got {table[key]}")


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "an array", dict: "a table"}


def _load_file(name: str, path: Path) -> Hardware:
    check = _Checker(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"hardware profile {path} cannot be read: {e}") from e

    check.fields(data, _MACHINE_FIELDS, "")
    for key in ("ram_total", "ram_bandwidth", "disk_bandwidth", "cpu_count", "link_bandwidth"):
        check.at_least(data, key, 1)
    for key in ("ram_free", "disk_free", "cache_disk_free"):
        check.at_least(data, key, 0)
    if data["ram_free"] > data["ram_total"]:
        raise check.fail("ram_free", f"({data['ram_free']}) is larger than ram_total ({data['ram_total']})")

    gpus: list[Gpu] = []
    for i, table in enumerate(data["gpus"]):
        prefix = f"gpus[{i}]."
        if not isinstance(table, dict):
            raise check.fail(f"gpus[{i}]", "must be a table ([[gpus]])")
        for _ in range(_check_gpu(check, table, prefix)):
            gpus.append(_gpu(len(gpus), table))

    sources = data.get("sources", {})
    for key, value in sources.items():
        if key not in SOURCE_KEYS:
            raise check.fail(f"sources.{key}", f"names no figure (known: {', '.join(sorted(SOURCE_KEYS))})")
        if not isinstance(value, str) or not value.strip():
            raise check.fail(f"sources.{key}", "must be a non-empty string")

    return Hardware(
        name=name,
        source="profile",
        gpus=tuple(gpus),
        ram_total=data["ram_total"],
        ram_free=data["ram_free"],
        disk_free=data["disk_free"],
        cache_disk_free=data["cache_disk_free"],
        ram_bandwidth=data.get("ram_bandwidth"),
        disk_bandwidth=data.get("disk_bandwidth"),
        cpu_count=data.get("cpu_count"),
        description=data["description"],
        sources=dict(sources),
        link_bandwidth=data.get("link_bandwidth"),
    )


def _check_gpu(check: _Checker, table: dict[str, Any], prefix: str) -> int:
    """Validate one ``[[gpus]]`` table; return how many identical GPUs it describes."""
    check.fields(table, _GPU_FIELDS, prefix)
    for key in ("count", "total_bytes", "bandwidth", "pcie_bandwidth"):
        check.at_least(table, key, 1, prefix)
    check.at_least(table, "free_bytes", 0, prefix)
    if table["free_bytes"] > table["total_bytes"]:
        raise check.fail(prefix + "free_bytes", f"({table['free_bytes']}) is larger than total_bytes ({table['total_bytes']})")
    backend = table["backend"]
    if backend not in _BACKENDS:
        raise check.fail(prefix + "backend", f"must be one of {', '.join(_BACKENDS)}, got {backend!r}")
    cc = table.get("compute_capability")
    if backend == "cuda":
        if cc is None:
            raise check.fail(prefix + "compute_capability", "is missing (required for cuda GPUs)")
        if len(cc) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in cc):
            raise check.fail(prefix + "compute_capability", f"must be [major, minor], got {cc!r}")
        # bf16 arithmetic arrived with Ampere, compute capability 8.0 (CUDA C++ Programming
        # Guide, "Compute Capabilities": __nv_bfloat16 arithmetic needs sm_80 or later).
        if table["bf16"] != (tuple(cc) >= (8, 0)):
            raise check.fail(prefix + "bf16", f"is {table['bf16']}, but compute capability {cc[0]}.{cc[1]} means {tuple(cc) >= (8, 0)}")
    else:
        if cc is not None:
            raise check.fail(prefix + "compute_capability", "applies to cuda GPUs only")
        if not table.get("unified", False):
            raise check.fail(prefix + "unified", "must be true for an mps GPU (Apple silicon memory is unified)")
    return table.get("count", 1)


def _gpu(index: int, table: dict[str, Any]) -> Gpu:
    cc = table.get("compute_capability")
    return Gpu(
        index=index,
        name=table["name"],
        backend=table["backend"],
        total_bytes=table["total_bytes"],
        free_bytes=table["free_bytes"],
        compute_capability=(cc[0], cc[1]) if cc is not None else None,
        bf16=table["bf16"],
        bandwidth=table.get("bandwidth"),
        pcie_bandwidth=table.get("pcie_bandwidth"),
        unified=table.get("unified", False),
    )
