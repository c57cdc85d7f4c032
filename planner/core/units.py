"""Sizes: parsing, formatting, and the width of every safetensors dtype.

Bytes are ``int`` everywhere in fitcheck; they become GiB only when rendered.
"""

from __future__ import annotations

import math
import re

from planner.core.errors import UsageError

KiB = 1024
MiB = 1024**2
GiB = 1024**3

# Width in bits of every dtype a safetensors header may name. Source: the safetensors format spec
# and its Rust `Dtype` enum (safetensors/src/tensor.rs, v0.6): F4 is fp4 e2m1, the F6 types are
# OCP MX 6-bit floats, F8_E8M0 is the MX scale type. Sub-byte types are packed, so a tensor's
# byte size is ceil(numel * bits / 8).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

# The dtypes a model can be loaded in (torch_dtype / dtype argument of from_pretrained), in bytes.
LOAD_DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}

# safetensors dtype -> the torch dtype name transformers reports for it (for "as stored").
SAFETENSORS_TO_TORCH: dict[str, str] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?I?B?)\s*$", re.IGNORECASE)
_FACTORS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "P": 10**15,
    "PB": 10**15,
    "KIB": KiB,
    "MIB": MiB,
    "GIB": GiB,
    "TIB": 1024**4,
    "PIB": 1024**5,
}
# No machine fitcheck plans for has more than this in one place; larger is a typo.
_MAX_SIZE = 1024**6  # 1 EiB


def tensor_nbytes(dtype: str, numel: int) -> int:
    """Bytes a tensor of ``numel`` elements of safetensors ``dtype`` occupies on disk."""
    return math.ceil(numel * DTYPE_BITS[dtype] / 8)


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse a human size such as ``24GiB``, ``24GB``, ``1.5 TiB`` or ``1024B`` into bytes.

    Decimal suffixes (GB) are powers of 1000 and binary ones (GiB) powers of 1024, as in the IEC
    standard; bytes are written ``B``. A bare number is refused: ``--gpu 12`` is never 12 bytes.

    Raises:
        UsageError: for anything else, including negative or zero sizes.
    """
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(
            f"{what} {text!r} is not a size",
            hint="write it like 24GiB, 24GB, 512MiB or 1024B",
        )
    number, unit = match.groups()
    if not unit:
        # "--gpu 12" meant 12 GiB, not 12 bytes: a size always carries its unit (issue 13 item 8)
        raise UsageError(f"{what} {text!r} has no unit", hint=f"give a unit, e.g. {number}GiB ({number}B for bytes)")
    factor = _FACTORS.get(unit.upper())
    if factor is None:
        raise UsageError(f"{what} {text!r} has an unknown unit {unit!r}", hint="use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB")
    scaled = float(number) * factor
    if not math.isfinite(scaled) or scaled > _MAX_SIZE:  # "1" and 400 zeros is a float overflow, not a size
        raise UsageError(f"{what} {text!r} is larger than any machine fitcheck plans for")
    value = int(scaled)
    if value <= 0:
        raise UsageError(f"{what} {text!r} must be larger than zero")
    if value > _MAX_SIZE:
        raise UsageError(f"{what} {text!r} is larger than any machine fitcheck plans for")
    return value


def parse_size_list(text: str, *, what: str = "size") -> tuple[int, ...]:
    """Parse a comma-separated list of sizes (``24GiB,24GiB``)."""
    parts = [p for p in str(text).split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise UsageError(f"{what} {text!r} is not a comma-separated list of sizes")
    return tuple(parse_size(p, what=what) for p in parts)


def fmt_bytes(n: int, *, precision: int = 1, up: bool = False) -> str:
    """Render bytes for people: ``17.9 GiB``, ``512.0 MiB``, ``900 B``.

    ``up`` rounds up instead of to nearest: a figure someone must provide ("needs 6.9 GiB") is
    never shown below what it is.
    """
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, factor in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor:
            value = n / factor
            if up and not sign:
                scale = 10**precision
                value = math.ceil(n * scale / factor) / scale
            return f"{sign}{value:.{precision}f} {unit}"
    return f"{sign}{n} B"


def fmt_count(n: int) -> str:
    """Render a parameter count: ``8.03B``, ``124M``."""
    for unit, factor in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= factor:
            return f"{n / factor:.2f}{unit}" if unit in ("T", "B") else f"{n / factor:.0f}{unit}"
    return str(n)
