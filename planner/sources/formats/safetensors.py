"""Strict parsing of safetensors headers, from bytes that strangers wrote.

A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the
tensor data (https://huggingface.co/docs/safetensors/index#format). The parser accepts exactly
what the safetensors loader itself accepts (safetensors/src/tensor.rs, ``validate``): an object
of tensors with a known dtype, non-negative integer shape and ``data_offsets`` that match the
shape and tile the data region without gaps or overlaps, plus an optional ``__metadata__`` of
strings. Anything else raises :class:`BadHeader` naming the file and the field; nothing here
allocates more than the header itself.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from typing import Any

from planner.core.errors import BadHeader
from planner.core.ids import show
from planner.core.records import Tensor
from planner.core.units import DTYPE_BITS

# The Hugging Face layout of a safetensors checkpoint: one file, or shards named by an index
# (transformers modeling_utils ``SAFE_WEIGHTS_NAME``/``SAFE_WEIGHTS_INDEX_NAME``; vLLM reads the same).
SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
_SAFE_SHARD = re.compile(r"^model-\d+-of-\d+\.safetensors\Z")


def is_safe_shard(path: str) -> bool:
    """Whether ``path`` is a safetensors shard of the HF layout (``model-00001-of-00004.safetensors``)."""
    return bool(_SAFE_SHARD.match(path))


# The safetensors loader refuses headers over 100 MB (safetensors/src/tensor.rs, MAX_HEADER_SIZE);
# a file claiming more is hostile or broken, and we refuse before reading it.
MAX_HEADER_BYTES = 100_000_000
# The smallest valid header is "{}".
_MIN_HEADER_BYTES = 2
# No real tensor has more than 2**48 elements (DeepSeek-V3's largest has ~2**30); beyond it, byte
# counts stop being meaningful and arithmetic on hostile shapes could explode.
_MAX_NUMEL = 2**48
# Transformer weights are at most 5-D (conv3d kernels); deeper shapes are hostile.
_MAX_RANK = 8
# The longest tensor names on the Hub are under 200 characters (nested vision towers, e.g.
# "model.vision_tower.vision_model.encoder.layers.26.self_attn.out_proj.weight"); a name 5x the
# longest is hostile, and longer ones would carry numbers past int()'s 4,300-digit limit.
_MAX_NAME = 1024


def header_length(prefix: bytes, *, where: str, file_size: int | None = None) -> int:
    """Read and check the 8-byte length prefix.

    Args:
        prefix: at least the first 8 bytes of the file.
        where: "<file> of <repo>" for messages.
        file_size: the file's size when known, to reject a length that runs past the end.
    """
    if len(prefix) < 8:
        raise BadHeader(f"{where}: file is {len(prefix)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < _MIN_HEADER_BYTES:
        raise BadHeader(f"{where}: header length {n} is too small")
    if n > MAX_HEADER_BYTES:
        raise BadHeader(f"{where}: header length {n} exceeds the 100 MB the safetensors loader accepts")
    if file_size is not None and 8 + n > file_size:
        raise BadHeader(f"{where}: header length {n} runs past the end of the {file_size}-byte file")
    return n


def parse_header(
    raw: bytes | Mapping[str, Any],
    *,
    file: str,
    where: str,
    file_size: int | None = None,
    header_len: int | None = None,
) -> tuple[list[Tensor], dict[str, str]]:
    """Validate a header and return its tensors (sorted by offset) and its ``__metadata__``.

    Args:
        raw: the N header bytes (without the length prefix), or an already-decoded JSON object
            (the Hub's all-shard-headers endpoint returns those).
        file: the file name recorded on each tensor.
        where: "<file> of <repo>" for messages.
        file_size: the file's size when known; then the data must end exactly at the file's end.
        header_len: N when known (needed with ``file_size`` for decoded headers).
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        header_len = len(raw)
        obj = _decode(bytes(raw), where)
    else:
        obj = raw
    if not isinstance(obj, Mapping):
        raise BadHeader(f"{where}: header is a JSON {type(obj).__name__}, not an object")

    metadata = _metadata(obj.get("__metadata__"), where)
    tensors: list[Tensor] = []
    for name, entry in obj.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor(name, entry, file, where))

    tensors.sort(key=lambda t: t.offset)
    end = 0
    for t in tensors:
        if t.offset != end:
            kind = "overlaps the previous tensor" if t.offset < end else f"leaves a gap of {t.offset - end} bytes"
            raise BadHeader(f"{where}: tensor {show(t.name)} field 'data_offsets' {kind} (starts at {t.offset}, expected {end})")
        end = t.offset + t.nbytes
    if file_size is not None and header_len is not None:
        data = file_size - 8 - header_len
        if end > data:
            raise BadHeader(f"{where}: tensor data runs past the end of the file: byte {end} of a {data}-byte data region (truncated?)")
        if end < data:
            raise BadHeader(f"{where}: {data - end} bytes after the last tensor are not described by the header")
    return tensors, metadata


