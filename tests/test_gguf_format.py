"""The GGUF header parser (planner/sources/formats/gguf.py) against real files written by the
``gguf`` package, its reader, and hostile bytes: each hostile case is one BadHeader, fast."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from gguf_models import write_llama, write_split

from planner.core.errors import BadHeader
from planner.sources.formats import gguf as g


def _parse_bytes(data: bytes, size: int | None = -1, chunk: int = g.CHUNK) -> g.GgufHeader:
    calls = []

    def read(offset: int, n: int) -> bytes:
        calls.append(n)
        return data[offset:offset + n]

    return g.parse(read, file="x.gguf", where="x.gguf", file_size=len(data) if size == -1 else size, chunk=chunk)


def _parse_file(p: Path) -> g.GgufHeader:
    read, fh = g.file_reader(p)
    with fh:
        return g.parse(read, file=p.name, where=p.name, file_size=p.stat().st_size)


def test_type_table_matches_gguf_package() -> None:
    import gguf

    theirs = {t.name: (t.value, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType}
    ours = {name: (tid, bs, ts) for tid, (name, bs, ts) in g.GGML_TYPES.items()}
    assert ours == theirs


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q5_1"])
def test_matches_gguf_reader(tmp_path: Path, qtype: str) -> None:
    import gguf

    p = write_llama(tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    h = _parse_file(p)
    r = gguf.GGUFReader(str(p))
    assert [t.name for t in h.tensors] == [t.name for t in r.tensors]
    for ours, theirs in zip(h.tensors, r.tensors, strict=True):
        assert ours.dtype == theirs.tensor_type.name
        assert list(ours.shape) == [int(x) for x in theirs.shape]
        assert ours.nbytes == int(theirs.n_bytes)
        assert ours.offset == int(theirs.data_offset)
    assert h.data_offset == r.data_offset
    assert h.metadata["llama.block_count"] == 2
    assert h.metadata["general.architecture"] == "llama"
    # the data ends at the end of the file
    assert h.tensors[-1].offset + h.tensors[-1].nbytes == p.stat().st_size


def test_long_arrays_are_summarised_and_read_in_few_chunks(tmp_path: Path) -> None:
    import gguf

    p = tmp_path / "big-vocab.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_token_list([f"tok{i}" for i in range(100_000)])
    w.add_token_scores([0.0] * 100_000)
    w.add_tensor("x", __import__("numpy").zeros(32, dtype="float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = p.read_bytes()
    h = _parse_bytes(data, chunk=256 * 1024)
    assert h.metadata["tokenizer.ggml.tokens"] == g.ArrayInfo("STRING", 100_000)
    assert h.metadata["tokenizer.ggml.scores"] == g.ArrayInfo("FLOAT32", 100_000)
    # ~1.2 MB of tokens walked in 256 KiB chunks; the 400 KB of scores are skipped without a read
    assert h.reads <= -(-h.data_offset // (256 * 1024)) + 1
    assert h.bytes_read < len(data) + 256 * 1024


def test_split_set(tmp_path: Path) -> None:
    paths = write_split(tmp_path, "m", 3)
    headers = [_parse_file(p) for p in paths]
    g.check_split(headers, where="m")
    assert sum(len(h.tensors) for h in headers) == headers[0].metadata["split.tensors.count"]
    assert g.split_info(paths[1].name) == ("m", 2, 3)
    with pytest.raises(BadHeader, match="split.count is 3 but 2"):
        g.check_split(headers[:2], where="m")
    with pytest.raises(BadHeader, match="split.no"):
        g.check_split([headers[0], headers[2], headers[1]], where="m")


# ---- hostile headers -----------------------------------------------------------------------

def _head(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


def _tensor(name: str, shape: list[int], tid: int = 0, offset: int = 0) -> bytes:
    return _s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", tid, offset)


def _pad(b: bytes, align: int = 32) -> bytes:
    return b + b"\0" * (-len(b) % align)


HOSTILE: dict[str, tuple[bytes, int | None, str]] = {
    "empty": (b"", None, "truncated"),
    "bad magic": (b"GGML" + b"\0" * 20, None, "not a GGUF file"),
    "version 1": (_head(version=1), None, "version 1"),
    "version 99": (_head(version=99), None, "version 99"),
    "big endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), None, "big-endian"),
    "2^63 tensors": (_head(n_tensors=2**63), None, "tensor count"),
    "2^40 kv": (_head(n_kv=2**40), None, "metadata count"),
    "tensors cannot fit": (_head(n_tensors=1000) + b"\0" * 100, None, "cannot fit"),
    "2^40-byte key": (_head(n_kv=1) + struct.pack("<Q", 2**40) + b"\0" * 16, None, "claims"),
    "2^40-byte string": (_head(n_kv=1) + _s("k") + struct.pack("<IQ", 8, 2**40) + b"\0" * 64, None, "claims"),
    "truncated string": (_head(n_kv=1) + _s("k") + struct.pack("<IQ", 8, 50) + b"abc", None, "truncated"),
    "not utf-8 key": (_head(n_kv=1) + _s(b"\xff\xfe") + struct.pack("<II", 4, 1), None, "not UTF-8"),
    "unknown value type": (_head(n_kv=1) + _s("k") + struct.pack("<I", 77) + b"\0" * 16, None, "unknown value type 77"),
    "unknown array type": (_head(n_kv=1) + _s("k") + struct.pack("<IIQ", 9, 55, 1) + b"\0" * 16, None, "unknown element type"),
    "nested array": (_head(n_kv=1) + _s("k") + struct.pack("<IIQ", 9, 9, 1) + b"\0" * 16, None, "array of arrays"),
    "2^62 array": (_head(n_kv=1) + _s("k") + struct.pack("<IIQ", 9, 4, 2**62) + b"\0" * 16, None, "elements"),
    "array past eof": (_head(n_kv=1) + _s("k") + struct.pack("<IIQ", 9, 4, 1000) + b"\0" * 16, None, "more than the rest"),
    "duplicate key": (_head(n_kv=2) + _kv_u32("a", 1) + _kv_u32("a", 2), None, "appears twice"),
    "bad alignment": (_head(n_kv=1) + _kv_u32("general.alignment", 3), None, "power of two"),
    "zero alignment": (_head(n_kv=1) + _kv_u32("general.alignment", 0), None, "power of two"),
    "unknown ggml type": (_pad(_head(n_tensors=1) + _tensor("t", [32], tid=4)) + b"\0" * 64, None, "unknown ggml type 4"),
    "5 dims": (_pad(_head(n_tensors=1) + _tensor("t", [1, 1, 1, 1, 1])) + b"\0" * 64, None, "dimensions"),
    "overflowing shape": (_pad(_head(n_tensors=1) + _tensor("t", [2**40, 2**40])) + b"\0" * 64, None, "overflows"),
    "partial block": (_pad(_head(n_tensors=1) + _tensor("t", [33], tid=8)) + b"\0" * 64, None, "multiple of the Q8_0 block"),
    "misaligned offset": (_pad(_head(n_tensors=2) + _tensor("a", [8]) + _tensor("b", [8], offset=33)) + b"\0" * 128, None, "alignment"),
    "out of order": (_pad(_head(n_tensors=2) + _tensor("a", [8], offset=32) + _tensor("b", [8], offset=0)) + b"\0" * 128, None, "expected 0"),
    "overlap": (_pad(_head(n_tensors=2) + _tensor("a", [64]) + _tensor("b", [8], offset=32)) + b"\0" * 512, None, "expected 256"),
    "duplicate tensor": (_pad(_head(n_tensors=2) + _tensor("a", [8]) + _tensor("a", [8], offset=32)) + b"\0" * 64, None, "twice"),
    "tensor past eof": (_pad(_head(n_tensors=1) + _tensor("a", [1024])) + b"\0" * 64, None, "past the end"),
    "truncated tensor info": (_head(n_tensors=1) + _s("a") + struct.pack("<I", 2) + b"\0" * 20, None, "truncated"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile(case: str) -> None:
    data, size, message = HOSTILE[case]
    with pytest.raises(BadHeader, match=message) as e:
        _parse_bytes(data, size=len(data) if size is None else size)
    assert "\n" not in e.value.message


def test_hostile_without_file_size_is_still_bounded() -> None:
    # no size known (a server without Content-Length): the hard caps still refuse absurd counts
    for data in (_head(n_tensors=2**63), _head(n_kv=1) + struct.pack("<Q", 2**40), _head(n_kv=1) + _s("k") + struct.pack("<IIQ", 9, 4, 2**62)):
        with pytest.raises(BadHeader):
            _parse_bytes(data, size=None)


def test_valid_minimal_file() -> None:
    data = _pad(_head(n_tensors=1, n_kv=1) + _kv_u32("general.alignment", 64) + _tensor("a", [16]), 64) + b"\0" * 64
    h = _parse_bytes(data)
    assert h.alignment == 64
    assert h.tensors[0].offset == h.data_offset and h.tensors[0].nbytes == 64
