"""The safetensors header parser: valid headers parse exactly, hostile ones fail with one line
naming the file and the field."""

from __future__ import annotations

import json
import struct

import pytest
from safetensors.numpy import save

from fixtures_models import safetensors_header
from planner.core.errors import BadHeader
from planner.sources.formats.safetensors import MAX_HEADER_BYTES, header_length, parse_header


def _raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_parses_what_the_safetensors_library_writes() -> None:
    import numpy as np

    blob = save({"a": np.zeros((3, 4), dtype=np.float32), "b": np.zeros((5,), dtype=np.int64)}, metadata={"k": "v"})
    n = header_length(blob[:8], where="x", file_size=len(blob))
    tensors, meta = parse_header(blob[8:8 + n], file="model.safetensors", where="x", file_size=len(blob))
    assert meta == {"k": "v"}
    assert {t.name: (t.dtype, t.shape, t.nbytes) for t in tensors} == {"a": ("F32", (3, 4), 48), "b": ("I64", (5,), 40)}
    assert all(t.file == "model.safetensors" for t in tensors)


def test_missing_metadata_is_fine() -> None:
    header, size = safetensors_header({"w": ("BF16", (2, 2))}, metadata=None)
    tensors, meta = parse_header(header[8:], file="f", where="f", file_size=size)
    assert meta == {} and tensors[0].nbytes == 8


def test_sub_byte_dtypes_are_packed() -> None:
    header, size = safetensors_header({"w": ("F4", (4, 6))})
    tensors, _ = parse_header(header[8:], file="f", where="f", file_size=size)
    assert tensors[0].nbytes == 12


@pytest.mark.parametrize("n", [99_992, 99_993, 99_994, 100_000, 100_001, 100_008])
def test_header_sizes_around_the_100k_boundary(n: int) -> None:
    header, size = safetensors_header({"w": ("BF16", (8, 8))}, header_size=n)
    assert header_length(header[:8], where="f", file_size=size) == n
    tensors, _ = parse_header(header[8:], file="f", where="f", file_size=size)
    assert tensors[0].shape == (8, 8)


# name -> (header JSON object or raw bytes, file size or None, substring the one-line error must hold)
_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
HOSTILE = {
    "not json": (b"{not json", None, "not valid JSON"),
    "not utf8": (b'{"\xff": 1}', None, "not UTF-8"),
    "json array": (b"[1, 2]", None, "JSON object"),
    "json string": (b'"x"', None, "JSON object"),
    "deeply nested": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested too deeply"),
    "tensor is a list": (_raw({"w": [1]}), None, "not an object"),
    "unknown dtype": (_raw({"w": {**_ENTRY, "dtype": "F128"}}), None, "unknown dtype 'F128'"),
    "dtype not a string": (_raw({"w": {**_ENTRY, "dtype": 7}}), None, "field 'dtype'"),
    "missing dtype": (_raw({"w": {"shape": [2], "data_offsets": [0, 8]}}), None, "field 'dtype'"),
    "negative dim": (_raw({"w": {**_ENTRY, "shape": [-2]}}), None, "field 'shape'"),
    "float dim": (_raw({"w": {**_ENTRY, "shape": [2.0]}}), None, "field 'shape'"),
    "bool dim": (_raw({"w": {**_ENTRY, "shape": [True]}}), None, "field 'shape'"),
    "string dim": (_raw({"w": {**_ENTRY, "shape": ["2"]}}), None, "field 'shape'"),
    "shape not list": (_raw({"w": {**_ENTRY, "shape": 2}}), None, "field 'shape'"),
    "overflowing shape": (_raw({"w": {**_ENTRY, "shape": [2**40, 2**40]}}), None, "overflows"),
    "huge rank": (_raw({"w": {**_ENTRY, "shape": [1] * 64}}), None, "field 'shape'"),
    "offsets wrong size": (_raw({"w": {**_ENTRY, "data_offsets": [0, 4]}}), None, "needs 8"),
    "offsets reversed": (_raw({"w": {**_ENTRY, "data_offsets": [8, 0]}}), None, "field 'data_offsets'"),
    "offsets negative": (_raw({"w": {**_ENTRY, "data_offsets": [-8, 0]}}), None, "field 'data_offsets'"),
    "offsets three": (_raw({"w": {**_ENTRY, "data_offsets": [0, 4, 8]}}), None, "field 'data_offsets'"),
    "offsets missing": (_raw({"w": {"dtype": "F32", "shape": [2]}}), None, "field 'data_offsets'"),
    "overlap": (_raw({"a": _ENTRY, "b": _ENTRY}), None, "overlaps"),
    "gap": (_raw({"a": _ENTRY, "b": {**_ENTRY, "data_offsets": [16, 24]}}), None, "gap"),
    "past file end": (_raw({"w": _ENTRY}), 8 + len(_raw({"w": _ENTRY})) + 4, "runs"),
    "trailing bytes": (_raw({"w": _ENTRY}), 8 + len(_raw({"w": _ENTRY})) + 64, "not described"),
    "metadata not object": (_raw({"__metadata__": [1], "w": _ENTRY}), None, "__metadata__"),
    "metadata non-string value": (_raw({"__metadata__": {"a": 1}, "w": _ENTRY}), None, "__metadata__"),
    "duplicate tensor": (b'{"w":' + json.dumps(_ENTRY).encode() + b',"w":' + json.dumps(_ENTRY).encode() + b"}", None, "duplicate"),
    "half byte tensor": (_raw({"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}), None, "whole number of bytes"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_headers_fail_with_one_line_naming_file_and_field(name: str) -> None:
    raw, size, expected = HOSTILE[name]
    with pytest.raises(BadHeader) as e:
        parse_header(raw, file="model.safetensors", where="model.safetensors of evil/repo", file_size=size)
    assert expected in e.value.message
    assert "model.safetensors of evil/repo" in e.value.message
    assert "\n" not in e.value.message


@pytest.mark.parametrize(
    ("prefix", "size", "expected"),
    [
        (b"\x01\x02", None, "too short"),
        (struct.pack("<Q", 2**63), None, "exceeds"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1), None, "exceeds"),
        (struct.pack("<Q", 1000), 500, "past the end"),
        (struct.pack("<Q", 0), None, "too small"),
        (struct.pack("<Q", 2**64 - 1), 10**12, "exceeds"),
    ],
)
def test_absurd_length_prefixes_are_refused_before_reading(prefix: bytes, size: int | None, expected: str) -> None:
    with pytest.raises(BadHeader) as e:
        header_length(prefix, where="f of r", file_size=size)
    assert expected in e.value.message