def _decode(raw: bytes, where: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadHeader(f"{where}: header is not UTF-8 (byte {e.start})") from None
    if not text.lstrip().startswith("{"):
        raise BadHeader(f"{where}: header does not start with a JSON object")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        detail = str(e).splitlines()[0][:120] if isinstance(e, ValueError) else "nested too deeply"
        raise BadHeader(f"{where}: header is not valid JSON ({detail})") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _metadata(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}  # optional in the format; peers crash on its absence, we do not
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadHeader(f"{where}: field '__metadata__' must map strings to strings")
    return dict(value)


def _tensor(name: str, entry: Any, file: str, where: str) -> Tensor:
    """One validated tensor. The common case -- a well-formed entry -- takes a fast path of exact
    type checks (DeepSeek-V3 has 91,991 entries); anything unusual goes through the full checks,
    which name the field that is wrong."""
    try:
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if (type(dtype) is str and type(shape) is list and type(offsets) is list and len(offsets) == 2 and len(shape) <= _MAX_RANK
                and len(name) <= _MAX_NAME and len(entry) == 3):
            begin, end = offsets
            bits = DTYPE_BITS.get(dtype)
            if bits is not None and type(begin) is int and type(end) is int and 0 <= begin <= end:
                numel = 1
                for dim in shape:
                    if type(dim) is not int or dim < 0 or dim > _MAX_NUMEL:
                        break
                    numel *= dim
                else:
                    if numel <= _MAX_NUMEL and (numel * bits) % 8 == 0 and end - begin == numel * bits // 8:
                        return Tensor(name, dtype, tuple(shape), numel * bits // 8, file, begin)
    except (TypeError, KeyError, ValueError):
        pass
    return _tensor_checked(name, entry, file, where)


def _tensor_checked(name: str, entry: Any, file: str, where: str) -> Tensor:
    label = f"{where}: tensor {show(name)}"
    if len(name) > _MAX_NAME:
        raise BadHeader(f"{label}: name is {len(name)} characters; no checkpoint's is over {_MAX_NAME}")
    if not isinstance(entry, Mapping):
        raise BadHeader(f"{label} is a JSON {type(entry).__name__}, not an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise BadHeader(f"{label} field 'dtype': unknown dtype {str(dtype)[:40]!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > _MAX_RANK:
        raise BadHeader(f"{label} field 'shape' must be a list of at most {_MAX_RANK} integers")
    numel = 1
    for dim in shape:
        if not _is_int(dim) or dim < 0:
            raise BadHeader(f"{label} field 'shape': {str(dim)[:40]!r} is not a non-negative integer")
        numel *= dim
        # Each dimension is bounded too: a zero elsewhere in the shape would hide a 2**200.
        if numel > _MAX_NUMEL or dim > _MAX_NUMEL:
            raise BadHeader(f"{label} field 'shape': {len(shape)}-D shape overflows ({_MAX_NUMEL} elements at most)")
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise BadHeader(f"{label} field 'data_offsets' must be two non-negative integers")
    begin, end = offsets
    bits = DTYPE_BITS[dtype]
    if (numel * bits) % 8:
        raise BadHeader(f"{label} field 'shape': {numel} elements of {dtype} are not a whole number of bytes")
    nbytes = numel * bits // 8
    if end - begin != nbytes:
        raise BadHeader(f"{label} field 'data_offsets' spans {end - begin} bytes, but shape {shape} of {dtype} needs {nbytes}")
    return Tensor(name=name, dtype=dtype, shape=tuple(shape), nbytes=nbytes, file=file, offset=begin)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
